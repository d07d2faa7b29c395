"""Civitai's on-site generator: a ComfyUI API graph plus ``extra`` and ``extraMetadata`` (a JSON
*string* with prompt, negativePrompt, cfgScale, sampler, steps, seed, baseModel, resources).
Civitai's A1111-style infotext ("Civitai resources: [...]") is read by the A1111 parser.

extraMetadata names no checkpoint file, only the base-model family, which we report as the
model (as the peer reader does); the resources carry the model version ids."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import from_mapping
from audit.meta.normalize import to_float
from audit.meta.pieces import json_objects


class CivitaiParser:
    name = "civitai"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for data, piece in json_objects(pieces, "extraMetadata"):
            meta = from_mapping({k: v for k, v in data.items() if k != "resources"}, "civitai")
            if meta is None:
                continue
            meta.source = piece.location
            if not meta.model and data.get("baseModel"):
                meta.model = str(data["baseModel"])
            for entry in data.get("resources") or []:
                if isinstance(entry, dict) and entry.get("modelVersionId") is not None:
                    meta.resources.append(
                        Resource(
                            "civitai-model-version", str(entry["modelVersionId"]), None, to_float(entry.get("strength"))
                        )
                    )
            for key in ("baseModel", "workflow", "transformations"):
                if key in data:
                    meta.extra[key] = data[key]
            return meta
        return None
