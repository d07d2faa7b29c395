"""Plain text chunks named after generation fields (``prompt``, ``negative_prompt``, ``seed``,
``steps``, ``model``...) that no known writer's parser claimed: diffusers scripts and hosted
services that write ``PngInfo().add_text("prompt", prompt)`` and the like. Lowest trust: used
only when nothing more specific read the file (RANK 1), a ComfyUI graph under "prompt" is
not a prompt text, and every field's own chunk is its source.
"""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.normalize import seed_text, to_float, to_int, to_text

_FIELDS = {
    "prompt": ("prompt", "Prompt", "positive_prompt", "PositivePrompt"),
    "negative_prompt": ("negative_prompt", "Negative Prompt", "negative", "NegativePrompt"),
    "seed": ("seed", "Seed"),
    "steps": ("steps", "Steps", "num_inference_steps"),
    "cfg_scale": ("cfg_scale", "guidance_scale", "CFG scale", "cfg"),
    "sampler": ("sampler", "sampler_name", "Sampler", "scheduler_name"),
    "model": ("model", "Model", "model_name", "checkpoint"),
}
_CONVERT = {"seed": seed_text, "steps": to_int, "cfg_scale": to_float, "sampler": to_text, "model": to_text}


class TextChunkParser:
    name = "png-text"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        chunks = {p.key: p for p in pieces if p.location.startswith("png:") and p.location.count(":") == 2}
        prompt = next((chunks[k] for k in _FIELDS["prompt"] if k in chunks), None)
        if prompt is None or not prompt.text.strip() or prompt.text.lstrip()[:1] in ("{", "["):
            return None
        meta = GenerationMetadata(generator="png-text", source=prompt.location, prompt=prompt.text)
        sources = {"prompt": prompt.location}
        for field, keys in _FIELDS.items():
            piece = next((chunks[k] for k in keys if k in chunks), None)
            if field == "prompt" or piece is None:
                continue
            value = piece.text if field == "negative_prompt" else _CONVERT[field](piece.text.strip())
            if value is not None:
                setattr(meta, field, value)
                sources[field] = piece.location
        meta.extra["field_sources"] = sources
        return meta
