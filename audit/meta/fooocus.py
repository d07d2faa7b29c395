"""Fooocus (``parameters`` JSON with ``fooocus_scheme``="fooocus"; its "a1111" scheme is plain
infotext, handled by the A1111 parser) and RuinedFooocus (``parameters`` JSON with
``"software": "RuinedFooocus"``, capitalised ``Prompt``/``Negative``)."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.flat import from_mapping
from audit.meta.normalize import first, to_float
from audit.meta.pieces import by_key, json_of


class FooocusParser:
    name = "fooocus"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        scheme = next((p.text.strip() for p in by_key(pieces, "fooocus_scheme")), None)
        for piece in by_key(pieces, "parameters", "Comment", "UserComment"):
            data, problem = json_of(piece)
            if problem is not None or not isinstance(data, dict):
                continue
            software = str(data.get("software", data.get("Software", "")))
            if "ruinedfooocus" in software.lower().replace(" ", ""):
                meta = from_mapping(data, "ruined-fooocus")
            elif scheme == "fooocus" or "fooocus" in str(data.get("version", "")).lower() or "full_prompt" in data:
                meta = from_mapping(data, "fooocus")
                if meta is not None:
                    # Fooocus's "sampler"/"scheduler" are right; its CFG is "guidance_scale"
                    meta.cfg_scale = to_float(first(data, ("guidance_scale", "cfg"))) or meta.cfg_scale
                    for key in ("version", "styles", "performance", "sharpness", "full_prompt", "full_negative_prompt"):
                        if key in data:
                            meta.extra[key] = data[key]
            else:
                continue
            if meta is not None:
                meta.source = piece.location
                return meta
        return None
