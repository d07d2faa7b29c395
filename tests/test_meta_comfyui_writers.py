"""ComfyUI metadata as ComfyUI and popular custom node packs write it, run through ``extract``.

Graphs follow the node definitions of ComfyUI's nodes.py / comfy_extras and of the custom
node packs named in each test (input names, output slots, widget order in the UI graph).
Prompts are toy-world phrases.
"""

from __future__ import annotations

import copy
import io
import json
import random
import time

from PIL import Image
from tests.meta_fixtures import png_chunk, jpeg_with_exif, png_with_chunks, tiff

from audit.meta import extract
from audit.meta.base import MetadataText
from audit.meta.comfyui import ComfyUIParser


def n(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def png(prompt=None, workflow=None, **more) -> bytes:
    chunks = []
    for key, value in (("prompt", prompt), ("workflow", workflow), *more.items()):
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)  # ComfyUI: json.dumps, ASCII escapes
            chunks.append(png_chunk(b"tEXt", key.encode() + b"\x00" + text.encode("latin-1")))
    return png_with_chunks(chunks)


def best(prompt=None, workflow=None):
    result = extract(png(prompt, workflow))
    assert result.best.generator == "comfyui", result.found
    return result.best


def fields(meta):
    return (
        meta.prompt,
        meta.negative_prompt,
        meta.seed,
        meta.steps,
        meta.cfg_scale,
        meta.sampler,
        meta.scheduler,
        meta.model,
    )


def kinds(meta):
    return {(r.kind, r.name, r.weight) for r in meta.resources}


LOADER = {"4": n("CheckpointLoaderSimple", ckpt_name="toyShapes_v1.safetensors")}


def ksampler(**over):
    inputs = {
        "seed": 42,
        "steps": 20,
        "cfg": 7.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
        "model": ["4", 0],
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    inputs.update(over)
    return n("KSampler", **inputs)


def basic_graph(**extra):
    graph = {
        **LOADER,
        "5": n("EmptyLatentImage", width=64, height=64, batch_size=1),
        "6": n("CLIPTextEncode", text="a red triangle on a grey background", clip=["4", 1]),
        "7": n("CLIPTextEncode", text="a blue circle", clip=["4", 1]),
        "3": ksampler(),
        "8": n("VAEDecode", samples=["3", 0], vae=["4", 2]),
        "9": n("SaveImage", filename_prefix="ComfyUI", images=["8", 0]),
    }
    graph.update(extra)
    return graph


# --- samplers -----------------------------------------------------------------------------


def test_ksampler_with_lora_chain_vae_and_embedding():
    graph = basic_graph(
        **{
            "10": n(
                "LoraLoader",
                lora_name="shapes.safetensors",
                strength_model=0.8,
                strength_clip=0.6,
                model=["4", 0],
                clip=["4", 1],
            ),
            "11": n("LoraLoaderModelOnly", lora_name="colours.safetensors", strength_model=0.5, model=["10", 0]),
            "12": n("VAELoader", vae_name="toy_vae.safetensors"),
            "6": n("CLIPTextEncode", text="embedding:smooth_edges, a red triangle", clip=["10", 1]),
            "7": n("CLIPTextEncode", text="(embedding:rough.pt:1.2), a blue circle", clip=["10", 1]),
            "3": ksampler(model=["11", 0]),
        }
    )
    meta = best(graph)
    assert fields(meta) == (
        "embedding:smooth_edges, a red triangle",
        "(embedding:rough.pt:1.2), a blue circle",
        "42",
        20,
        7.0,
        "euler",
        "normal",
        "toyShapes_v1.safetensors",
    )
    assert {
        ("lora", "shapes.safetensors", 0.8),
        ("lora", "colours.safetensors", 0.5),
        ("vae", "toy_vae.safetensors", None),
        ("embedding", "smooth_edges", None),
        ("embedding", "rough.pt", None),
        ("checkpoint", "toyShapes_v1.safetensors", None),
    } <= kinds(meta)


def test_ksampler_advanced_base_and_refiner_pick_the_base_pass():
    graph = {
        **LOADER,
        "20": n("CheckpointLoaderSimple", ckpt_name="toyRefiner.safetensors"),
        "5": n("EmptyLatentImage", width=64, height=64, batch_size=1),
        "6": n(
            "CLIPTextEncodeSDXL",
            width=1024,
            height=1024,
            crop_w=0,
            crop_h=0,
            target_width=1024,
            target_height=1024,
            text_g="a green square",
            text_l="a green square",
            clip=["4", 1],
        ),
        "7": n(
            "CLIPTextEncodeSDXL",
            width=1024,
            height=1024,
            crop_w=0,
            crop_h=0,
            target_width=1024,
            target_height=1024,
            text_g="a yellow star",
            text_l="blurry",
            clip=["4", 1],
        ),
        "21": n(
            "CLIPTextEncodeSDXLRefiner",
            ascore=6.0,
            width=1024,
            height=1024,
            text="a green square, sharp",
            clip=["20", 1],
        ),
        "22": n("CLIPTextEncodeSDXLRefiner", ascore=2.5, width=1024, height=1024, text="a yellow star", clip=["20", 1]),
        # the refiner first in the file: order must not decide
        "11": n(
            "KSamplerAdvanced",
            add_noise="disable",
            noise_seed=0,
            steps=25,
            cfg=7.0,
            sampler_name="euler",
            scheduler="normal",
            start_at_step=20,
            end_at_step=10000,
            return_with_leftover_noise="disable",
            model=["20", 0],
            positive=["21", 0],
            negative=["22", 0],
            latent_image=["10", 0],
        ),
        "10": n(
            "KSamplerAdvanced",
            add_noise="enable",
            noise_seed=123456789012345,
            steps=25,
            cfg=8.0,
            sampler_name="dpmpp_2m",
            scheduler="karras",
            start_at_step=0,
            end_at_step=20,
            return_with_leftover_noise="enable",
            model=["4", 0],
            positive=["6", 0],
            negative=["7", 0],
            latent_image=["5", 0],
        ),
    }
    meta = best(graph)
    assert fields(meta) == (
        "a green square",
        "a yellow star\nblurry",
        "123456789012345",
        25,
        8.0,
        "dpmpp_2m",
        "karras",
        "toyShapes_v1.safetensors",
    )
    assert meta.extra["primary_sampler"] == "10"
    samplers = {s["node_id"]: s for s in meta.extra["samplers"]}
    assert samplers["10"]["start_at_step"] == 0 and samplers["10"]["end_at_step"] == 20
    assert samplers["11"]["start_at_step"] == 20 and samplers["11"]["model"] == "toyRefiner.safetensors"
    assert samplers["11"]["prompts"][0]["text"] == "a green square, sharp"


def test_sampler_custom_with_karras_sigmas():
    graph = {
        **LOADER,
        "5": n("EmptyLatentImage", width=64, height=64, batch_size=1),
        "6": n("CLIPTextEncode", text="a purple circle", clip=["4", 1]),
        "7": n("CLIPTextEncode", text="a grey square", clip=["4", 1]),
        "12": n("KSamplerSelect", sampler_name="dpmpp_2m_sde"),
        "13": n("KarrasScheduler", steps=18, sigma_max=14.6, sigma_min=0.03, rho=7.0),
        "3": n(
            "SamplerCustom",
            add_noise=True,
            noise_seed=77,
            cfg=5.5,
            model=["4", 0],
            positive=["6", 0],
            negative=["7", 0],
            sampler=["12", 0],
            sigmas=["13", 0],
            latent_image=["5", 0],
        ),
    }
    assert fields(best(graph)) == (
        "a purple circle",
        "a grey square",
        "77",
        18,
        5.5,
        "dpmpp_2m_sde",
        "karras",
        "toyShapes_v1.safetensors",
    )


def test_sampler_custom_advanced_flux_with_unet_dual_clip_and_guidance():
    graph = {
        "1": n("UNETLoader", unet_name="toy-flux-dev.safetensors", weight_dtype="default"),
        "2": n("DualCLIPLoader", clip_name1="t5xxl_fp16.safetensors", clip_name2="clip_l.safetensors", type="flux"),
        "3": n("VAELoader", vae_name="ae.safetensors"),
        "4": n(
            "CLIPTextEncodeFlux",
            clip_l="a red star",
            t5xxl="a red star on a white background",
            guidance=3.5,
            clip=["2", 0],
        ),
        "5": n("FluxGuidance", guidance=2.5, conditioning=["4", 0]),
        "6": n("BasicGuider", model=["1", 0], conditioning=["5", 0]),
        "7": n("RandomNoise", noise_seed=5),
        "8": n("KSamplerSelect", sampler_name="euler"),
        "9": n("BasicScheduler", scheduler="simple", steps=4, denoise=1.0, model=["1", 0]),
        "10": n("EmptySD3LatentImage", width=64, height=64, batch_size=1),
        "11": n(
            "SamplerCustomAdvanced",
            noise=["7", 0],
            guider=["6", 0],
            sampler=["8", 0],
            sigmas=["9", 0],
            latent_image=["10", 0],
        ),
    }
    meta = best(graph)
    assert (
        meta.prompt == "a red star on a white background\na red star"
        or meta.prompt == "a red star\na red star on a white background"
    )
    assert (meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.scheduler, meta.model) == (
        None,
        "5",
        4,
        None,
        "euler",
        "simple",
        "toy-flux-dev.safetensors",
    )
    assert meta.extra["guidance"] == 2.5  # FluxGuidance, nearest the sampler, is what applied
    assert {
        ("vae", "ae.safetensors", None),
        ("text_encoder", "t5xxl_fp16.safetensors", None),
        ("text_encoder", "clip_l.safetensors", None),
        ("checkpoint", "toy-flux-dev.safetensors", None),
    } <= kinds(meta)


def test_sd3_encoder_and_cfg_guider():
    graph = {
        **LOADER,
        "6": n(
            "CLIPTextEncodeSD3",
            clip_l="a blue square",
            clip_g="a blue square",
            t5xxl="a blue square",
            empty_padding="none",
            clip=["4", 1],
        ),
        "7": n("ConditioningZeroOut", conditioning=["6", 0]),
        "8": n("CFGGuider", cfg=4.5, model=["4", 0], positive=["6", 0], negative=["7", 0]),
        "9": n("RandomNoise", noise_seed=9),
        "10": n("KSamplerSelect", sampler_name="dpmpp_2m"),
        "11": n("BasicScheduler", scheduler="sgm_uniform", steps=28, denoise=1.0, model=["4", 0]),
        "12": n(
            "SamplerCustomAdvanced",
            noise=["9", 0],
            guider=["8", 0],
            sampler=["10", 0],
            sigmas=["11", 0],
            latent_image=["13", 0],
        ),
        "13": n("EmptySD3LatentImage", width=64, height=64, batch_size=1),
    }
    assert fields(best(graph)) == (
        "a blue square",
        None,
        "9",
        28,
        4.5,
        "dpmpp_2m",
        "sgm_uniform",
        "toyShapes_v1.safetensors",
    )


def test_dual_cfg_guider_reads_cfg_conds_and_both_positives():
    graph = {
        **LOADER,
        "6": n("CLIPTextEncode", text="a red circle", clip=["4", 1]),
        "16": n("CLIPTextEncode", text="a red square", clip=["4", 1]),
        "7": n("CLIPTextEncode", text="a black background", clip=["4", 1]),
        "8": n(
            "DualCFGGuider",
            cfg_conds=6.0,
            cfg_cond2_negative=2.0,
            style="regular",
            model=["4", 0],
            cond1=["6", 0],
            cond2=["16", 0],
            negative=["7", 0],
        ),
        "9": n("RandomNoise", noise_seed=3),
        "10": n("KSamplerSelect", sampler_name="euler"),
        "11": n("SplitSigmas", step=10, sigmas=["12", 0]),
        "12": n("AlignYourStepsScheduler", model_type="SDXL", steps=10, denoise=1.0),
        "13": n(
            "SamplerCustomAdvanced",
            noise=["9", 0],
            guider=["8", 0],
            sampler=["10", 0],
            sigmas=["11", 0],
            latent_image=["14", 0],
        ),
        "14": n("EmptyLatentImage", width=64, height=64, batch_size=1),
    }
    meta = best(graph)
    assert fields(meta) == (
        "a red circle\na red square",
        "a black background",
        "3",
        10,
        6.0,
        "euler",
        "align_your_steps",
        "toyShapes_v1.safetensors",
    )


def test_hires_pass_is_kept_in_extra_and_first_pass_wins():
    graph = basic_graph(
        **{
            "20": n("LatentUpscaleBy", upscale_method="nearest-exact", scale_by=1.5, samples=["3", 0]),
            "21": ksampler(seed=99, steps=10, denoise=0.4, latent_image=["20", 0], sampler_name="dpmpp_sde"),
            "8": n("VAEDecode", samples=["21", 0], vae=["4", 2]),
        }
    )
    graph = dict(reversed(list(graph.items())))  # the hires sampler comes first in the file
    meta = best(graph)
    assert (meta.seed, meta.steps, meta.sampler, meta.extra["denoise"]) == ("42", 20, "euler", 1.0)
    assert [s["node_id"] for s in meta.extra["samplers"]] == ["3", "21"]  # graph order, primary first
    assert meta.extra["samplers"][1]["denoise"] == 0.4


# --- conditioning ---------------------------------------------------------------------------


def test_controlnet_apply_advanced_keeps_positive_and_negative_apart():
    graph = basic_graph(
        **{
            "30": n("ControlNetLoader", control_net_name="toy_canny.safetensors"),
            "31": n("LoadImage", image="edges.png"),
            "32": n(
                "ControlNetApplyAdvanced",
                strength=0.8,
                start_percent=0.0,
                end_percent=1.0,
                positive=["6", 0],
                negative=["7", 0],
                control_net=["30", 0],
                image=["31", 0],
            ),
            "33": n("ControlNetApply", strength=1.0, conditioning=["32", 0], control_net=["30", 0], image=["31", 0]),
            "3": ksampler(positive=["33", 0], negative=["32", 1]),
        }
    )
    meta = best(graph)
    assert (meta.prompt, meta.negative_prompt) == ("a red triangle on a grey background", "a blue circle")
    assert ("controlnet", "toy_canny.safetensors", None) in kinds(meta)


def test_inpaint_conditioning_outputs_by_slot():
    graph = basic_graph(
        **{
            "40": n(
                "InpaintModelConditioning",
                noise_mask=True,
                positive=["6", 0],
                negative=["7", 0],
                vae=["4", 2],
                pixels=["41", 0],
                mask=["41", 1],
            ),
            "41": n("LoadImage", image="shape.png"),
            "3": ksampler(positive=["40", 0], negative=["40", 1], latent_image=["40", 2]),
        }
    )
    meta = best(graph)
    assert (meta.prompt, meta.negative_prompt) == ("a red triangle on a grey background", "a blue circle")


def test_conditioning_passthroughs_combine_concat_average_area():
    graph = basic_graph(
        **{
            "50": n("CLIPTextEncode", text="a white background", clip=["4", 1]),
            "51": n("CLIPTextEncode", text="a small orange star", clip=["4", 1]),
            "52": n("ConditioningSetArea", width=32, height=32, x=0, y=0, strength=1.0, conditioning=["51", 0]),
            "53": n("ConditioningConcat", conditioning_to=["6", 0], conditioning_from=["50", 0]),
            "54": n(
                "ConditioningAverage",
                conditioning_to_strength=0.5,
                conditioning_to=["53", 0],
                conditioning_from=["52", 0],
            ),
            "55": n("ConditioningCombine", conditioning_1=["54", 0], conditioning_2=["56", 0]),
            "56": n("ConditioningSetTimestepRange", start=0.0, end=0.5, conditioning=["6", 0]),
            "57": n("ConditioningZeroOut", conditioning=["7", 0]),
            "3": ksampler(positive=["55", 0], negative=["57", 0]),
        }
    )
    meta = best(graph)
    assert meta.prompt == "a red triangle on a grey background\na white background\na small orange star"
    assert meta.negative_prompt is None


def test_prompt_text_from_string_nodes():
    cases = {
        "String Literal": n("String Literal", string="a green triangle"),  # comfy-image-saver
        "Text Multiline": n("Text Multiline", text="a green triangle"),  # WAS
        "CR Prompt Text": n("CR Prompt Text", prompt="a green triangle"),  # Comfyroll
        "PrimitiveStringMultiline": n("PrimitiveStringMultiline", value="a green triangle"),
        "ShowText|pysssss": n("ShowText|pysssss", text=["61", 0]),
        "StringFunction|pysssss": n(
            "StringFunction|pysssss", action="append", tidy_tags="no", text_a="a green", text_b=" triangle", text_c=""
        ),
        "Text Concatenate": n(
            "Text Concatenate", delimiter=" ", clean_whitespace="true", text_a=["61", 0], text_b=["62", 0]
        ),
        "StringConcatenate": n("StringConcatenate", string_a="a green", string_b="triangle", delimiter=" "),
        "JoinStrings": n("JoinStrings", string1="a green", string2="triangle", delimiter=" "),
    }
    for name, node in cases.items():
        graph = basic_graph(
            **{
                "60": node,
                "61": n("String Literal", string="a green" if name == "Text Concatenate" else "a green triangle"),
                "62": n("Text Multiline", text="triangle"),
                "6": n("CLIPTextEncode", text=["60", 0], clip=["4", 1]),
            }
        )
        assert best(graph).prompt == "a green triangle", name


def test_prompt_styler_outputs_positive_and_negative_by_slot():
    graph = basic_graph(
        **{
            "70": n(
                "SDXLPromptStyler",
                text_positive="a red square",
                text_negative="a blue star",
                style="base",
                log_prompt=False,
            ),
            "6": n("CLIPTextEncode", text=["70", 0], clip=["4", 1]),
            "7": n("CLIPTextEncode", text=["70", 1], clip=["4", 1]),
        }
    )
    meta = best(graph)
    assert (meta.prompt, meta.negative_prompt) == ("a red square", "a blue star")


def test_reroute_like_nodes_and_literal_unknown_prompt_kept():
    graph = basic_graph(
        **{
            "6": n("CLIPTextEncode", text="unknown", clip=["4", 1]),
            "80": n("Reroute", **{"": ["6", 0]}),
            "3": ksampler(positive=["80", 0]),
        }
    )
    assert best(graph).prompt == "unknown"


# --- loaders and packs ---------------------------------------------------------------------


def test_checkpoint_loader_and_unclip_loader():
    for loader in (
        n("CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="toyShapes_v1.safetensors"),
        n("unCLIPCheckpointLoader", ckpt_name="toyShapes_v1.safetensors"),
        n("ImageOnlyCheckpointLoader", ckpt_name="toyShapes_v1.safetensors"),
    ):
        assert best(basic_graph(**{"4": loader})).model == "toyShapes_v1.safetensors"


def test_efficiency_nodes_loader_holds_prompts_and_lora():
    graph = {
        "1": n(
            "Efficient Loader",
            ckpt_name="toyShapes_v1.safetensors",
            vae_name="Baked VAE",
            clip_skip=-2,
            lora_name="shapes.safetensors",
            lora_model_strength=0.7,
            lora_clip_strength=0.9,
            positive="a yellow circle",
            negative="a black square",
            token_normalization="none",
            weight_interpretation="comfy",
            empty_latent_width=512,
            empty_latent_height=512,
            batch_size=1,
            lora_stack=["2", 0],
        ),
        "2": n(
            "LoRA Stacker",
            input_mode="advanced",
            lora_count=2,
            lora_name_1="colours.safetensors",
            lora_wt_1=1.0,
            model_str_1=0.6,
            clip_str_1=0.5,
            lora_name_2="None",
            lora_wt_2=1.0,
            model_str_2=1.0,
            clip_str_2=1.0,
        ),
        "3": n(
            "KSampler (Efficient)",
            seed=321,
            steps=25,
            cfg=6.5,
            sampler_name="euler_ancestral",
            scheduler="karras",
            denoise=1.0,
            preview_method="auto",
            vae_decode="true",
            model=["1", 0],
            positive=["1", 1],
            negative=["1", 2],
            latent_image=["1", 3],
            optional_vae=["1", 4],
        ),
        "4": n(
            "KSampler Adv. (Efficient)",
            add_noise="enable",
            noise_seed=322,
            steps=10,
            cfg=5.0,
            sampler_name="euler",
            scheduler="normal",
            start_at_step=0,
            end_at_step=10000,
            return_with_leftover_noise="disable",
            preview_method="auto",
            vae_decode="true",
            model=["3", 0],
            positive=["3", 1],
            negative=["3", 2],
            latent_image=["3", 3],
        ),
    }
    meta = best(graph)
    assert fields(meta) == (
        "a yellow circle",
        "a black square",
        "321",
        25,
        6.5,
        "euler_ancestral",
        "karras",
        "toyShapes_v1.safetensors",
    )
    assert {("lora", "shapes.safetensors", 0.7), ("lora", "colours.safetensors", 0.6)} <= kinds(meta)
    assert not any(r.name in ("None", "Baked VAE") for r in meta.resources)
    hires = meta.extra["samplers"][1]
    assert hires["prompts"][0]["text"] == "a yellow circle" and hires["negative_prompts"][0]["text"] == "a black square"


def test_efficiency_sdxl_loader_and_sampler_tuple():
    graph = {
        "1": n(
            "Eff. Loader SDXL",
            base_ckpt_name="toyShapesXL.safetensors",
            base_clip_skip=-2,
            refiner_ckpt_name="toyRefiner.safetensors",
            refiner_clip_skip=-2,
            positive_ascore=6.0,
            negative_ascore=2.0,
            vae_name="Baked VAE",
            positive="an orange star",
            negative="a grey circle",
            token_normalization="none",
            weight_interpretation="comfy",
            empty_latent_width=1024,
            empty_latent_height=1024,
            batch_size=1,
        ),
        "2": n(
            "KSampler SDXL (Eff.)",
            noise_seed=55,
            steps=30,
            cfg=7.0,
            sampler_name="dpmpp_2m",
            scheduler="karras",
            start_at_step=0,
            refine_at_step=24,
            preview_method="auto",
            vae_decode="true",
            sdxl_tuple=["1", 0],
            latent_image=["1", 1],
        ),
    }
    meta = best(graph)
    assert fields(meta) == (
        "an orange star",
        "a grey circle",
        "55",
        30,
        7.0,
        "dpmpp_2m",
        "karras",
        "toyShapesXL.safetensors",
    )
    assert ("checkpoint", "toyRefiner.safetensors", None) in kinds(meta)


def test_rgthree_power_lora_loader_api_and_workflow():
    lora_on = {"on": True, "lora": "shapes.safetensors", "strength": 0.75, "strengthTwo": None}
    lora_off = {"on": False, "lora": "colours.safetensors", "strength": 1.0, "strengthTwo": None}
    graph = basic_graph(
        **{
            "90": n(
                "Power Lora Loader (rgthree)",
                PowerLoraLoaderHeaderWidget={"type": "PowerLoraLoaderHeaderWidget"},
                lora_1=lora_on,
                lora_2=lora_off,
                **{"\u2795 Add Lora": ""},
                model=["4", 0],
                clip=["4", 1],
            ),
            "3": ksampler(model=["90", 0]),
        }
    )
    meta = best(graph)
    assert meta.model == "toyShapes_v1.safetensors"
    loras = {(r.name, r.weight) for r in meta.resources if r.kind == "lora"}
    assert loras == {("shapes.safetensors", 0.75)}

    workflow = _workflow(
        [
            _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], outputs=3),
            _wnode(
                2,
                "Power Lora Loader (rgthree)",
                [{}, {"type": "PowerLoraLoaderHeaderWidget"}, lora_on, lora_off, {}, ""],
                inputs=[("model", 1), ("clip", 2)],
            ),
            _wnode(3, "CLIPTextEncode", ["a red circle"], inputs=[("clip", 3)]),
            _wnode(
                4, "KSampler", [8, "fixed", 12, 6.0, "euler", "normal", 1.0], inputs=[("model", 4), ("positive", 5)]
            ),
        ],
        [
            (1, 1, 0, 2, 0, "MODEL"),
            (2, 1, 1, 2, 1, "CLIP"),
            (3, 2, 1, 3, 0, "CLIP"),
            (4, 2, 0, 4, 0, "MODEL"),
            (5, 3, 0, 4, 1, "CONDITIONING"),
        ],
    )
    meta = best(workflow=workflow)
    assert (meta.prompt, meta.seed, meta.model) == ("a red circle", "8", "toyShapes_v1.safetensors")
    assert {(r.name, r.weight) for r in meta.resources if r.kind == "lora"} == {("shapes.safetensors", 0.75)}


# --- workflow-only files ----------------------------------------------------------------------


def _wnode(node_id, node_type, widgets=None, inputs=(), outputs=1, mode=0, **more):
    if isinstance(outputs, int):
        outputs = [{"name": f"out{i}", "type": "*", "links": []} for i in range(outputs)]
    node = {"id": node_id, "type": node_type, "mode": mode, "inputs": [], "outputs": outputs}
    for entry in inputs:
        name, link = entry[0], entry[1]
        slot = {"name": name, "type": "*", "link": link}
        if len(entry) > 2:
            slot["widget"] = {"name": entry[2]}
        node["inputs"].append(slot)
    if widgets is not None:
        node["widgets_values"] = widgets
    node.update(more)
    return node


def _workflow(nodes, links, **more):
    return {
        "last_node_id": 99,
        "last_link_id": 99,
        "nodes": nodes,
        "links": [list(link) for link in links],
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
        **more,
    }


def _standard_workflow(extra_nodes=(), extra_links=(), lora_mode=0, positive_link=5):
    nodes = [
        _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], outputs=3),
        _wnode(
            2,
            "LoraLoader",
            ["shapes.safetensors", 0.8, 1.0],
            inputs=[("model", 1), ("clip", 2)],
            mode=lora_mode,
            outputs=[
                {"name": "MODEL", "type": "MODEL", "links": [3]},
                {"name": "CLIP", "type": "CLIP", "links": [4, 6]},
            ],
        ),
        _wnode(3, "CLIPTextEncode", ["a red triangle on a grey background"], inputs=[("clip", 4)]),
        _wnode(4, "CLIPTextEncode", ["a blue circle"], inputs=[("clip", 6)]),
        _wnode(5, "EmptyLatentImage", [64, 64, 1]),
        _wnode(
            6,
            "KSampler",
            [1234, "randomize", 25, 6.5, "dpmpp_2m", "karras", 1.0],
            inputs=[("model", 3), ("positive", positive_link), ("negative", 7), ("latent_image", 8)],
        ),
        *extra_nodes,
    ]
    nodes[1]["inputs"][0]["type"], nodes[1]["inputs"][1]["type"] = "MODEL", "CLIP"
    links = [
        (1, 1, 0, 2, 0, "MODEL"),
        (2, 1, 1, 2, 1, "CLIP"),
        (3, 2, 0, 6, 0, "MODEL"),
        (4, 2, 1, 3, 0, "CLIP"),
        (5, 3, 0, 6, 1, "CONDITIONING"),
        (6, 2, 1, 4, 0, "CLIP"),
        (7, 4, 0, 6, 2, "CONDITIONING"),
        (8, 5, 0, 6, 3, "LATENT"),
        *extra_links,
    ]
    return _workflow(nodes, links)


def test_workflow_only_ksampler_lora_and_widgets():
    meta = best(workflow=_standard_workflow())
    assert fields(meta) == (
        "a red triangle on a grey background",
        "a blue circle",
        "1234",
        25,
        6.5,
        "dpmpp_2m",
        "karras",
        "toyShapes_v1.safetensors",
    )
    assert ("lora", "shapes.safetensors", 0.8) in kinds(meta)


def test_workflow_bypassed_lora_passes_through_by_type_and_muted_nodes_are_skipped():
    meta = best(workflow=_standard_workflow(lora_mode=4))
    assert meta.model == "toyShapes_v1.safetensors" and meta.prompt == "a red triangle on a grey background"
    assert not any(r.kind == "lora" for r in meta.resources)  # it did not run
    muted = _standard_workflow(
        extra_nodes=[
            _wnode(
                7,
                "KSampler",
                [5, "fixed", 3, 1.0, "euler", "normal", 1.0],
                inputs=[("model", 3), ("positive", 5)],
                mode=2,
            ),
            _wnode(8, "LoraLoader", ["colours.safetensors", 1.0, 1.0], mode=2),
        ]
    )
    meta = best(workflow=muted)
    assert meta.seed == "1234" and len(meta.extra["samplers"]) == 1
    assert "colours.safetensors" not in {r.name for r in meta.resources}
    assert not extract(png(workflow=muted)).errors


def test_workflow_primitive_node_and_reroute_feed_converted_widgets():
    workflow = _standard_workflow(
        extra_nodes=[
            _wnode(
                10,
                "PrimitiveNode",
                [
                    "a yellow square",
                ],
                outputs=1,
            ),
            _wnode(11, "PrimitiveNode", [987654321, "fixed"], outputs=1),
            _wnode(12, "Reroute", None, inputs=[("", 12)]),
        ],
        extra_links=[
            (10, 10, 0, 3, 1, "STRING"),
            (11, 11, 0, 6, 4, "INT"),
            (12, 3, 0, 12, 0, "*"),
            (13, 12, 0, 6, 1, "CONDITIONING"),
        ],
        positive_link=13,
    )
    nodes = {node["id"]: node for node in workflow["nodes"]}
    nodes[3]["inputs"].append({"name": "text", "type": "STRING", "link": 10, "widget": {"name": "text"}})
    nodes[6]["inputs"].append({"name": "seed", "type": "INT", "link": 11, "widget": {"name": "seed"}})
    meta = best(workflow=workflow)
    assert (meta.prompt, meta.seed, meta.steps) == ("a yellow square", "987654321", 25)


def test_workflow_custom_sampler_nodes_widget_order():
    nodes = [
        _wnode(1, "UNETLoader", ["toy-flux.safetensors", "default"]),
        _wnode(2, "DualCLIPLoader", ["clip_l.safetensors", "t5xxl.safetensors", "flux", "default"]),
        _wnode(3, "CLIPTextEncodeFlux", ["a green star", "a green star on black", 3.5], inputs=[("clip", 1)]),
        _wnode(4, "FluxGuidance", [3.0], inputs=[("conditioning", 2)]),
        _wnode(5, "CFGGuider", [1.0], inputs=[("model", 3), ("positive", 4), ("negative", 9)]),
        _wnode(6, "RandomNoise", [777, "randomize"]),
        _wnode(7, "KSamplerSelect", ["euler"]),
        _wnode(8, "BasicScheduler", ["beta", 12, 1.0], inputs=[("model", 5)]),
        _wnode(
            9,
            "SamplerCustomAdvanced",
            None,
            inputs=[("noise", 6), ("guider", 7), ("sampler", 8), ("sigmas", 10), ("latent_image", 11)],
        ),
        _wnode(10, "EmptySD3LatentImage", [64, 64, 1]),
        _wnode(11, "ConditioningZeroOut", None, inputs=[("conditioning", 12)]),
    ]
    links = [
        (1, 2, 0, 3, 0, "CLIP"),
        (2, 3, 0, 4, 0, "CONDITIONING"),
        (3, 1, 0, 5, 0, "MODEL"),
        (4, 4, 0, 5, 1, "CONDITIONING"),
        (5, 1, 0, 8, 0, "MODEL"),
        (6, 6, 0, 9, 0, "NOISE"),
        (7, 5, 0, 9, 1, "GUIDER"),
        (8, 7, 0, 9, 2, "SAMPLER"),
        (10, 8, 0, 9, 3, "SIGMAS"),
        (11, 10, 0, 9, 4, "LATENT"),
        (9, 11, 0, 5, 2, "CONDITIONING"),
        (12, 3, 0, 11, 0, "CONDITIONING"),
    ]
    meta = best(workflow=_workflow(nodes, links))
    assert meta.prompt in ("a green star\na green star on black", "a green star on black\na green star")
    assert (meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale, meta.sampler, meta.scheduler, meta.model) == (
        None,
        "777",
        12,
        1.0,
        "euler",
        "beta",
        "toy-flux.safetensors",
    )
    assert meta.extra["guidance"] == 3.0


def test_workflow_efficiency_nodes_with_null_seed_control():
    nodes = [
        _wnode(
            1,
            "Efficient Loader",
            [
                "toyShapes_v1.safetensors",
                "Baked VAE",
                -1,
                "None",
                1.0,
                1.0,
                "a blue triangle",
                "a red square",
                "none",
                "comfy",
                512,
                512,
                1,
            ],
            outputs=7,
        ),
        _wnode(
            2,
            "KSampler (Efficient)",
            [4242, None, 18, 7.5, "euler", "normal", 1.0, "auto", "true"],
            inputs=[("model", 1), ("positive", 2), ("negative", 3), ("latent_image", 4)],
        ),
    ]
    links = [
        (1, 1, 0, 2, 0, "MODEL"),
        (2, 1, 1, 2, 1, "CONDITIONING"),
        (3, 1, 2, 2, 2, "CONDITIONING"),
        (4, 1, 3, 2, 3, "LATENT"),
    ]
    meta = best(workflow=_workflow(nodes, links))
    assert fields(meta) == (
        "a blue triangle",
        "a red square",
        "4242",
        18,
        7.5,
        "euler",
        "normal",
        "toyShapes_v1.safetensors",
    )
    nodes[1]["widgets_values"] = [
        "Sample",
        4242,
        "fixed",
        18,
        7.5,
        "euler",
        "normal",
        1.0,
        "auto",
        "true",
    ]  # older release
    assert best(workflow=_workflow(nodes, links)).seed == "4242"


def test_workflow_new_frontend_lists_every_widget_as_an_input():
    # newer frontends list each widget in inputs[] with widget.name: the names of unknown nodes come from there
    nodes = [
        _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], inputs=[("ckpt_name", None, "ckpt_name")]),
        _wnode(
            2,
            "MyPromptNode",
            ["a grey star", 2],
            inputs=[("clip", 1), ("text", None, "text"), ("weight", None, "weight")],
        ),
        _wnode(
            3,
            "KSampler",
            [3, "increment", 9, 4.0, "euler", "normal", 1.0],
            inputs=[("model", 2), ("positive", 3), ("seed", None, "seed"), ("steps", None, "steps")],
        ),
    ]
    links = [(1, 1, 1, 2, 0, "CLIP"), (2, 1, 0, 3, 0, "MODEL"), (3, 2, 0, 3, 1, "CONDITIONING")]
    meta = best(workflow=_workflow(nodes, links))
    assert (meta.prompt, meta.seed, meta.steps, meta.model) == ("a grey star", "3", 9, "toyShapes_v1.safetensors")


def test_workflow_subgraph_instance_and_nested_link_through_outputs():
    inner = {
        "id": "aaaa-bbbb",
        "name": "encode both",
        "inputs": [{"name": "clip", "type": "CLIP", "linkIds": [1, 2]}],
        "outputs": [
            {"name": "positive", "type": "CONDITIONING", "linkIds": [3]},
            {"name": "negative", "type": "CONDITIONING", "linkIds": [4]},
        ],
        "nodes": [
            _wnode(1, "CLIPTextEncode", ["an orange square"], inputs=[("clip", 1)]),
            _wnode(2, "CLIPTextEncode", ["a purple circle"], inputs=[("clip", 2)]),
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "CLIP"},
            {"id": 2, "origin_id": -10, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "CLIP"},
            {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "CONDITIONING"},
            {"id": 4, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 1, "type": "CONDITIONING"},
        ],
    }
    nodes = [
        _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], outputs=3),
        _wnode(2, "aaaa-bbbb", None, inputs=[("clip", 1)], outputs=2),
        _wnode(
            3,
            "KSampler",
            [11, "fixed", 7, 3.0, "euler", "simple", 1.0],
            inputs=[("model", 2), ("positive", 3), ("negative", 4)],
        ),
    ]
    links = [
        (1, 1, 1, 2, 0, "CLIP"),
        (2, 1, 0, 3, 0, "MODEL"),
        (3, 2, 0, 3, 1, "CONDITIONING"),
        (4, 2, 1, 3, 2, "CONDITIONING"),
    ]
    meta = best(workflow=_workflow(nodes, links, definitions={"subgraphs": [inner]}))
    assert (meta.prompt, meta.negative_prompt, meta.seed, meta.model) == (
        "an orange square",
        "a purple circle",
        "11",
        "toyShapes_v1.safetensors",
    )


def test_workflow_legacy_group_node():
    group = {
        "nodes": [
            {
                "index": 0,
                "type": "CLIPTextEncode",
                "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [], "slot_index": 0}],
                "widgets_values": ["old text"],
            },
            {
                "index": 1,
                "type": "CLIPTextEncode",
                "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [], "slot_index": 0}],
                "widgets_values": ["old neg"],
            },
            {
                "index": 2,
                "type": "KSampler",
                "inputs": [
                    {"name": "model", "type": "MODEL", "link": None},
                    {"name": "positive", "type": "CONDITIONING", "link": None},
                    {"name": "negative", "type": "CONDITIONING", "link": None},
                    {"name": "latent_image", "type": "LATENT", "link": None},
                ],
                "outputs": [{"name": "LATENT", "type": "LATENT", "links": [], "slot_index": 0}],
                "widgets_values": [1, "fixed", 20, 8, "euler", "normal", 1],
            },
        ],
        "links": [[0, 0, 2, 1, 10, "CONDITIONING"], [1, 0, 2, 2, 11, "CONDITIONING"]],
        "external": [[2, 0, "LATENT"]],
    }
    nodes = [
        _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], outputs=3),
        _wnode(2, "EmptyLatentImage", [64, 64, 1]),
        _wnode(
            3,
            "workflow>encode and sample",
            ["a blue star", "a green circle", 31, "fixed", 14, 5.0, "dpmpp_2m", "karras", 1.0],
            inputs=[("CLIPTextEncode clip", 1), ("CLIPTextEncode 2 clip", 2), ("model", 3), ("latent_image", 4)],
        ),
    ]
    links = [(1, 1, 1, 3, 0, "CLIP"), (2, 1, 1, 3, 1, "CLIP"), (3, 1, 0, 3, 2, "MODEL"), (4, 2, 0, 3, 3, "LATENT")]
    workflow = _workflow(nodes, links)
    workflow["extra"]["groupNodes"] = {"encode and sample": group}
    meta = best(workflow=workflow)
    assert fields(meta) == (
        "a blue star",
        "a green circle",
        "31",
        14,
        5.0,
        "dpmpp_2m",
        "karras",
        "toyShapes_v1.safetensors",
    )
    # the older "workflow/<name>" type spelling
    workflow["nodes"][2]["type"] = "workflow/encode and sample"
    assert best(workflow=workflow).prompt == "a blue star"


# --- containers -------------------------------------------------------------------------------


def _exif_pieces_file(kind, make=None, description=None, model=None):
    entries = []
    for tag, value in ((0x010F, make), (0x010E, description), (0x0110, model)):
        if value is not None:
            entries.append((tag, 2, value.encode("utf-8") + b"\x00"))
    exif = tiff(entries, big_endian=False)
    if kind == "jpeg":
        return jpeg_with_exif(exif)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "WEBP", exif=b"Exif\x00\x00" + exif)
    return buffer.getvalue()


def test_exif_prompt_and_workflow_labels_in_jpeg_and_webp():
    graph = json.dumps(basic_graph())
    workflow = json.dumps(_standard_workflow())
    for kind in ("jpeg", "webp"):
        result = extract(_exif_pieces_file(kind, make="Prompt: " + graph, description="Workflow: " + workflow))
        assert result.best.generator == "comfyui"
        assert fields(result.best)[:3] == ("a red triangle on a grey background", "a blue circle", "42"), kind
        assert result.best.extra["has_workflow"]
        # workflow only, written into Model by some nodes
        result = extract(_exif_pieces_file(kind, model="workflow:" + workflow))
        assert result.best.seed == "1234", kind


# --- robustness -------------------------------------------------------------------------------


def test_int_ids_cycles_dangling_links_and_garbage_never_raise():
    graph = basic_graph(
        **{
            "3": ksampler(positive=[60, 0], negative=[7, 0], seed=[61, 0]),
            "60": n("ConditioningCombine", conditioning_1=["60", 0], conditioning_2=[6, 0], conditioning_3=["404", 0]),
            "61": n("PrimitiveInt", value=[61, 0]),
            "62": "not a node",
            "63": n("CLIPTextEncode", text=None, clip=["4", 1]),
            "64": {"class_type": None, "inputs": ["x"]},
        }
    )
    meta = best(graph)
    assert meta.prompt == "a red triangle on a grey background" and meta.negative_prompt == "a blue circle"
    assert any("404" in e for e in meta.extra["errors"])


def test_random_mutations_never_raise():
    rng = random.Random(7)
    sources = [basic_graph(), _standard_workflow()]
    junk = [None, 0, -1, 1.5, "", "x", [], {}, ["1"], [None, 0], ["3", "0"], [3, 0, 1], {"a": 1}, True, 2**70]
    parser = ComfyUIParser()
    for _ in range(400):
        graph = json.loads(json.dumps(rng.choice(sources)))
        for _ in range(rng.randint(1, 6)):
            _mutate(graph, rng, junk)
        key = "workflow" if "nodes" in graph else "prompt"
        parser.parse([MetadataText(f"png:tEXt:{key}", key, json.dumps(graph))])


def _mutate(value, rng, junk):
    if isinstance(value, dict) and value:
        key = rng.choice(list(value))
        if rng.random() < 0.5 and isinstance(value[key], (dict, list)):
            _mutate(value[key], rng, junk)
        else:
            value[key] = copy.deepcopy(rng.choice(junk))
    elif isinstance(value, list) and value:
        index = rng.randrange(len(value))
        if rng.random() < 0.5 and isinstance(value[index], (dict, list)):
            _mutate(value[index], rng, junk)
        else:
            value[index] = copy.deepcopy(rng.choice(junk))


def test_huge_graphs_are_walked_in_linear_time():
    # a ladder where every node feeds the next twice: per-path walks would take 2**depth steps
    graph = {
        **LOADER,
        "5": n("EmptyLatentImage", width=64, height=64, batch_size=1),
        "c0": n("CLIPTextEncode", text="a red circle", clip=["4", 1]),
        "s0": n("String Literal", string="a red"),
    }
    depth = 3000
    for i in range(1, depth):
        graph[f"c{i}"] = n("ConditioningCombine", conditioning_1=[f"c{i - 1}", 0], conditioning_2=[f"c{i - 1}", 0])
        graph[f"s{i}"] = n(
            "Text Concatenate", delimiter="", clean_whitespace="false", text_a=[f"s{i - 1}", 0], text_b=[f"s{i - 1}", 0]
        )
    graph["7"] = n("CLIPTextEncode", text=[f"s{depth - 1}", 0], clip=["4", 1])
    for i in range(200):  # many samplers chained: first-pass detection must not be quadratic
        latent = ["5", 0] if i == 0 else [f"k{i - 1}", 0]
        graph[f"k{i}"] = ksampler(seed=i, positive=[f"c{depth - 1}", 0], latent_image=latent)
    start = time.perf_counter()
    meta = best(graph)
    assert time.perf_counter() - start < 10
    assert meta.prompt == "a red circle" and meta.seed == "0"
    assert len(meta.extra["samplers"]) == 200

    nodes = [
        _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], outputs=3),
        _wnode(2, "CLIPTextEncode", ["a red circle"], inputs=[("clip", 1)]),
    ]
    links = [(1, 1, 1, 2, 0, "CLIP")]
    for i in range(3, 3000):
        nodes.append(_wnode(i, "Reroute", None, inputs=[("", i - 1)]))
        links.append((i - 1, i - 1, 0, i, 0, "*"))
    nodes.append(_wnode(5000, "KSampler", [1, "fixed", 2, 3.0, "euler", "normal", 1.0], inputs=[("positive", 2999)]))
    links.append((2999, 2999, 0, 5000, 1, "CONDITIONING"))
    start = time.perf_counter()
    meta = best(workflow=_workflow(nodes, links))
    assert time.perf_counter() - start < 10
    assert meta.seed == "1"


def test_comfyui_core_animated_webp_exif_layout():
    # SaveAnimatedWEBP: Model (0x0110) = "prompt:{...}", then one tag per extra_pnginfo key from Make (0x010F) down
    graph = json.dumps(basic_graph())
    data = _exif_pieces_file("webp", model="prompt:" + graph, make="workflow:" + json.dumps(_standard_workflow()))
    result = extract(data)
    assert result.best.generator == "comfyui" and result.best.seed == "42" and result.best.extra["has_workflow"]


def test_broken_prompt_chunk_falls_back_to_the_workflow():
    result = extract(png('{"3": {"class_type": "KSampler", "inputs": {', _standard_workflow()))
    assert result.best.seed == "1234" and result.best.prompt == "a red triangle on a grey background"
    assert any("not valid JSON" in e for e in result.errors)


def test_impact_wildcard_encode_uses_the_populated_text_and_detailer_is_a_later_pass():
    graph = basic_graph(
        **{
            "6": n(
                "ImpactWildcardEncode",
                wildcard_text="a __colour__ triangle",
                populated_text="a red triangle",
                mode="populate",
                **{
                    "Select to add LoRA": "Select the LoRA to add to the text",
                    "Select to add Wildcard": "Select the Wildcard to add to the text",
                },
                seed=5,
                model=["4", 0],
                clip=["4", 1],
            ),
            "3": ksampler(seed=["20", 0], positive=["6", 2]),
            "20": n("Seed (rgthree)", seed=424242),
            "21": n(
                "FaceDetailer",
                guide_size=512,
                seed=7,
                steps=10,
                cfg=5.0,
                sampler_name="euler",
                scheduler="normal",
                denoise=0.4,
                image=["8", 0],
                model=["4", 0],
                clip=["4", 1],
                vae=["4", 2],
                positive=["6", 2],
                negative=["7", 0],
                bbox_detector=["22", 0],
            ),
        }
    )
    graph["30"] = n(
        "Save Image w/Metadata",
        filename="%time_%seed",
        steps=20,
        cfg=8.0,
        modelname="toy",
        sampler_name="euler",
        scheduler="simple",
        positive="unknown",
        negative="unknown",
        seed_value=0,
        images=["8", 0],
    )
    meta = best(graph)
    assert (meta.prompt, meta.seed, meta.extra["primary_sampler"]) == ("a red triangle", "424242", "3")
    assert [s["node_id"] for s in meta.extra["samplers"]] == ["3", "21"]


def test_parser_never_raises_on_odd_top_level_shapes():
    parser = ComfyUIParser()
    for text in (
        "{}",
        "[]",
        '{"nodes": 5}',
        '{"nodes": [], "links": true, "definitions": {"subgraphs": 3}}',
        '{"nodes": [{"id": 1, "type": "workflow>g"}], "extra": {"groupNodes": {"g": {"nodes": 7, "links": [[0]]}}}}',
        '{"1": {"class_type": "KSampler", "inputs": {"positive": [1, 0], "latent_image": [1, 0], "seed": [1, 0]}}}',
        '{"a": {"class_type": "X", "inputs": {"text": "' + "y" * 10 + '"}}}',
    ):
        for key in ("prompt", "workflow"):
            parser.parse([MetadataText(f"png:tEXt:{key}", key, text)])


def test_rgthree_context_with_one_branch_and_comfyroll_lora_stack():
    graph = basic_graph(
        **{
            "40": n("Context (rgthree)", model=["4", 0], clip=["4", 1], positive=["6", 0]),
            "41": n("Context (rgthree)", base_ctx=["40", 0], negative=["7", 0]),
            "42": n(
                "CR LoRA Stack",
                switch_1="On",
                lora_name_1="shapes.safetensors",
                model_weight_1=0.9,
                clip_weight_1=1.0,
                switch_2="Off",
                lora_name_2="colours.safetensors",
                model_weight_2=1.0,
                clip_weight_2=1.0,
                switch_3="On",
                lora_name_3="None",
                model_weight_3=1.0,
                clip_weight_3=1.0,
            ),
            "43": n("CR Apply LoRA Stack", model=["4", 0], clip=["4", 1], lora_stack=["42", 0]),
            "3": ksampler(positive=["41", 4], negative=["41", 5], model=["43", 0]),
        }
    )
    meta = best(graph)
    assert (meta.prompt, meta.negative_prompt, meta.model) == (
        "a red triangle on a grey background",
        "a blue circle",
        "toyShapes_v1.safetensors",
    )
    assert {(r.name, r.weight) for r in meta.resources if r.kind == "lora"} == {("shapes.safetensors", 0.9)}


def test_workflow_ksampler_advanced_and_string_nodes_by_widget():
    nodes = [
        _wnode(1, "CheckpointLoaderSimple", ["toyShapes_v1.safetensors"], outputs=3),
        _wnode(2, "String Literal", ["a white star"]),
        _wnode(3, "Text Multiline", ["on a black background"]),
        _wnode(
            4,
            "StringFunction|pysssss",
            ["append", "yes", "", "", ""],
            inputs=[("text_a", 1, "text_a"), ("text_b", 2, "text_b")],
        ),
        _wnode(5, "CLIPTextEncode", [""], inputs=[("clip", 3), ("text", 4, "text")]),
        _wnode(
            6,
            "KSamplerAdvanced",
            ["enable", 31337, "fixed", 30, 6.0, "euler", "karras", 0, 24, "enable"],
            inputs=[("model", 5), ("positive", 6), ("latent_image", 7)],
        ),
        _wnode(7, "EmptyLatentImage", [64, 64, 1]),
    ]
    links = [
        (1, 2, 0, 4, 2, "STRING"),
        (2, 3, 0, 4, 3, "STRING"),
        (3, 1, 1, 5, 0, "CLIP"),
        (4, 4, 0, 5, 1, "STRING"),
        (5, 1, 0, 6, 0, "MODEL"),
        (6, 5, 0, 6, 1, "CONDITIONING"),
        (7, 7, 0, 6, 2, "LATENT"),
    ]
    meta = best(workflow=_workflow(nodes, links))
    assert fields(meta) == (
        "a white star, on a black background",
        None,
        "31337",
        30,
        6.0,
        "euler",
        "karras",
        "toyShapes_v1.safetensors",
    )
    assert meta.extra["samplers"][0]["end_at_step"] == 24
