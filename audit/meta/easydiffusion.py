"""Easy Diffusion (easydiffusion/easydiffusion with sdkit's ``save_dicts``, output format "embed").

PNG: one tEXt chunk per request field, the value ``str()``-ed: ``prompt``, ``negative_prompt``,
``seed``, ``use_stable_diffusion_model``, ``clip_skip``, ``use_vae_model``, ``sampler_name``,
``width``, ``height``, ``num_inference_steps``, ``guidance_scale``, ``use_lora_model``,
``lora_alpha``, ``use_hypernetwork_model``, ``use_embeddings_model``, ``use_controlnet_model``, ...
(``None`` written as "None", lists as Python reprs). With the "txt" metadata format chosen too,
the keys are the UI labels of ``TASK_TEXT_MAPPING`` ("Prompt", "Negative Prompt", "Stable
Diffusion model", "Steps", "Guidance Scale", ...) and lists are ", "-joined.
JPEG/WebP: the same record as JSON in EXIF UserComment (piexif, "UNICODE"). Sidecars: .json
with the same keys, .txt as "Label: value" lines.
"""

from __future__ import annotations

import ast
from typing import Any

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import json_objects

# UI label -> request key (easydiffusion's TASK_TEXT_MAPPING, inverted)
LABELS = {
    "Prompt": "prompt",
    "Negative Prompt": "negative_prompt",
    "Seed": "seed",
    "Stable Diffusion model": "use_stable_diffusion_model",
    "Clip Skip": "clip_skip",
    "ControlNet model": "use_controlnet_model",
    "ControlNet Filter": "control_filter_to_apply",
    "VAE model": "use_vae_model",
    "Sampler": "sampler_name",
    "Width": "width",
    "Height": "height",
    "Steps": "num_inference_steps",
    "Guidance Scale": "guidance_scale",
    "Prompt Strength": "prompt_strength",
    "LoRA model": "use_lora_model",
    "LoRA Strength": "lora_alpha",
    "Hypernetwork model": "use_hypernetwork_model",
    "Hypernetwork Strength": "hypernetwork_strength",
    "Embedding models": "use_embeddings_model",
    "Seamless Tiling": "tiling",
    "Use Face Correction": "use_face_correction",
    "Use Upscaling": "use_upscale",
    "Upscale By": "upscale_amount",
    "Latent Upscaler Steps": "latent_upscaler_steps",
}
KEYS = set(LABELS.values())
# present only in Easy Diffusion's records (diffusers apps share num_inference_steps/guidance_scale)
_OWN = ("use_stable_diffusion_model", "use_vae_model", "use_lora_model", "use_hypernetwork_model")
_MAX_REPR = 64 * 1024
_FIELD_KEYS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "steps": "num_inference_steps",
    "cfg_scale": "guidance_scale",
    "sampler": "sampler_name",
    "model": "use_stable_diffusion_model",
}
_RESOURCES = (
    ("use_vae_model", "vae", None),
    ("use_lora_model", "lora", "lora_alpha"),
    ("use_hypernetwork_model", "hypernetwork", "hypernetwork_strength"),
    ("use_embeddings_model", "embedding", None),
    ("use_controlnet_model", "controlnet", None),
)


class EasyDiffusionParser:
    name = "easydiffusion"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        chunks = _chunk_record(pieces)
        if chunks is not None:
            record, locations = chunks
            meta = _from_record(record, locations.get("prompt") or next(iter(locations.values())))
            if meta is not None:  # one chunk per field: each field's own chunk is its source
                meta.extra["field_sources"] = {
                    field: locations[key]
                    for field, key in _FIELD_KEYS.items()
                    if key in locations and getattr(meta, field) is not None
                }
            return meta
        for data, piece in json_objects(pieces, "UserComment", "Comment", "parameters"):
            record = {LABELS.get(k, k): v for k, v in data.items()}
            if any(key in record for key in _OWN):
                return _from_record(record, piece.location)
        for piece in pieces:  # sidecar .json files: any key
            if piece.location.startswith("sidecar") and piece.text.lstrip().startswith("{"):
                for data, found in json_objects([piece], piece.key):
                    record = {LABELS.get(k, k): v for k, v in data.items()}
                    if any(key in record for key in _OWN):
                        return _from_record(record, found.location)
        return None


def _chunk_record(pieces: list[MetadataText]) -> tuple[dict, dict[str, str]] | None:
    """The request fields written one text chunk each, under request keys or UI labels."""
    record: dict[str, Any] = {}
    locations: dict[str, str] = {}
    for piece in pieces:
        if not piece.location.startswith("png:"):
            continue
        key = LABELS.get(piece.key, piece.key)
        if key in KEYS and key not in record:
            record[key] = piece.text
            locations[key] = piece.location
    if not any(key in record for key in _OWN) and not (
        "guidance_scale" in record and "sampler_name" in record and "num_inference_steps" in record
    ):
        return None
    if isinstance(record.get("prompt"), str) and record["prompt"].lstrip().startswith("{"):
        return None  # a ComfyUI graph under "prompt": not this writer
    return record, locations


def _value(value: Any) -> Any:
    """A str()-ed request value back to what it was: "None" -> None, "['a', 'b']" -> list."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text in ("None", ""):
        return None
    if text in ("True", "False"):
        return text == "True"
    if text[:1] in "[(" and len(text) <= _MAX_REPR:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
        return list(parsed) if isinstance(parsed, (list, tuple)) else value
    return value


def _names(value: Any) -> list[str]:
    value = _value(value)
    if isinstance(value, list):
        return [str(v) for v in value if v not in (None, "", "None")]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "None"] if "," in value else [value]
    return []


def _weights(value: Any) -> list[float | None]:
    value = _value(value)
    if isinstance(value, list):
        return [to_float(v) for v in value]
    if isinstance(value, str) and "," in value:
        return [to_float(v) for v in value.split(",")]
    return [to_float(value)]


def _from_record(record: dict, location: str) -> GenerationMetadata | None:
    meta = GenerationMetadata(generator="easydiffusion", source=location)
    prompt, negative = record.get("prompt"), record.get("negative_prompt")
    meta.prompt = prompt if isinstance(prompt, str) else None
    meta.negative_prompt = negative if isinstance(negative, str) else None
    meta.seed = seed_text(_value(record.get("seed")))
    meta.steps = to_int(_value(record.get("num_inference_steps")))
    meta.cfg_scale = to_float(_value(record.get("guidance_scale")))
    meta.sampler = to_text(_value(record.get("sampler_name")))
    model = _value(record.get("use_stable_diffusion_model"))
    meta.model = to_text(model)
    if meta.model:
        meta.resources.append(Resource("checkpoint", meta.model))
    for key, kind, weight_key in _RESOURCES:
        names = _names(record.get(key))
        weights = _weights(record.get(weight_key)) if weight_key else []
        for i, name in enumerate(names):
            meta.resources.append(Resource(kind, name, None, weights[i] if i < len(weights) else None))
    for key in ("width", "height", "clip_skip", "prompt_strength", "tiling", "use_upscale", "use_face_correction"):
        value = _value(record.get(key))
        if value is not None:
            meta.extra[key] = value
    return meta if meta.richness() else None
