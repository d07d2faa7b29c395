"""Flat key/value generation records: the shape most JSON writers and manifests share.

Used by sidecar .json/.yaml files, manifest columns, TensorArt's generation_data, Civitai's
extraMetadata and any JSON piece whose keys name a prompt. Key names differ by writer, so
each field has a list of aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.meta import limits
from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import first, seed_text, to_float, to_int, to_text
from audit.meta.pieces import by_key, json_of
from audit.meta.textcodec import load_json, looks_like_json_object

PROMPT_KEYS = ("prompt", "positive_prompt", "positivePrompt", "PositivePrompt", "Prompt", "caption", "text", "positive")
NEGATIVE_KEYS = (
    "negative_prompt",
    "negativePrompt",
    "NegativePrompt",
    "negative",
    "Negative",
    "uc",
    "negativeprompt",
    "Negative prompt",
)  # the last as infotext-derived tables name their columns
SEED_KEYS = ("seed", "Seed", "noise_seed")
STEPS_KEYS = ("steps", "Steps", "num_inference_steps", "sampling_steps")
SAMPLER_KEYS = ("sampler", "sampler_name", "samplerName", "Sampler", "scheduler_name")
SCHEDULER_KEYS = ("scheduler", "schedule_type", "Schedule type", "noise_schedule")
CFG_KEYS = (
    "cfg_scale",
    "cfgScale",
    "CfgScale",
    "cfg",
    "guidance_scale",
    "guidanceScale",
    "scale",
    "cfgscale",
    "CFG scale",
)
MODEL_KEYS = (
    "model",
    "Model",
    "model_name",
    "modelName",
    "ModelName",
    "base_model",
    "base_model_name",
    "checkpoint",
    "sd_model_name",
    "ckpt",
)
MODEL_HASH_KEYS = ("model_hash", "modelHash", "ModelHash", "Model hash", "base_model_hash", "sd_model_hash")


# where records nest the generation under another key (Civitai image API "meta", exports' "metadata")
NESTED_KEYS = (
    "meta",
    "metadata",
    "generation",
    "generation_data",
    "generationData",
    "params",
    "parameters",
    "generation_params",
)
RESOURCE_KEYS = ("loras", "lora", "Loras", "resources", "civitaiResources", "additionalResources")
_KINDS = {
    "model": "checkpoint",
    "checkpoint": "checkpoint",
    "locon": "lycoris",
    "embed": "embedding",
    "textualinversion": "embedding",
}


def from_mapping(record: Mapping[str, Any], generator: str, _depth: int = 0) -> GenerationMetadata | None:
    """A GenerationMetadata from a flat record, or None when it names no prompt and no seed."""
    if not isinstance(record, Mapping):
        return None
    prompt = first(record, PROMPT_KEYS)
    if isinstance(prompt, list):  # Fooocus-style lists, InvokeAI [{prompt, weight}]
        prompt = ", ".join(str(p.get("prompt", "")) if isinstance(p, dict) else str(p) for p in prompt)
    meta = GenerationMetadata(generator=generator)
    meta.prompt = to_text(prompt) if isinstance(prompt, str) else None
    negative = first(record, NEGATIVE_KEYS)
    meta.negative_prompt = negative if isinstance(negative, str) else None
    meta.seed = seed_text(first(record, SEED_KEYS))
    meta.steps = to_int(first(record, STEPS_KEYS))
    meta.sampler = to_text(first(record, SAMPLER_KEYS))
    meta.scheduler = to_text(first(record, SCHEDULER_KEYS))
    meta.cfg_scale = to_float(first(record, CFG_KEYS))
    model = first(record, MODEL_KEYS)
    if isinstance(model, Mapping):  # {"name"/"model_name", "hash"}
        meta.model_hash = to_text(first(model, ("hash", "model_hash", "sha256")))
        model = first(model, ("name", "model_name", "modelFileName", "title"))
    meta.model = to_text(model)
    meta.model_hash = meta.model_hash or to_text(first(record, MODEL_HASH_KEYS))
    hashes = record.get("hashes")
    if not meta.model_hash and isinstance(hashes, Mapping):  # Civitai meta: {"model": h, "lora:name": h}
        meta.model_hash = to_text(hashes.get("model"))
    if meta.model or meta.model_hash:
        meta.resources.append(Resource("checkpoint", meta.model or meta.model_hash, meta.model_hash))
    _add_resources(meta, record)
    for key in ("width", "height", "clip_skip", "clipSkip", "denoise", "denoising_strength", "url", "key"):
        if key in record and not isinstance(record[key], (dict, list)):
            meta.extra[key] = record[key]
    if meta.prompt is None and meta.seed is None:
        return _nested(record, generator, _depth)
    return meta


def _add_resources(meta: GenerationMetadata, record: Mapping[str, Any]) -> None:
    listed = {(r.kind, r.name): r for r in reversed(meta.resources)}  # the first of a name wins
    for key in RESOURCE_KEYS:
        entries = record.get(key)
        for entry in entries if isinstance(entries, list) else []:
            limits.tick()
            resource = _lora(entry)
            if resource is None:
                continue
            same = listed.get((resource.kind, resource.name))
            if same is None:
                if len(meta.resources) >= limits.MAX_RESOURCES:
                    continue
                meta.resources.append(resource)
                listed[(resource.kind, resource.name)] = resource
            else:  # the same file listed twice (Civitai meta: resources and civitaiResources)
                same.hash, same.weight = (
                    same.hash or resource.hash,
                    same.weight if same.weight is not None else resource.weight,
                )
    checkpoint = next((r for r in meta.resources if r.kind == "checkpoint"), None)
    if meta.model is None and checkpoint is not None:  # named only in the resource list
        meta.model, meta.model_hash = checkpoint.name, meta.model_hash or checkpoint.hash


def _nested(record: Mapping[str, Any], generator: str, depth: int) -> GenerationMetadata | None:
    if depth >= 2:
        return None
    for key in NESTED_KEYS:
        value = record.get(key)
        if isinstance(value, str) and looks_like_json_object(value):
            value, problem = load_json(value)
            value = value if problem is None else None
        if isinstance(value, Mapping):
            meta = from_mapping(value, generator, depth + 1)
            if meta is not None:
                _add_resources(meta, record)  # Civitai's generator: {"params": {...}, "resources": [...]}
                return meta
    return None


def _lora(entry: Any) -> Resource | None:
    if isinstance(entry, Mapping):
        name = first(entry, ("name", "lora", "lora_name", "modelName", "model_name"))
        air = entry.get("air")
        if name is None and isinstance(air, str) and air.startswith("urn:air:"):
            # AIR: urn:air:{ecosystem}:{type}:{source}:{id}@{version}
            parts = air.split(":")
            kind = parts[3].lower() if len(parts) > 3 else "lora"
            return Resource(_KINDS.get(kind, kind), air, None, to_float(first(entry, ("weight", "strength"))))
        if name is None and first(entry, ("modelVersionId",)) is not None:
            name = f"civitai:{first(entry, ('modelVersionId',))}"  # Civitai names resources by version id only
        if name is None or isinstance(name, (dict, list)):
            return None
        kind = str(entry.get("type") or "lora").lower()
        return Resource(
            _KINDS.get(kind, kind),
            str(name),
            to_text(first(entry, ("hash", "sha256", "AutoV2"))),
            to_float(first(entry, ("weight", "strength", "multiplier"))),
        )
    if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
        if entry[0].lower() == "none":
            return None
        weight = to_float(entry[1]) if len(entry) > 1 else None
        digest = str(entry[2]) if len(entry) > 2 and entry[2] else None
        return Resource("lora", entry[0], digest, weight)
    if isinstance(entry, str) and ":" in entry:  # "name : weight"
        name, _, weight = entry.rpartition(":")
        return Resource("lora", name.strip(), None, to_float(weight))
    return None


def unreadable(pieces: list[MetadataText], generator: str, keys: tuple[str, ...]) -> GenerationMetadata | None:
    """The writer's own chunk is there but unreadable: say so rather than report nothing."""
    errors = []
    for piece in by_key(pieces, *keys):
        _, problem = json_of(piece)
        if problem is not None:
            errors.append(f"{generator}: {piece.location} is not readable JSON ({problem})")
    return GenerationMetadata(generator=generator, extra={"errors": errors}) if errors else None


class FlatJSONParser:
    """Any JSON object piece whose keys name a prompt (lowest-trust catch-all)."""

    name = "json"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        best = None
        for piece in pieces:
            if not looks_like_json_object(piece.text):
                continue
            value, problem = load_json(piece.text)
            if problem is not None or not isinstance(value, dict):
                continue
            if "class_type" in str(next(iter(value.values()), "")):  # a ComfyUI graph, not a record
                continue
            meta = from_mapping(value, _generator_for(piece))
            if meta is not None and (best is None or meta.richness() > best.richness()):
                meta.source = piece.location
                best = meta
        return best


def _generator_for(piece: MetadataText) -> str:
    if piece.location.startswith("sidecar"):
        return "sidecar"
    if piece.location.startswith("manifest"):
        return "manifest"
    return "json"
