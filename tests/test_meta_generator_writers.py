"""Generators' formats as their own writers produce them, end to end through ``extract()``:
InvokeAI (Dream, sd-metadata, invokeai_metadata, graph/workflow), NovelAI, Fooocus and
RuinedFooocus, SwarmUI, Stability Matrix, Midjourney, sidecars and manifest columns.

Payloads are shaped after each writer's source (cited per test); prompts are toy shapes."""

from __future__ import annotations

import io
import json

from tests.meta_fixtures import (
    png_chunk,
    stealth_image,
    jpeg_with_exif,
    png_with_chunks,
    tiff,
)

from audit.meta import extract


def _png(*chunks: tuple[str, str]) -> bytes:
    """A PNG with iTXt chunks (UTF-8 text, as PIL's add_text writes non-Latin-1 values)."""
    return png_with_chunks(
        [png_chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + text.encode()) for key, text in chunks]
    )


def _resources(meta, kind):
    return [(r.name, r.hash, r.weight) for r in meta.resources if r.kind == kind]


# --- InvokeAI ---------------------------------------------------------------------------


def test_invokeai_dream_quoted_bare_and_attached_switches():
    # 1.x PromptFormatter: '"prompt" -s50 -W512 ...'; 2.x dream_prompt_str: 'prompt -s 50 -S 42 ...'
    for dream in (
        '"a red triangle [grey fog] on a white field" -s 50 -S 42 -W 512 -H 512 -C 7.5 -A k_lms',
        "a red triangle [grey fog] on a white field -s 50 -S 42 -W 512 -H 512 -C 7.5 -A k_lms",
        '"a red triangle [grey fog] on a white field" -s50 -W512 -H512 -C7.5 -Ak_lms -S42',
    ):
        best = extract(_png(("Dream", dream))).best
        assert (best.prompt, best.negative_prompt) == ("a red triangle on a white field", "grey fog"), dream
        assert (best.seed, best.steps, best.cfg_scale, best.sampler) == ("42", 50, 7.5, "k_lms"), dream


def test_invokeai_dream_apostrophe_and_img2img_switches():
    best = extract(_png(("Dream", "it's a blue square -s 30 -S 7 -C 8 -I init.png -A ddim -f 0.75"))).best
    assert (best.prompt, best.seed, best.sampler, best.extra["strength"]) == ("it's a blue square", "7", "ddim", "0.75")


def test_invokeai_sd_metadata_image_and_images_and_weighted_subprompts():
    # ldm/invoke/args.py metadata_dumps: model_weights (or model_id), model_hash, image {prompt: [{prompt, weight}]}
    single = {
        "model": "stable diffusion",
        "model_weights": "toy-1.5",
        "model_hash": "cc6cb271",
        "app_id": "invoke-ai/InvokeAI",
        "app_version": "2.2.5",
        "image": {
            "prompt": [{"prompt": "a red triangle [grey]", "weight": 1.0}],
            "steps": 50,
            "cfg_scale": 7.5,
            "height": 512,
            "width": 512,
            "seed": 42,
            "type": "txt2img",
            "sampler": "k_lms",
            "variations": [],
        },
    }
    best = extract(_png(("sd-metadata", json.dumps(single)))).best
    assert (best.prompt, best.negative_prompt, best.seed, best.steps, best.sampler) == (
        "a red triangle",
        "grey",
        "42",
        50,
        "k_lms",
    )
    assert (best.model, best.model_hash) == ("toy-1.5", "cc6cb271")
    grid = {
        "model": "stable diffusion",
        "model_id": "toy-1.4",
        "model_hash": "ab12",
        "images": [
            {
                "prompt": [{"prompt": "a red cube", "weight": 0.5}, {"prompt": "a blue cone", "weight": 0.5}],
                "seed": 7,
                "steps": 20,
                "cfg_scale": 7,
                "sampler": "ddim",
            }
        ],
    }
    best = extract(_png(("sd-metadata", json.dumps(grid)))).best
    assert (best.prompt, best.seed, best.model) == ("a red cube:0.5,a blue cone:0.5", "7", "toy-1.4")
    string_prompt = {"image": {"prompt": "a green star [dark]", "seed": "9"}}
    best = extract(_png(("sd-metadata", json.dumps(string_prompt)))).best
    assert (best.prompt, best.negative_prompt, best.seed) == ("a green star", "dark", "9")


V4_METADATA = {
    "generation_mode": "txt2img",
    "positive_prompt": "a red triangle on a grey background",
    "negative_prompt": "blurry",
    "width": 512,
    "height": 512,
    "seed": 4242424242,
    "rand_device": "cpu",
    "cfg_scale": 6.5,
    "steps": 28,
    "scheduler": "dpmpp_2m_k",
    "clip_skip": 0,
    "model": {"key": "k-1", "hash": "blake3:aa11", "name": "Toy Shapes", "base": "sd-1", "type": "main"},
    "loras": [
        {
            "model": {"key": "k-2", "hash": "blake3:bb22", "name": "shape-lora", "base": "sd-1", "type": "lora"},
            "weight": 0.75,
        }
    ],
    "vae": {"key": "k-3", "hash": "blake3:cc33", "name": "toy-vae", "base": "sd-1", "type": "vae"},
    "ref_images": [{"id": "r1", "config": {"image": {"image_name": "ref.png"}}}],
    "app_version": "5.6.0",
}


def test_invokeai_v4_metadata_with_lora_and_vae():
    best = extract(_png(("invokeai_metadata", json.dumps(V4_METADATA)))).best
    assert (best.prompt, best.negative_prompt, best.seed, best.steps, best.cfg_scale, best.sampler) == (
        "a red triangle on a grey background",
        "blurry",
        "4242424242",
        28,
        6.5,
        "dpmpp_2m_k",
    )
    assert (best.model, best.model_hash) == ("Toy Shapes", "blake3:aa11")
    assert _resources(best, "lora") == [("shape-lora", "blake3:bb22", 0.75)]
    assert _resources(best, "vae") == [("toy-vae", "blake3:cc33", None)]


def test_invokeai_v3_metadata_model_name_and_lora_key():
    # 3.x CoreMetadata: model {model_name, base_model}; LoRAMetadataField {lora: {model_name}, weight}
    v3 = {
        "positive_prompt": "a blue circle",
        "negative_prompt": "",
        "seed": 1,
        "steps": 20,
        "cfg_scale": 7,
        "scheduler": "euler",
        "model": {"model_name": "toy-v3", "base_model": "sd-1", "model_type": "main"},
        "loras": [
            {"lora": {"model_name": "dots", "base_model": "sd-1"}, "weight": 0.5},
            {"lora": "bare-name", "weight": 1},
            {"model": None, "weight": 2},
        ],
    }
    best = extract(_png(("invokeai_metadata", json.dumps(v3)))).best
    assert (best.model, best.negative_prompt) == ("toy-v3", "")
    assert _resources(best, "lora") == [("dots", None, 0.5), ("bare-name", None, 1.0)]


def _graph():
    """An InvokeAI 5.x linear graph: core_metadata's prompt and seed arrive through edges."""
    nodes = {
        "model_loader:a": {
            "id": "model_loader:a",
            "type": "main_model_loader",
            "model": {"key": "k", "hash": "blake3:aa11", "name": "Toy Shapes", "base": "sd-1", "type": "main"},
        },
        "lora_loader:b": {
            "id": "lora_loader:b",
            "type": "lora_loader",
            "lora": {"key": "l", "hash": "blake3:bb22", "name": "shape-lora", "base": "sd-1", "type": "lora"},
            "weight": 0.6,
        },
        "positive_prompt:c": {"id": "positive_prompt:c", "type": "string", "value": "a yellow hexagon"},
        "pos_cond:d": {"id": "pos_cond:d", "type": "compel", "prompt": ""},
        "neg_cond:e": {"id": "neg_cond:e", "type": "compel", "prompt": "smudged"},
        "pos_collect:f": {"id": "pos_collect:f", "type": "collect"},
        "seed:g": {"id": "seed:g", "type": "integer", "value": 31337},
        "noise:h": {"id": "noise:h", "type": "noise", "seed": 0},
        "denoise_latents:i": {
            "id": "denoise_latents:i",
            "type": "denoise_latents",
            "steps": 25,
            "cfg_scale": 5.5,
            "scheduler": "euler_a",
        },
    }
    edges = [
        (("positive_prompt:c", "value"), ("pos_cond:d", "prompt")),
        (("pos_cond:d", "conditioning"), ("pos_collect:f", "item")),
        (("pos_collect:f", "collection"), ("denoise_latents:i", "positive_conditioning")),
        (("neg_cond:e", "conditioning"), ("denoise_latents:i", "negative_conditioning")),
        (("seed:g", "value"), ("noise:h", "seed")),
        (("noise:h", "noise"), ("denoise_latents:i", "noise")),
    ]
    return {
        "id": "g",
        "nodes": nodes,
        "edges": [
            {"source": {"node_id": s[0], "field": s[1]}, "destination": {"node_id": d[0], "field": d[1]}}
            for s, d in edges
        ],
    }


def test_invokeai_graph_without_metadata_is_walked():
    result = extract(_png(("invokeai_graph", json.dumps(_graph()))))
    best = result.best
    assert (best.prompt, best.negative_prompt, best.seed, best.steps, best.cfg_scale, best.sampler) == (
        "a yellow hexagon",
        "smudged",
        "31337",
        25,
        5.5,
        "euler_a",
    )
    assert (best.model, best.model_hash) == ("Toy Shapes", "blake3:aa11")
    assert _resources(best, "lora") == [("shape-lora", "blake3:bb22", 0.6)]
    assert result.found == ["invokeai@png:iTXt:invokeai_graph"]


def test_invokeai_graph_core_metadata_fields_fed_by_edges():
    graph = _graph()
    graph["nodes"]["core_metadata:j"] = {
        "id": "core_metadata:j",
        "type": "core_metadata",
        "positive_prompt": None,
        "negative_prompt": "smudged",
        "seed": None,
        "steps": 25,
        "cfg_scale": 5.5,
        "scheduler": "euler_a",
        "model": graph["nodes"]["model_loader:a"]["model"],
    }
    graph["edges"] += [
        {
            "source": {"node_id": "seed:g", "field": "value"},
            "destination": {"node_id": "core_metadata:j", "field": "seed"},
        },
        {
            "source": {"node_id": "positive_prompt:c", "field": "value"},
            "destination": {"node_id": "core_metadata:j", "field": "positive_prompt"},
        },
    ]
    best = extract(_png(("invokeai_graph", json.dumps(graph)))).best
    assert (best.prompt, best.seed, best.model) == ("a yellow hexagon", "31337", "Toy Shapes")


def test_invokeai_workflow_alone_is_read():
    graph = _graph()
    nodes = [
        {
            "id": node_id,
            "type": "invocation",
            "data": {
                "id": node_id,
                "type": node["type"],
                "inputs": {k: {"name": k, "value": v} for k, v in node.items() if k not in ("id", "type")},
            },
        }
        for node_id, node in graph["nodes"].items()
    ]
    nodes.append({"id": "note", "type": "notes", "data": {"notes": "a toy"}})
    edges = [
        {
            "id": str(i),
            "type": "default",
            "source": e["source"]["node_id"],
            "sourceHandle": e["source"]["field"],
            "target": e["destination"]["node_id"],
            "targetHandle": e["destination"]["field"],
        }
        for i, e in enumerate(graph["edges"])
    ]
    best = extract(_png(("invokeai_workflow", json.dumps({"name": "toy", "nodes": nodes, "edges": edges})))).best
    assert (best.generator, best.prompt, best.seed, best.steps) == ("invokeai", "a yellow hexagon", "31337", 25)


def test_invokeai_metadata_wins_over_graph_and_garbage_is_partial():
    best = extract(_png(("invokeai_metadata", json.dumps(V4_METADATA)), ("invokeai_graph", json.dumps(_graph())))).best
    assert best.prompt == "a red triangle on a grey background" and best.source.endswith("invokeai_metadata")
    broken = {
        "positive_prompt": "a pink oval",
        "model": "just-a-name",
        "loras": {"not": "a list"},
        "seed": "x",
        "vae": 3,
    }
    best = extract(
        _png(("invokeai_metadata", json.dumps(broken)), ("invokeai_graph", '{"nodes": [1, 2], "edges": 5}'))
    ).best
    assert (best.prompt, best.model, best.seed) == ("a pink oval", "just-a-name", None)


# --- NovelAI ----------------------------------------------------------------------------


def _novelai_comment(**extra):
    comment = {
        "prompt": "a red triangle, a grey background",
        "steps": 28,
        "height": 832,
        "width": 1216,
        "scale": 5.0,
        "uncond_scale": 0.0,
        "cfg_rescale": 0.0,
        "seed": 2156638429,
        "n_samples": 1,
        "noise_schedule": "karras",
        "sampler": "k_euler_ancestral",
        "uc": "blurry, lowres",
        "request_type": "PromptGenerateRequest",
    }
    comment.update(extra)
    return comment


def test_novelai_png_chunks_and_v4_character_captions_reach_the_prompt():
    comment = _novelai_comment(
        v4_prompt={
            "caption": {
                "base_caption": "a red triangle, a grey background",
                "char_captions": [{"char_caption": "a small blue square", "centers": [{"x": 0.3, "y": 0.5}]}],
            },
            "use_coords": True,
            "use_order": True,
        },
        v4_negative_prompt={
            "caption": {
                "base_caption": "blurry, lowres",
                "char_captions": [{"char_caption": "green", "centers": [{"x": 0.3, "y": 0.5}]}],
            },
            "legacy_uc": False,
        },
    )
    data = _png(
        ("Title", "NovelAI generated image"),
        ("Description", "a red triangle, a grey background"),
        ("Software", "NovelAI"),
        ("Source", "NovelAI Diffusion V4.5 C02D4F98"),
        ("Comment", json.dumps(comment)),
    )
    best = extract(data).best
    assert best.prompt == "a red triangle, a grey background\na small blue square"
    assert best.negative_prompt == "blurry, lowres\ngreen"
    assert (best.seed, best.steps, best.cfg_scale, best.sampler, best.scheduler) == (
        "2156638429",
        28,
        5.0,
        "k_euler_ancestral",
        "karras",
    )
    assert (best.model, best.model_hash) == ("NovelAI Diffusion V4.5", "C02D4F98")
    assert best.extra["character_prompts"][0]["caption"] == "a small blue square"


def test_novelai_v4_without_top_level_prompt_uses_base_caption():
    comment = _novelai_comment(v4_prompt={"caption": {"base_caption": "an orange star", "char_captions": []}})
    del comment["prompt"], comment["uc"]
    comment["v4_negative_prompt"] = {"caption": {"base_caption": "noise", "char_captions": []}}
    best = extract(_png(("Software", "NovelAI"), ("Comment", json.dumps(comment)))).best
    assert (best.prompt, best.negative_prompt) == ("an orange star", "noise")


def test_novelai_stealth_alpha_json_and_webp_style_exif_software():
    record = {
        "Description": "a red triangle",
        "Software": "NovelAI",
        "Source": "NovelAI Diffusion V4 ABCDEF12",
        "Comment": json.dumps(_novelai_comment(prompt="a red triangle")),
    }
    buffer = io.BytesIO()
    stealth_image(json.dumps(record), compressed=True, rgb=False).save(buffer, "PNG")
    best = extract(buffer.getvalue()).best
    assert (best.generator, best.prompt, best.seed, best.model_hash) == (
        "novelai",
        "a red triangle",
        "2156638429",
        "ABCDEF12",
    )
    # WebP/JPEG: EXIF Software carries what PNG's Source says; UserComment holds {"Comment": ...}
    comment = json.dumps({"Comment": json.dumps(_novelai_comment())}).encode()
    data = jpeg_with_exif(
        tiff(
            [(0x0131, 2, b"NovelAI Diffusion V4.5 C02D4F98\x00")],
            big_endian=False,
            exif_entries=[(0x9286, 7, b"ASCII\x00\x00\x00" + comment)],
        )
    )
    best = extract(data).best
    assert (best.generator, best.model, best.model_hash, best.seed) == (
        "novelai",
        "NovelAI Diffusion V4.5",
        "C02D4F98",
        "2156638429",
    )


# --- Fooocus / RuinedFooocus ------------------------------------------------------------

FOOOCUS_JSON = {  # FooocusMetadataParser.parse_string: sorted keys, loras [[name, weight, hash]]
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "toyXL_v8",
    "base_model_hash": "aeb7e9e689",
    "full_negative_prompt": ["grey, blurry"],
    "full_prompt": ["a red triangle, sharp focus"],
    "guidance_scale": 4,
    "lora_combined_1": "shapes_lora : 0.5",
    "loras": [["shapes_lora", 0.5, "0123456789ab"]],
    "metadata_scheme": "fooocus",
    "negative_prompt": "grey",
    "performance": "Speed",
    "prompt": "a red triangle",
    "refiner_model": "None",
    "refiner_switch": 0.5,
    "resolution": "(1152, 896)",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "6952411511246973023",
    "sharpness": 2,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Sharp']",
    "vae": "Default (model)",
    "version": "Fooocus v2.5.5",
}


def test_fooocus_json_scheme():
    best = extract(_png(("parameters", json.dumps(FOOOCUS_JSON)), ("fooocus_scheme", "fooocus"))).best
    assert (best.generator, best.prompt, best.negative_prompt, best.seed) == (
        "fooocus",
        "a red triangle",
        "grey",
        "6952411511246973023",
    )
    assert (best.steps, best.cfg_scale, best.sampler, best.scheduler) == (30, 4.0, "dpmpp_2m_sde_gpu", "karras")
    assert (best.model, best.model_hash) == ("toyXL_v8", "aeb7e9e689")
    assert _resources(best, "lora") == [("shapes_lora", "0123456789ab", 0.5)]
    assert not _resources(best, "vae") and not _resources(best, "refiner")
    assert best.extra["full_prompt"] == ["a red triangle, sharp focus"]


def test_fooocus_label_keys_from_the_log_and_jpeg_exif():
    labelled = {
        "Prompt": "a red triangle",
        "Negative Prompt": "grey",
        "Fooocus V2 Expansion": "a red triangle, bright",
        "Styles": "['Fooocus V2']",
        "Performance": "Quality",
        "Resolution": "(1024, 1024)",
        "Guidance Scale": 7,
        "Sharpness": 2,
        "ADM Guidance": "(1.5, 0.8, 0.3)",
        "Base Model": "toyXL.safetensors",
        "Refiner Model": "None",
        "Sampler": "dpmpp_2m_sde_gpu",
        "Scheduler": "karras",
        "Seed": 42,
        "LoRA 1": "shapes.safetensors : 0.1",
        "LoRA 2": "None : 1.0",
        "LoRA 3": "False : dots.safetensors : 0.3",
        "Version": "v2.1.865",
    }
    best = extract(_png(("parameters", json.dumps(labelled)))).best
    assert (best.generator, best.prompt, best.negative_prompt, best.seed, best.cfg_scale) == (
        "fooocus",
        "a red triangle",
        "grey",
        "42",
        7.0,
    )
    assert best.steps == 60  # Performance "Quality" is Fooocus's 60 steps
    assert _resources(best, "lora") == [("shapes.safetensors", None, 0.1)]
    # JPEG: get_exif() puts the JSON in UserComment and "Fooocus v…" in Software
    data = jpeg_with_exif(
        tiff(
            [(0x0131, 2, b"Fooocus v2.5.5\x00")],
            big_endian=False,
            exif_entries=[(0x9286, 7, b"ASCII\x00\x00\x00" + json.dumps(FOOOCUS_JSON).encode())],
        )
    )
    best = extract(data).best
    assert (best.generator, best.prompt, best.model) == ("fooocus", "a red triangle", "toyXL_v8")


def test_fooocus_a1111_scheme_reports_the_raw_prompt_and_lora_weights():
    # A1111MetadataParser.parse_string: styled prompt first, then Raw prompt / Lora hashes / Lora weights
    text = (
        "a red triangle, sharp focus\nNegative prompt: grey, blurry\n"
        "Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 12345, Size: 1152x896, CFG scale: 4, Sharpness: 2, "
        'ADM Guidance: "(1.5, 0.8, 0.3)", Model: toyXL_v8, Model hash: aeb7e9e689, Performance: Speed, '
        "Scheduler: karras, VAE: Default (model), Raw prompt: a red triangle, Raw negative prompt: grey, "
        'Lora hashes: "shapes_lora: 0123456789ab", Lora weights: "shapes_lora: 0.5", Version: Fooocus v2.5.5'
    )
    result = extract(_png(("parameters", text), ("fooocus_scheme", "a1111")))
    best = result.best
    assert (best.generator, best.prompt, best.negative_prompt) == ("fooocus", "a red triangle", "grey")
    assert best.extra["full_prompt"] == "a red triangle, sharp focus"
    assert (best.seed, best.steps, best.cfg_scale, best.scheduler, best.model_hash) == (
        "12345",
        30,
        4.0,
        "karras",
        "aeb7e9e689",
    )
    assert _resources(best, "lora") == [("shapes_lora", "0123456789ab", 0.5)]


def test_ruined_fooocus_loras_both_shapes():
    record = {
        "Prompt": "a red triangle",
        "Negative": "grey",
        "steps": 30,
        "cfg": 8.5,
        "width": 1152,
        "height": 896,
        "seed": 3864674281,
        "sampler_name": "dpmpp_2m_sde_gpu",
        "scheduler": "karras",
        "base_model_name": "toyXL.safetensors",
        "base_model_hash": "be9edd61",
        "loras": [["4852686128", "0.1 - shapes.safetensors"]],
        "start_step": 0,
        "denoise": None,
        "clip_skip": 1,
        "software": "RuinedFooocus",
    }
    best = extract(_png(("parameters", json.dumps(record)))).best
    assert (best.generator, best.prompt, best.negative_prompt, best.seed, best.cfg_scale) == (
        "ruined-fooocus",
        "a red triangle",
        "grey",
        "3864674281",
        8.5,
    )
    assert (best.model, best.model_hash) == ("toyXL.safetensors", "be9edd61")
    assert _resources(best, "lora") == [("shapes.safetensors", "4852686128", 0.1)]
    record["loras"] = "Loras:<shapes.safetensors:0.3>,<dots.safetensors:1.0>"
    best = extract(_png(("parameters", json.dumps(record)))).best
    assert _resources(best, "lora") == [("shapes.safetensors", None, 0.3), ("dots.safetensors", None, 1.0)]


# --- SwarmUI ----------------------------------------------------------------------------

SWARM = {
    "sui_image_params": {
        "prompt": "a red triangle on a grey background",
        "negativeprompt": "blurry ",
        "model": "Shapes/toy_1.0",
        "seed": 830680752,
        "steps": 20,
        "cfgscale": 7.0,
        "aspectratio": "1:1",
        "width": 1024,
        "height": 1024,
        "sampler": "euler_ancestral",
        "scheduler": "karras",
        "loras": ["Shapes/shape_lora", "dots"],
        "loraweights": ["0.8", "1"],
        "swarm_version": "0.9.7.4",
    },
    "sui_extra_data": {"date": "2026-01-03", "prep_time": "0.00 sec", "generation_time": "6.42 sec"},
    "sui_models": [
        {"name": "Shapes/toy_1.0.safetensors", "param": "model", "hash": "0x22d8"},
        {"name": "Shapes/shape_lora.safetensors", "param": "loras", "hash": "0x33e9"},
    ],
}


def test_swarmui_png_and_exif_with_models_merged():
    for data in (
        _png(("parameters", json.dumps(SWARM))),
        jpeg_with_exif(
            tiff(
                [], big_endian=False, exif_entries=[(0x9286, 7, b"UNICODE\x00" + json.dumps(SWARM).encode("utf-16-le"))]
            )
        ),
    ):
        best = extract(data).best
        assert (best.generator, best.prompt, best.negative_prompt, best.seed, best.steps, best.cfg_scale) == (
            "swarmui",
            "a red triangle on a grey background",
            "blurry ",
            "830680752",
            20,
            7.0,
        )
        assert (best.sampler, best.scheduler, best.model, best.model_hash) == (
            "euler_ancestral",
            "karras",
            "Shapes/toy_1.0",
            "0x22d8",
        )
        assert _resources(best, "checkpoint") == [("Shapes/toy_1.0", "0x22d8", None)]
        assert _resources(best, "lora") == [("Shapes/shape_lora", "0x33e9", 0.8), ("dots", None, 1.0)]
        assert best.extra["sui_extra_data"]["date"] == "2026-01-03"


def test_swarmui_swarm_json_sidecar():
    best = extract(b"", sidecars=[("img.swarm.json", json.dumps(SWARM).encode())]).best
    assert (best.generator, best.seed) == ("swarmui", "830680752")


# --- Stability Matrix -------------------------------------------------------------------

SM_JSON = {
    "PositivePrompt": "a red triangle\r\n",
    "NegativePrompt": "grey\r\n",
    "Steps": 20,
    "Sampler": "Euler Ancestral Karras",
    "CfgScale": 5,
    "Seed": 395309383,
    "Height": 1024,
    "Width": 1024,
    "ModelHash": "A5F5",
    "ModelName": "toyXL.safetensors",
    "FrameCount": 0,
    "ModelVersionId": None,
    "ExtraNetworkModelVersionIds": [11, 12],
}
SM_PROJECT = {
    "Version": 2,
    "ProjectType": "TextToImage",
    "State": {
        "Model": {
            "SelectedModelName": "toyXL.safetensors",
            "SelectedRefinerName": "@none",
            "SelectedVaeName": "toy-vae.safetensors",
            "ClipSkip": 2,
            "IsClipSkipEnabled": True,
        },
        "Sampler": {
            "Steps": 20,
            "CfgScale": 5,
            "SelectedSampler": {"Name": "euler_ancestral"},
            "SelectedScheduler": {"Name": "karras"},
        },
        "Prompt": {"Prompt": "a red triangle\r\n", "NegativePrompt": "grey\r\n"},
        "Seed": {"Seed": "395309383", "IsRandomizeEnabled": False},
    },
}
SM_INFOTEXT = (
    "a red triangle\r\n\nNegative prompt: grey\r\n\nSteps: 20, Sampler: Euler Ancestral Karras, CFG scale: 5, "
    "Seed: 395309383, Size: 1024x1024, Model hash: A5F5, Model: toyXL.safetensors"
)


def test_stability_matrix_parameters_json_with_project_and_infotext():
    result = extract(
        _png(("parameters", SM_INFOTEXT), ("parameters-json", json.dumps(SM_JSON)), ("smproj", json.dumps(SM_PROJECT)))
    )
    best = result.best
    assert (best.generator, best.prompt, best.negative_prompt, best.seed) == (
        "stability-matrix",
        "a red triangle\r\n",
        "grey\r\n",
        "395309383",
    )
    assert (best.sampler, best.scheduler, best.cfg_scale, best.model, best.model_hash) == (
        "euler_ancestral",
        "karras",
        5.0,
        "toyXL.safetensors",
        "A5F5",
    )
    assert _resources(best, "vae") == [("toy-vae.safetensors", None, None)] and best.extra["clip_skip"] == 2
    assert best.extra["ExtraNetworkModelVersionIds"] == [11, 12]


def test_stability_matrix_project_alone():
    best = extract(_png(("smproj", json.dumps(SM_PROJECT)))).best
    assert (best.generator, best.prompt, best.seed, best.steps, best.model) == (
        "stability-matrix",
        "a red triangle\r\n",
        "395309383",
        20,
        "toyXL.safetensors",
    )


# --- Midjourney -------------------------------------------------------------------------


def test_midjourney_description_flags_negative_and_author():
    description = (
        "https://s.mj.run/abc a red triangle on a grey background --ar 16:9 --v 6.1 --no blue, green --seed 123 "
        "--stylize 250 Job ID: 0123abcd-0123-4567-89ab-0123456789ab"
    )
    best = extract(_png(("Description", description), ("Author", "toy_user"))).best
    assert (best.generator, best.prompt, best.negative_prompt, best.seed, best.model) == (
        "midjourney",
        "a red triangle on a grey background",
        "blue, green",
        "123",
        "Midjourney 6.1",
    )
    assert best.extra["job_id"] == "0123abcd-0123-4567-89ab-0123456789ab" and best.extra["author"] == "toy_user"
    assert best.extra["image_prompts"] == ["https://s.mj.run/abc"] and best.extra["flags"]["ar"] == "16:9"


def test_midjourney_xmp_and_phone_dashes_and_plain_descriptions_ignored():
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description><dc:description><rdf:Alt>'
        '<rdf:li xml:lang="x-default">a blue square \u2014ar 3:2 \u2014niji 6</rdf:li></rdf:Alt></dc:description>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4), "white").save(buffer, "JPEG", xmp=xmp.encode())
    best = extract(buffer.getvalue()).best
    assert (best.generator, best.prompt, best.model) == ("midjourney", "a blue square", "niji 6")
    assert not extract(_png(("Description", "holiday photo -- at the beach"))).has_generation_metadata


# --- sidecars and manifests -------------------------------------------------------------


def test_sidecar_json_flat_nested_and_img2dataset():
    flat = extract(
        b"",
        sidecars=[
            (
                "0001.json",
                json.dumps(
                    {"prompt": "a red cube", "negative_prompt": "grey", "seed": "12", "model": "toy", "steps": 20.0}
                ).encode(),
            )
        ],
    ).best
    assert (flat.prompt, flat.negative_prompt, flat.seed, flat.steps, flat.model) == (
        "a red cube",
        "grey",
        "12",
        20,
        "toy",
    )
    laion = extract(
        b"",
        sidecars=[
            (
                "000001.json",
                json.dumps(
                    {
                        "caption": "a green cone",
                        "url": "http://x/1.jpg",
                        "key": "000001",
                        "status": "success",
                        "error_message": None,
                    }
                ).encode(),
            )
        ],
    ).best
    assert (laion.prompt, laion.extra["url"], laion.extra["key"]) == ("a green cone", "http://x/1.jpg", "000001")
    civitai = {
        "id": 5,
        "url": "https://x/5.jpeg",
        "meta": {
            "prompt": "a purple pyramid",
            "negativePrompt": "grey",
            "seed": 3,
            "steps": 25,
            "cfgScale": 7,
            "sampler": "Euler a",
            "Model": "toyXL",
            "hashes": {"model": "abcd1234"},
            "resources": [
                {"name": "shapes", "type": "lora", "weight": 0.6, "hash": "ef56"},
                {"name": "toyXL", "type": "model", "hash": "abcd1234"},
            ],
            "civitaiResources": [{"type": "lora", "weight": 0.6, "modelVersionId": 11}],
        },
    }
    best = extract(b"", sidecars=[("5.json", json.dumps(civitai).encode())]).best
    assert (best.prompt, best.negative_prompt, best.seed, best.cfg_scale, best.model, best.model_hash) == (
        "a purple pyramid",
        "grey",
        "3",
        7.0,
        "toyXL",
        "abcd1234",
    )
    assert _resources(best, "checkpoint") == [("toyXL", "abcd1234", None)]
    assert _resources(best, "lora") == [("shapes", "ef56", 0.6), ("civitai:11", None, 0.6)]


def test_sidecar_txt_variants_and_yaml_aliases_refused():
    assert extract(b"", sidecars=[("a.txt", b"\xef\xbb\xbfa red circle\r\n")]).best.prompt == "a red circle"
    assert extract(b"", sidecars=[("a.txt", b'{"prompt": "a red cube", "seed": 3}')]).best.seed == "3"
    assert not extract(b"", sidecars=[("a.txt", b"  \n")]).has_generation_metadata
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\nprompt: a cube\n"
    result = extract(b"", sidecars=[("a.yaml", bomb)])
    assert any("alias" in e for e in result.errors)
    best = extract(
        b"", sidecars=[("a.yml", b"prompt: a teal torus\nseed: '0012'\ncfg_scale: 6.5\nloras:\n  - shapes : 0.4\n")]
    ).best
    assert (best.prompt, best.seed, best.cfg_scale) == ("a teal torus", "12", 6.5)


def test_manifest_columns_with_odd_types():
    import numpy as np

    fields = {
        "prompt": "a blue square",
        "negative_prompt": float("nan"),
        "seed": np.int64(7),
        "steps": "20",
        "cfg_scale": np.float32(6.5),
        "model": None,
        "sampler": "nan",
        "scheduler": "",
        "loras": ["shapes:0.5"],
        "width": np.int32(64),
        "tags": np.array([1, 2]),
    }
    best = extract(b"", fields=fields).best
    assert (best.prompt, best.negative_prompt, best.seed, best.steps, best.cfg_scale) == (
        "a blue square",
        None,
        "7",
        20,
        6.5,
    )
    assert (best.sampler, best.scheduler, best.model) == (None, None, None)
    assert _resources(best, "lora") == [("shapes", None, 0.5)]
    table = extract(b"", fields={"Prompt": "a red cube", "Negative prompt": "grey", "CFG scale": "7", "Seed": "3"}).best
    assert (table.negative_prompt, table.cfg_scale, table.seed) == ("grey", 7.0, "3")
    nested = extract(b"", fields={"url": "x", "meta": json.dumps({"prompt": "a white ring", "seed": 1})}).best
    assert nested.prompt == "a white ring"
    for odd in (
        {"prompt": b"a byte prompt"},
        {"prompt": ["a red", "a blue"]},
        {"seed": object(), "prompt": 5},
        {None: None},
    ):
        extract(b"", fields=odd)  # never raises
    assert extract(b"", fields={"prompt": b"a byte prompt"}).best.prompt == "a byte prompt"


def test_tensorart_generation_data_utf8_in_text_chunk():
    # TensorArt writes UTF-8 bytes into a tEXt chunk, NUL-terminated; seed as a string
    record = {
        "models": [{"modelFileId": "1", "modelFileName": "shape lora", "weight": 0.7, "type": "LORA", "hash": "AB12"}],
        "prompt": "a red triangle, «grey» background",
        "negativePrompt": "blurry",
        "width": 512,
        "height": 768,
        "samplerName": "Euler a",
        "sdVae": "Automatic",
        "steps": 25,
        "cfgScale": 7,
        "seed": "1234567890123",
        "clipSkip": 2,
        "baseModel": {"modelId": "9", "modelFileName": "Toy Shapes XL", "hash": "CD34"},
    }
    data = png_with_chunks(
        [png_chunk(b"tEXt", b"generation_data\x00" + json.dumps(record, ensure_ascii=False).encode() + b"\x00")]
    )
    best = extract(data).best
    assert (best.generator, best.prompt, best.seed, best.sampler, best.model, best.model_hash) == (
        "tensorart",
        "a red triangle, «grey» background",
        "1234567890123",
        "Euler a",
        "Toy Shapes XL",
        "CD34",
    )
    assert _resources(best, "lora") == [("shape lora", "AB12", 0.7)]


def test_manifest_column_holding_an_infotext():
    infotext = "a red circle\nNegative prompt: grey\nSteps: 12, Sampler: Euler a, CFG scale: 6.5, Seed: 42, Model: toy"
    best = extract(b"", fields={"file": "a.png", "parameters": infotext}).best
    assert (best.prompt, best.negative_prompt, best.seed) == ("a red circle", "grey", "42")


def test_unreadable_own_records_are_reported_not_raised():
    for key in ("invokeai_metadata", "sd-metadata", "parameters-json", "generation_data"):
        result = extract(png_with_chunks([png_chunk(b"tEXt", key.encode() + b'\x00{"positive_prompt": "a red')]))
        assert any(key in error for error in result.errors), key
    result = extract(_png(("Software", "NovelAI"), ("Description", "a red triangle"), ("Comment", '{"uc": "grey')))
    assert result.best.prompt == "a red triangle" and any("Comment" in e for e in result.errors)


def test_diffusers_style_parameters_json_is_not_taken_for_fooocus():
    record = {
        "prompt": "a red triangle",
        "negative_prompt": "grey",
        "guidance_scale": 7.5,
        "num_inference_steps": 30,
        "seed": 5,
    }
    best = extract(_png(("parameters", json.dumps(record)))).best
    assert best.generator != "fooocus" and (best.prompt, best.steps, best.cfg_scale) == ("a red triangle", 30, 7.5)


def test_civitai_generator_params_with_air_resources():
    record = {
        "params": {
            "prompt": "a red cube",
            "negativePrompt": "grey",
            "cfgScale": 7,
            "sampler": "Euler a",
            "seed": 5,
            "steps": 25,
        },
        "resources": [
            {"id": 1, "strength": 1, "air": "urn:air:sdxl:checkpoint:civitai:101055@128078"},
            {"id": 2, "strength": 0.6, "air": "urn:air:sdxl:lora:civitai:5@6"},
        ],
    }
    best = extract(b"", sidecars=[("a.json", json.dumps(record).encode())]).best
    assert (best.prompt, best.seed, best.model) == ("a red cube", "5", "urn:air:sdxl:checkpoint:civitai:101055@128078")
    assert _resources(best, "lora") == [("urn:air:sdxl:lora:civitai:5@6", None, 0.6)]
