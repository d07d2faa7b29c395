"""InvokeAI: ``invokeai_metadata`` JSON (3.x+), else the ``invokeai_graph`` / ``invokeai_workflow``
it ran (3.x+), ``sd-metadata`` JSON (2.x) and ``Dream`` text (1.x/2.x).

In InvokeAI the field called ``scheduler`` is the sampler ("euler_a", "dpmpp_2m_k").
Model references changed shape between versions: ``{"model_name", "base_model"}`` (3.x),
``{"key", "hash", "name", "base", "type"}`` (4.x+); LoRA entries are ``{"lora": ref, "weight"}``
(3.x) or ``{"model": ref, "weight"}`` (4.x+).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from audit.meta import limits
from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import unreadable
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import by_key, json_objects

_CORE_TYPES = ("core_metadata", "metadata_accumulator")
_MAX_DEPTH = 8


class InvokeAIParser:
    name = "invokeai"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        graph = _first_json(pieces, "invokeai_graph")
        workflow = _first_json(pieces, "invokeai_workflow")
        for data, piece in json_objects(pieces, "invokeai_metadata"):
            meta = _from_v3(data, piece.location)
            # the metadata node is filled by the UI; a hand-built workflow may leave gaps the graph answers
            if graph is not None:
                _fill_missing(meta, _from_graph(_graph_nodes(graph[0]), graph[1]))
            return meta
        for found, convert in ((graph, _graph_nodes), (workflow, _workflow_nodes)):
            if found is not None:
                meta = _from_graph(convert(found[0]), found[1])
                if meta is not None:
                    return meta
        for data, piece in json_objects(pieces, "sd-metadata"):
            return _from_v2(data, piece.location)
        for piece in by_key(pieces, "Dream"):
            meta = _from_dream(piece.text, piece.location)
            if meta is not None:
                return meta
        return unreadable(
            pieces, "invokeai", ("invokeai_metadata", "invokeai_graph", "invokeai_workflow", "sd-metadata")
        )


def _first_json(pieces: list[MetadataText], key: str) -> tuple[dict, str] | None:
    return next(((data, piece.location) for data, piece in json_objects(pieces, key)), None)


def _ref(value: Any) -> tuple[str | None, str | None]:
    """(name, hash) of a model reference in any version's shape, or a bare name."""
    if isinstance(value, dict):
        name = to_text(value.get("name") or value.get("model_name") or value.get("key"))
        return name, to_text(value.get("hash"))
    return to_text(value), None


def _model(meta: GenerationMetadata, model: Any) -> None:
    meta.model, meta.model_hash = _ref(model)
    if meta.model or meta.model_hash:
        meta.resources.append(Resource("checkpoint", meta.model or meta.model_hash, meta.model_hash))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _from_v3(data: dict, location: str) -> GenerationMetadata:
    meta = GenerationMetadata(generator="invokeai", source=location)
    meta.prompt = to_text(data.get("positive_prompt"))
    meta.negative_prompt = _text(data.get("negative_prompt"))
    meta.seed = seed_text(data.get("seed"))
    meta.steps = to_int(data.get("steps"))
    meta.cfg_scale = to_float(data.get("cfg_scale"))
    if meta.cfg_scale is None:
        meta.cfg_scale = to_float(data.get("guidance"))  # FLUX records its guidance instead
    meta.sampler = to_text(data.get("scheduler"))
    _model(meta, data.get("model"))
    for lora in data.get("loras") if isinstance(data.get("loras"), list) else []:
        if isinstance(lora, dict):
            name, digest = _ref(lora.get("model") or lora.get("lora"))
            if name:
                meta.resources.append(Resource("lora", name, digest, to_float(lora.get("weight"))))
    for key, kind in (("vae", "vae"), ("refiner_model", "checkpoint")):
        name, digest = _ref(data.get(key)) if isinstance(data.get(key), dict) else (None, None)
        if name:
            meta.resources.append(Resource(kind, name, digest))
    for key in (
        "width",
        "height",
        "generation_mode",
        "app_version",
        "clip_skip",
        "strength",
        "positive_style_prompt",
        "negative_style_prompt",
        "init_image",
    ):
        if data.get(key) not in (None, ""):
            meta.extra[key] = data[key]
    return meta


def _fill_missing(meta: GenerationMetadata, other: GenerationMetadata | None) -> None:
    if other is None:
        return
    for name in GenerationMetadata.FIELDS:
        if getattr(meta, name) in (None, "") and getattr(other, name) not in (None, ""):
            setattr(meta, name, getattr(other, name))
    if not any(r.kind == "lora" for r in meta.resources):
        meta.resources.extend(r for r in other.resources if r.kind == "lora")


# --- graphs: {"nodes": {id: {"type", field: value}}, "edges": [{"source": {"node_id", "field"},
# "destination": {...}}]}; workflows (the editor's copy) are converted to the same shape.


def _graph_nodes(graph: dict) -> tuple[dict, dict]:
    nodes = graph.get("nodes")
    nodes = {str(k): v for k, v in nodes.items() if isinstance(v, dict)} if isinstance(nodes, dict) else {}
    links: dict[tuple[str, str], tuple[str, str]] = {}
    for edge in graph.get("edges") if isinstance(graph.get("edges"), list) else []:
        if (
            isinstance(edge, dict)
            and isinstance(edge.get("source"), dict)
            and isinstance(edge.get("destination"), dict)
        ):
            src, dst = edge["source"], edge["destination"]
            links[(str(dst.get("node_id")), str(dst.get("field")))] = (str(src.get("node_id")), str(src.get("field")))
    return nodes, links


def _workflow_nodes(workflow: dict) -> tuple[dict, dict]:
    nodes: dict[str, dict] = {}
    for node in workflow.get("nodes") if isinstance(workflow.get("nodes"), list) else []:
        data = node.get("data") if isinstance(node, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict):
            continue  # notes and other non-invocation nodes
        fields = {k: v.get("value") for k, v in data["inputs"].items() if isinstance(v, dict)}
        fields["type"] = data.get("type")
        nodes[str(data.get("id", node.get("id")))] = fields
    links = {}
    for edge in workflow.get("edges") if isinstance(workflow.get("edges"), list) else []:
        if isinstance(edge, dict) and edge.get("type", "default") == "default":
            links[(str(edge.get("target")), str(edge.get("targetHandle")))] = (
                str(edge.get("source")),
                str(edge.get("sourceHandle")),
            )
    return nodes, links


class _Resolver:
    """Input values of a graph's nodes, each (node, field) resolved once: a core node with a
    hundred thousand fields fed through chains must not walk each chain again and again."""

    def __init__(self, nodes: dict, links: dict):
        self.nodes, self.links = nodes, links
        self._known: dict[tuple[str, str], Any] = {}
        self._busy: set[tuple[str, str]] = set()

    def value(self, node_id: str, name: str, depth: int = 0) -> Any:
        """What an edge feeds the input (a connected input's stored value is a stale default),
        else the node's own (primitive nodes such as ``string``/``integer`` hold theirs in ``value``)."""
        key = (node_id, name)
        if key in self._known:
            return self._known[key]
        if depth > _MAX_DEPTH or key in self._busy:
            return None
        limits.tick()
        self._busy.add(key)
        own = self.nodes.get(node_id, {}).get(name)
        found = None
        source = self.links.get(key)
        if source is not None and source[0] in self.nodes:
            found = self.value(source[0], source[1], depth + 1)
            if found is None:
                found = self.value(source[0], "value", depth + 1)
        self._busy.discard(key)
        result = found if found is not None else own
        self._known[key] = result
        return result


def _prompt_into(resolver: _Resolver, node_id: str, name: str) -> str | None:
    """Follow a conditioning input back (through collect nodes) to the text encoder's prompt."""
    nodes, links = resolver.nodes, resolver.links
    seen = set()
    current = links.get((node_id, name))
    while current is not None and current[0] in nodes and current[0] not in seen:
        limits.tick()
        seen.add(current[0])
        node = nodes[current[0]]
        if "prompt" in node:
            return _text(resolver.value(current[0], "prompt"))
        current = links.get((current[0], "item")) or links.get((current[0], "collection"))
    return None


def _from_graph(found: tuple[dict, dict], location: str) -> GenerationMetadata | None:
    nodes, links = found
    resolver = _Resolver(nodes, links)
    core = next((i for i, n in nodes.items() if n.get("type") in _CORE_TYPES), None)
    if core is not None:
        names = set(nodes[core]) | {f for (n, f) in links if n == core}
        fields = {k: resolver.value(core, k) for k in names}
        meta = _from_v3(fields, location)
        if meta.prompt is not None or meta.seed is not None:
            return meta
    denoise = next((i for i, n in nodes.items() if "denoise" in str(n.get("type", "")) and "steps" in n), None)
    if denoise is None:
        return None
    meta = GenerationMetadata(generator="invokeai", source=location)
    meta.steps = to_int(resolver.value(denoise, "steps"))
    meta.cfg_scale = to_float(resolver.value(denoise, "cfg_scale"))
    if meta.cfg_scale is None:
        meta.cfg_scale = to_float(resolver.value(denoise, "guidance"))
    meta.sampler = to_text(resolver.value(denoise, "scheduler"))
    seed = resolver.value(denoise, "seed")
    noise = links.get((denoise, "noise"))
    if seed is None and noise is not None:
        seed = resolver.value(noise[0], "seed")
    meta.seed = seed_text(seed)
    for field_name, target in (
        ("positive_conditioning", "prompt"),
        ("positive_text_conditioning", "prompt"),
        ("negative_conditioning", "negative_prompt"),
        ("negative_text_conditioning", "negative_prompt"),
    ):
        if getattr(meta, target) is None:
            setattr(meta, target, _prompt_into(resolver, denoise, field_name))
    for node_id, node in nodes.items():
        kind = str(node.get("type", ""))
        if kind.endswith("model_loader") and meta.model is None and isinstance(node.get("model"), dict):
            _model(meta, node["model"])
        elif "lora" in kind and isinstance(node.get("lora"), dict):
            name, digest = _ref(node["lora"])
            if name:
                meta.resources.append(Resource("lora", name, digest, to_float(resolver.value(node_id, "weight"))))
    return meta if meta.prompt is not None or meta.seed is not None else None


# --- 2.x: {"model_weights"|"model_id", "model_hash", "image": {...}} or {"images": [{...}]}


def _from_v2(data: dict, location: str) -> GenerationMetadata:
    meta = GenerationMetadata(generator="invokeai", source=location)
    image = data.get("image")
    if not isinstance(image, dict) and isinstance(data.get("images"), list):  # early 2.x: one entry per seed
        image = next((i for i in data["images"] if isinstance(i, dict)), None)
    image = image if isinstance(image, dict) else {}
    prompt = image.get("prompt")
    if isinstance(prompt, list):  # weighted sub-prompts; InvokeAI repacks them as "text:weight,..."
        parts = [p for p in prompt if isinstance(p, dict) and isinstance(p.get("prompt"), str)]
        if len(parts) == 1:
            prompt = parts[0]["prompt"]
        elif parts:
            prompt = ",".join(f"{p['prompt']}:{p.get('weight', 1)}" for p in parts)
        else:
            prompt = None
    if isinstance(prompt, str):
        meta.prompt, meta.negative_prompt = _split_brackets(prompt)
    meta.seed = seed_text(image.get("seed"))
    meta.steps = to_int(image.get("steps"))
    meta.cfg_scale = to_float(image.get("cfg_scale"))
    meta.sampler = to_text(image.get("sampler") or image.get("sampler_name"))
    # "model" is the constant "stable diffusion"; the weights' name is model_weights (2.1+) or model_id
    meta.model = to_text(data.get("model_weights") or data.get("model_id"))
    meta.model_hash = to_text(data.get("model_hash"))
    if meta.model or meta.model_hash:
        meta.resources.append(Resource("checkpoint", meta.model or meta.model_hash, meta.model_hash))
    for key in ("width", "height", "type", "app_version", "strength"):
        source = data if key == "app_version" else image
        if source.get(key) not in (None, ""):
            meta.extra[key] = source[key]
    return meta


def _split_brackets(prompt: str) -> tuple[str, str | None]:
    """InvokeAI writes negative terms in [square brackets] inside the prompt."""
    negatives = re.findall(r"\[([^\[\]]*)\]", prompt)
    positive = re.sub(r"[ \t]?\[[^\[\]]*\]", "", prompt).strip()  # one space goes with each bracket
    return positive, (", ".join(n.strip() for n in negatives) if negatives else None)


# --- 1.x/2.x "Dream": the prompt (quoted in 1.x, bare in 2.x) then switches, "-s 50" or "-s50"

# the first switch: a whitespace then "-x" or "--x" (one pattern position per character: a lazy
# "(.*?)\s+" before it was quadratic in runs of spaces)
_SWITCH = re.compile(r"\s--?[a-zA-Z]")
_MAX_SWITCHES = 64 * 1024  # characters of switches read (shlex is slow; honest ones are short)
_FLAGS = {
    "-s": "steps",
    "--steps": "steps",
    "-S": "seed",
    "--seed": "seed",
    "-C": "cfg",
    "--cfg_scale": "cfg",
    "-A": "sampler",
    "-m": "sampler",
    "--sampler": "sampler",
    "-W": "width",
    "--width": "width",
    "-H": "height",
    "--height": "height",
    "-f": "strength",
    "--strength": "strength",
}


def _from_dream(text: str, location: str) -> GenerationMetadata | None:
    text = text.strip()
    match = _SWITCH.search(text)
    if not match:
        return None
    prompt, switches = text[: match.start()].strip(), text[match.start() + 1 : match.start() + 1 + _MAX_SWITCHES]
    if len(prompt) >= 2 and prompt[0] == prompt[-1] and prompt[0] in "\"'":
        prompt = prompt[1:-1]
    try:
        tokens = shlex.split(switches)
    except ValueError:
        tokens = switches.split()
    values: dict[str, str] = {}
    for i, token in enumerate(tokens):
        if token in _FLAGS and i + 1 < len(tokens):
            values.setdefault(_FLAGS[token], tokens[i + 1])
        elif token[:2] in _FLAGS and len(token) > 2 and not token.startswith("--"):  # "-s50"
            values.setdefault(_FLAGS[token[:2]], token[2:])
        elif "=" in token and token.split("=", 1)[0] in _FLAGS:  # "--steps=50"
            flag, value = token.split("=", 1)
            values.setdefault(_FLAGS[flag], value)
    if not any(k in values for k in ("steps", "seed", "cfg", "sampler")):
        return None
    meta = GenerationMetadata(generator="invokeai", source=location)
    meta.prompt, meta.negative_prompt = _split_brackets(prompt)
    meta.steps = to_int(values.get("steps"))
    meta.seed = seed_text(values.get("seed"))
    meta.cfg_scale = to_float(values.get("cfg"))
    meta.sampler = values.get("sampler")
    for key in ("width", "height", "strength"):
        if key in values:
            meta.extra[key] = values[key]
    return meta
