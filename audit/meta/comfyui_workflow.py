"""Convert a ComfyUI UI "workflow" graph into the API "prompt" shape.

Files usually carry both graphs; the UI graph alone turns up when a tool strips the API
graph or re-saves through the browser. The UI graph stores widget *values* without their
names, so names come from each node's ``inputs[].widget`` entries (newer frontends) or from
a table of core nodes. Reroutes and PrimitiveNodes are resolved away; subgraphs
(``definitions.subgraphs``) are flattened with node ids ``"<instance>:<inner>"``.
Muted (mode 2) and bypassed (mode 4) nodes are left out: they did not run.
"""

from __future__ import annotations

from typing import Any

_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
KNOWN_WIDGETS: dict[str, list[str]] = {
    "KSampler": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "KSamplerAdvanced": ["add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise"],
    "SamplerCustom": ["add_noise", "noise_seed", "control_after_generate", "cfg"],
    "CLIPTextEncode": ["text"],
    "CLIPTextEncodeSDXL": ["width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"],
    "CLIPTextEncodeSDXLRefiner": ["ascore", "width", "height", "text"],
    "CheckpointLoaderSimple": ["ckpt_name"],
    "CheckpointLoader": ["config_name", "ckpt_name"],
    "unCLIPCheckpointLoader": ["ckpt_name"],
    "UNETLoader": ["unet_name", "weight_dtype"],
    "LoraLoader": ["lora_name", "strength_model", "strength_clip"],
    "LoraLoaderModelOnly": ["lora_name", "strength_model"],
    "VAELoader": ["vae_name"],
    "RandomNoise": ["noise_seed", "control_after_generate"],
    "KSamplerSelect": ["sampler_name"],
    "BasicScheduler": ["scheduler", "steps", "denoise"],
    "CFGGuider": ["cfg"],
    "EmptyLatentImage": ["width", "height", "batch_size"],
    "ConditioningSetArea": ["width", "height", "x", "y", "strength"],
    "CLIPSetLastLayer": ["stop_at_clip_layer"],
}
_MAX_DEPTH = 64


class _Context:
    def __init__(self, prefix: str, graph: dict, parent: "_Context | None", instance: dict | None):
        self.prefix = prefix
        self.nodes = {str(n.get("id")): n for n in graph.get("nodes", []) if isinstance(n, dict)}
        self.links: dict[Any, tuple[Any, int]] = {}
        for link in graph.get("links", []) or []:
            if isinstance(link, list) and len(link) >= 5:
                self.links[link[0]] = (link[1], link[2])
            elif isinstance(link, dict) and "id" in link:
                self.links[link["id"]] = (link.get("origin_id"), link.get("origin_slot", 0))
        self.parent = parent
        self.instance = instance  # the parent's node that instantiates this subgraph
        self.graph = graph


def workflow_to_api(workflow: dict, errors: list[str]) -> dict[str, dict]:
    subgraphs = {}
    definitions = workflow.get("definitions") if isinstance(workflow.get("definitions"), dict) else {}
    for sub in definitions.get("subgraphs", []) or []:
        if isinstance(sub, dict) and "id" in sub:
            subgraphs[sub["id"]] = sub
    api: dict[str, dict] = {}
    _flatten(_Context("", workflow, None, None), subgraphs, api, errors, 0)
    return api


def _flatten(ctx: _Context, subgraphs: dict, api: dict, errors: list[str], depth: int) -> None:
    if depth > 8:
        errors.append("comfyui workflow: subgraphs nested too deep")
        return
    for node_id, node in ctx.nodes.items():
        node_type = node.get("type")
        if node.get("mode") in (2, 4) or node_type in ("Reroute", "PrimitiveNode", "Note", "MarkdownNote"):
            continue
        if node_type in subgraphs:
            _flatten(_Context(f"{ctx.prefix}{node_id}:", subgraphs[node_type], ctx, node), subgraphs, api, errors, depth + 1)
            continue
        inputs: dict[str, Any] = {}
        linked_names = set()
        for slot in node.get("inputs", []) or []:
            if not isinstance(slot, dict) or slot.get("link") is None:
                continue
            origin = _origin(ctx, slot["link"], subgraphs, errors, 0)
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
        yield from values.items()
        return
    if not isinstance(values, list):
        return
    names = KNOWN_WIDGETS.get(node.get("type"))
    if names is None:
        names = []
        for slot in node.get("inputs", []) or []:
            if isinstance(slot, dict) and isinstance(slot.get("widget"), dict):
                names.append(slot["widget"].get("name"))
                if slot["widget"].get("name") in ("seed", "noise_seed"):
                    names.append("control_after_generate")
    index = 0
    for name in names:
        if index >= len(values):
            return
        value = values[index]
        if name == "control_after_generate":
            # "randomize"/"fixed"/...; very old workflows stored a bool ("random seed after every gen")
            if (isinstance(value, str) and value in _CONTROL_VALUES) or isinstance(value, bool):
                index += 1
            continue
        index += 1
        yield name, value


def _origin(ctx: _Context, link_id: Any, subgraphs: dict, errors: list[str], depth: int):
    """API-style ``[node_id, slot]`` or a literal value for the link's source."""
    if depth > _MAX_DEPTH:
        errors.append("comfyui workflow: link chain too deep (cycle?)")
        return None
    if link_id not in ctx.links:
        errors.append(f"comfyui workflow: link {link_id} missing")
        return None
    origin_id, origin_slot = ctx.links[link_id]
    if origin_id == -10:  # a subgraph input: continue in the parent graph
        if ctx.parent is None or ctx.instance is None:
            return None
        slots = [s for s in ctx.instance.get("inputs", []) or [] if isinstance(s, dict)]
        if not isinstance(origin_slot, int) or origin_slot >= len(slots) or slots[origin_slot].get("link") is None:
            return None
        return _origin(ctx.parent, slots[origin_slot]["link"], subgraphs, errors, depth + 1)
    node = ctx.nodes.get(str(origin_id))
    if node is None:
        errors.append(f"comfyui workflow: link {link_id} comes from missing node {origin_id}")
        return None
    node_type = node.get("type")
    if node_type == "Reroute" or node.get("mode") == 4:
        for slot in node.get("inputs", []) or []:
            if isinstance(slot, dict) and slot.get("link") is not None:
                return _origin(ctx, slot["link"], subgraphs, errors, depth + 1)
        return None
    if node_type == "PrimitiveNode":
        values = node.get("widgets_values")
        return values[0] if isinstance(values, list) and values else None
    if node_type in subgraphs:
        sub = subgraphs[node_type]
        outputs = sub.get("outputs", []) or []
        if not isinstance(origin_slot, int) or origin_slot >= len(outputs):
            return None
        link_ids = outputs[origin_slot].get("linkIds") or [] if isinstance(outputs[origin_slot], dict) else []
        if not link_ids:
            return None
        inner = _Context(f"{ctx.prefix}{origin_id}:", sub, ctx, node)
        return _origin(inner, link_ids[0], subgraphs, errors, depth + 1)
    return [ctx.prefix + str(origin_id), origin_slot]
