"""Convert a ComfyUI UI "workflow" graph into the API "prompt" shape.

Files usually carry both graphs; the UI graph alone turns up when a tool strips the API
graph or re-saves through the browser. The UI graph stores widget *values* without their
names, so names come from a table of core and popular custom nodes or from each node's
``inputs[].widget`` entries (newer frontends list every widget there). Reroutes and
PrimitiveNodes are resolved away; subgraphs (``definitions.subgraphs``) and legacy group
nodes (``extra.groupNodes``) are flattened with node ids ``"<instance>:<inner>"``.
Muted (mode 2) and bypassed (mode 4) nodes are left out: they did not run; a bypassed
node passes each input on to the output of the same type, as ComfyUI does.

Conversion is linear in what it produces, and what it produces is bounded: subgraph and
group-node instances are flattened up to ``_MAX_ELEMENTS`` nodes and links in all (a subgraph of a
hundred instances of a subgraph of a hundred... would otherwise multiply), each link's
origin is resolved once (a chain of 50,000 reroutes read by 50,000 nodes is walked once,
not once per reader), and each subgraph instance's context is built once.
"""

from __future__ import annotations

import re
from typing import Any

from audit.meta import limits

_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
_SEED_WIDGETS = ("seed", "noise_seed")
_SKIPPED_TYPES = ("Reroute", "PrimitiveNode", "Note", "MarkdownNote")
# Widget order of nodes as the frontend saves them (node definitions' input order, and a
# control_after_generate value after every seed). Used when the node does not name its widgets.
KNOWN_WIDGETS: dict[str, list[str]] = {
    "KSampler": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "KSamplerAdvanced": [
        "add_noise",
        "noise_seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ],
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
    "Efficient Loader": [
        "ckpt_name",
        "vae_name",
        "clip_skip",
        "lora_name",
        "lora_model_strength",
        "lora_clip_strength",
        "positive",
        "negative",
        "token_normalization",
        "weight_interpretation",
        "empty_latent_width",
        "empty_latent_height",
        "batch_size",
    ],
    "Eff. Loader SDXL": [
        "base_ckpt_name",
        "base_clip_skip",
        "refiner_ckpt_name",
        "refiner_clip_skip",
        "positive_ascore",
        "negative_ascore",
        "vae_name",
        "positive",
        "negative",
        "token_normalization",
        "weight_interpretation",
        "empty_latent_width",
        "empty_latent_height",
        "batch_size",
    ],
    "KSampler (Efficient)": [
        "seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
        "preview_method",
        "vae_decode",
    ],
    "KSampler Adv. (Efficient)": [
        "add_noise",
        "noise_seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
        "preview_method",
        "vae_decode",
    ],
    "KSampler SDXL (Eff.)": [
        "noise_seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "refine_at_step",
        "preview_method",
        "vae_decode",
    ],
}
_MAX_DEPTH = 64
_MAX_HOPS = 100_000  # reroute/bypass chains are followed iteratively, with a visited set
_MAX_ELEMENTS = 500_000  # nodes and links read while flattening subgraphs and group nodes, per workflow
_MAX_NESTING = 8  # subgraph instances inside subgraph instances
_MAX_DEFINITIONS = 10_000
_MAX_PROXIES = 1024
# subgraph definition ids are UUIDs (the frontend's createUuidv4): a node of such a type that no
# definition names is a subgraph instance whose definition was lost, not a custom node
_SUBGRAPH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


class _TooLarge(Exception):
    pass


class _Context:
    def __init__(self, prefix: str, graph: dict, parent: _Context | None, instance: dict | None):
        self.prefix = prefix
        self.nodes = {}
        for n in _list(graph.get("nodes")):
            limits.tick()
            if isinstance(n, dict):
                self.nodes[str(n.get("id"))] = n
        self.links: dict[str, tuple[Any, Any]] = {}  # link id (as text: ints and strings both occur) -> origin
        for link in _list(graph.get("links")):
            limits.tick()
            if isinstance(link, list) and len(link) >= 5:
                self.links[str(link[0])] = (link[1], link[2])
            elif isinstance(link, dict) and "id" in link:
                self.links[str(link["id"])] = (link.get("origin_id"), link.get("origin_slot", 0))
        self.parent = parent
        self.instance = instance  # the parent's node that instantiates this subgraph
        self.graph = graph


class _Conversion:
    """What one conversion shares: its errors, its contexts by prefix, resolved link origins
    and the count of nodes and links it may still read."""

    def __init__(self, subgraphs: dict, errors: list[str]):
        self.subgraphs = subgraphs
        self.errors = errors
        self.contexts: dict[str, _Context] = {}
        self.origins: dict[tuple[str, str], Any] = {}  # (context prefix, link id) -> origin
        self.passages: dict[int, _Passage] = {}  # id of a reroute or bypassed node -> how it passes links on
        self.elements_left = _MAX_ELEMENTS

    def context(self, prefix: str, graph: dict, parent: _Context | None, instance: dict | None) -> _Context:
        found = self.contexts.get(prefix)
        if found is None:
            self.charge(graph)
            found = self.contexts[prefix] = _Context(prefix, graph, parent, instance)
        return found

    def charge(self, graph: dict) -> None:
        """Reading ``graph``'s nodes and links (once more): stop when the conversion's budget is spent."""
        self.elements_left -= 1 + len(_list(graph.get("nodes"))) + len(_list(graph.get("links")))
        if self.elements_left < 0:
            raise _TooLarge


def workflow_to_api(workflow: dict, errors: list[str]) -> dict[str, dict]:
    subgraphs = _definitions(workflow)
    conversion = _Conversion(subgraphs, errors)
    api: dict[str, dict] = {}
    try:
        workflow = _expand_group_nodes(workflow, subgraphs, errors, conversion)
        _flatten(conversion.context("", workflow, None, None), conversion, api, 0)
    except _TooLarge:
        errors.append(
            f"comfyui workflow: subgraphs expand to more than {_MAX_ELEMENTS} nodes and links; the rest left out"
        )
    return api


def _definitions(workflow: dict) -> dict[str, dict]:
    """Subgraph definitions by id. The frontend keeps every level of nesting at the root's
    ``definitions.subgraphs``; exports that nest a definition's own ``definitions`` are read too."""
    subgraphs: dict[str, dict] = {}
    pending = [workflow]
    while pending and len(subgraphs) < _MAX_DEFINITIONS:
        limits.tick()
        holder = pending.pop()
        definitions = holder.get("definitions") if isinstance(holder.get("definitions"), dict) else {}
        for sub in _list(definitions.get("subgraphs")):
            if isinstance(sub, dict) and isinstance(sub.get("id"), str) and sub["id"] not in subgraphs:
                subgraphs[sub["id"]] = sub
                pending.append(sub)
    return subgraphs


def _flatten(ctx: _Context, conversion: _Conversion, api: dict, depth: int, chain: tuple[str, ...] = ()) -> None:
    subgraphs, errors = conversion.subgraphs, conversion.errors
    if depth > _MAX_NESTING:
        errors.append("comfyui workflow: subgraphs nested too deep")
        return
    overrides = _proxy_overrides(ctx.instance)
    for node_id, node in ctx.nodes.items():
        limits.tick()
        node_type = node.get("type")
        if not isinstance(node_type, str) or node.get("mode") in (2, 4) or node_type in _SKIPPED_TYPES:
            continue
        if node_type in subgraphs:
            if node_type in chain:  # the frontend refuses these ("Circular reference detected")
                errors.append(
                    f"comfyui workflow: subgraph {limits.clip_name(node_type, 80)} contains itself; "
                    f"node {ctx.prefix}{limits.clip_name(node_id, 40)} left out"
                )
                continue
            sub = conversion.context(f"{ctx.prefix}{node_id}:", subgraphs[node_type], ctx, node)
            _flatten(sub, conversion, api, depth + 1, chain + (node_type,))
            continue
        if _SUBGRAPH_ID.match(node_type):
            errors.append(
                f"comfyui workflow: node {ctx.prefix}{limits.clip_name(node_id, 40)} is an instance of "
                f"subgraph {limits.clip_name(node_type, 80)}, which the workflow does not define"
            )
            continue
        inputs: dict[str, Any] = {}
        linked_names = set()
        for slot in _list(node.get("inputs")):
            limits.tick()
            if not isinstance(slot, dict) or slot.get("link") is None:
                continue
            origin = _origin(ctx, slot["link"], conversion)
            if origin is _UNSET:
                continue  # an unlinked subgraph input without a promoted value: the node's own widget holds it
            linked_names.add(slot.get("name"))
            if origin is not None:
                inputs[str(slot.get("name"))] = origin
        for name, value in _widget_values(node):
            if name not in linked_names and name not in inputs:
                inputs[name] = value
        for (target, name), value in overrides.items():  # legacy proxy widgets: the instance's value wins
            if target == node_id and name not in linked_names:
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


def _origin(ctx: _Context, link_id: Any, conversion: _Conversion) -> Any:
    """API-style ``[node_id, slot]`` or a literal value for the link's source. Every link
    passed on the way resolves to the same origin and is remembered with it."""
    passed: list[tuple[str, str]] = []
    found = _walk_origin(ctx, link_id, conversion, passed)
    for key in passed:
        conversion.origins[key] = found
    return found


def _walk_origin(ctx: _Context, link_id: Any, conversion: _Conversion, passed: list) -> Any:
    subgraphs, errors = conversion.subgraphs, conversion.errors
    seen: set[tuple[str, str]] = set()
    depth = 0
    for _ in range(_MAX_HOPS):
        limits.tick()
        key = (ctx.prefix, str(link_id))
        if key in conversion.origins:
            return conversion.origins[key]
        if depth > _MAX_DEPTH or key in seen:
            errors.append("comfyui workflow: link chain loops or is too deep")
            return None
        seen.add(key)
        passed.append(key)
        if str(link_id) not in ctx.links:
            errors.append(f"comfyui workflow: link {limits.clip_name(link_id, 80)} missing")
            return None
        origin_id, origin_slot = ctx.links[str(link_id)]
        if origin_id == -10:  # a subgraph input: continue in the parent graph
            if ctx.parent is None or ctx.instance is None:
                return None
            slots = [s for s in _list(ctx.instance.get("inputs")) if isinstance(s, dict)]
            if not isinstance(origin_slot, int) or not 0 <= origin_slot < len(slots):
                errors.append(
                    f"comfyui workflow: subgraph input {limits.clip_name(origin_slot, 40)} missing on "
                    f"instance {limits.clip_name(ctx.instance.get('id'), 40)}"
                )
                return None
            if slots[origin_slot].get("link") is None:
                # nothing connected outside: the instance's promoted widget holds the value
                return _promoted_value(ctx.instance, slots, origin_slot)
            ctx, link_id, depth = ctx.parent, slots[origin_slot]["link"], depth + 1
            continue
        node = ctx.nodes.get(str(origin_id))
        if node is None:
            errors.append(
                f"comfyui workflow: link {limits.clip_name(link_id, 80)} comes from missing node "
                f"{limits.clip_name(origin_id, 80)}"
            )
            return None
        node_type = node.get("type")
        if node.get("mode") == 2:
            return None  # muted: it produced nothing
        if node_type == "Reroute" or node.get("mode") == 4:
            passage = conversion.passages.get(id(node))
            if passage is None:
                passage = conversion.passages[id(node)] = _Passage(node)
            link_id = passage.link_for(origin_slot)
            if link_id is None:
                return None
            continue
        if node_type == "PrimitiveNode":
            values = node.get("widgets_values")
            return values[0] if isinstance(values, list) and values else None
        if isinstance(node_type, str) and node_type in subgraphs:
            sub = subgraphs[node_type]
            outputs = _list(sub.get("outputs"))
            if (
                not isinstance(origin_slot, int)
                or not 0 <= origin_slot < len(outputs)
                or not isinstance(outputs[origin_slot], dict)
            ):
                return None
            link_ids = _list(outputs[origin_slot].get("linkIds"))
            if not link_ids:
                return None
            ctx = conversion.context(f"{ctx.prefix}{origin_id}:", sub, ctx, node)
            link_id, depth = link_ids[0], depth + 1
            continue
        return [ctx.prefix + str(origin_id), origin_slot]
    return None


_UNSET = object()  # an input the instance leaves to the inner node's own widget value


def _promoted_value(instance: dict, slots: list[dict], index: int) -> Any:
    """The value of a subgraph instance's promoted widget for its input ``index``, as the
    frontend serialises it (SubgraphNode.serialize): ``widgets_values`` holds one value per
    input that carries a ``widget``, in input order; older instances add a slot after each
    control_after_generate companion, and legacy ones name their promotions in
    ``properties.proxyWidgets`` (``["-1", input name]`` for a promoted subgraph input)."""
    values = instance.get("widgets_values")
    name = slots[index].get("name")
    if isinstance(values, dict):
        return values.get(name, _UNSET)
    if not isinstance(values, list):
        return _UNSET
    proxies = _proxy_entries(instance)
    if proxies:
        at = next((i for i, (target, widget) in enumerate(proxies) if target == "-1" and widget == name), None)
        return values[at] if at is not None and at < len(values) else _UNSET
    if "widget" not in slots[index]:
        return _UNSET
    promoted = [i for i, s in enumerate(slots) if "widget" in s]
    if len(values) > len(promoted):  # legacy: a control_after_generate value after some of them
        values = [v for v in values if not (isinstance(v, str) and v in _CONTROL_VALUES)]
    at = promoted.index(index)
    return values[at] if at < len(values) else _UNSET


def _proxy_entries(instance: dict | None) -> list[tuple[str, str]]:
    properties = instance.get("properties") if isinstance(instance, dict) else None
    proxies = properties.get("proxyWidgets") if isinstance(properties, dict) else None
    entries = _list(proxies)[:_MAX_PROXIES]  # one per widget shown on the node: a few, never thousands
    return [(str(p[0]), str(p[1])) for p in entries if isinstance(p, list) and len(p) >= 2]


def _proxy_overrides(instance: dict | None) -> dict[tuple[str, str], Any]:
    """Legacy proxy widgets of an instance that show an inner node's widget: (inner node id,
    widget name) -> the instance's value, which is what ran."""
    if instance is None:
        return {}
    values = instance.get("widgets_values")
    if not isinstance(values, list):
        return {}
    return {
        entry: values[i] for i, entry in enumerate(_proxy_entries(instance)) if entry[0] != "-1" and i < len(values)
    }


class _Passage:
    """How a reroute or a bypassed node passes inputs on, worked out once per node: a
    bypassed node hands each output the input of the same type (LoraLoader: MODEL to MODEL,
    CLIP to CLIP), the nth output of a type the nth input of that type."""

    def __init__(self, node: dict):
        inputs = [s for s in _list(node.get("inputs")) if isinstance(s, dict)]
        self.outputs: list[tuple[Any, int]] = []  # (type, how many earlier outputs have that type)
        counts: dict[str, int] = {}
        for output in _list(node.get("outputs")):
            if isinstance(output, dict):
                kind = output.get("type")
                nth = counts.get(kind, 0) if isinstance(kind, str) else 0
                if isinstance(kind, str):
                    counts[kind] = nth + 1
                self.outputs.append((kind, nth))
        self.by_type: dict[str, list[dict]] = {}
        for slot in inputs:
            if isinstance(slot.get("type"), str):
                self.by_type.setdefault(slot["type"], []).append(slot)
        self.first_linked = next((s.get("link") for s in inputs if s.get("link") is not None), None)

    def link_for(self, slot: Any) -> Any:
        kind, nth = self.outputs[slot] if isinstance(slot, int) and 0 <= slot < len(self.outputs) else (None, 0)
        if isinstance(kind, str) and kind != "*":
            same = self.by_type.get(kind)
            if same:
                return same[min(nth, len(same) - 1)].get("link")
        return self.first_linked


def _expand_group_nodes(workflow: dict, subgraphs: dict, errors: list[str], conversion: _Conversion) -> dict:
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
        conversion.charge(groups[name])  # each instance copies its group's nodes and links
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
        if (
            isinstance(target, int)
            and 0 <= target < len(inner)
            and isinstance(target_slot, int)
            and 0 <= target_slot < len(inner[target]["inputs"])
        ):
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
    widget_nodes = [
        n for n in inner if n.get("type") not in _SKIPPED_TYPES and isinstance(n.get("widgets_values"), list)
    ]
    if isinstance(values, list) and sum(len(n["widgets_values"]) for n in widget_nodes) == len(values):
        at = 0
        for node in widget_nodes:  # the instance holds the current values; the definition those at grouping time
            count = len(node["widgets_values"])
            node["widgets_values"] = values[at : at + count]
            at += count
    return {"id": instance.get("type"), "nodes": inner, "links": links, "outputs": outputs}
