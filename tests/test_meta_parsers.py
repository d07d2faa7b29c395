"""Parser contract (every registered parser survives garbage) and format details."""

from __future__ import annotations

import json
import random

import pytest

from audit.meta import PARSERS, extract
from audit.meta.a1111 import parse_infotext
from audit.meta.base import GenerationMetadata, MetadataParser, MetadataText

KEYS = [
    "parameters",
    "prompt",
    "workflow",
    "Comment",
    "Description",
    "Source",
    "Software",
    "invokeai_metadata",
    "sd-metadata",
    "Dream",
    "fooocus_scheme",
    "parameters-json",
    "smproj",
    "generation_data",
    "extraMetadata",
    "UserComment",
    "sidecar-text",
    "sidecar-json",
    "manifest",
    "ImageDescription",
]


def _garbage_texts(rng: random.Random) -> list[str]:
    valid_graph = json.dumps(
        {"1": {"class_type": "KSampler", "inputs": {"positive": ["2", 0], "latent_image": ["9", 0]}}}
    )
    texts = [
        "",
        "{",
        "[]",
        "null",
        "42",
        '"text"',
        "{}",
        '{"nodes": 5}',
        '{"nodes": [1, "x", null]}',
        '{"1": {"class_type": 5, "inputs": []}}',
        '{"1": {"class_type": "KSampler", "inputs": {"positive": [1, 2, 3]}}}',
        valid_graph[: len(valid_graph) // 2],
        '{"uc": 5, "prompt": ["a"], "seed": {"x": 1}}',
        '{"sui_image_params": []}',
        '{"extraMetadata": "{not json"}',
        '{"Comment": "{\\"uc\\": [1]}"}',
        "Steps: x, Sampler: , Seed: ??, CFG scale: inf",
        "Negative prompt:",
        'Steps: 1, Hashes: {"model": [1]}, Lora hashes: 5',
        '{"positive_prompt": 1, "model": [1], "seed": "abc"}',
        '{"image": {"prompt": [1, {"prompt": 2}]}}',
        '"prompt" -s -S',
        '{"State": {"Sampler": []}}',
        '{"PositivePrompt": 3}',
        '{"baseModel": 4, "prompt": "a"}',
        "Workflow: {",
        "Prompt: {]",
    ]
    for _ in range(40):
        texts.append("".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 200))))
    return texts


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.name)
def test_every_parser_survives_garbage(parser):
    assert isinstance(parser, MetadataParser)
    rng = random.Random(parser.name)
    for text in _garbage_texts(rng):
        for key in KEYS:
            result = parser.parse([MetadataText(f"test:{key}", key, text)])
            assert result is None or isinstance(result, GenerationMetadata)
    assert parser.parse([]) is None


def test_extract_never_raises_on_random_and_truncated_bytes():
    rng = random.Random(3)
    samples = [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        b"\xff\xd8\xff\xe1\xff\xff",
        b"RIFF\x00\x00\x00\x00WEBPEXIF\xff\xff\xff\xff",
    ]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 500))) for _ in range(50)]
    for data in samples:
        result = extract(data, sidecars=[("x.json", data), ("x.yaml", b"a: [")], fields={"seed": object()})
        assert isinstance(result.best, GenerationMetadata)


def test_a1111_quoted_values_multiline_prompt_and_extra_networks():
    text = (
        "a red triangle <lora:shapes_v2:0.6>,\nmultiple lines  \nNegative prompt: a blue circle\nsecond line\n"
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890123, Size: 512x512, "
        'Model hash: deadbeef, Model: toy-shapes, Lora hashes: "shapes_v2: abc123, other: def456", '
        'TI hashes: "calm: 0011", Template: "a, b, c", Hashes: {"vae": "99", "model": "deadbeef"}, Version: v1.10.1'
    )
    meta = parse_infotext(text)
    assert meta.prompt == "a red triangle <lora:shapes_v2:0.6>,\nmultiple lines"
    assert meta.negative_prompt == "a blue circle\nsecond line"
    assert meta.sampler == "DPM++ 2M Karras" and meta.scheduler is None  # the writer did not split it
    assert meta.seed == "1234567890123" and meta.cfg_scale == 7.0
    loras = {r.name: r for r in meta.resources if r.kind == "lora"}
    assert loras["shapes_v2"].weight == 0.6 and loras["shapes_v2"].hash == "abc123"
    assert loras["other"].hash == "def456"
    assert any(r.kind == "embedding" and r.name == "calm" for r in meta.resources)
    assert meta.extra["parameters"]["Template"] == "a, b, c"
    assert meta.generator == "a1111"


def test_a1111_no_negative_and_writer_identification():
    assert parse_infotext("a star\nSteps: 5, Seed: 1, Sampler: Euler, Schedule type: Karras").negative_prompt is None
    assert (
        parse_infotext("x\nSteps: 5, Sampler: Euler, Seed: 1, Version: f2.0.1v1.10.1-previous-1-g1").generator
        == "forge"
    )
    assert parse_infotext("x\nSteps: 5, Sampler: Euler, Seed: 1, Version: classic").generator == "forge-classic"
    assert parse_infotext("x\nSteps: 5, Sampler: Euler, Seed: 1, App: SD.Next, Version: abc").generator == "sdnext"
    assert parse_infotext("just a caption") is None


def _node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def _piece(key, value):
    return MetadataText(f"png:tEXt:{key}", key, value if isinstance(value, str) else json.dumps(value))


def comfy(graph, *extra_pieces):
    from audit.meta.comfyui import ComfyUIParser

    return ComfyUIParser().parse([_piece("prompt", graph), *extra_pieces])


def test_comfyui_custom_sampler_with_guider_combine_and_primitives():
    graph = {
        "1": _node("CheckpointLoaderSimple", ckpt_name="toy.safetensors"),
        "2": _node(
            "LoraLoader",
            lora_name="shapes.safetensors",
            strength_model=0.8,
            strength_clip=1.0,
            model=["1", 0],
            clip=["1", 1],
        ),
        "3": _node("PrimitiveString", value="a purple star"),
        "4": _node("CLIPTextEncode", text=["3", 0], clip=["2", 1]),
        "5": _node("CLIPTextEncode", text="on a gray background", clip=["2", 1]),
        "6": _node("ConditioningCombine", conditioning_1=["4", 0], conditioning_2=["5", 0]),
        "7": _node("ConditioningZeroOut", conditioning=["4", 0]),
        "8": _node("CFGGuider", cfg=4.5, model=["2", 0], positive=["6", 0], negative=["7", 0]),
        "9": _node("RandomNoise", noise_seed=18446744073709551615),
        "10": _node("KSamplerSelect", sampler_name="dpmpp_2m"),
        "11": _node("BasicScheduler", scheduler="karras", steps=30, denoise=1.0, model=["2", 0]),
        "12": _node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "13": _node(
            "SamplerCustomAdvanced",
            noise=["9", 0],
            guider=["8", 0],
            sampler=["10", 0],
            sigmas=["11", 0],
            latent_image=["12", 0],
        ),
    }
    meta = comfy(graph)
    assert meta.prompt == "a purple star\non a gray background"
    assert meta.negative_prompt is None  # zeroed-out conditioning carries no text
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.scheduler) == (
        "18446744073709551615",
        30,
        4.5,
        "dpmpp_2m",
        "karras",
    )
    assert meta.model == "toy.safetensors"
    assert any(r.kind == "lora" and r.name == "shapes.safetensors" and r.weight == 0.8 for r in meta.resources)
    sampler = meta.extra["samplers"][0]
    assert {p["node_id"] for p in sampler["prompts"]} == {"4", "5"}


def test_comfyui_primary_sampler_is_the_first_pass():
    graph = {
        "1": _node("CheckpointLoaderSimple", ckpt_name="toy.safetensors"),
        "2": _node("CLIPTextEncode", text="a green circle\n", clip=["1", 1]),
        "3": _node("CLIPTextEncode", text="text", clip=["1", 1]),
        "4": _node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "5": _node(
            "KSampler",
            seed=1,
            steps=20,
            cfg=7,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
            model=["1", 0],
            positive=["2", 0],
            negative=["3", 0],
            latent_image=["4", 0],
        ),
        "6": _node("LatentUpscale", samples=["5", 0], width=128, height=128),
        "0": _node(
            "KSampler",
            seed=2,
            steps=8,
            cfg=5,
            sampler_name="dpmpp_sde",
            scheduler="normal",
            denoise=0.5,
            model=["1", 0],
            positive=["2", 0],
            negative=["3", 0],
            latent_image=["6", 0],
        ),
    }
    meta = comfy(graph)
    assert meta.seed == "1" and meta.steps == 20
    assert meta.prompt == "a green circle\n"  # top level verbatim
    assert meta.extra["samplers"][0]["prompts"][0]["text"] == "a green circle"  # per sampler stripped
    assert len(meta.extra["samplers"]) == 2


def test_comfyui_broken_json_is_an_error_not_an_exception():
    from tests.meta_fixtures import png_chunk, png_with_chunks

    data = png_with_chunks([png_chunk(b"tEXt", b'prompt\x00{"3": {"class_type": "KSampler", ')])
    result = extract(data)
    assert not result.has_generation_metadata
    assert result.errors[0].startswith("comfyui graph in png:tEXt:prompt is not valid JSON")
    assert result.raw[0].text.startswith('{"3"')  # kept verbatim as evidence


def test_comfyui_dangling_links_and_cycles_give_partial_results():
    graph = {
        "1": _node("CLIPTextEncode", text="a red square", clip=["99", 1]),
        "2": _node("ConditioningCombine", conditioning_1=["3", 0], conditioning_2=["1", 0]),
        "3": _node("ConditioningCombine", conditioning_1=["2", 0], conditioning_2=["98", 0]),
        "4": _node(
            "KSampler",
            seed=["5", 0],
            steps=10,
            cfg=7,
            sampler_name="euler",
            scheduler="normal",
            model=["4", 0],
            positive=["2", 0],
            negative=["97", 0],
            latent_image=["4", 0],
        ),
        "5": _node("PrimitiveNode-ish", a=["5", 0], b=["5", 0]),
    }
    meta = comfy(graph)
    assert meta.prompt == "a red square"
    assert meta.steps == 10
    assert any("missing node" in e for e in meta.extra["errors"])


def test_comfyui_workflow_only_with_subgraph_and_primitive():
    workflow = {
        "nodes": [
            {"id": 1, "type": "CheckpointLoaderSimple", "widgets_values": ["toy.safetensors"], "inputs": []},
            {"id": 2, "type": "PrimitiveNode", "widgets_values": ["a blue triangle"], "inputs": []},
            {"id": 3, "type": "sub-encode", "inputs": [{"name": "clip", "link": 10}, {"name": "text", "link": 11}]},
            {"id": 4, "type": "CLIPTextEncode", "widgets_values": ["noise"], "inputs": [{"name": "clip", "link": 12}]},
            {
                "id": 5,
                "type": "KSampler",
                "widgets_values": [5, "fixed", 15, 6, "euler", "normal", 1],
                "inputs": [
                    {"name": "model", "link": 13},
                    {"name": "positive", "link": 14},
                    {"name": "negative", "link": 15},
                    {"name": "latent_image", "link": 16},
                ],
            },
            {"id": 6, "type": "EmptyLatentImage", "widgets_values": [64, 64, 1], "inputs": []},
            {"id": 7, "type": "Reroute", "inputs": [{"name": "", "link": 17}]},
        ],
        "links": [
            [10, 1, 1, 3, 0, "CLIP"],
            [11, 2, 0, 3, 1, "STRING"],
            [12, 1, 1, 4, 0, "CLIP"],
            [13, 1, 0, 5, 0, "MODEL"],
            [14, 7, 0, 5, 1, "CONDITIONING"],
            [17, 3, 0, 7, 0, "CONDITIONING"],
            [15, 4, 0, 5, 2, "CONDITIONING"],
            [16, 6, 0, 5, 3, "LATENT"],
        ],
        "definitions": {
            "subgraphs": [
                {
                    "id": "sub-encode",
                    "nodes": [
                        {
                            "id": 1,
                            "type": "CLIPTextEncode",
                            "widgets_values": [""],
                            "inputs": [
                                {"name": "clip", "link": 1},
                                {"name": "text", "link": 2, "widget": {"name": "text"}},
                            ],
                        }
                    ],
                    "links": [
                        {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0},
                        {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1},
                        {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0},
                    ],
                    "inputs": [{"name": "clip"}, {"name": "text"}],
                    "outputs": [{"name": "CONDITIONING", "linkIds": [3]}],
                }
            ]
        },
    }
    from audit.meta.comfyui import ComfyUIParser

    meta = ComfyUIParser().parse([_piece("workflow", workflow)])
    assert meta.prompt == "a blue triangle" and meta.negative_prompt == "noise"
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.model) == ("5", 15, 6.0, "toy.safetensors")


def test_graph_beats_save_node_infotext_of_similar_richness():
    graph = {
        "1": _node("CheckpointLoaderSimple", ckpt_name="toy.safetensors"),
        "2": _node("CLIPTextEncode", text="an orange star", clip=["1", 1]),
        "3": _node("CLIPTextEncode", text="dark", clip=["1", 1]),
        "4": _node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "5": _node(
            "KSampler",
            seed=3,
            steps=20,
            cfg=7,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
            model=["1", 0],
            positive=["2", 0],
            negative=["3", 0],
            latent_image=["4", 0],
        ),
    }
    from tests.meta_fixtures import png_chunk, png_with_chunks

    infotext = (
        "unknown\nNegative prompt: unknown\nSteps: 20, Sampler: euler, CFG scale: 7, Seed: 0, Model hash: ab, Model: x"
    )
    data = png_with_chunks(
        [
            png_chunk(b"tEXt", b"parameters\x00" + infotext.encode()),
            png_chunk(b"tEXt", b"prompt\x00" + json.dumps(graph).encode()),
        ]
    )
    result = extract(data)
    assert result.best.prompt == "an orange star"
    assert set(result.found) == {"comfyui@png:tEXt:prompt", "a1111@png:tEXt:parameters"}
    assert len(result.raw) == 2


def test_novelai_v4_character_prompts():
    comment = {
        "prompt": "a red circle",
        "uc": "blurry",
        "steps": 28,
        "scale": 5,
        "seed": 9,
        "sampler": "k_euler",
        "v4_prompt": {
            "caption": {
                "base_caption": "a red circle",
                "char_captions": [{"char_caption": "a small square", "centers": [{"x": 0.5, "y": 0.5}]}],
            }
        },
    }
    from audit.meta.novelai import NovelAIParser

    meta = NovelAIParser().parse(
        [_piece("Software", "NovelAI"), _piece("Source", "NovelAI Diffusion V4 ABCDEF12"), _piece("Comment", comment)]
    )
    assert meta.negative_prompt == "blurry" and meta.cfg_scale == 5.0 and meta.model_hash == "ABCDEF12"
    assert meta.extra["character_prompts"][0]["caption"] == "a small square"


def test_sidecars_and_manifest_fields():
    plain = extract(b"", sidecars=[("0001.txt", b"a photo of a red circle\n")])
    assert plain.best.prompt == "a photo of a red circle" and plain.found == ["sidecar@sidecar:0001.txt"]
    web = extract(b"", sidecars=[("0001.json", b'{"caption": "a gray star", "key": "0001"}')])
    assert web.best.prompt == "a gray star"
    yaml_side = extract(
        b"", sidecars=[("a.yaml", b"prompt: a green square\nnegative_prompt: red\nseed: 12\nsteps: 4\n")]
    )
    assert (yaml_side.best.prompt, yaml_side.best.seed, yaml_side.best.steps) == ("a green square", "12", 4)
    infotext = extract(b"", sidecars=[("a.txt", b"a circle\nSteps: 3, Sampler: Euler, Seed: 5")])
    assert infotext.best.generator == "a1111" and infotext.best.seed == "5"
    manifest = extract(b"", fields={"prompt": "a blue square", "seed": 7.0, "cfg_scale": "6", "model": "toy"})
    assert (manifest.best.prompt, manifest.best.seed, manifest.best.cfg_scale) == ("a blue square", "7", 6.0)
    assert manifest.raw[0].location == "manifest"


def test_embedded_metadata_outranks_sidecar():
    from tests.meta_fixtures import INFOTEXT, png_chunk, png_with_chunks

    data = png_with_chunks([png_chunk(b"tEXt", b"parameters\x00" + INFOTEXT.encode())])
    result = extract(data, sidecars=[("a.txt", b"something else entirely")], fields={"prompt": "another"})
    assert result.best.prompt == "a red circle on a white background"
    assert len(result.found) == 3
