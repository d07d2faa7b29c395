"""Midjourney-style descriptions: the prompt followed by ``--flags`` and often ``Job ID: <uuid>``,
in a PNG ``Description`` chunk, EXIF ImageDescription or XMP dc:description.

Plain descriptions without these markers are not generation metadata (cameras and editors
write descriptions too), so they are ignored."""

from __future__ import annotations

import re

from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.normalize import seed_text
from audit.meta.pieces import by_key

_FLAGS = re.compile(r"\s--(?:ar|v|niji|stylize|s|q|chaos|c|seed|style|weird|w|tile|no|iw|sref|cref|p)\b")
_JOB = re.compile(r"Job ID:\s*([0-9a-f-]{36})", re.I)


class MidjourneyParser:
    name = "midjourney"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "Description", "ImageDescription", "description"):
            text = piece.text.strip()
            job = _JOB.search(text)
            flags = _FLAGS.search(" " + text)
            if not job and not flags:
                continue
            body = text[: job.start()].strip() if job else text
            flag_match = _FLAGS.search(" " + body)
            meta = GenerationMetadata(generator="midjourney", source=piece.location)
            meta.prompt = (" " + body)[: flag_match.start()].strip() if flag_match else body
            seed = re.search(r"--seed\s+(\d+)", body)
            meta.seed = seed_text(seed.group(1)) if seed else None
            if job:
                meta.extra["job_id"] = job.group(1)
            meta.extra["parameters"] = body[len(meta.prompt):].strip()
            return meta
        return None
