"""Where each field of the chosen result came from, and placeholders filled from the file's
other records.

Hosted generators write their own record beside the ComfyUI graph that ran (TensorArt's
``generation_data``, Civitai's ``extraMetadata``), and that record sometimes holds a
placeholder where the graph holds the value: seed ``-1`` ("random"), no sampler, steps 0.
The chosen result keeps its own values; a placeholder or a missing field is taken from the
other results of the same file, the ComfyUI graph first (it is what executed), then the
others in their order. ``extra["field_sources"]`` names the location (``MetadataText``
location, e.g. ``png:tEXt:generation_data``) each field was read from, and
``extra["placeholders"]`` keeps what the writer's own record said where it was replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from audit.meta.base import GenerationMetadata

_NO_VALUE = {"", "none", "null", "undefined", "n/a", "random"}
_TEXTS = ("prompt", "negative_prompt")  # an empty text is what the user wrote: only absence counts


def is_placeholder(name: str, value: Any) -> bool:
    """True where ``value`` says nothing about the generation: absent, an empty or "null"
    name, a "random" seed (negative: A1111's and TensorArt's -1), no steps, a non-positive CFG."""
    if value is None:
        return True
    if name in _TEXTS:
        return False
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NO_VALUE:
            return True
        if name == "seed":
            return text.startswith("-") and text[1:].isdigit()
        return False
    if name in ("steps", "cfg_scale") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value <= 0
    return False


def attribute(best: GenerationMetadata, others: Sequence[GenerationMetadata]) -> None:
    """Fill ``best``'s placeholders from ``others`` and record every field's source in place."""
    stated = best.extra.get("field_sources")
    sources: dict[str, str] = dict(stated) if isinstance(stated, dict) else {}  # a parser's own, finer answer
    replaced: dict[str, Any] = {}
    donors = sorted((r for r in others if r is not best), key=lambda r: r.generator != "comfyui")
    for name in GenerationMetadata.FIELDS:
        own = getattr(best, name)
        if not is_placeholder(name, own):
            if best.source:
                sources.setdefault(name, best.source)
            continue
        donor = next((r for r in donors if not is_placeholder(name, getattr(r, name))), None)
        if donor is None:
            if own is not None and best.source:  # a placeholder nobody else fills: still the record's word
                sources.setdefault(name, best.source)
            continue
        if own is not None:
            replaced[name] = own
        setattr(best, name, getattr(donor, name))
        if donor.source:
            sources[name] = donor.source
    if sources:
        best.extra["field_sources"] = sources
    if replaced:
        best.extra["placeholders"] = replaced
