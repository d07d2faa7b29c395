"""IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/), the
vocabulary both C2PA actions and XMP use, reduced to their short names."""

from __future__ import annotations

import re

# Made by a trained model, wholly or as part of a composite: what "AI-generated" means here.
# ("algorithmicMedia" is made by an algorithm without training data, e.g. a fractal, and
# "algorithmicallyEnhanced" is a photo denoised or upscaled: neither is counted.)
AI_SOURCE_TYPES = frozenset(
    {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "trainedAlgorithmicData"}
)

_TAIL = re.compile(r"([A-Za-z][A-Za-z0-9]*)\s*$")


def short_source_type(value: object) -> str | None:
    """ "trainedAlgorithmicMedia" from the IPTC URL, "c2pa.trainedAlgorithmicMedia" (early
    C2PA writers) or the bare name; None when ``value`` is not such a name."""
    if not isinstance(value, str) or not value.strip() or len(value) > 300:
        return None
    m = _TAIL.search(value.strip().rstrip("/"))
    return m.group(1) if m else None
