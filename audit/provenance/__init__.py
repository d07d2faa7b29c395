"""Provenance: what a file says about where it came from, beyond generation metadata.

Two sources, read from the original bytes by the crawler:

- C2PA manifests (``c2pa_manifest``): the claim generator, the actions with their
  ``digitalSourceType``, the signer, and whether the signature and hashes validate.
  OpenAI, Adobe Firefly, Google, Microsoft and others sign their generations this way.
- IPTC ``DigitalSourceType`` in XMP (``xmp``): ``trainedAlgorithmicMedia`` and the like,
  written by Midjourney, Google and most photo tools that mark AI content.

``read_provenance`` returns one JSON-ready dict (the catalog's ``provenance`` column) or
None when the file has neither. It never raises for bad bytes: a corrupt C2PA store is
recorded in ``c2pa.error`` (and makes the manifest invalid), not a crash.

Signals the flag stage derives from it (``signals_of``), named as policies name them:

- ``provenance:ai-generated``: a C2PA action or the XMP says the content was made (or
  composited) by a trained model, whether or not the manifest validates (the detail says).
- ``provenance:c2pa-invalid``: a C2PA manifest is present but its store cannot be read, or
  its signature or hashes do not validate (tampered, or re-encoded after signing).
- ``provenance:c2pa``: any C2PA manifest is present.
"""

from __future__ import annotations

import json
from typing import Any

from audit.provenance.sources import AI_SOURCE_TYPES, short_source_type

__all__ = [
    "AI_SOURCE_TYPES",
    "PROVENANCE_SIGNALS",
    "provenance_json",
    "read_provenance",
    "short_source_type",
    "signals_of",
    "summary_line",
]

AI_SIGNAL = "provenance:ai-generated"
INVALID_SIGNAL = "provenance:c2pa-invalid"
PRESENT_SIGNAL = "provenance:c2pa"
PROVENANCE_SIGNALS = (AI_SIGNAL, INVALID_SIGNAL, PRESENT_SIGNAL)


def read_provenance(data: bytes, fmt: str | None = None) -> dict[str, Any] | None:
    """The provenance record of ``data`` (see the module doc), or None when it has none."""
    from audit.provenance.c2pa_manifest import read_c2pa
    from audit.provenance.xmp import xmp_source_types

    out: dict[str, Any] = {}
    manifest = read_c2pa(data, fmt)
    if manifest is not None:
        out["c2pa"] = manifest
    xmp = xmp_source_types(data)
    if xmp:
        out["xmp"] = {"digital_source_types": xmp}
    if not out:
        return None
    types = [*(manifest or {}).get("digital_source_types", []), *xmp]
    out["digital_source_types"] = list(dict.fromkeys(types))
    out["ai_generated"] = any(t in AI_SOURCE_TYPES for t in out["digital_source_types"])
    return out


def provenance_json(data: bytes, fmt: str | None = None) -> str | None:
    """``read_provenance`` as the catalog stores it (JSON text), never raising: a reader
    failure of any kind becomes ``{"error": ...}``, so the item keeps its row."""
    try:
        record = read_provenance(data, fmt)
    except Exception as exc:  # noqa: BLE001 - provenance trouble costs provenance, not the item
        record = {"error": f"provenance reader failed: {type(exc).__name__}: {str(exc)[:200]}"}
    return None if record is None else json.dumps(record, ensure_ascii=False, default=str)


def signals_of(record: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """(signal name, detail) pairs this provenance record fires."""
    if not isinstance(record, dict):
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    manifest = record.get("c2pa") if isinstance(record.get("c2pa"), dict) else None
    if manifest is not None:
        out.append((PRESENT_SIGNAL, _manifest_detail(manifest)))
        if manifest.get("invalid"):
            out.append(
                (
                    INVALID_SIGNAL,
                    {
                        **_manifest_detail(manifest),
                        "failures": manifest.get("failures", [])[:20],
                        "error": manifest.get("error"),
                    },
                )
            )
    if record.get("ai_generated"):
        where = []
        if manifest and any(t in AI_SOURCE_TYPES for t in manifest.get("digital_source_types", [])):
            where.append("c2pa")
        xmp = record.get("xmp") or {}
        if any(t in AI_SOURCE_TYPES for t in xmp.get("digital_source_types", [])):
            where.append("xmp")
        out.append(
            (
                AI_SIGNAL,
                {
                    "digital_source_types": record.get("digital_source_types", []),
                    "from": where,
                    "c2pa_validated": bool(manifest and manifest.get("signature_valid")),
                },
            )
        )
    return out


def _manifest_detail(manifest: dict[str, Any]) -> dict[str, Any]:
    signer = manifest.get("signer") or {}
    return {
        "claim_generator": manifest.get("claim_generator"),
        "signer": signer.get("common_name") or signer.get("issuer"),
        "validation_state": manifest.get("validation_state"),
    }


def summary_line(record: dict[str, Any] | None) -> str:
    """One line for a report: "C2PA: ToyGen 1.0, signed by X (Valid); AI-generated
    (trainedAlgorithmicMedia)"."""
    if not isinstance(record, dict):
        return ""
    parts = []
    manifest = record.get("c2pa")
    if isinstance(manifest, dict):
        if manifest.get("error"):
            parts.append(f"C2PA: unreadable ({manifest['error']})")
        else:
            signer = (manifest.get("signer") or {}).get("common_name") or (manifest.get("signer") or {}).get("issuer")
            bits = [manifest.get("claim_generator") or "unknown generator"]
            if signer:
                bits.append(f"signed by {signer}")
            parts.append(f"C2PA: {', '.join(bits)} ({manifest.get('validation_state') or 'not validated'})")
    types = record.get("digital_source_types") or []
    if types:
        parts.append(("AI-generated" if record.get("ai_generated") else "source") + f" ({', '.join(map(str, types))})")
    if record.get("error"):
        parts.append(str(record["error"]))
    return "; ".join(parts)
