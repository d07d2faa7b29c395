"""Midjourney: the prompt followed by ``--flags`` and often ``Job ID: <uuid>``, in a PNG
``Description`` chunk (with ``Author``, the user), EXIF ImageDescription or XMP dc:description.

``--no x, y`` is Midjourney's negative prompt; ``--v 6.1`` / ``--niji 6`` name the model;
leading URLs are image prompts. Phones turn "--" into an em dash, so "—ar" counts as a flag.
Plain descriptions without these markers are not generation metadata (cameras and editors
write descriptions too), so they are ignored."""

from __future__ import annotations

import re

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text
from audit.meta.pieces import by_key

_NAMES = (
    "ar|aspect|v|version|niji|stylize|s|q|quality|chaos|c|seed|sameseed|style|weird|w|tile|no|iw|sref|sw|sv|"
    "cref|cw|oref|ow|p|profile|personalize|raw|draft|exp|stop|r|repeat|relax|fast|turbo|hd|test|testp|"
    "uplight|upbeta|upanime|video|motion|loop|end|bs"
)
_FLAG = re.compile(rf"(?:^|\s)(?:--|—|–)({_NAMES})(?=\s|$)")
_JOB = re.compile(r"Job ID:\s*([0-9a-f-]{36})", re.IGNORECASE)
_URL = re.compile(r"^(?:<?https?://\S+>?\s+)+")


class MidjourneyParser:
    name = "midjourney"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "Description", "ImageDescription", "description"):
            meta = _parse(piece)
            if meta is not None:
                author = next((p.text.strip() for p in by_key(pieces, "Author", "Artist") if p.text.strip()), None)
                if author:
                    meta.extra["author"] = author
                return meta
        return None


def _flags(text: str) -> dict[str, str]:
    """{flag: value} for every flag; values run to the next flag."""
    matches = list(_FLAG.finditer(text))
    out: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.setdefault(match.group(1), text[match.end() : end].strip())
    return out


def _parse(piece: MetadataText) -> GenerationMetadata | None:
    text = piece.text.strip()
    job = _JOB.search(text)
    body = text[: job.start()].strip() if job else text
    first_flag = _FLAG.search(body)
    if not job and not first_flag:
        return None
    meta = GenerationMetadata(generator="midjourney", source=piece.location)
    prompt = body[: first_flag.start()].strip() if first_flag else body
    urls = _URL.match(prompt)
    if urls:
        meta.extra["image_prompts"] = urls.group(0).split()
        prompt = prompt[urls.end() :].strip()
    meta.prompt = prompt or None
    flags = _flags(body)
    meta.negative_prompt = flags.get("no") or None
    meta.seed = seed_text(flags.get("seed"))
    version = flags.get("niji") if "niji" in flags else flags.get("v", flags.get("version"))
    if version is not None:
        meta.model = f"{'niji' if 'niji' in flags else 'Midjourney'} {version}".strip()
        meta.resources.append(Resource("checkpoint", meta.model))
    if job:
        meta.extra["job_id"] = job.group(1)
    meta.extra["parameters"] = body[first_flag.start() :].strip() if first_flag else ""
    meta.extra["flags"] = flags
    return meta
