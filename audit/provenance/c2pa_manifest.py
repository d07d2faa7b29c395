"""A C2PA manifest store read with the C2PA SDK (``c2pa-python``, the ``formats`` extra).

The SDK is imported only for files that carry a JUMBF ``c2pa`` label, so the common file
(no manifest) costs one byte search. It runs offline: remote manifests and OCSP are never
fetched (an audit must not phone a signer for each file). A signer is *trusted* only
against anchors the user gives (``AUDIT_C2PA_TRUST_ANCHORS``: a PEM file of CA
certificates); without them a well-signed manifest is ``Valid`` (signature and hashes
check out, signer unknown), and ``Invalid`` means the store's signature or hashes fail.

The record (``read_c2pa``):

``claim_generator``      "name version" of the active manifest's claim generator
``title``                the asset title the claim gives
``actions``              [{action, digitalSourceType (short name), softwareAgent, when}]
``digital_source_types`` short names over the actions (``trainedAlgorithmicMedia``, ...)
``signer``               {common_name, issuer, alg, time}
``validation_state``     "Trusted" | "Valid" | "Invalid" (the SDK's judgement)
``signature_valid``      the state is Valid or Trusted
``trusted``              the state is Trusted
``failures``             failure codes (``assertion.dataHash.mismatch``, ...)
``invalid``              the store is unreadable or its state Invalid
``error``                why the store could not be read (a corrupt JUMBF box, ...)
``manifests``            how many manifests the store holds (ingredients' included)
"""

from __future__ import annotations

import io
import json
import os
import threading
from typing import Any

from audit.provenance.sources import short_source_type

INSTALL_HINT = "install audit[formats]: c2pa-python"
TRUST_ANCHORS_ENV = "AUDIT_C2PA_TRUST_ANCHORS"
_MARKER = b"c2pa"  # the JUMBF description label of every manifest store
_MAX_ACTIONS = 20
_MAX_TEXT = 200

# by the file's signature: the SDK needs a MIME type to know where the store lives
_MIME = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
)


def mime_of(data: bytes) -> str | None:
    for magic, at, mime in _MIME:
        if data[at : at + len(magic)] == magic:
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "image/heif"
        if brand in (b"qt  ",):
            return "video/quicktime"
        return "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    return None


def read_c2pa(data: bytes, fmt: str | None = None) -> dict[str, Any] | None:
    """The manifest record (module doc), None when the file carries no C2PA store."""
    if _MARKER not in data:
        return None
    mime = mime_of(data)
    if mime is None:
        return None
    try:
        import c2pa
    except ImportError:
        return {"error": f"C2PA manifest present but not read ({INSTALL_HINT})", "invalid": False, "checked": False}
    try:
        context = _context(c2pa)
    except (OSError, ValueError) as exc:  # the user's anchors file: a setup problem, not the file's
        return {"error": f"C2PA manifest present but not checked: {exc}", "invalid": False, "checked": False}
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:
        return _unreadable(exc)
    except Exception as exc:  # noqa: BLE001 - the SDK's own failures on hostile bytes
        return _unreadable(exc)
    if reader is None:  # "c2pa" occurred in the bytes, but there is no manifest store
        return None
    try:
        with reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except Exception as exc:  # noqa: BLE001
        return _unreadable(exc)
    return _record(store, state)


def _unreadable(exc: BaseException) -> dict[str, Any]:
    text = " ".join(str(exc).split())[:_MAX_TEXT] or type(exc).__name__
    return {"error": f"C2PA manifest store unreadable: {text}", "invalid": True, "checked": True}


def _record(store: dict[str, Any], state: Any) -> dict[str, Any]:
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    active = manifests.get(store.get("active_manifest")) or {}
    actions = []
    for assertion in active.get("assertions") or []:
        if not isinstance(assertion, dict) or not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for act in (assertion.get("data") or {}).get("actions") or []:
            if isinstance(act, dict) and len(actions) < _MAX_ACTIONS:
                actions.append(_action(act))
    types = [a["digitalSourceType"] for a in actions if a.get("digitalSourceType")]
    signature = active.get("signature_info") or {}
    state_text = str(state) if state is not None else None
    failures = _failure_codes(store)
    invalid = state_text == "Invalid"
    return {
        "claim_generator": _generator(active),
        "title": _text(active.get("title")),
        "actions": actions,
        "digital_source_types": list(dict.fromkeys(types)),
        "signer": {
            "common_name": _text(signature.get("common_name")),
            "issuer": _text(signature.get("issuer")),
            "alg": _text(signature.get("alg")),
            "time": _text(signature.get("time")),
        },
        "validation_state": state_text,
        "signature_valid": state_text in ("Valid", "Trusted"),
        "trusted": state_text == "Trusted",
        "failures": failures,
        "invalid": invalid,
        "error": None,
        "manifests": len(manifests),
        "checked": True,
    }


def _action(act: dict[str, Any]) -> dict[str, Any]:
    agent = act.get("softwareAgent")
    if isinstance(agent, dict):
        agent = " ".join(str(agent[k]) for k in ("name", "version") if agent.get(k))
    return {
        "action": _text(act.get("action")),
        "digitalSourceType": short_source_type(act.get("digitalSourceType")),
        "softwareAgent": _text(agent),
        "when": _text(act.get("when")),
    }


def _generator(active: dict[str, Any]) -> str | None:
    info = active.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        return _text(" ".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k)))
    return _text(active.get("claim_generator"))


def _failure_codes(store: dict[str, Any]) -> list[str]:
    results = store.get("validation_results")
    codes: list[str] = []
    if isinstance(results, dict):
        for part in (results.get("activeManifest") or {}, *(results.get("ingredientDeltas") or [])):
            if isinstance(part, dict):
                failures = part.get("failure") or (part.get("validationDeltas") or {}).get("failure") or []
                codes += [str(f.get("code")) for f in failures if isinstance(f, dict)]
    else:
        codes = [str(s.get("code")) for s in store.get("validation_status") or [] if isinstance(s, dict)]
    return list(dict.fromkeys(codes))[:40]


def _text(v: Any) -> str | None:
    return None if v is None else str(v)[:_MAX_TEXT]


_contexts: dict[str, Any] = {}
_lock = threading.Lock()


def _context(c2pa: Any) -> Any:
    """SDK settings: offline, and trust anchors from ``AUDIT_C2PA_TRUST_ANCHORS`` (one
    context per anchors file, built once per process)."""
    path = os.environ.get(TRUST_ANCHORS_ENV) or ""
    with _lock:
        if path not in _contexts:
            settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
            if path:
                try:
                    with open(path, encoding="utf-8") as fh:
                        settings["trust"] = {"trust_anchors": fh.read()}
                except OSError as exc:
                    raise OSError(f"{TRUST_ANCHORS_ENV}={path}: unreadable ({exc.strerror or exc})") from None
            _contexts[path] = c2pa.Context.from_dict(settings)
        return _contexts[path]
