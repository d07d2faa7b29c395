"""ComfyUI subgraphs, as the frontend writes them (Comfy-Org/ComfyUI_frontend, litegraph
``subgraph/``): API prompts whose node ids are instance paths ("30:6", "40:30:6", from
ExecutableNodeDTO), and UI workflows whose subgraph instances are nodes typed by a
definition id under ``definitions.subgraphs`` (links from the input node -10, to the
output node -20, promoted widget values on the instance). Bad variants: a definition that
contains itself, an instance of an undefined subgraph, a subgraph input slot that does not
exist: recorded errors, never a crash, the pixels still read."""

from __future__ import annotations

import copy
import io
import json

from PIL import Image, ImageDraw
from tests.meta_fixtures import png_chunk

from audit.meta import extract

PROMPT_SG = "0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
SAMPLE_SG = "9f8e7d6c-5b4a-4938-8271-605f4e3d2c1b"
POSITIVE = "a red triangle on a white background"
NEGATIVE = "blurry, a blue square"


def toy_png(**chunks: str) -> bytes:
    """A toy shape with the given tEXt chunks."""
    image = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(image).polygon([(16, 4), (28, 28), (4, 28)], fill="red")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    body = [png_chunk(b"tEXt", key.encode() + b"\x00" + text.encode("utf-8")) for key, text in chunks.items()]
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + b"".join(body) + data[iend:]


def prompt_definition(stale_text: str = "stale text inside the definition") -> dict:
    """A subgraph "Prompt": CLIP and text in, CONDITIONING out, one CLIPTextEncode inside."""
    return {
        "id": PROMPT_SG,
        "version": 1,
        "name": "Prompt",
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [400, 0, 120, 60]},
        "inputs": [
            {"id": "in-clip", "name": "clip", "type": "CLIP", "linkIds": [11]},
            {"id": "in-text", "name": "text", "type": "STRING", "linkIds": [12]},
        ],
        "outputs": [{"id": "out-cond", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [13]}],
        "widgets": [],
        "nodes": [
            {
                "id": 6,
                "type": "CLIPTextEncode",
                "mode": 0,
                "inputs": [
                    {"name": "clip", "type": "CLIP", "link": 11},
                    {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 12},
                ],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [13]}],
                "widgets_values": [stale_text],
            }
        ],
        "links": [
            {"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 6, "target_slot": 0, "type": "CLIP"},
            {"id": 12, "origin_id": -10, "origin_slot": 1, "target_id": 6, "target_slot": 1, "type": "STRING"},
            {"id": 13, "origin_id": 6, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"},
        ],
    }


def workflow_with_prompt_subgraph() -> dict:
    """Root: checkpoint, KSampler, a negative CLIPTextEncode and instance 30 of "Prompt"
    whose text is a promoted widget (the instance's widgets_values)."""
    return {
        "id": "wf",
        "revision": 0,
        "last_node_id": 30,
        "last_link_id": 13,
        "version": 0.4,
        "nodes": [
            {
                "id": 3,
                "type": "KSampler",
                "mode": 0,
                "inputs": [
                    {"name": "model", "type": "MODEL", "link": 1},
                    {"name": "positive", "type": "CONDITIONING", "link": 4},
                    {"name": "negative", "type": "CONDITIONING", "link": 6},
                    {"name": "latent_image", "type": "LATENT", "link": 2},
                ],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}],
                "widgets_values": [156680208700286, "randomize", 24, 6.5, "dpmpp_2m", "karras", 1],
            },
            {
                "id": 30,
                "type": PROMPT_SG,
                "mode": 0,
                "inputs": [
                    {"name": "clip", "type": "CLIP", "link": 5},
                    {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": None},
                ],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [4]}],
                "widgets_values": [POSITIVE],
            },
            {
                "id": 4,
                "type": "CheckpointLoaderSimple",
                "mode": 0,
                "inputs": [],
                "outputs": [
                    {"name": "MODEL", "type": "MODEL", "links": [1]},
                    {"name": "CLIP", "type": "CLIP", "links": [3, 5]},
                    {"name": "VAE", "type": "VAE", "links": []},
                ],
                "widgets_values": ["toyShapes_v1.safetensors"],
            },
            {
                "id": 7,
                "type": "CLIPTextEncode",
                "mode": 0,
                "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [6]}],
                "widgets_values": [NEGATIVE],
            },
            {
                "id": 5,
                "type": "EmptyLatentImage",
                "mode": 0,
                "inputs": [],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}],
                "widgets_values": [512, 512, 1],
            },
        ],
        "links": [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [3, 4, 1, 7, 0, "CLIP"],
            [4, 30, 0, 3, 1, "CONDITIONING"],
            [5, 4, 1, 30, 0, "CLIP"],
            [6, 7, 0, 3, 2, "CONDITIONING"],
        ],
        "definitions": {"subgraphs": [prompt_definition()]},
    }


def assert_read(meta, positive: str = POSITIVE) -> None:
    assert meta.prompt == positive and meta.negative_prompt == NEGATIVE
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.scheduler) == (
        "156680208700286",
        24,
        6.5,
        "dpmpp_2m",
        "karras",
    )
    assert meta.model == "toyShapes_v1.safetensors"


# --- API prompts: node ids are instance paths ---------------------------------------------


def api_prompt_with_paths() -> dict:
    """What the frontend queues for the workflow above with the sampler itself moved into an
    outer subgraph instance 40: "40:3" samples, "40:30:6" (nested) encodes the prompt."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toyShapes_v1.safetensors"}},
        "40:30:6": {"class_type": "CLIPTextEncode", "inputs": {"text": POSITIVE, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "40:12": {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": "shapes_lora.safetensors",
                "strength_model": 0.8,
                "strength_clip": 0.8,
                "model": ["4", 0],
                "clip": ["4", 1],
            },
        },
        "40:3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 156680208700286,
                "steps": 24,
                "cfg": 6.5,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1,
                "model": ["40:12", 0],
                "positive": ["40:30:6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["40:8", 0]}},
        "40:8": {"class_type": "VAEDecode", "inputs": {"samples": ["40:3", 0], "vae": ["4", 2]}},
    }


def test_api_prompt_with_subgraph_path_ids():
    result = extract(toy_png(prompt=json.dumps(api_prompt_with_paths())))
    meta = result.best
    assert_read(meta)
    assert meta.extra["primary_sampler"] == "40:3"
    assert meta.extra["samplers"][0]["prompts"] == [{"node_id": "40:30:6", "text": POSITIVE}]
    assert ("lora", "shapes_lora.safetensors") in {(r.kind, r.name) for r in meta.resources}
    assert not result.errors


# --- UI workflows: definitions.subgraphs -----------------------------------------------------


def test_workflow_subgraph_instance_with_promoted_widget_value():
    result = extract(toy_png(workflow=json.dumps(workflow_with_prompt_subgraph())))
    assert_read(result.best)  # the instance's value, not the definition's stale widget value
    assert result.best.extra["samplers"][0]["prompts"] == [{"node_id": "30:6", "text": POSITIVE}]
    assert not result.errors


def test_workflow_subgraph_input_without_promoted_value_uses_inner_widget():
    workflow = workflow_with_prompt_subgraph()
    instance = workflow["nodes"][1]
    del instance["widgets_values"]
    del instance["inputs"][1]["widget"]
    workflow["definitions"]["subgraphs"][0]["nodes"][0]["widgets_values"] = [POSITIVE]
    assert_read(extract(toy_png(workflow=json.dumps(workflow))).best)


def test_workflow_promoted_seed_with_legacy_control_value_slot():
    """An instance whose subgraph holds the KSampler, with seed and steps promoted; an older
    frontend saved a control_after_generate value after the seed ("randomize")."""
    workflow = workflow_with_prompt_subgraph()
    sampler = workflow["nodes"][0]
    sampler["inputs"] += [
        {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 40},
        {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 41},
    ]
    sampler["widgets_values"] = [1, "fixed", 1, 1.0, "dpmpp_2m", "karras", 1]  # stale: the instance's values ran
    sampler_sg = {
        "id": SAMPLE_SG,
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [
            {"name": "model", "type": "MODEL", "linkIds": [42]},
            {"name": "positive", "type": "CONDITIONING", "linkIds": [43]},
            {"name": "negative", "type": "CONDITIONING", "linkIds": [44]},
            {"name": "latent_image", "type": "LATENT", "linkIds": [45]},
            {"name": "seed", "type": "INT", "linkIds": [40]},
            {"name": "steps", "type": "INT", "linkIds": [41]},
        ],
        "outputs": [],
        "nodes": [{**sampler, "id": 3}],
        "links": [
            {"id": 42, "origin_id": -10, "origin_slot": 0},
            {"id": 43, "origin_id": -10, "origin_slot": 1},
            {"id": 44, "origin_id": -10, "origin_slot": 2},
            {"id": 45, "origin_id": -10, "origin_slot": 3},
            {"id": 40, "origin_id": -10, "origin_slot": 4},
            {"id": 41, "origin_id": -10, "origin_slot": 5},
        ],
    }
    sampler["inputs"][0]["link"], sampler["inputs"][1]["link"] = 42, 43
    sampler["inputs"][2]["link"], sampler["inputs"][3]["link"] = 44, 45
    instance = {
        "id": 50,
        "type": SAMPLE_SG,
        "mode": 0,
        "inputs": [
            {"name": "model", "type": "MODEL", "link": 1},
            {"name": "positive", "type": "CONDITIONING", "link": 4},
            {"name": "negative", "type": "CONDITIONING", "link": 6},
            {"name": "latent_image", "type": "LATENT", "link": 2},
            {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None},
            {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None},
        ],
        "outputs": [],
        "widgets_values": [156680208700286, "randomize", 24],
    }
    workflow["nodes"][0] = instance
    for link in workflow["links"]:
        if link[3] == 3:
            link[3] = 50
    workflow["definitions"]["subgraphs"].append(sampler_sg)
    meta = extract(toy_png(workflow=json.dumps(workflow))).best
    assert (meta.seed, meta.steps, meta.prompt) == ("156680208700286", 24, POSITIVE)
    assert meta.extra["primary_sampler"] == "50:3"


def test_workflow_legacy_proxy_widgets_override_inner_values():
    workflow = workflow_with_prompt_subgraph()
    instance = workflow["nodes"][1]
    instance["inputs"] = instance["inputs"][:1]  # text not an input: shown as a proxy of node 6's widget
    instance["properties"] = {"proxyWidgets": [["6", "text"]]}
    definition = workflow["definitions"]["subgraphs"][0]
    definition["inputs"] = definition["inputs"][:1]
    definition["links"] = [definition["links"][0], definition["links"][2]]
    definition["nodes"][0]["inputs"] = definition["nodes"][0]["inputs"][:1]
    assert_read(extract(toy_png(workflow=json.dumps(workflow))).best)


def test_workflow_nested_subgraphs_with_sampler_inside():
    """Outer subgraph 40 holds the KSampler and an instance (30) of "Prompt"; its inputs are
    model, clip, negative and latent from the root; its output the LATENT."""
    base = workflow_with_prompt_subgraph()
    root_nodes = {n["id"]: n for n in base["nodes"]}
    sampler, prompt_instance = copy.deepcopy(root_nodes[3]), copy.deepcopy(root_nodes[30])
    sampler["inputs"][0]["link"], sampler["inputs"][1]["link"] = 21, 24
    sampler["inputs"][2]["link"], sampler["inputs"][3]["link"] = 22, 23
    sampler["outputs"][0]["links"] = [25]
    prompt_instance["inputs"][0]["link"] = 20
    prompt_instance["outputs"][0]["links"] = [24]
    outer = {
        "id": SAMPLE_SG,
        "version": 1,
        "name": "Sample",
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [
            {"id": "a", "name": "model", "type": "MODEL", "linkIds": [21]},
            {"id": "b", "name": "clip", "type": "CLIP", "linkIds": [20]},
            {"id": "c", "name": "negative", "type": "CONDITIONING", "linkIds": [22]},
            {"id": "d", "name": "latent", "type": "LATENT", "linkIds": [23]},
        ],
        "outputs": [{"id": "e", "name": "LATENT", "type": "LATENT", "linkIds": [25]}],
        "nodes": [sampler, prompt_instance],
        "links": [
            {"id": 20, "origin_id": -10, "origin_slot": 1, "target_id": 30, "target_slot": 0, "type": "CLIP"},
            {"id": 21, "origin_id": -10, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "MODEL"},
            {"id": 22, "origin_id": -10, "origin_slot": 2, "target_id": 3, "target_slot": 2, "type": "CONDITIONING"},
            {"id": 23, "origin_id": -10, "origin_slot": 3, "target_id": 3, "target_slot": 3, "type": "LATENT"},
            {"id": 24, "origin_id": 30, "origin_slot": 0, "target_id": 3, "target_slot": 1, "type": "CONDITIONING"},
            {"id": 25, "origin_id": 3, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"},
        ],
    }
    workflow = {
        "nodes": [
            root_nodes[4],
            root_nodes[7],
            root_nodes[5],
            {
                "id": 40,
                "type": SAMPLE_SG,
                "mode": 0,
                "inputs": [
                    {"name": "model", "type": "MODEL", "link": 31},
                    {"name": "clip", "type": "CLIP", "link": 32},
                    {"name": "negative", "type": "CONDITIONING", "link": 33},
                    {"name": "latent", "type": "LATENT", "link": 34},
                ],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}],
            },
        ],
        "links": [
            [31, 4, 0, 40, 0, "MODEL"],
            [32, 4, 1, 40, 1, "CLIP"],
            [33, 7, 0, 40, 2, "CONDITIONING"],
            [34, 5, 0, 40, 3, "LATENT"],
            [3, 4, 1, 7, 0, "CLIP"],
        ],
        "definitions": {"subgraphs": [outer, prompt_definition()]},
    }
    result = extract(toy_png(workflow=json.dumps(workflow)))
    assert_read(result.best)
    assert result.best.extra["primary_sampler"] == "40:3"
    assert result.best.extra["samplers"][0]["prompts"] == [{"node_id": "40:30:6", "text": POSITIVE}]
    assert not result.errors


def test_workflow_subgraph_output_feeds_the_root_sampler_through_a_reroute_inside():
    workflow = workflow_with_prompt_subgraph()
    definition = workflow["definitions"]["subgraphs"][0]
    definition["nodes"].append(
        {
            "id": 9,
            "type": "Reroute",
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": 14}],
            "outputs": [{"name": "", "type": "CONDITIONING", "links": [13]}],
        }
    )
    definition["links"][2] = {
        "id": 14,
        "origin_id": 6,
        "origin_slot": 0,
        "target_id": 9,
        "target_slot": 0,
        "type": "CONDITIONING",
    }
    definition["links"].append(
        {"id": 13, "origin_id": 9, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"}
    )
    assert_read(extract(toy_png(workflow=json.dumps(workflow))).best)


# --- bad variants ------------------------------------------------------------------------------


def test_subgraph_that_contains_itself_is_an_error_not_a_hang():
    workflow = workflow_with_prompt_subgraph()
    definition = workflow["definitions"]["subgraphs"][0]
    definition["nodes"].append({"id": 8, "type": PROMPT_SG, "mode": 0, "inputs": [], "outputs": []})
    result = extract(toy_png(workflow=json.dumps(workflow)))
    assert any("contains itself" in e for e in result.errors)
    assert_read(result.best)  # the rest of the graph is still read


def test_two_subgraphs_that_contain_each_other():
    workflow = workflow_with_prompt_subgraph()
    other = {
        "id": SAMPLE_SG,
        "nodes": [{"id": 1, "type": PROMPT_SG, "mode": 0}],
        "links": [],
        "inputs": [],
        "outputs": [],
    }
    workflow["definitions"]["subgraphs"][0]["nodes"].append({"id": 8, "type": SAMPLE_SG, "mode": 0})
    workflow["definitions"]["subgraphs"].append(other)
    result = extract(toy_png(workflow=json.dumps(workflow)))
    assert any("contains itself" in e for e in result.errors)
    assert result.best.prompt == POSITIVE


def test_instance_of_an_undefined_subgraph_is_recorded():
    workflow = workflow_with_prompt_subgraph()
    workflow["definitions"]["subgraphs"] = []
    result = extract(toy_png(workflow=json.dumps(workflow)))
    assert any("does not define" in e for e in result.errors)
    assert result.best.negative_prompt == NEGATIVE and result.best.seed == "156680208700286"
    assert result.best.prompt is None


def test_subgraph_input_slot_out_of_range_and_garbage_definitions():
    workflow = workflow_with_prompt_subgraph()
    definition = workflow["definitions"]["subgraphs"][0]
    definition["links"][1]["origin_slot"] = 7
    workflow["definitions"]["subgraphs"].extend([None, 3, {"id": 5}, {"id": "x", "nodes": "no"}])
    result = extract(toy_png(workflow=json.dumps(workflow)))
    assert any("subgraph input 7 missing" in e for e in result.errors)
    assert result.best.negative_prompt == NEGATIVE


def test_broken_subgraph_png_still_audits_pixels():
    workflow = workflow_with_prompt_subgraph()
    workflow["definitions"] = {"subgraphs": "not a list"}
    data = toy_png(workflow=json.dumps(workflow))
    result = extract(data)
    assert any("does not define" in e for e in result.errors)
    image = Image.open(io.BytesIO(data))
    assert image.size == (32, 32) and image.convert("RGB").getpixel((16, 20)) == (255, 0, 0)
