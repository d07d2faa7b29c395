"""Real-person models and LoRAs: the policy's rules, name lists and hash lists over the
resources a generator recorded (checkpoint, LoRA, LyCORIS, embedding, hypernetwork ...).

*Names* (``fields = ["resources"]`` / ``["model"]`` in ``[[rule]]`` and ``[[names]]``): each
resource name is matched on its own, with the normalisation of prompts, after the ways file
names glue words together are undone: the folder and the file extension are dropped,
``_ . -`` become spaces and camel case or digits are split ("JanePlaceholderV2" reads "Jane
Placeholder V 2"). Spans are reported in the name as recorded.

*Hashes* (``hash_type = "resource"`` rows of a ``[[hashlist]]``), case-insensitively:

* hex against hex: equal, or one a prefix of the other with at least 8 digits in common. An
  A1111 ``Model hash`` or Civitai AutoV2 (10 digits) is the start of the file's SHA-256, so a
  listed full SHA-256 matches it and a listed AutoV2 matches a recorded full hash. A LoRA's
  ``Lora hashes`` AutoV3 (12 digits) is the start of the SHA-256 of the file *without its
  metadata header*: it matches a listed AutoV3 or a listed SHA-256 of the tensor data, not
  the file's plain SHA-256 (a different number, which no rule can turn into the other);
* Civitai AIRs ``urn:air:<ecosystem>:<type>:<source>:<id>@<version>``: same source, model id
  and version (ecosystem and type are descriptive and ignored); a listed AIR without
  ``@version`` matches every version of the model. A listed Civitai AIR also matches a model
  version id recorded without an AIR (Civitai's on-site metadata, ``Civitai resources``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = [
    "ResourceHit",
    "normalize_resource_hash",
    "parse_resources",
    "resource_texts",
    "match_resource_hashes",
    "match_resource_fields",
]

MIN_PREFIX = 8
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_AIR = re.compile(r"^urn:air:(?:([^:@\s]+):)?(?:([^:@\s]+):)?([^:@\s]+):([^:@\s]+?)(?:@([^:@\s]+))?$")
_DIGEST_PREFIXES = ("sha256:", "sha-256:", "autov1:", "autov2:", "autov3:", "0x")
_EXTENSIONS = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|gguf|sft|onnx)$", re.I)
_CIVITAI_VERSION_KINDS = ("civitai-model-version",)


def normalize_resource_hash(value: Any) -> str | None:
    """The canonical form of a model hash or AIR (lower-case hex, or ``air:SOURCE:ID@VERSION``);
    ``None`` when it is neither."""
    if value is None:
        return None
    text = "".join(str(value).split()).lower()
    if text.startswith("urn:air:"):
        match = _AIR.match(text)
        if not match:
            return None
        source, model, version = match.group(3), match.group(4), match.group(5)
        return f"air:{source}:{model}" + (f"@{version}" if version else "")
    if text.startswith("civitai:") and text[8:].isdigit():  # a model version id (audit.meta)
        return f"civitai-version:{text[8:]}"
    for prefix in _DIGEST_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text if _HEX.match(text) else None


def parse_resources(value: Any) -> list[dict]:
    """The catalog's ``resources`` column (JSON list of {kind, name, hash, weight}) as dicts;
    anything malformed is left out."""
    if not value:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


# ---------------------------------------------------------------------------- hashes


@dataclass(frozen=True)
class ResourceHashMatch:
    resource: dict  # the item's resource ({kind, name, hash}) or {"kind": "model_hash", ...}
    item_hash: str  # as recorded
    bank_hash: str  # as listed (normalised)
    label: str
    line: int
    how: str  # "exact" | "prefix" | "air" | "civitai-version"


class _ResourceBank:
    """A hash list's resource rows, indexed for hex prefixes and AIR model ids."""

    def __init__(self, rows: Iterable[tuple[str, str, int]]):
        self.by_prefix: dict[str, list[tuple[str, str, int]]] = {}
        self.air: dict[tuple[str, str], list[tuple[str | None, str, int, str]]] = {}
        self.versions: dict[str, list[tuple[str, str, int]]] = {}  # civitai version id -> rows
        for value, label, line in rows:
            if value.startswith("air:"):
                source, _, rest = value[4:].partition(":")
                model, _, version = rest.partition("@")
                self.air.setdefault((source, model), []).append((version or None, label, line, value))
                if source == "civitai" and version:
                    self.versions.setdefault(version, []).append((value, label, line))
            elif value.startswith("civitai-version:"):
                self.versions.setdefault(value.split(":", 1)[1], []).append((value, label, line))
            else:
                self.by_prefix.setdefault(value[:MIN_PREFIX], []).append((value, label, line))

    def lookup(self, normalised: str) -> list[tuple[str, str, int, str]]:
        if normalised.startswith("air:"):
            source, _, rest = normalised[4:].partition(":")
            model, _, version = rest.partition("@")
            out = [
                (value, label, line, "air")
                for listed, label, line, value in self.air.get((source, model), ())
                if listed is None or listed == version
            ]
            if source == "civitai" and version:
                out += [
                    (v, label, line, "civitai-version")
                    for v, label, line in self.versions.get(version, ())
                    if v.startswith("civitai-version:")
                ]
            return out
        if normalised.startswith("civitai-version:"):
            version = normalised.split(":", 1)[1]
            return [(v, label, line, "civitai-version") for v, label, line in self.versions.get(version, ())]
        out = []
        for value, label, line in self.by_prefix.get(normalised[:MIN_PREFIX], ()):
            if value == normalised:
                out.append((value, label, line, "exact"))
            elif value.startswith(normalised) or normalised.startswith(value):
                out.append((value, label, line, "prefix"))
        return out


_bank_cache: dict[int, tuple[Any, _ResourceBank]] = {}


def _indexed(bank) -> _ResourceBank:
    cached = _bank_cache.get(id(bank))
    if cached is not None and cached[0] is bank:
        return cached[1]
    indexed = _ResourceBank(bank.resources)
    if len(_bank_cache) > 32:
        _bank_cache.clear()
    _bank_cache[id(bank)] = (bank, indexed)
    return indexed


def _item_hashes(resources: list[dict], model_hash: str | None) -> list[tuple[dict, str, str]]:
    """(resource, hash as recorded, normalised) for every hash the item's metadata holds."""
    out = []
    seen = set()
    for resource in resources:
        for raw in (resource.get("hash"),):
            normalised = normalize_resource_hash(raw)
            if normalised and (normalised, resource.get("name")) not in seen:
                seen.add((normalised, resource.get("name")))
                out.append((resource, str(raw), normalised))
        if resource.get("kind") in _CIVITAI_VERSION_KINDS and str(resource.get("name", "")).isdigit():
            out.append((resource, str(resource["name"]), f"civitai-version:{resource['name']}"))
    normalised = normalize_resource_hash(model_hash)
    if normalised and not any(n == normalised for _, _, n in out):
        out.append(({"kind": "checkpoint", "name": None, "hash": model_hash}, str(model_hash), normalised))
    return out


def match_resource_hashes(bank, resources: list[dict], model_hash: str | None = None) -> list[ResourceHashMatch]:
    """Matches of one item's recorded model/LoRA hashes and AIRs against a hash list's
    ``resource`` rows (nothing when it has none)."""
    if not getattr(bank, "resources", None):
        return []
    indexed = _indexed(bank)
    out = []
    for resource, raw, normalised in _item_hashes(resources, model_hash):
        for value, label, line, how in indexed.lookup(normalised):
            out.append(ResourceHashMatch(resource, raw, value, label, line, how))
    return out


# ---------------------------------------------------------------------------- names


def _readable(name: str) -> tuple[str, list[int]]:
    """A file-like resource name as words, and for each character the index it came from in
    ``name``: folder and extension dropped, ``_ . -`` as spaces, camel case and digits split."""
    start = max(name.rfind("/"), name.rfind("\\")) + 1
    stem = name[start:]
    ext = _EXTENSIONS.search(stem)
    end = start + (ext.start() if ext else len(stem))
    chars: list[str] = []
    index: list[int] = []
    previous = ""
    for position in range(start, end):
        ch = name[position]
        if ch in "_.-":
            ch = " "
        elif previous and (
            (previous.islower() and ch.isupper())
            or (previous.isalpha() and ch.isdigit())
            or (previous.isdigit() and ch.isalpha())
        ):
            chars.append(" ")
            index.append(position)
        chars.append(ch)
        index.append(position)
        previous = ch
    return "".join(chars), index


@dataclass(frozen=True)
class ResourceHit:
    signal: str  # rule:ID or names:ID
    kind: str  # "prompt_rule" | "name"
    field: str  # "resources" | "model"
    resource: str  # the name as recorded
    resource_kind: str | None
    span: tuple[int, int]  # in ``resource``
    matched_text: str
    pattern: str  # the rule's pattern, or the listed name


def resource_texts(resources: list[dict], model: str | None) -> dict[str, list[tuple[str, str | None]]]:
    """field -> [(name as recorded, resource kind)] for ``fields = ["resources"|"model"]``."""
    names = []
    seen = set()
    for resource in resources:
        name = resource.get("name")
        if isinstance(name, str) and name.strip() and name not in seen:
            seen.add(name)
            names.append((name, resource.get("kind")))
    return {"resources": names, "model": [(model, "checkpoint")] if model and model.strip() else []}


def match_resource_fields(policy, resources: list[dict], model: str | None, *, breaker=None) -> list[ResourceHit]:
    """Rule and name-list hits over the item's resource names and model (for rules and
    lists whose ``fields`` name ``resources`` or ``model``)."""
    from audit.policy.breaker import PatternBreaker
    from audit.policy.names import _match_names_on
    from audit.policy.rules import CompiledRules, RuleHits, _match_rules_on, _variants, compile_rules

    compiled = policy if isinstance(policy, CompiledRules) else compile_rules(policy)
    breaker = breaker if breaker is not None else PatternBreaker(timeout_s=compiled.timeout)
    out: list[ResourceHit] = []
    for field_name, entries in resource_texts(resources, model).items():
        for name, kind in entries:
            text, index = _readable(name)
            if not text.strip():
                continue
            variants = _variants(text, compiled.max_chars)
            rule_hits = RuleHits()
            _match_rules_on(compiled, field_name, text, variants, rule_hits, compiled.timeout, breaker)
            name_hits: list = []
            _match_names_on(
                compiled.names, field_name, text, variants, name_hits, compiled.timeout, breaker, rule_hits.errors
            )

            def original(span: tuple[int, int]) -> tuple[int, int]:
                a, b = span
                return (index[a], index[b - 1] + 1) if b > a else (index[a], index[a])

            for hit in rule_hits:
                span = original(hit.span)
                out.append(
                    ResourceHit(
                        hit.signal, "prompt_rule", field_name, name, kind, span, name[span[0] : span[1]], hit.pattern
                    )
                )
            for hit in name_hits:
                span = original(hit.span)
                out.append(
                    ResourceHit(hit.signal, "name", field_name, name, kind, span, name[span[0] : span[1]], hit.name)
                )
    return out
