"""Mochi Diffusion (macOS, godly-devotion/MochiDiffusion): the generation record is one caption,
``SDImage.metadata()``, written through Apple's ImageIO as IPTC Caption/Abstract (with
Originating Program "Mochi Diffusion"); ImageIO mirrors it into XMP ``dc:description`` (PNG
iTXt, JPEG APP1) and JPEGs also keep the IPTC APP13 block. The caption is "; "-separated
"Label: value" pairs in a fixed order::

    Include in Image: <prompt>; Exclude from Image: <negative>; Model: <name>; Steps: 12;
    Guidance Scale: 11.0; Seed: 1234; Size: 512x512; Upscaler: ; Scheduler: DPM-Solver++;
    ML Compute Unit: CPU & Neural Engine; Generator: Mochi Diffusion 4.3

A prompt may itself hold "; ", so values are cut only before a known label.
"""

from __future__ import annotations

import re

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int
from audit.meta.pieces import by_key

_LABELS = (
    "Include in Image",
    "Exclude from Image",
    "Model",
    "Steps",
    "Guidance Scale",
    "Seed",
    "Size",
    "Upscaler",
    "Scheduler",
    "ML Compute Unit",
    "Generator",
    "Starting Image",
    "Strength",
    "ControlNet",
    "Safety Checker",
)
_SPLIT = re.compile("(?:^|; )(" + "|".join(re.escape(label) for label in _LABELS) + "): ")


class MochiDiffusionParser:
    name = "mochi-diffusion"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "CaptionAbstract", "description", "Description", "ImageDescription", "parameters"):
            text = piece.text.strip()
            if not text.startswith("Include in Image:"):
                continue
            fields = _fields(text)
            if "Generator" not in fields and "Seed" not in fields:
                continue
            meta = GenerationMetadata(generator="mochi-diffusion", source=piece.location)
            meta.prompt = fields.get("Include in Image")
            meta.negative_prompt = fields.get("Exclude from Image")
            meta.model = fields.get("Model") or None
            meta.steps = to_int(fields.get("Steps"))
            meta.cfg_scale = to_float(fields.get("Guidance Scale"))
            meta.seed = seed_text(fields.get("Seed"))
            # Mochi's "Scheduler" is the diffusers scheduler, i.e. the sampling method (DPM-Solver++,
            # PNDM): what A1111 calls the sampler
            meta.sampler = fields.get("Scheduler") or None
            if meta.model:
                meta.resources.append(Resource("checkpoint", meta.model))
            if fields.get("Upscaler"):
                meta.resources.append(Resource("upscaler", fields["Upscaler"]))
            for label in ("Size", "ML Compute Unit", "Generator", "Strength", "ControlNet"):
                if fields.get(label):
                    meta.extra[label.lower().replace(" ", "_")] = fields[label]
            return meta
        return None


def _fields(text: str) -> dict[str, str]:
    parts = _SPLIT.split(text)
    fields: dict[str, str] = {}
    for label, value in zip(parts[1::2], parts[2::2]):
        fields.setdefault(label, value.strip())
    return fields
