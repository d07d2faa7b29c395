"""InvokeAI: ``invokeai_metadata`` JSON (3.x+), ``sd-metadata`` JSON (2.x) and ``Dream`` text (1.x).

In InvokeAI the field called ``scheduler`` is the sampler ("euler_a", "dpmpp_2m_k")."""

from __future__ import annotations

import re
import shlex

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import by_key, json_of


class InvokeAIParser:
    name = "invokeai"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "invokeai_metadata"):
            data, problem = json_of(piece)
            if problem is None and isinstance(data, dict):
                return _from_v3(data, piece.location)
        for piece in by_key(pieces, "sd-metadata"):
            data, problem = json_of(piece)
            if problem is None and isinstance(data, dict):
                return _from_v2(data, piece.location)
        for piece in by_key(pieces, "Dream"):
            meta = _from_dream(piece.text, piece.location)
            if meta is not None:
                return meta
        return None


def _model(meta: GenerationMetadata, model) -> None:
    if isinstance(model, dict):
        meta.model = to_text(model.get("name") or model.get("model_name"))
        meta.model_hash = to_text(model.get("hash"))
    else:
        meta.model = to_text(model)
    if meta.model or meta.model_hash:
        meta.resources.append(Resource("checkpoint", meta.model or meta.model_hash, meta.model_hash))


def _from_v3(data: dict, location: str) -> GenerationMetadata:
    meta = GenerationMetadata(generator="invokeai", source=location)
    meta.prompt = to_text(data.get("positive_prompt"))
    meta.negative_prompt = data.get("negative_prompt") if isinstance(data.get("negative_prompt"), str) else None
    meta.seed = seed_text(data.get("seed"))
    meta.steps = to_int(data.get("steps"))
    meta.cfg_scale = to_float(data.get("cfg_scale"))
    meta.sampler = to_text(data.get("scheduler"))
    _model(meta, data.get("model"))
    for lora in data.get("loras") or []:
        if isinstance(lora, dict):
            model = lora.get("model") or lora.get("lora") or {}
            name = model.get("name") or model.get("model_name") if isinstance(model, dict) else None
            if name:
                meta.resources.append(Resource("lora", name, model.get("hash"), to_float(lora.get("weight"))))
    if isinstance(data.get("vae"), dict):
        name = data["vae"].get("name") or data["vae"].get("model_name")
        if name:
            meta.resources.append(Resource("vae", name, data["vae"].get("hash")))
    for key in ("width", "height", "generation_mode", "app_version"):
        if key in data:
            meta.extra[key] = data[key]
    return meta


def _from_v2(data: dict, location: str) -> GenerationMetadata:
    meta = GenerationMetadata(generator="invokeai", source=location)
    image = data.get("image") if isinstance(data.get("image"), dict) else {}
    prompt = image.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(str(p.get("prompt", "")) for p in prompt if isinstance(p, dict))
    if isinstance(prompt, str):
        meta.prompt, meta.negative_prompt = _split_brackets(prompt)
    meta.seed = seed_text(image.get("seed"))
    meta.steps = to_int(image.get("steps"))
    meta.cfg_scale = to_float(image.get("cfg_scale"))
    meta.sampler = to_text(image.get("sampler"))
    meta.model = to_text(data.get("model_weights"))
    meta.model_hash = to_text(data.get("model_hash"))
    return meta


def _split_brackets(prompt: str) -> tuple[str, str | None]:
    """InvokeAI writes negative terms in [square brackets] inside the prompt."""
    negatives = re.findall(r"\[([^\[\]]*)\]", prompt)
    positive = re.sub(r"\[[^\[\]]*\]", "", prompt).strip()
    return positive, (", ".join(n.strip() for n in negatives) if negatives else None)


def _from_dream(text: str, location: str) -> GenerationMetadata | None:
    try:
        tokens = shlex.split(text)
    except ValueError:
        return None
    if not tokens or not any(t.startswith("-") for t in tokens[1:]):
        return None
    meta = GenerationMetadata(generator="invokeai", source=location)
    meta.prompt, meta.negative_prompt = _split_brackets(tokens[0])
    flags = {"-s": "steps", "-S": "seed", "-C": "cfg", "-A": "sampler"}
    for flag, value in zip(tokens[1:], tokens[2:]):
        field = flags.get(flag)
        if field == "steps":
            meta.steps = to_int(value)
        elif field == "seed":
            meta.seed = seed_text(value)
        elif field == "cfg":
            meta.cfg_scale = to_float(value)
        elif field == "sampler":
            meta.sampler = value
    return meta
