"""ComfyUI graphs: find what each sampler was actually fed.

The API "prompt" graph (``{node_id: {"class_type", "inputs"}}``) is what executed; inputs
are literals or links ``[node_id, output_slot]``. We find sampler nodes (KSampler and
friends, SamplerCustom(Advanced) through their noise/guider/sampler/sigmas nodes,
efficiency-nodes samplers, detailers), then walk links upstream: conditioning inputs lead
to text encoders (through combine/concat/area/ControlNet nodes, guiders, reroutes, string
and primitive nodes), the model input leads through LoRA and patch nodes to a checkpoint or
UNET loader. Nodes that carry both a positive and a negative branch (ControlNetApplyAdvanced,
InpaintModelConditioning, efficiency-nodes loaders, pipes) are followed along the branch the
sampler asked for; string nodes with a positive and a negative output (prompt stylers) by
output slot.

Primary sampler rule (top-level prompt/seed/steps/...): among samplers that have no other
sampler upstream (first passes, not hires/refiner passes), the first in graph order whose
positive prompt resolved; else the first first-pass sampler. Every sampler is reported in
``extra["samplers"]``, the primary first, with prompt texts stripped of surrounding
whitespace; the top-level prompt keeps the text verbatim.

Broken graphs (dangling links, cycles, wrong types) give a partial result and errors,
never an exception or an endless walk. Walks are linear in the graph's size: texts are
memoised per output, conditioning walks keep one visited set, and a visit budget bounds
graphs with very many samplers. Hostile graphs are bounded too: every look at a node's
inputs is counted against a work budget (``_MAX_WORK``), texts built by concatenate and
replace nodes against a text budget (a ladder of concatenations doubles a string at every
level), and at most ``_MAX_SAMPLERS`` samplers and ``_MAX_PROMPTS`` prompts per sampler are
described; past a budget the result is what was found, with an error that says so.
"""

from __future__ import annotations

import re
from typing import Any

from audit.meta import limits
from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.comfyui_workflow import workflow_to_api
from audit.meta.normalize import seed_text, to_float, to_int
from audit.meta.textcodec import load_json, looks_like_json_object

_MAX_DEPTH = 64
_MAX_WALK = 2_000_000  # node visits per graph over all conditioning walks
_MAX_TEXT = 65536  # concatenation ladders could otherwise double a string at every level
_MAX_BUILT_TEXT = 8 << 20  # characters of text built by joins and replacements per graph
_MAX_WORK = 10_000_000  # node inputs looked at per graph, over the whole analysis
_MAX_SAMPLERS = 256
_MAX_PROMPTS = 256  # prompt records per conditioning walk
_NOT_CONDITIONING = {
    "clip",
    "model",
    "vae",
    "clip_vision",
    "clip_vision_output",
    "image",
    "images",
    "pixels",
    "mask",
    "control_net",
    "upscale_model",
    "samples",
    "latent",
    "latent_image",
    "style_model",
    "sigmas",
    "sampler",
    "noise",
    "ipadapter",
    "guider",
    "unet",
    "vae_name",
    "optional_vae",
    "script",
    "lora_stack",
    "cnet_stack",
}
# Inputs that hold prompt text, across encoders: SD/SDXL, Flux and SD3 (clip_l/clip_g/t5xxl),
# HunyuanDiT (bert/mt5xl), HiDream (llama), Lumina 2 (user_prompt), string and primitive nodes.
_TEXT_KEYS = (
    "text",
    "text_g",
    "text_l",
    "clip_l",
    "clip_g",
    "t5xxl",
    "bert",
    "mt5xl",
    "llama",
    "user_prompt",
    "prompt",
    "positive_prompt",
    "string",
    "populated_text",
    "wildcard_text",
    "text_positive",
    "Text",
    "value",
)
_ENCODER_TEXT_KEYS = tuple(k for k in _TEXT_KEYS if k != "value")
# Inputs joined by concatenate/append nodes: text_a (WAS, pysssss), text1 (Comfyroll), string_a (core), string1 (KJNodes)
_PART = re.compile(r"^(text|string|str|prompt)[ _]?([a-z]|\d+)$", re.IGNORECASE)
_SEED_KEYS = ("seed", "noise_seed", "value", "int", "number", "Number", "seed_value")
_CHECKPOINT_KEYS = ("ckpt_name", "unet_name", "base_ckpt_name", "gguf_name", "model_path", "checkpoint")
_NO_FILE = {"none", "baked vae", ""}
_ROLES = ("positive", "negative")


class _GraphTooLarge(Exception):
    """The graph's work budget is spent: the analysis stops with what it has."""


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int)
    )


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
        meta = None
        try:
            if api is None and workflow is not None:
                api, api_source = workflow_to_api(workflow, errors), workflow_source
            if api is not None:
                meta = analyse(api, errors)
        except Exception as exc:  # noqa: BLE001 - a graph shape nobody foresaw: keep what is known, say why
            errors.append(f"comfyui graph unreadable: {type(exc).__name__}: {exc}")
            meta = GenerationMetadata(generator="comfyui") if api is not None else None
        if meta is None:
            if errors:
                meta = GenerationMetadata(generator="comfyui", source=pieces[0].location)
                meta.extra["errors"] = errors
                return meta
            return None
        meta.source = api_source
        meta.extra["has_workflow"] = workflow is not None
        if errors:
            meta.extra["errors"] = list(dict.fromkeys(errors))  # a broken graph repeats itself
        return meta


class _Graph:
    def __init__(self, api: dict, errors: list[str]):
        self.nodes = {str(k): v for k, v in api.items() if isinstance(v, dict)}
        self.errors = errors
        self._reported: set[str] = set()
        self._texts: dict[tuple[str, int], str | None] = {}  # (node, output slot) -> text; keeps walks linear
        self._busy: set[tuple[str, int]] = set()
        self._prompts: dict[Any, tuple[list[dict], dict]] = {}
        self._budget = _MAX_WALK
        self._work = _MAX_WORK
        self._text_left = _MAX_BUILT_TEXT
        self._stripped: dict[str, str] = {}

    def spend(self, amount: int) -> None:
        limits.tick()
        self._work -= amount
        if self._work < 0:
            raise _GraphTooLarge

    def inputs(self, node_id: str) -> dict:
        node = self.nodes.get(node_id) or {}
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            self.spend(1)
            return {}
        self.spend(1 + len(inputs))  # callers look at every input
        return inputs

    def built(self, text: str | None) -> str | None:
        """A text a join or replacement made, charged to the graph's text budget."""
        if text is None:
            return None
        if len(text) > self._text_left:
            if self._text_left >= 0:
                self.errors.append("comfyui graph builds too much text: concatenations stopped")
            self._text_left = -1
            return None
        self._text_left -= len(text)
        return text

    def stripped(self, text: str) -> str:
        """``text.strip()``, once per text: thousands of samplers may share one long prompt."""
        found = self._stripped.get(text)
        if found is None:
            found = self._stripped[text] = text.strip()
        return found

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

    def text(self, value: Any, depth: int = 0) -> str | None:
        """A string, following links into string/primitive/concatenate nodes."""
        if isinstance(value, str):
            return value
        if not _is_link(value) or depth > _MAX_DEPTH:
            return None
        node_id = self.target(value)
        if node_id is None:
            return None
        key = (node_id, value[1])
        if key in self._texts:
            return self._texts[key]
        if key in self._busy:
            self.errors.append(f"comfyui graph has a cycle through node {node_id}")
            return None
        self._busy.add(key)
        found = self._text_of(node_id, value[1], depth)
        self._busy.discard(key)
        if found is not None and len(found) > _MAX_TEXT:
            found = found[:_MAX_TEXT]
        self._texts[key] = found
        return found

    def _text_of(self, node_id: str, slot: int, depth: int) -> str | None:
        inputs = self.inputs(node_id)
        class_type = self.class_type(node_id).lower()
        # prompt stylers and the like: output 0 is the positive text, output 1 the negative
        pair = _role_pair(inputs)
        if pair is not None:
            return self.text(inputs[pair[1] if slot == 1 else pair[0]], depth + 1)
        parts_keys = [k for k in inputs if _PART.match(k) and k not in _TEXT_KEYS]  # not text_g/text_l
        action = inputs.get("action")
        if action == "replace" and isinstance(inputs.get("text_b"), str):  # pysssss StringFunction
            base, old = self.text(inputs.get("text_a"), depth + 1), inputs["text_b"]
            new = self.text(inputs.get("text_c"), depth + 1) or ""
            if base is None or not old:
                return base
            # every "a" of 64 K replaced by 64 K: bound the result before building it
            room = max(0, (_MAX_TEXT - len(base)) // max(1, len(new) - len(old))) if len(new) > len(old) else -1
            return self.built(base.replace(old, new, room)[:_MAX_TEXT])
        joining = action == "append" or any(w in class_type for w in ("concat", "join", "combine", "append", "merge"))
        if joining or len(parts_keys) >= 2:
            delimiter = inputs.get(
                "delimiter", inputs.get("separator", ", " if inputs.get("tidy_tags") == "yes" else "")
            )
            delimiter = delimiter if isinstance(delimiter, str) else ""
            keys = parts_keys or [k for k in inputs if k not in ("delimiter", "separator", "clean_whitespace")]
            parts = [self.text(inputs[k], depth + 1) for k in keys]
            parts = [p.strip() if inputs.get("clean_whitespace") == "true" else p for p in parts if p]
            return self.built(limits.bounded_join(parts, delimiter, _MAX_TEXT)) if parts else None
        for key in _TEXT_KEYS:
            if key in inputs:
                found = self.text(inputs[key], depth + 1)
                if found is not None:
                    return found
        strings = [v for v in inputs.values() if isinstance(v, str)]
        return strings[0] if len(strings) == 1 else None

    # --- conditioning --------------------------------------------------------------
    def prompts(self, link: Any, role: str, notes: dict) -> list[dict]:
        """Text-encoder prompts that feed a conditioning link, in walk order.

        ``role`` ("positive"/"negative") picks the branch at nodes that carry both, such as
        ControlNetApplyAdvanced, InpaintModelConditioning, efficiency-nodes loaders and
        samplers, pipe nodes. The walk is an explicit depth-first stack with one visited set:
        linear in the graph's size, whatever its depth or shape.
        """
        cache_key = (str(link[0]), link[1], role) if _is_link(link) else None
        if cache_key in self._prompts:  # samplers of one graph often share their conditioning
            found, cached_notes = self._prompts[cache_key]
            for key, value in cached_notes.items():
                notes.setdefault(key, value)
            return list(found)
        found = []
        own_notes: dict = {}
        self._collect(link, role, found, own_notes)
        self._prompts[cache_key] = (found, own_notes)
        for key, value in own_notes.items():
            notes.setdefault(key, value)
        return list(found)

    def _collect(self, link: Any, role: str, found: list[dict], notes: dict) -> None:
        seen: set[str] = set()
        stack: list[tuple[Any, dict]] = [(link, {})]
        while stack:
            current, area = stack.pop()
            node_id = self.target(current)
            if node_id is None or node_id in seen:
                continue
            seen.add(node_id)
            self._budget -= 1
            if self._budget < 0:  # many samplers over one huge graph: bounded time, said so
                if self._budget == -1:
                    self.errors.append("comfyui graph too large: conditioning walks stopped early")
                return
            inputs = self.inputs(node_id)
            class_type = self.class_type(node_id)
            if class_type == "ConditioningZeroOut":
                continue  # an empty conditioning: nothing that upstream says applies
            if class_type.startswith("ConditioningSetArea"):
                area = {"id": node_id, **{k: v for k, v in inputs.items() if not _is_link(v)}}
            guidance = inputs.get("guidance")
            if isinstance(guidance, (int, float)) and not isinstance(guidance, bool):
                notes.setdefault("guidance", guidance)  # the node nearest the sampler is the one that applied
            if role in inputs and all(r in inputs for r in _ROLES):
                record = self._role_text(node_id, inputs[role])
                if record is not None:
                    found.append(record)
                elif _is_link(inputs[role]):
                    stack.append((inputs[role], area))
                continue
            texts: list[str] = []
            for key in inputs:
                if key == "wildcard_text" and inputs.get("populated_text"):
                    continue  # Impact Pack: the populated text is what was encoded, the other its template
                if key in _ENCODER_TEXT_KEYS:
                    value = self.text(inputs[key])
                    if value is not None and value not in texts:
                        texts.append(value)
            if texts and ("clip" in inputs or "encode" in class_type.lower() or "prompt" in class_type.lower()):
                joined = (
                    texts[0]
                    if len(texts) == 1
                    else self.built(limits.bounded_join((t for t in texts if t.strip()), "\n", _MAX_TEXT)) or texts[0]
                )
                record = {"node_id": node_id, "text": joined}
                if area:
                    record[area_name(self, area)] = area
                if len(found) >= _MAX_PROMPTS:
                    self.errors.append(
                        f"comfyui graph: more than {_MAX_PROMPTS} prompts feed one sampler; the rest not kept"
                    )
                    return
                found.append(record)
            # a node with only one of the two branches linked (rgthree contexts, pipes) still
            # must not lead the positive walk into the negative branch or back
            opposite = _ROLES[1] if role == _ROLES[0] else _ROLES[0]
            follow = [
                v
                for k, v in inputs.items()
                if k not in _NOT_CONDITIONING and k not in _TEXT_KEYS and k != opposite and _is_link(v)
            ]
            stack.extend((value, area) for value in reversed(follow))

    def _role_text(self, node_id: str, value: Any) -> dict | None:
        """The text of a positive/negative input that is a string (efficiency-nodes loaders), or a
        link to a string node; ``None`` when it is conditioning to walk on."""
        if isinstance(value, str):
            return {"node_id": node_id, "text": value}
        source = self.target(value)
        if source is None:
            return None
        source_inputs = self.inputs(source)
        # a node that itself carries both roles (a loader or sampler of efficiency-nodes, a
        # pipe) is walked on with the role; its output slots do not follow the text convention
        is_conditioning = (
            "clip" in source_inputs or "conditioning" in source_inputs or any(r in source_inputs for r in _ROLES)
        )
        text = None if is_conditioning else self.text(value)
        return {"node_id": source, "text": text} if text is not None else None

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


def _role_pair(inputs: dict) -> tuple[str, str] | None:
    """(positive key, negative key) of a node that outputs a positive and a negative text."""
    for positive, negative in (
        ("text_positive", "text_negative"),
        ("positive_prompt", "negative_prompt"),
        ("positive", "negative"),
    ):
        if positive in inputs and negative in inputs:
            return positive, negative
    return None


def area_name(_graph: _Graph, _area: dict) -> str:
    return "ConditioningSetArea"


def _samplers(graph: _Graph) -> list[str]:
    found = []
    for node_id in graph.nodes:
        inputs = graph.inputs(node_id)
        # A sampler takes conditioning (or a guider/tuple carrying it) and a latent. The latent may
        # be unlinked in a UI graph, and detailers/upscalers sample from an image: then its name
        # or a model plus a seed tell. Not guiders (model, no seed), nor save nodes that record
        # "positive"/"steps" as text (no model).
        conditioned = any(k in inputs for k in ("positive", "guider", "sdxl_tuple"))
        latent = any(k in inputs for k in ("latent_image", "latent", "guider", "sdxl_tuple"))
        seeded_model = "model" in inputs and any(k in inputs for k in ("seed", "noise_seed", "noise"))
        if conditioned and (latent or seeded_model or "sampler" in graph.class_type(node_id).lower()):
            found.append(node_id)
    return found


def _downstream_of_samplers(graph: _Graph, samplers: list[str]) -> set[str]:
    """Every node with a sampler upstream (hires, refiner, second passes): one pass over the graph."""
    consumers: dict[str, list[str]] = {}
    for node_id in graph.nodes:
        for value in graph.inputs(node_id).values():
            if _is_link(value):
                consumers.setdefault(str(value[0]), []).append(node_id)
    reached: set[str] = set()
    stack = list(samplers)
    while stack:
        for consumer in consumers.get(stack.pop(), ()):
            if consumer not in reached:
                reached.add(consumer)
                stack.append(consumer)
    return reached


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


def _snake(class_type: str, suffix: str) -> str | None:
    """ "KarrasScheduler" -> "karras", "SamplerEulerAncestral" -> "euler_ancestral"."""
    name = class_type.replace(suffix, "")
    if "_" not in name:
        name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    name = name.strip("_").lower()
    return {"beta_sampling": "beta"}.get(name, name) or None


def _describe_sampler(graph: _Graph, node_id: str) -> dict:
    inputs = graph.inputs(node_id)
    info: dict[str, Any] = {"node_id": node_id, "class_type": graph.class_type(node_id)}
    sampler = graph.scalar(inputs.get("sampler_name"), ("sampler_name",))
    if sampler is None and _is_link(inputs.get("sampler")):
        select = graph.target(inputs["sampler"])
        if select is not None:
            sampler = graph.scalar(graph.inputs(select).get("sampler_name"), ("sampler_name",)) or _snake(
                graph.class_type(select), "Sampler"
            )
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
                scheduler = _snake(graph.class_type(sigmas), "Scheduler")
    info["steps"] = graph.scalar(steps, ("steps", "value", "int"))
    info["scheduler"] = graph.scalar(scheduler, ("scheduler",))
    info["denoise"] = graph.scalar(denoise, ("denoise", "value", "float"))
    for key in ("start_at_step", "end_at_step", "refine_at_step"):
        if key in inputs:
            info[key] = graph.scalar(inputs[key], (key, "value", "int"))
    cfg = inputs.get("cfg")
    positive, negative, model = inputs.get("positive"), inputs.get("negative"), inputs.get("model")
    positive_links = [positive] if positive is not None else []
    if "sdxl_tuple" in inputs:  # efficiency-nodes SDXL sampler: model and both prompts travel in one tuple
        positive_links = positive_links or [inputs["sdxl_tuple"]]
        negative = negative if negative is not None else inputs["sdxl_tuple"]
        model = model if model is not None else inputs["sdxl_tuple"]
    if _is_link(inputs.get("guider")):
        guider = _follow(graph, inputs["guider"], ("positive", "conditioning", "cond1", "cfg", "cfg_conds"))
        if guider is not None:
            g = graph.inputs(guider)
            cfg = cfg if cfg is not None else g.get("cfg", g.get("cfg_conds"))
            model = model if model is not None else g.get("model")
            negative = negative if negative is not None else g.get("negative")
            positive_links = [g[k] for k in ("positive", "conditioning", "cond1", "cond2") if k in g]
    info["cfg_scale"] = graph.scalar(cfg, ("cfg", "value", "float"))
    info["model"], info["model_node_id"] = graph.model_of(model)
    notes: dict[str, Any] = {}
    prompts: list[dict] = []
    for link in positive_links:
        prompts.extend(graph.prompts(link, "positive", notes))
    info["prompts_verbatim"] = prompts
    info["negative_verbatim"] = graph.prompts(negative, "negative", {}) if negative is not None else []
    if "guidance" in notes:
        info["guidance"] = notes["guidance"]
    return info


def analyse(api: dict, errors: list[str]) -> GenerationMetadata:
    graph = _Graph(api, errors)
    meta = GenerationMetadata(generator="comfyui")
    described: list[dict] = []
    sampler_ids: list[str] = []
    later: set[str] = set()
    try:
        sampler_ids = _samplers(graph)
        if len(sampler_ids) > _MAX_SAMPLERS:
            errors.append(f"comfyui graph has {len(sampler_ids)} samplers; the first {_MAX_SAMPLERS} are described")
        for node_id in sampler_ids[:_MAX_SAMPLERS]:
            try:
                described.append(_describe_sampler(graph, node_id))
            except (TypeError, AttributeError, ValueError, RecursionError) as exc:
                errors.append(f"comfyui sampler {node_id} unreadable: {type(exc).__name__}")
        later = _downstream_of_samplers(graph, sampler_ids)
    except _GraphTooLarge:
        errors.append(f"comfyui graph too large: analysis stopped after {_MAX_WORK} steps")
    first_pass = [d for d in described if d["node_id"] not in later]
    primary = next((d for d in first_pass if d["prompts_verbatim"]), None) or (first_pass or described or [None])[0]
    ordered = ([primary] if primary is not None else []) + [d for d in described if d is not primary]
    meta.extra["samplers"] = [_public(graph, d) for d in ordered]
    if primary is not None:
        meta.prompt = (
            limits.bounded_join((p["text"] for p in primary["prompts_verbatim"]), "\n", limits.MAX_PIECE_CHARS) or None
        )
        if primary["negative_verbatim"]:
            meta.negative_prompt = limits.bounded_join(
                (p["text"] for p in primary["negative_verbatim"]), "\n", limits.MAX_PIECE_CHARS
            )
        meta.seed = seed_text(primary["seed"])
        meta.steps = to_int(primary["steps"])
        meta.cfg_scale = to_float(primary["cfg_scale"])
        meta.sampler = primary["sampler"] if isinstance(primary["sampler"], str) else None
        meta.scheduler = primary["scheduler"] if isinstance(primary["scheduler"], str) else None
        meta.model = primary["model"] if isinstance(primary["model"], str) else None
        if primary["denoise"] is not None:
            meta.extra["denoise"] = primary["denoise"]
        if primary.get("guidance") is not None:
            meta.extra["guidance"] = primary["guidance"]
        meta.extra["primary_sampler"] = primary["node_id"]
    try:
        meta.resources = _resources(graph)
    except _GraphTooLarge:
        errors.append(f"comfyui graph too large: resources not read after {_MAX_WORK} steps")
    return meta


def _public(graph: _Graph, info: dict) -> dict:
    public = {k: v for k, v in info.items() if not k.endswith("_verbatim")}
    public["prompts"] = [{**p, "text": graph.stripped(p["text"])} for p in info["prompts_verbatim"]]
    public["negative_prompts"] = [{**p, "text": graph.stripped(p["text"])} for p in info["negative_verbatim"]]
    return public


_EMBEDDING = re.compile(r"embedding:\s*([^\s,()\[\]{}:|]+)", re.IGNORECASE)
_STACKED_LORA = re.compile(r"^lora_name_(\d+)$")


def _resources(graph: _Graph) -> list[Resource]:
    resources: list[Resource] = []
    seen = set()

    def add(kind: str, name: Any, weight: Any = None) -> None:
        if (
            isinstance(name, str)
            and len(resources) < limits.MAX_RESOURCES
            and (kind, name) not in seen
            and name.strip().lower() not in _NO_FILE
        ):
            seen.add((kind, name))
            resources.append(Resource(kind, name, None, to_float(weight)))

    for node_id in graph.nodes:
        inputs = graph.inputs(node_id)
        class_type = graph.class_type(node_id).lower()
        for key in _CHECKPOINT_KEYS + ("refiner_ckpt_name",):
            add("checkpoint", inputs.get(key))
        if "lora_name" in inputs:
            add(
                "lora",
                inputs["lora_name"],
                _first(inputs, "strength_model", "lora_model_strength", "strength", "lora_strength"),
            )
        count = to_int(inputs.get("lora_count"))
        for key in inputs:  # LoRA stacks: efficiency-nodes "LoRA Stacker", Comfyroll "CR LoRA Stack"
            match = _STACKED_LORA.match(key)
            if not match or (count is not None and int(match.group(1)) > count):
                continue
            i = match.group(1)
            if str(inputs.get(f"switch_{i}", "On")).lower() == "off":
                continue
            simple = inputs.get("input_mode") == "simple"
            add(
                "lora",
                inputs[key],
                _first(
                    inputs,
                    *((f"lora_wt_{i}",) if simple else ()),
                    f"model_str_{i}",
                    f"model_weight_{i}",
                    f"lora_wt_{i}",
                    f"strength_{i}",
                ),
            )
        for value in inputs.values():  # rgthree Power Lora Loader: {"on": true, "lora": name, "strength": w}
            if isinstance(value, dict) and "lora" in value and value.get("on", True) is not False:
                add("lora", value.get("lora"), value.get("strength"))
        add("vae", inputs.get("vae_name"))
        add("controlnet", inputs.get("control_net_name"))
        for key in ("clip_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4"):
            add("clip_vision" if "vision" in class_type else "text_encoder", inputs.get(key))
        if "upscale" in class_type:
            add("upscaler", inputs.get("model_name"))
        for value in inputs.values():
            if isinstance(value, str) and "embedding:" in value.lower():
                for name in _EMBEDDING.findall(value):
                    add("embedding", name)
    return resources


def _first(inputs: dict, *keys: str) -> Any:
    return next((inputs[k] for k in keys if k in inputs and not _is_link(inputs[k])), None)
