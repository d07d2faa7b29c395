"""NovelAI: ``Description`` (prompt), ``Software``="NovelAI", ``Source`` ("<model> <hash>") and a
``Comment`` JSON (``uc`` negative, ``scale`` CFG, V4 ``v4_prompt``/``v4_negative_prompt`` with
per-character captions). The same dict is duplicated as gzip "stealth" data in the alpha
channel and, in WebP, inside an EXIF UserComment JSON ``{"Comment": ...}``."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import unreadable
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import by_key, json_objects


class NovelAIParser:
    name = "novelai"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        software = " ".join(p.text for p in by_key(pieces, "Software", "Source", "Make"))
        for comment, piece in json_objects(pieces, "Comment"):
            novelai_shaped = "uc" in comment or "v4_prompt" in comment or "noise_schedule" in comment
            if not (novelai_shaped or "NovelAI" in software):
                continue
            return _from_comment(comment, pieces, piece.location)
        if software.strip().startswith("NovelAI"):  # Comment stripped or unreadable: the prompt survives
            for piece in by_key(pieces, "Description", "ImageDescription"):
                if piece.text.strip():
                    meta = GenerationMetadata(generator="novelai", prompt=piece.text, source=piece.location)
                    _model(meta, pieces)
                    broken = unreadable(pieces, "novelai", ("Comment",))
                    if broken is not None:
                        meta.extra["errors"] = broken.extra["errors"]
                    return meta
        return None


_MAX_CHARACTERS = 64  # NovelAI allows six; each is looked for in the base prompt


def _caption(block) -> tuple[str | None, list[dict]]:
    if not isinstance(block, dict) or not isinstance(block.get("caption"), dict):
        return None, []
    caption = block["caption"]
    listed = caption.get("char_captions")
    characters = [c for c in (listed if isinstance(listed, list) else [])[:_MAX_CHARACTERS] if isinstance(c, dict)]
    return to_text(caption.get("base_caption")), characters


def _with_characters(base: str | None, characters: list[dict]) -> str | None:
    """V4 character prompts are prompt text too (the policy must see them): appended, one a line."""
    extra = [
        c["char_caption"]
        for c in characters
        if isinstance(c.get("char_caption"), str)
        and c["char_caption"].strip()
        and c["char_caption"] not in (base or "")
    ]
    if not extra:
        return base
    return "\n".join(([base] if base else []) + extra)


def _model(meta: GenerationMetadata, pieces: list[MetadataText]) -> None:
    # PNG: Source="NovelAI Diffusion V4.5 C02D4F98"; WebP/JPEG EXIF: Software holds that same text
    source = next((p.text.strip() for p in by_key(pieces, "Source") if p.text.strip()), None)
    if source is None:
        source = next(
            (p.text.strip() for p in by_key(pieces, "Software") if p.text.strip() and p.text.strip() != "NovelAI"), None
        )
    if not source:
        return
    name, _, digest = source.rpartition(" ")
    if name and len(digest) == 8 and all(c in "0123456789abcdefABCDEF" for c in digest):
        meta.model, meta.model_hash = name, digest
    else:
        meta.model = source
    meta.resources.append(Resource("checkpoint", meta.model, meta.model_hash))


def _from_comment(comment: dict, pieces: list[MetadataText], location: str) -> GenerationMetadata:
    meta = GenerationMetadata(generator="novelai", source=location)
    v4_prompt, characters = _caption(comment.get("v4_prompt"))
    v4_negative, negative_characters = _caption(comment.get("v4_negative_prompt"))
    description = next((p.text for p in by_key(pieces, "Description", "ImageDescription") if p.text.strip()), None)
    prompt = comment.get("prompt") if isinstance(comment.get("prompt"), str) and comment["prompt"].strip() else None
    meta.prompt = _with_characters(prompt or v4_prompt or description, characters)
    negative = comment.get("uc") if isinstance(comment.get("uc"), str) else v4_negative
    meta.negative_prompt = _with_characters(negative, negative_characters)
    meta.seed = seed_text(comment.get("seed"))
    meta.steps = to_int(comment.get("steps"))
    meta.cfg_scale = to_float(comment.get("scale"))
    meta.sampler = to_text(comment.get("sampler"))
    meta.scheduler = to_text(comment.get("noise_schedule"))
    _model(meta, pieces)
    if characters:
        meta.extra["character_prompts"] = [
            {"caption": c.get("char_caption"), "centers": c.get("centers")} for c in characters
        ]
    if negative_characters:
        meta.extra["character_negative_prompts"] = [
            {"caption": c.get("char_caption"), "centers": c.get("centers")} for c in negative_characters
        ]
    for key in ("strength", "noise", "width", "height", "uncond_scale", "cfg_rescale", "request_type", "n_samples"):
        if key in comment:
            meta.extra[key] = comment[key]
    return meta
