"""SwarmUI: ``{"sui_image_params": {...}, "sui_models": [...], "sui_extra_data": {...}}`` in the
PNG ``parameters`` chunk or an EXIF UserComment."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import from_mapping
from audit.meta.pieces import json_of


class SwarmUIParser:
    name = "swarmui"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in pieces:
            if "sui_image_params" not in piece.text:
                continue
            data, problem = json_of(piece)
            if problem is not None or not isinstance(data, dict) or not isinstance(data.get("sui_image_params"), dict):
                continue
            params = data["sui_image_params"]
            meta = from_mapping(params, "swarmui") or GenerationMetadata(generator="swarmui")
            meta.source = piece.location
            for model in data.get("sui_models") or []:
                if isinstance(model, dict) and model.get("name"):
                    kind = "checkpoint" if model.get("param") == "model" else str(model.get("param", "model")).lower().rstrip("s")
                    digest = model.get("hash")
                    if kind == "checkpoint" and digest and not meta.model_hash:
                        meta.model_hash = str(digest)
                    meta.resources.append(Resource(kind, str(model["name"]), str(digest) if digest else None))
            for key in ("loras", "loraweights"):
                if key in params:
                    meta.extra[key] = params[key]
            return meta
        return None
