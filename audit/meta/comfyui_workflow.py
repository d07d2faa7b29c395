"""Convert a ComfyUI UI "workflow" graph into the API "prompt" shape.

Files usually carry both graphs; the UI graph alone turns up when a tool strips the API
graph or re-saves through the browser. The UI graph stores widget *values* without their
names, so names come from a table of core and popular custom nodes or from each node's
``inputs[].widget`` entries (newer frontends list every widget there). Reroutes and
PrimitiveNodes are resolved away; subgraphs (``definitions.subgraphs``) and legacy group
nodes (``extra.groupNodes``) are flattened with node ids ``"<instance>:<inner>"``.
Muted (mode 2) and bypassed (mode 4) nodes are left out: they did not run; a bypassed
node passes each input on to the output of the same type, as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
_SEED_WIDGETS = ("seed", "noise_seed")
_SKIPPED_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")
# Widget order of nodes as the frontend saves them (node definitions' input order, and a
# control_after_generate value after every seed). Used when the node does not name its widgets.
KNOWN_WIDGETS: dict[str, list[str]] = {
    "KSampler": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "KSamplerAdvanced": ["add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise"],
    "SamplerCustom": ["add_noise", "noise_seed", "control_after_generate", "cfg"],
    "CLIPTextEncode": ["text"],
    "CLIPTextEncodeSDXL": ["width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"],
    "CLIPTextEncodeSDXLRefiner": ["ascore", "width", "height", "text"],
    "CLIPTextEncodeFlux": ["clip_l", "t5xxl", "guidance"],
    "CLIPTextEncodeSD3": ["clip_l", "clip_g", "t5xxl", "empty_padding"],
    "FluxGuidance": ["guidance"],
    "CheckpointLoaderSimple": ["ckpt_name"],
    "CheckpointLoader": ["config_name", "ckpt_name"],
    "unCLIPCheckpointLoader": ["ckpt_name"],
    "ImageOnlyCheckpointLoader": ["ckpt_name"],
    "UNETLoader": ["unet_name", "weight_dtype"],
    "CLIPLoader": ["clip_name", "type", "device"],
    "DualCLIPLoader": ["clip_name1", "clip_name2", "type", "device"],
    "TripleCLIPLoader": ["clip_name1", "clip_name2", "clip_name3"],
    "LoraLoader": ["lora_name", "strength_model", "strength_clip"],
    "LoraLoaderModelOnly": ["lora_name", "strength_model"],
    "VAELoader": ["vae_name"],
    "ControlNetLoader": ["control_net_name"],
    "ControlNetApply": ["strength"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
    "UpscaleModelLoader": ["model_name"],
    "RandomNoise": ["noise_seed", "control_after_generate"],
    "KSamplerSelect": ["sampler_name"],
    "BasicScheduler": ["scheduler", "steps", "denoise"],
    "KarrasScheduler": ["steps", "sigma_max", "sigma_min", "rho"],
    "ExponentialScheduler": ["steps", "sigma_max", "sigma_min"],
    "PolyexponentialScheduler": ["steps", "sigma_max", "sigma_min", "rho"],
    "SDTurboScheduler": ["steps", "denoise"],
    "AlignYourStepsScheduler": ["model_type", "steps", "denoise"],
    "BetaSamplingScheduler": ["steps", "alpha", "beta"],
    "CFGGuider": ["cfg"],
    "DualCFGGuider": ["cfg_conds", "cfg_cond2_negative", "style"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "ConditioningSetArea": ["width", "height", "x", "y", "strength"],
    "ConditioningAverage": ["conditioning_to_strength"],
    "CLIPSetLastLayer": ["stop_at_clip_layer"],
    "PrimitiveString": ["value"],
    "PrimitiveStringMultiline": ["value"],
    "PrimitiveInt": ["value", "control_after_generate"],
    "PrimitiveFloat": ["value"],
    "StringConcatenate": ["string_a", "string_b", "delimiter"],
    # custom node packs
    "String Literal": ["string"],
    "Text Multiline": ["text"],
    "CR Prompt Text": ["prompt"],
    "StringFunction|pysssss": ["action", "tidy_tags", "text_a", "text_b", "text_c"],
    "Text Concatenate": ["delimiter", "clean_whitespace"],
    "SDXLPromptStyler": ["text_positive", "text_negative", "style", "log_prompt"],
    "Efficient Loader": ["ckpt_name", "vae_name", "clip_skip", "lora_name", "lora_model_strength", "lora_clip_strength",
                         "positive", "negative", "token_normalization", "weight_interpretation", "empty_latent_width",
                         "empty_latent_height", "batch_size"],
    "Eff. Loader SDXL": ["base_ckpt_name", "base_clip_skip", "refiner_ckpt_name", "refiner_clip_skip", "positive_ascore",
                         "negative_ascore", "vae_name", "positive", "negative", "token_normalization", "weight_interpretation",
                         "empty_latent_width", "empty_latent_height", "batch_size"],
    "KSampler (Efficient)": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise",
                             "preview_method", "vae_decode"],
    "KSampler Adv. (Efficient)": ["add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
                                  "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise",
                                  "preview_method", "vae_decode"],
    "KSampler SDXL (Eff.)": ["noise_seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler",
                             "start_at_step", "refine_at_step", "preview_method", "vae_decode"],
}
_MAX_DEPTH = 64
_MAX_HOPS = 100_000  # reroute/bypass chains are followed iteratively, with a visited set


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


class _Context:
    def __init__(self, prefix: str, graph: dict, parent: _Context | None, instance: dict | None):
        self.prefix = prefix
        self.nodes = {str(n.get("id")): n for n in _list(graph.get("nodes")) if isinstance(n, dict)}
        self.links: dict[str, tuple[Any, Any]] = {}  # link id (as text: ints and strings both occur) -> origin
        for link in _list(graph.get("links")):
            if isinstance(link, list) and len(link) >= 5:
                self.links[str(link[0])] = (link[1], link[2])
            elif isinstance(link, dict) and "id" in link:
                self.links[str(link["id"])] = (link.get("origin_id"), link.get("origin_slot", 0))
        self.parent = parent
        self.instance = instance  # the parent's node that instantiates this subgraph
        self.graph = graph


def workflow_to_api(workflow: dict, errors: list[str]) -> dict[str, dict]:
    subgraphs = {}
    definitions = workflow.get("definitions") if isinstance(workflow.get("definitions"), dict) else {}
    for sub in _list(definitions.get("subgraphs")):
        if isinstance(sub, dict) and isinstance(sub.get("id"), str):
            subgraphs[sub["id"]] = sub
    workflow = _expand_group_nodes(workflow, subgraphs, errors)
    api: dict[str, dict] = {}
    _flatten(_Context("", workflow, None, None), subgraphs, api, errors, 0)
    return api


def _flatten(ctx: _Context, subgraphs: dict, api: dict, errors: list[str], depth: int) -> None:
    if depth > 8:
        errors.append("comfyui workflow: subgraphs nested too deep")
        return
    for node_id, node in ctx.nodes.items():
        node_type = node.get("type")
        if not isinstance(node_type, str) or node.get("mode") in (2, 4) or node_type in _SKIPPED_TYPES:
            continue
        if node_type in subgraphs:
            _flatten(_Context(f"{ctx.prefix}{node_id}:", subgraphs[node_type], ctx, node), subgraphs, api, errors, depth + 1)
            continue
        inputs: dict[str, Any] = {}
        linked_names = set()
        for slot in _list(node.get("inputs")):
            if not isinstance(slot, dict) or slot.get("link") is None:
                continue
            origin = _origin(ctx, slot["link"], subgraphs, errors)
            linked_names.add(slot.get("name"))
            if origin is not None:
                inputs[str(slot.get("name"))] = origin
        for name, value in _widget_values(node):
            if name not in linked_names and name not in inputs:
                inputs[name] = value
        api[ctx.prefix + node_id] = {"class_type": node_type, "inputs": inputs, "_meta": {"title": node.get("title")}}


def _widget_values(node: dict):
    values = node.get("widgets_values")
    if isinstance(values, dict):
        yield from ((str(k), v) for k, v in values.items())
        return
    if not isinstance(values, list):
        return
    names = KNOWN_WIDGETS.get(node.get("type"))
    if names and "Eff" in str(node.get("type")) and values and values[0] in ("Sample", "Hold", "Script"):
        names = ["sampler_state", *names]  # older efficiency-nodes samplers lead with this widget
    if names is None:
        names = []
        for slot in _list(node.get("inputs")):
            if isinstance(slot, dict) and isinstance(slot.get("widget"), dict):
                names.append(str(slot["widget"].get("name")))
                if slot["widget"].get("name") in _SEED_WIDGETS:
                    names.append("control_after_generate")
    if not names:
        # nothing names them: keep them under positional names, so single-string nodes still
        # give their text and rgthree's {"lora": ...} entries are still found
        yield from ((f"widget_{i}", value) for i, value in enumerate(values))
        return
    index = 0
    for name in names:
        if index >= len(values):
            return
        value = values[index]
        if name == "control_after_generate":
            # "randomize"/"fixed"/...; very old workflows stored a bool, efficiency-nodes null
            if (isinstance(value, str) and value in _CONTROL_VALUES) or isinstance(value, bool) or value is None:
                index += 1
            continue
        index += 1
        yield name, value


def _origin(ctx: _Context, link_id: Any, subgraphs: dict, errors: list[str], depth: int = 0):
    """API-style ``[node_id, slot]`` or a literal value for the link's source."""
    seen: set[tuple[int, str]] = set()
    for _ in range(_MAX_HOPS):
        if depth > _MAX_DEPTH or (id(ctx), str(link_id)) in seen:
            errors.append("comfyui workflow: link chain loops or is too deep")
            return None
        seen.add((id(ctx), str(link_id)))
        if str(link_id) not in ctx.links:
            errors.append(f"comfyui workflow: link {link_id} missing")
            return None
        origin_id, origin_slot = ctx.links[str(link_id)]
        if origin_id == -10:  # a subgraph input: continue in the parent graph
            if ctx.parent is None or ctx.instance is None:
                return None
            slots = [s for s in _list(ctx.instance.get("inputs")) if isinstance(s, dict)]
            if not isinstance(origin_slot, int) or not 0 <= origin_slot < len(slots) or slots[origin_slot].get("link") is None:
                return None
            ctx, link_id, depth = ctx.parent, slots[origin_slot]["link"], depth + 1
            continue
        node = ctx.nodes.get(str(origin_id))
        if node is None:
            errors.append(f"comfyui workflow: link {link_id} comes from missing node {origin_id}")
            return None
        node_type = node.get("type")
        if node.get("mode") == 2:
            return None  # muted: it produced nothing
        if node_type == "Reroute" or node.get("mode") == 4:
            link_id = _passthrough(node, origin_slot)
            if link_id is None:
                return None
            continue
        if node_type == "PrimitiveNode":
            values = node.get("widgets_values")
            return values[0] if isinstance(values, list) and values else None
        if node_type in subgraphs:
            sub = subgraphs[node_type]
            outputs = _list(sub.get("outputs"))
            if not isinstance(origin_slot, int) or not 0 <= origin_slot < len(outputs) or not isinstance(outputs[origin_slot], dict):
                return None
            link_ids = _list(outputs[origin_slot].get("linkIds"))
            if not link_ids:
                return None
            ctx, link_id, depth = _Context(f"{ctx.prefix}{origin_id}:", sub, ctx, node), link_ids[0], depth + 1
            continue
        return [ctx.prefix + str(origin_id), origin_slot]
    return None


def _passthrough(node: dict, slot: Any) -> Any:
    """The input link a reroute or a bypassed node passes on at output ``slot``: a bypassed
    node hands each output the input of the same type (LoraLoader: MODEL to MODEL, CLIP to CLIP)."""
    inputs = [s for s in _list(node.get("inputs")) if isinstance(s, dict)]
    outputs = [s for s in _list(node.get("outputs")) if isinstance(s, dict)]
    wanted = outputs[slot].get("type") if isinstance(slot, int) and 0 <= slot < len(outputs) else None
    if wanted not in (None, "*"):
        nth = sum(1 for o in outputs[:slot] if o.get("type") == wanted)
        same = [s for s in inputs if s.get("type") == wanted]
        if same:
            chosen = same[min(nth, len(same) - 1)]
            return chosen.get("link")
    return next((s.get("link") for s in inputs if s.get("link") is not None), None)


def _expand_group_nodes(workflow: dict, subgraphs: dict, errors: list[str]) -> dict:
    """Legacy group nodes (``extra.groupNodes``, type "workflow>name" or "workflow/name") as
    per-instance subgraphs. The instance's inputs are its inner nodes' unlinked non-widget
    inputs in order, its outputs the inner outputs not consumed inside only, its
    widgets_values the inner nodes' widget values one after another."""
    extra = workflow.get("extra") if isinstance(workflow.get("extra"), dict) else {}
    groups = extra.get("groupNodes") if isinstance(extra.get("groupNodes"), dict) else {}
    if not groups:
        return workflow
    nodes = []
    for node in _list(workflow.get("nodes")):
        node_type = node.get("type") if isinstance(node, dict) else None
        name = node_type[9:] if isinstance(node_type, str) and node_type[:9] in ("workflow>", "workflow/") else None
        if name is None or not isinstance(groups.get(name), dict):
            nodes.append(node)
            continue
        key = f"{node_type}#{node.get('id')}"
        try:
            subgraphs[key] = _group_as_subgraph(groups[name], node)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            errors.append(f"comfyui workflow: group node {name!r} unreadable: {type(exc).__name__}")
            continue
        nodes.append({**node, "type": key})
    return {**workflow, "nodes": nodes}


def _group_as_subgraph(group: dict, instance: dict) -> dict:
    inner = [dict(n) for n in _list(group.get("nodes")) if isinstance(n, dict)]
    for index, node in enumerate(inner):
        node["id"] = index
        node["inputs"] = [dict(s) if isinstance(s, dict) else {} for s in _list(node.get("inputs"))]
        for slot in node["inputs"]:
            slot["link"] = None
    links: list[dict] = []
    internal_from: set[tuple[int, int]] = set()
    for k, link in enumerate(_list(group.get("links"))):
        if not isinstance(link, list) or len(link) < 4 or link[0] is None:
            continue
        source, source_slot, target, target_slot = link[:4]
        if isinstance(target, int) and 0 <= target < len(inner) and isinstance(target_slot, int) \
                and 0 <= target_slot < len(inner[target]["inputs"]):
            links.append({"id": f"g{k}", "origin_id": source, "origin_slot": source_slot})
            inner[target]["inputs"][target_slot]["link"] = f"g{k}"
            internal_from.add((source, source_slot))
    outer_slot = 0
    for node in inner:  # unlinked non-widget inputs become the instance's inputs, in order
        for slot in node["inputs"]:
            if slot["link"] is None and "widget" not in slot:
                links.append({"id": f"x{outer_slot}", "origin_id": -10, "origin_slot": outer_slot})
                slot["link"] = f"x{outer_slot}"
                outer_slot += 1
    external = {(e[0], e[1]) for e in _list(group.get("external")) if isinstance(e, list) and len(e) >= 2}
    outputs = []
    for index, node in enumerate(inner):
        for slot in range(len(_list(node.get("outputs")))):
            if (index, slot) in internal_from and (index, slot) not in external:
                continue  # consumed inside only: hidden on the instance
            links.append({"id": f"o{len(outputs)}", "origin_id": index, "origin_slot": slot})
            outputs.append({"linkIds": [f"o{len(outputs)}"]})
    values = instance.get("widgets_values")
    widget_nodes = [n for n in inner if n.get("type") not in _SKIPPED_TYPES and isinstance(n.get("widgets_values"), list)]
    if isinstance(values, list) and sum(len(n["widgets_values"]) for n in widget_nodes) == len(values):
        at = 0
        for node in widget_nodes:  # the instance holds the current values; the definition those at grouping time
            count = len(node["widgets_values"])
            node["widgets_values"] = values[at:at + count]
            at += count
    return {"id": instance.get("type"), "nodes": inner, "links": links, "outputs": outputs}
