"""ComfyUI graphs: find what each sampler was actually fed.

The API "prompt" graph (``{node_id: {"class_type", "inputs"}}``) is what executed; inputs
are literals or links ``[node_id, output_slot]``. We find sampler nodes, then walk links
upstream: conditioning inputs lead to text encoders (through combine/concat/area/ControlNet
nodes, guiders, reroutes, string and primitive nodes), the model input leads through LoRA
and patch nodes to a checkpoint or UNET loader.

Primary sampler rule (top-level prompt/seed/steps/...): among samplers that have no other
sampler upstream (first passes, not hires/refiner passes), the first in graph order whose
positive prompt resolved; else the first first-pass sampler. Every sampler is reported in
``extra["samplers"]`` with prompt texts stripped of surrounding whitespace; the top-level
prompt keeps the text verbatim.

Broken graphs (dangling links, cycles, wrong types) give a partial result and errors,
never an exception or an endless walk: every walk carries a visited set and a depth cap.
"""

from __future__ import annotations

from typing import Any

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.comfyui_workflow import workflow_to_api
from audit.meta.normalize import seed_text, to_float, to_int
from audit.meta.textcodec import load_json, looks_like_json_object

_MAX_DEPTH = 64
_NOT_CONDITIONING = {
    "clip", "model", "vae", "clip_vision", "clip_vision_output", "image", "images", "pixels", "mask",
    "control_net", "upscale_model", "samples", "latent", "latent_image", "style_model", "sigmas", "sampler",
    "noise", "ipadapter", "guider", "unet", "vae_name",
}
_TEXT_KEYS = ("text", "text_g", "text_l", "prompt", "positive_prompt", "string", "wildcard_text",
              "populated_text", "text_positive", "Text", "value")
_SEED_KEYS = ("seed", "noise_seed", "value", "int", "number", "Number", "seed_value")
_CHECKPOINT_KEYS = ("ckpt_name", "unet_name", "base_ckpt_name", "gguf_name", "model_path", "checkpoint")


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int)


def is_api_graph(value: Any) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    nodes = [v for v in value.values() if isinstance(v, dict) and "class_type" in v]
    return len(nodes) >= max(1, len(value) // 2)


def is_workflow_graph(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("nodes"), list)


class ComfyUIParser:
    name = "comfyui"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        errors: list[str] = []
        api = workflow = None
        api_source = workflow_source = None
        for piece in pieces:
            key = piece.key.lower()
            if key not in ("prompt", "workflow") and not looks_like_json_object(piece.text):
                continue
            if not looks_like_json_object(piece.text):
                continue
            value, problem = load_json(piece.text)
            if problem is not None:
                if key in ("prompt", "workflow"):
                    errors.append(f"comfyui graph in {piece.location} is not valid JSON ({problem})")
                continue
            if api is None and is_api_graph(value):
                api, api_source = value, piece.location
            elif workflow is None and is_workflow_graph(value):
                workflow, workflow_source = value, piece.location
        if api is None and workflow is not None:
            api, api_source = workflow_to_api(workflow, errors), workflow_source
        if api is None:
            if errors:
                meta = GenerationMetadata(generator="comfyui", source=errors and pieces[0].location)
                meta.extra["errors"] = errors
                return meta
            return None
        meta = analyse(api, errors)
        meta.source = api_source
        meta.extra["has_workflow"] = workflow is not None
        if errors:
            meta.extra["errors"] = errors
        return meta


class _Graph:
    def __init__(self, api: dict, errors: list[str]):
        self.nodes = {str(k): v for k, v in api.items() if isinstance(v, dict)}
        self.errors = errors
        self._reported: set[str] = set()

    def inputs(self, node_id: str) -> dict:
        node = self.nodes.get(node_id) or {}
        inputs = node.get("inputs")
        return inputs if isinstance(inputs, dict) else {}

    def class_type(self, node_id: str) -> str:
        return str((self.nodes.get(node_id) or {}).get("class_type", ""))

    def target(self, link: Any) -> str | None:
        """The node id a link points at, reporting dangling links once."""
        if not _is_link(link):
            return None
        node_id = str(link[0])
        if node_id not in self.nodes:
            if node_id not in self._reported:
                self._reported.add(node_id)
                self.errors.append(f"comfyui graph links to missing node {node_id}")
            return None
        return node_id

    # --- scalar values -------------------------------------------------------------
    def scalar(self, value: Any, keys: tuple[str, ...], depth: int = 0) -> Any:
        """A literal, following links into primitive/value nodes."""
        if not _is_link(value):
            return value
        node_id = self.target(value)
        if node_id is None or depth > _MAX_DEPTH:
            return None
        inputs = self.inputs(node_id)
        for key in keys:
            if key in inputs:
                return self.scalar(inputs[key], keys, depth + 1)
        scalars = [v for v in inputs.values() if not isinstance(v, (list, dict))]
        if len(scalars) == 1:
            return scalars[0]
        links = [v for v in inputs.values() if _is_link(v)]
        if len(links) == 1:
            return self.scalar(links[0], keys, depth + 1)
        return None

    def text(self, value: Any, depth: int = 0, seen: frozenset = frozenset()) -> str | None:
        """A string, following links into string/primitive/concatenate nodes."""
        if isinstance(value, str):
            return value
        if not _is_link(value) or depth > _MAX_DEPTH:
            return None
        node_id = self.target(value)
        if node_id is None or node_id in seen:
            if node_id in seen:
                self.errors.append(f"comfyui graph has a cycle through node {node_id}")
            return None
        seen = seen | {node_id}
        inputs = self.inputs(node_id)
        class_type = self.class_type(node_id).lower()
        if any(word in class_type for word in ("concat", "join", "combine", "append")):
            delimiter = inputs.get("delimiter", inputs.get("separator", ""))
            delimiter = delimiter if isinstance(delimiter, str) else ""
            parts = [self.text(v, depth + 1, seen) for k, v in inputs.items() if k not in ("delimiter", "separator", "clean_whitespace")]
            parts = [p for p in parts if p]
            return delimiter.join(parts) if parts else None
        for key in _TEXT_KEYS:
            if key in inputs:
                found = self.text(inputs[key], depth + 1, seen)
                if found is not None:
                    return found
        strings = [v for v in inputs.values() if isinstance(v, str)]
        return strings[0] if len(strings) == 1 else None

    # --- conditioning --------------------------------------------------------------
    def prompts(self, link: Any) -> list[dict]:
        """Text-encoder prompts that feed a conditioning link, in walk order."""
        found: list[dict] = []
        self._collect(link, found, set(), {}, 0)
        return found

    def _collect(self, link: Any, found: list[dict], seen: set, area: dict, depth: int) -> None:
        node_id = self.target(link)
        if node_id is None:
            return
        if node_id in seen or depth > _MAX_DEPTH:
            return
        seen.add(node_id)
        inputs = self.inputs(node_id)
        class_type = self.class_type(node_id)
        if class_type == "ConditioningZeroOut":
            return  # an empty conditioning: nothing that upstream says applies
        if class_type.startswith("ConditioningSetArea"):
            area = {"id": node_id, **{k: v for k, v in inputs.items() if not _is_link(v)}}
        texts = []
        for key in _TEXT_KEYS:
            if key in inputs and key != "value":
                value = self.text(inputs[key])
                if value is not None and value not in texts:
                    texts.append(value)
        if texts and ("clip" in inputs or "encode" in class_type.lower() or "prompt" in class_type.lower()):
            record = {"node_id": node_id, "text": "\n".join(t for t in texts if t.strip()) or texts[0]}
            if area:
                record[area_name(self, area)] = area
            found.append(record)
        for key, value in inputs.items():
            if key in _NOT_CONDITIONING or key in _TEXT_KEYS or not _is_link(value):
                continue
            self._collect(value, found, seen, area, depth + 1)

    # --- model chain ---------------------------------------------------------------
    def model_of(self, link: Any) -> tuple[str | None, str | None]:
        """(checkpoint name, loader node id) upstream of a model link."""
        seen: set[str] = set()
        for _ in range(_MAX_DEPTH):
            node_id = self.target(link)
            if node_id is None or node_id in seen:
                return None, None
            seen.add(node_id)
            inputs = self.inputs(node_id)
            for key in _CHECKPOINT_KEYS:
                name = inputs.get(key)
                if isinstance(name, str) and name:
                    return name, node_id
                if _is_link(name):
                    resolved = self.text(name)
                    if resolved:
                        return resolved, node_id
            if "model_name" in inputs and "upscale" not in self.class_type(node_id).lower():
                name = self.text(inputs["model_name"])
                if name:
                    return name, node_id
            link = next((v for k, v in inputs.items() if k.startswith("model") and _is_link(v)), None)
            if link is None:
                link = next((v for v in inputs.values() if _is_link(v)), None)
            if link is None:
                return None, None
        return None, None


def area_name(_graph: _Graph, _area: dict) -> str:
    return "ConditioningSetArea"


def _samplers(graph: _Graph) -> list[str]:
    found = []
    for node_id in graph.nodes:
        inputs = graph.inputs(node_id)
        latent = "latent_image" in inputs or "latent" in inputs
        if latent and ("positive" in inputs or "guider" in inputs):
            found.append(node_id)
    return found


def _upstream(graph: _Graph, node_id: str) -> set[str]:
    seen: set[str] = set()
    stack = [node_id]
    while stack and len(seen) < 100_000:
        current = stack.pop()
        for value in graph.inputs(current).values():
            if _is_link(value) and str(value[0]) in graph.nodes and str(value[0]) not in seen:
                seen.add(str(value[0]))
                stack.append(str(value[0]))
    return seen


def _follow(graph: _Graph, link: Any, wanted: tuple[str, ...]) -> str | None:
    """Follow a guider/sigmas/sampler link to the node that holds one of ``wanted``."""
    seen: set[str] = set()
    for _ in range(_MAX_DEPTH):
        node_id = graph.target(link)
        if node_id is None or node_id in seen:
            return None
        seen.add(node_id)
        inputs = graph.inputs(node_id)
        if any(key in inputs for key in wanted):
            return node_id
        links = [v for v in inputs.values() if _is_link(v)]
        if len(links) != 1:
            return node_id
        link = links[0]
    return None


def _describe_sampler(graph: _Graph, node_id: str) -> dict:
    inputs = graph.inputs(node_id)
    info: dict[str, Any] = {"node_id": node_id, "class_type": graph.class_type(node_id)}
    sampler = graph.scalar(inputs.get("sampler_name"), ("sampler_name",))
    if sampler is None and _is_link(inputs.get("sampler")):
        select = graph.target(inputs["sampler"])
        if select is not None:
            sampler = graph.scalar(graph.inputs(select).get("sampler_name"), ("sampler_name",)) or graph.class_type(select)
    info["sampler"] = sampler
    seed = graph.scalar(inputs.get("seed", inputs.get("noise_seed")), _SEED_KEYS)
    if seed is None and _is_link(inputs.get("noise")):
        noise = graph.target(inputs["noise"])
        if noise is not None:
            seed = graph.scalar(graph.inputs(noise).get("noise_seed", graph.inputs(noise).get("seed")), _SEED_KEYS)
    info["seed"] = seed
    steps, scheduler, denoise = inputs.get("steps"), inputs.get("scheduler"), inputs.get("denoise")
    if _is_link(inputs.get("sigmas")):
        sigmas = _follow(graph, inputs["sigmas"], ("scheduler", "steps"))
        if sigmas is not None:
            sig_inputs = graph.inputs(sigmas)
            steps = steps if steps is not None else sig_inputs.get("steps")
            scheduler = scheduler if scheduler is not None else sig_inputs.get("scheduler")
            denoise = denoise if denoise is not None else sig_inputs.get("denoise")
            if scheduler is None:
                scheduler = graph.class_type(sigmas).replace("Scheduler", "").lower() or None
    info["steps"] = graph.scalar(steps, ("steps", "value", "int"))
    info["scheduler"] = graph.scalar(scheduler, ("scheduler",))
    info["denoise"] = graph.scalar(denoise, ("denoise", "value", "float"))
    cfg = inputs.get("cfg")
    positive, negative, model = inputs.get("positive"), inputs.get("negative"), inputs.get("model")
    positive_links = [positive] if positive is not None else []
    if _is_link(inputs.get("guider")):
        guider = _follow(graph, inputs["guider"], ("positive", "conditioning", "cond1", "cfg"))
        if guider is not None:
            g = graph.inputs(guider)
            cfg = cfg if cfg is not None else g.get("cfg")
            model = model if model is not None else g.get("model")
            negative = negative if negative is not None else g.get("negative")
            positive_links = [g[k] for k in ("positive", "conditioning", "cond1", "cond2") if k in g]
    info["cfg_scale"] = graph.scalar(cfg, ("cfg", "value", "float"))
    info["model"], info["model_node_id"] = graph.model_of(model)
    prompts: list[dict] = []
    for link in positive_links:
        prompts.extend(graph.prompts(link))
    info["prompts_verbatim"] = prompts
    info["negative_verbatim"] = graph.prompts(negative) if negative is not None else []
    return info


def analyse(api: dict, errors: list[str]) -> GenerationMetadata:
    graph = _Graph(api, errors)
    meta = GenerationMetadata(generator="comfyui")
    sampler_ids = _samplers(graph)
    described = []
    for node_id in sampler_ids:
        try:
            described.append(_describe_sampler(graph, node_id))
        except (TypeError, AttributeError, ValueError, RecursionError) as exc:
            errors.append(f"comfyui sampler {node_id} unreadable: {type(exc).__name__}")
    sampler_set = set(sampler_ids)
    first_pass = [d for d in described if not (_upstream(graph, d["node_id"]) & sampler_set)]
    primary = next((d for d in first_pass if d["prompts_verbatim"]), None) or (first_pass or described or [None])[0]
    meta.extra["samplers"] = [_public(d) for d in described]
    if primary is not None:
        meta.prompt = "\n".join(p["text"] for p in primary["prompts_verbatim"]) or None
        if primary["negative_verbatim"]:
            meta.negative_prompt = "\n".join(p["text"] for p in primary["negative_verbatim"])
        meta.seed = seed_text(primary["seed"])
        meta.steps = to_int(primary["steps"])
        meta.cfg_scale = to_float(primary["cfg_scale"])
        meta.sampler = primary["sampler"] if isinstance(primary["sampler"], str) else None
        meta.scheduler = primary["scheduler"] if isinstance(primary["scheduler"], str) else None
        meta.model = primary["model"]
        if primary["denoise"] is not None:
            meta.extra["denoise"] = primary["denoise"]
        meta.extra["primary_sampler"] = primary["node_id"]
    meta.resources = _resources(graph)
    return meta


def _public(info: dict) -> dict:
    public = {k: v for k, v in info.items() if not k.endswith("_verbatim")}
    public["prompts"] = [{**p, "text": p["text"].strip()} for p in info["prompts_verbatim"]]
    public["negative_prompts"] = [{**p, "text": p["text"].strip()} for p in info["negative_verbatim"]]
    return public


def _resources(graph: _Graph) -> list[Resource]:
    resources: list[Resource] = []
    seen = set()

    def add(kind: str, name: Any, weight: Any = None) -> None:
        if isinstance(name, str) and name and name.lower() != "none" and (kind, name) not in seen:
            seen.add((kind, name))
            resources.append(Resource(kind, name, None, to_float(weight)))

    for node_id in graph.nodes:
        inputs = graph.inputs(node_id)
        class_type = graph.class_type(node_id).lower()
        for key in _CHECKPOINT_KEYS:
            add("checkpoint", inputs.get(key))
        if "lora_name" in inputs:
            add("lora", inputs["lora_name"], inputs.get("strength_model", inputs.get("strength")))
        for value in inputs.values():  # rgthree Power Lora Loader: {"on": true, "lora": name, "strength": w}
            if isinstance(value, dict) and "lora" in value and value.get("on", True):
                add("lora", value.get("lora"), value.get("strength"))
        add("vae", inputs.get("vae_name"))
        add("controlnet", inputs.get("control_net_name"))
        if "upscale" in class_type:
            add("upscaler", inputs.get("model_name"))
        for value in inputs.values():
            if isinstance(value, str) and "embedding:" in value:
                for part in value.split("embedding:")[1:]:
                    add("embedding", part.split(",")[0].split(")")[0].split(":")[0].strip())
    return resources
