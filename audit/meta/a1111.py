"""AUTOMATIC1111-style "infotext" and its many writers.

Written by A1111, Forge (and its classic/neo forks), reForge, SD.Next, Civitai, Fooocus in
its a1111 scheme and ComfyUI save nodes::

    prompt (may span lines)
    Negative prompt: negative (may span lines)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, Lora hashes: "a: 1f2e, b: 3c4d", ...
    Template: {red|blue} prompt before wildcards (sd-dynamic-prompts; may span lines)
    Negative Template: ...

The parameter line is always one line (A1111 quotes values with ``json.dumps``, so
newlines inside values are escaped); sd-dynamic-prompts appends its template lines after it.

The parameter line is tokenised by hand rather than by one regular expression because
values may be quoted (with commas inside) or bare JSON (``Hashes: {...}``, ``Civitai
resources: [...]``) whose commas a regular expression would split.
"""

from __future__ import annotations

import json
import re
from typing import Any

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int

_KEY = re.compile(r"\s*([A-Za-z][\w \-/().]*?):\s*")
_NEGATIVE = "Negative prompt:"
_EXTRA_NETWORK = re.compile(r"<(lora|lyco|hypernet):([^:>]+)(?::([^:>]*))?[^>]*>", re.I)
_KIND = {"lora": "lora", "lyco": "lycoris", "hypernet": "hypernetwork"}
# A1111 >= 1.5 loads <lyco:> through the Lora extension, so "Lora hashes" names both
_LORA_FAMILY = {"lora", "lycoris"}
_TEMPLATE_LABELS = (("Template:", "template"), ("Negative Template:", "negative_template"))
# resource types as Civitai and the civitai extension's "Hashes" keys spell them
_RESOURCE_KIND = {"lyco": "lycoris", "locon": "lycoris", "embed": "embedding", "textualinversion": "embedding",
                  "hypernet": "hypernetwork", "model": "checkpoint"}
_PARAM_MIN_KEYS = 3


class A1111Parser:
    name = "a1111"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        best = None
        for piece in pieces:
            result = parse_infotext(piece.text)
            if result is not None:
                result.source = piece.location
                if best is None or result.richness() > best.richness():
                    best = result
        return best


def parse_infotext(text: str) -> GenerationMetadata | None:
    """Parse one infotext; None when the text is not one."""
    if not isinstance(text, str) or ("Steps:" not in text and _NEGATIVE not in text):
        return None
    # Windows tools and editors re-save with CRLF (or bare CR); the writers use "\n"
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    param_index = _find_parameter_line(lines)
    if param_index is None and _NEGATIVE not in text:
        return None
    head = lines if param_index is None else lines[:param_index]
    params: dict[str, Any] = {}
    tail: dict[str, str] = {}
    if param_index is not None:
        params = parse_parameter_line(lines[param_index].strip())
        tail = _trailing_lines(lines[param_index + 1 :])
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in head:
        if not in_negative and line.lstrip().startswith(_NEGATIVE):
            in_negative = True
            line = line.lstrip()[len(_NEGATIVE) :]
        (negative_lines if in_negative else prompt_lines).append(line)
    meta = GenerationMetadata(generator=_identify(params))
    meta.prompt = "\n".join(prompt_lines).strip()
    meta.negative_prompt = "\n".join(negative_lines).strip() if in_negative else None
    if meta.prompt:
        _extra_networks_from_prompt(meta)  # first, so hashes below attach to these by name
    _apply_parameters(meta, params)
    meta.extra.update(tail)
    return meta


def _find_parameter_line(lines: list[str]) -> int | None:
    # sd-dynamic-prompts appends "Template:" right after the parameter line; its template may
    # span lines that look like parameters, so an anchored template decides first
    for index in range(1, len(lines)):
        if lines[index].startswith(tuple(label for label, _ in _TEMPLATE_LABELS)) and _is_parameter_line(lines[index - 1]):
            return index - 1
    for index in range(len(lines) - 1, -1, -1):
        if _is_parameter_line(lines[index]):
            return index
    return None


def _is_parameter_line(line: str) -> bool:
    line = line.strip()
    if line.startswith(_NEGATIVE) or line.startswith(tuple(label for label, _ in _TEMPLATE_LABELS)):
        return False
    return line.startswith("Steps:") or len(parse_parameter_line(line)) >= _PARAM_MIN_KEYS


def _trailing_lines(lines: list[str]) -> dict[str, str]:
    """Lines after the parameter line: dynamic-prompts templates, else kept as trailing text."""
    found: dict[str, list[str]] = {}
    current = "trailing_text"
    for line in lines:
        for label, name in _TEMPLATE_LABELS:
            if line.startswith(label):
                current, line = name, line[len(label) :].lstrip()
                break
        found.setdefault(current, []).append(line)
    return {name: "\n".join(values).strip() for name, values in found.items() if "\n".join(values).strip()}


def parse_parameter_line(line: str) -> dict[str, Any]:
    """``Key: value, Key: "quoted, value", Hashes: {...}`` -> dict (values as text or JSON)."""
    params: dict[str, Any] = {}
    pos, end = 0, len(line)
    while pos < end:
        match = _KEY.match(line, pos)
        if not match:
            comma = line.find(",", pos)
            if comma < 0:
                break
            pos = comma + 1
            continue
        key = match.group(1).strip()
        pos = match.end()
        if pos < end and line[pos] == '"':
            value, pos = _quoted(line, pos)
        elif pos < end and line[pos] in "[{":
            value, pos = _bracketed(line, pos)
        else:
            comma = line.find(",", pos)
            comma = end if comma < 0 else comma
            value, pos = line[pos:comma].strip(), comma
        params[key] = value
        while pos < end and line[pos] in ", ":
            pos += 1
    return params


def _quoted(line: str, pos: int) -> tuple[str, int]:
    index = pos + 1
    while index < len(line):
        if line[index] == "\\":
            index += 2
            continue
        if line[index] == '"':
            raw = line[pos : index + 1]
            try:
                return json.loads(raw), index + 1
            except ValueError:
                return raw[1:-1], index + 1
        index += 1
    return line[pos + 1 :], len(line)


def _bracketed(line: str, pos: int) -> tuple[Any, int]:
    depth, index, in_string = 0, pos, False
    while index < len(line):
        char = line[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                raw = line[pos : index + 1]
                try:
                    return json.loads(raw), index + 1
                except ValueError:
                    return raw, index + 1
        index += 1
    comma = line.find(",", pos)
    comma = len(line) if comma < 0 else comma
    return line[pos:comma], comma


def _identify(params: dict[str, Any]) -> str:
    """Which A1111-family writer produced this, from its own version fields."""
    app = str(params.get("App", ""))
    version = str(params.get("Version", ""))
    if "SD.Next" in app or "sd.next" in version.lower():
        return "sdnext"
    if "Civitai resources" in params or "Civitai metadata" in params:
        return "civitai"
    if version == "neo" or version.startswith("neo"):
        return "forge-neo"
    if version.startswith("classic"):
        return "forge-classic"
    if "reforge" in version.lower() or re.match(r"f\d+\.\d+\.\d+v\d+-v", version):
        return "reforge"
    if re.match(r"f\d", version):
        return "forge"
    if version.lower().startswith("comfyui"):
        return "comfyui-a1111"
    if "fooocus" in version.lower():
        return "fooocus"
    return "a1111"


def _apply_parameters(meta: GenerationMetadata, params: dict[str, Any]) -> None:
    lookup = {k.lower(): v for k, v in params.items()}
    meta.steps = to_int(lookup.get("steps"))
    meta.sampler = _text(lookup.get("sampler"))
    meta.scheduler = _text(lookup.get("schedule type") or lookup.get("scheduler"))
    meta.cfg_scale = to_float(lookup.get("cfg scale"))
    meta.seed = seed_text(lookup.get("seed"))
    meta.model = _text(lookup.get("model"))
    meta.model_hash = _text(lookup.get("model hash"))
    vae_hash = _text(lookup.get("vae hash"))
    _hash_list(meta, lookup.get("lora hashes"), "lora")
    _hash_list(meta, lookup.get("ti hashes"), "embedding")
    if lookup.get("hypernet"):  # A1111 before extra networks: "Hypernet: name, Hypernet hash: ..."
        _add_resource(meta, "hypernetwork", str(lookup["hypernet"]), _text(lookup.get("hypernet hash")),
                      to_float(lookup.get("hypernet strength")))
    hashes = lookup.get("hashes")  # civitai extension: {"model": h, "vae": h, "lora:name": h, "embed:name": h}
    if isinstance(hashes, dict):
        for name, value in hashes.items():
            kind, _, short = str(name).partition(":")
            if kind == "model":
                meta.model_hash = meta.model_hash or _text(value)
            elif kind == "vae":
                vae_hash = vae_hash or _text(value)
            elif short:
                _add_resource(meta, _RESOURCE_KIND.get(kind, kind), short, _text(value))
    if meta.model or meta.model_hash:
        meta.resources.insert(0, Resource("checkpoint", meta.model or meta.model_hash, meta.model_hash))
    if lookup.get("vae") or vae_hash:
        meta.resources.append(Resource("vae", str(lookup.get("vae") or vae_hash), vae_hash))
    civitai = lookup.get("civitai resources")
    if isinstance(civitai, list):
        for entry in civitai:
            if isinstance(entry, dict):
                _civitai_resource(meta, entry)
    size = lookup.get("size")
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        meta.extra["width"], meta.extra["height"] = to_int(width), to_int(height)
    for key, name in (("clip skip", "clip_skip"), ("denoising strength", "denoise"), ("version", "version")):
        if lookup.get(key) is not None:
            meta.extra[name] = lookup[key]
    meta.extra["parameters"] = params


def _civitai_resource(meta: GenerationMetadata, entry: dict[str, Any]) -> None:
    """One entry of Civitai's ``Civitai resources``: type, modelName, modelVersionName,
    modelVersionId, weight, and on newer images an AIR URN instead of names."""
    kind = str(entry.get("type") or "resource").lower()
    name = entry.get("modelName") or entry.get("name") or entry.get("air")
    if not name:
        name = f"civitai:{entry['modelVersionId']}" if entry.get("modelVersionId") is not None else "unknown"
    if entry.get("modelVersionName"):
        name = f"{name} {entry['modelVersionName']}"
    # a file hash when Civitai gives one, else the AIR that pins the exact model version
    digest = entry.get("hash") or entry.get("air")
    _add_resource(meta, _RESOURCE_KIND.get(kind, kind), str(name), digest, to_float(entry.get("weight")))


def _hash_list(meta: GenerationMetadata, value: Any, kind: str) -> None:
    if not isinstance(value, str):
        return
    for item in value.split(","):
        name, sep, digest = item.rpartition(":")
        if sep and name.strip():
            _add_resource(meta, kind, name.strip(), digest.strip() or None)


def _add_resource(meta: GenerationMetadata, kind: str, name: str, digest: Any = None, weight: float | None = None) -> None:
    family = _LORA_FAMILY if kind in _LORA_FAMILY else {kind}
    for resource in meta.resources:
        if resource.kind in family and resource.name == name:
            resource.hash = resource.hash or (str(digest) if digest else None)
            resource.weight = resource.weight if resource.weight is not None else weight
            return
    meta.resources.append(Resource(kind, name, str(digest) if digest else None, weight))


def _extra_networks_from_prompt(meta: GenerationMetadata) -> None:
    for tag, name, weight in _EXTRA_NETWORK.findall(meta.prompt or ""):
        _add_resource(meta, _KIND[tag.lower()], name.strip(), None, to_float(weight) if weight else 1.0)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
