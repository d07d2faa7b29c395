"""Draw Things (iOS/macOS; drawthings.ai). Its images carry XMP (PNG iTXt ``XML:com.adobe.xmp``,
JPEG APP1) with ``xmp:CreatorTool`` "Draw Things", an A1111-like summary in ``dc:description``
and the full record as JSON in ``exif:UserComment``: ``c`` (prompt), ``uc`` (negative prompt),
``seed``, ``steps``, ``scale`` (CFG), ``sampler``, ``model``, ``size`` ("WxH"), ``strength``,
``lora`` ([{"file", "weight"}]) and ``v2`` (the whole configuration). Key names as the app's
readers (sd-prompt-reader, sd-metadata) read them.
"""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import json_objects

_SETTINGS = ("seed", "steps", "scale", "sampler", "model", "size")


class DrawThingsParser:
    name = "draw-things"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for data, piece in json_objects(pieces, "UserComment", "Comment", "description"):
            if not isinstance(data.get("c"), str) or sum(k in data for k in _SETTINGS) < 2:
                continue
            meta = GenerationMetadata(generator="draw-things", source=piece.location)
            meta.prompt = data["c"]
            meta.negative_prompt = data.get("uc") if isinstance(data.get("uc"), str) else None
            meta.seed = seed_text(data.get("seed"))
            meta.steps = to_int(data.get("steps"))
            meta.cfg_scale = to_float(data.get("scale"))
            meta.sampler = to_text(data.get("sampler"))
            meta.model = to_text(data.get("model"))
            if meta.model:
                meta.resources.append(Resource("checkpoint", meta.model))
            loras = data.get("lora") if isinstance(data.get("lora"), list) else []
            for entry in loras:
                if isinstance(entry, dict) and to_text(entry.get("file")):
                    meta.resources.append(Resource("lora", to_text(entry["file"]), None, to_float(entry.get("weight"))))
            for key in ("size", "strength", "shift", "seed_mode"):
                if data.get(key) is not None and not isinstance(data[key], (dict, list)):
                    meta.extra[key] = data[key]
            config = data.get("v2")
            if isinstance(config, dict):
                for key in ("refinerModel", "clipSkip", "hiresFix", "upscaler", "aestheticScore"):
                    if config.get(key) is not None and not isinstance(config[key], (dict, list)):
                        meta.extra[key] = config[key]
            return meta
        return None
