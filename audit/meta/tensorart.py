"""TensorArt: a ``generation_data`` JSON chunk (prompt, negativePrompt, seed, steps, cfgScale,
samplerName, baseModel {modelFileName, hash}, models [...]) next to a ComfyUI graph."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import from_mapping, unreadable
from audit.meta.normalize import to_float, to_text
from audit.meta.pieces import by_key, json_of


class TensorArtParser:
    name = "tensorart"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "generation_data"):
            text = piece.text.rstrip("\x00")
            data, problem = json_of(MetadataText(piece.location, piece.key, text))
            if problem is not None or not isinstance(data, dict):
                continue
            meta = from_mapping({k: v for k, v in data.items() if k not in ("models", "baseModel")}, "tensorart")
            if meta is None:
                continue
            meta.source = piece.location
            base = data.get("baseModel")
            if isinstance(base, dict):
                meta.model = to_text(base.get("modelFileName") or base.get("modelName")) or meta.model
                meta.model_hash = to_text(base.get("hash")) or meta.model_hash
                if meta.model:
                    meta.resources.append(Resource("checkpoint", meta.model, meta.model_hash))
            for model in data.get("models") or []:
                if isinstance(model, dict) and (model.get("modelFileName") or model.get("modelName")):
                    kind = str(model.get("type", "lora")).lower()
                    meta.resources.append(
                        Resource(
                            kind,
                            str(model.get("modelFileName") or model.get("modelName")),
                            to_text(model.get("hash")),
                            to_float(model.get("weight")),
                        )
                    )
            return meta
        return unreadable(
            [MetadataText(p.location, p.key, p.text.rstrip("\x00")) for p in by_key(pieces, "generation_data")],
            "tensorart",
            ("generation_data",),
        )
