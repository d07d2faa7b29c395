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

Parsing is linear in the text, whatever it holds: a bracket that never closes sends its
scan to the end of the line, so bracket scans of one line share a budget of twice its
length, after which brackets are plain values (96 KB of unclosed ``[`` took 70 s when each
scanned the rest of the line). The patterns cannot backtrack across a value.
"""

from __future__ import annotations

import re
from typing import Any

from audit import safejson
from audit.meta import limits
from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int

_KEY = re.compile(r"\s*([A-Za-z][\w \-/().]*?):\s*")
_NEGATIVE = "Negative prompt:"
# possessive, and never across a "<": a tag that does not close costs one pass, not a pass per character
_EXTRA_NETWORK = re.compile(r"<(lora|lyco|hypernet):([^:<>]++)(?::([^:<>]*+))?[^<>]*+>", re.I)
_QUOTED_REST = re.compile(r'(?:[^"\\]++|\\.)*+"', re.S)  # the rest of a quoted value, through its closing quote
_STRUCTURE = re.compile(r'[\[\]{}"\\]')
_BRACKET_SCAN_FACTOR = 2  # bracket scans of one line may read it this many times over
_KIND = {"lora": "lora", "lyco": "lycoris", "hypernet": "hypernetwork"}
# A1111 >= 1.5 loads <lyco:> through the Lora extension, so "Lora hashes" names both
_LORA_FAMILY = {"lora", "lycoris"}
_TEMPLATE_LABELS = (("Template:", "template"), ("Negative Template:", "negative_template"))
# resource types as Civitai and the civitai extension's "Hashes" keys spell them
_RESOURCE_KIND = {
    "lyco": "lycoris",
    "locon": "lycoris",
    "embed": "embedding",
    "textualinversion": "embedding",
    "hypernet": "hypernetwork",
    "model": "checkpoint",
}
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
    resources = _Resources(meta)
    if meta.prompt:
        _extra_networks_from_prompt(meta, resources)  # first, so hashes below attach to these by name
    _apply_parameters(meta, params, resources)
    meta.extra.update(tail)
    if resources.skipped:
        meta.extra["errors"] = [f"a1111: {resources.skipped} more resources than {limits.MAX_RESOURCES} not kept"]
    return meta


class _Resources:
    """The result's resources, indexed by (family, name) so that merging a hash or weight into
    the entry of the same name stays linear however many entries a text lists."""

    def __init__(self, meta: GenerationMetadata):
        self.meta = meta
        self.index: dict[tuple[str, str], Resource] = {}
        self.skipped = 0

    @staticmethod
    def _key(kind: str, name: str) -> tuple[str, str]:
        return ("lora" if kind in _LORA_FAMILY else kind), name

    def add(self, kind: str, name: str, digest: Any = None, weight: float | None = None) -> None:
        same = self.index.get(self._key(kind, name))
        if same is not None:
            same.hash = same.hash or (str(digest) if digest else None)
            same.weight = same.weight if same.weight is not None else weight
            return
        if len(self.meta.resources) >= limits.MAX_RESOURCES:
            self.skipped += 1
            return
        resource = Resource(kind, name, str(digest) if digest else None, weight)
        self.meta.resources.append(resource)
        self.index[self._key(kind, name)] = resource

    def put_first(self, resource: Resource) -> None:
        self.meta.resources.insert(0, resource)
        self.index[self._key(resource.kind, resource.name)] = resource  # first in the list: found first

    def put_last(self, resource: Resource) -> None:
        self.meta.resources.append(resource)
        self.index.setdefault(self._key(resource.kind, resource.name), resource)


def _find_parameter_line(lines: list[str]) -> int | None:
    # sd-dynamic-prompts appends "Template:" right after the parameter line; its template may
    # span lines that look like parameters, so an anchored template decides first
    for index in range(1, len(lines)):
        if lines[index].startswith(tuple(label for label, _ in _TEMPLATE_LABELS)) and _is_parameter_line(
            lines[index - 1]
        ):
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
    scan_budget = [_BRACKET_SCAN_FACTOR * end + 4096]
    while pos < end:
        limits.tick()
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
        elif pos < end and line[pos] in "[{" and scan_budget[0] > 0:
            value, pos = _bracketed(line, pos, scan_budget)
        else:
            comma = line.find(",", pos)
            comma = end if comma < 0 else comma
            value, pos = line[pos:comma].strip(), comma
        params[key] = value
        while pos < end and line[pos] in ", ":
            pos += 1
    return params


def _quoted(line: str, pos: int) -> tuple[str, int]:
    match = _QUOTED_REST.match(line, pos + 1)
    if match is None:  # never closed: the rest of the line
        return line[pos + 1 :], len(line)
    raw = line[pos : match.end()]
    try:
        return safejson.loads(raw), match.end()
    except ValueError:
        return raw[1:-1], match.end()


def _bracketed(line: str, pos: int, scan_budget: list[int]) -> tuple[Any, int]:
    """A JSON value starting at ``pos``, or the text to the next comma when it never closes
    (within what is left of the line's scan budget, which this scan spends)."""
    depth, in_string, escaped = 0, False, -1
    stop = min(len(line), pos + scan_budget[0])
    for match in _STRUCTURE.finditer(line, pos, stop):
        index, char = match.start(), match.group()
        if in_string:
            if index == escaped:
                continue
            if char == "\\":
                escaped = index + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                scan_budget[0] -= index + 1 - pos
                raw = line[pos : index + 1]
                value, problem = limits.parse_json(raw)
                return (raw if problem is not None else value), index + 1
    scan_budget[0] -= stop - pos
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


def _apply_parameters(meta: GenerationMetadata, params: dict[str, Any], resources: _Resources) -> None:
    lookup = {k.lower(): v for k, v in params.items()}
    meta.steps = to_int(lookup.get("steps"))
    meta.sampler = _text(lookup.get("sampler"))
    meta.scheduler = _text(lookup.get("schedule type") or lookup.get("scheduler"))
    meta.cfg_scale = to_float(lookup.get("cfg scale"))
    meta.seed = seed_text(lookup.get("seed"))
    meta.model = _text(lookup.get("model"))
    meta.model_hash = _text(lookup.get("model hash"))
    vae_hash = _text(lookup.get("vae hash"))
    _hash_list(resources, lookup.get("lora hashes"), "lora")
    _hash_list(resources, lookup.get("ti hashes"), "embedding")
    if lookup.get("hypernet"):  # A1111 before extra networks: "Hypernet: name, Hypernet hash: ..."
        resources.add(
            "hypernetwork",
            str(lookup["hypernet"]),
            _text(lookup.get("hypernet hash")),
            to_float(lookup.get("hypernet strength")),
        )
    hashes = lookup.get("hashes")  # civitai extension: {"model": h, "vae": h, "lora:name": h, "embed:name": h}
    if isinstance(hashes, dict):
        for name, value in hashes.items():
            kind, _, short = str(name).partition(":")
            if kind == "model":
                meta.model_hash = meta.model_hash or _text(value)
            elif kind == "vae":
                vae_hash = vae_hash or _text(value)
            elif short:
                resources.add(_RESOURCE_KIND.get(kind, kind), short, _text(value))
    if meta.model or meta.model_hash:
        resources.put_first(Resource("checkpoint", meta.model or meta.model_hash, meta.model_hash))
    if lookup.get("vae") or vae_hash:
        resources.put_last(Resource("vae", str(lookup.get("vae") or vae_hash), vae_hash))
    civitai = lookup.get("civitai resources")
    if isinstance(civitai, list):
        for entry in civitai:
            if isinstance(entry, dict):
                _civitai_resource(resources, entry)
    size = lookup.get("size")
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        meta.extra["width"], meta.extra["height"] = to_int(width), to_int(height)
    for key, name in (("clip skip", "clip_skip"), ("denoising strength", "denoise"), ("version", "version")):
        if lookup.get(key) is not None:
            meta.extra[name] = lookup[key]
    meta.extra["parameters"] = params


def _civitai_resource(resources: _Resources, entry: dict[str, Any]) -> None:
    """One entry of Civitai's ``Civitai resources``: type, modelName, modelVersionName,
    modelVersionId, weight, and on newer images an AIR URN instead of names."""
    kind = str(entry.get("type") or "resource").lower()
    name = entry.get("modelName") or entry.get("name") or entry.get("air")
    if not name:
        name = f"civitai:{entry['modelVersionId']}" if entry.get("modelVersionId") is not None else "unknown"
    if entry.get("modelVersionName"):
        name = f"{name} {entry['modelVersionName']}"
    # a file hash when Civitai gives one, else the AIR that pins the exact model version, else
    # the model version id as "civitai:<id>" (what a list of Civitai AIRs matches against)
    digest = entry.get("hash") or entry.get("air")
    if not digest and str(entry.get("modelVersionId", "")).isdigit():
        digest = f"civitai:{entry['modelVersionId']}"
    resources.add(_RESOURCE_KIND.get(kind, kind), str(name), digest, to_float(entry.get("weight")))


def _hash_list(resources: _Resources, value: Any, kind: str) -> None:
    if not isinstance(value, str):
        return
    for item in value.split(","):
        limits.tick()
        name, sep, digest = item.rpartition(":")
        if sep and name.strip():
            resources.add(kind, name.strip(), digest.strip() or None)


def _extra_networks_from_prompt(meta: GenerationMetadata, resources: _Resources) -> None:
    for match in _EXTRA_NETWORK.finditer(meta.prompt or ""):
        limits.tick()
        tag, name, weight = match.group(1), match.group(2), match.group(3)
        resources.add(_KIND[tag.lower()], name.strip(), None, to_float(weight) if weight else 1.0)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
