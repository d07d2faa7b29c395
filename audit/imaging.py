"""Decoded images as every stage sees them: 8-bit RGB, as a viewer would show the picture.

The crawler (PDQ), the embedder (CLIP), image queries, concept exemplars and report
thumbnails all go through ``to_rgb`` so that one file gives the same pixels everywhere.
PIL's plain ``convert("RGB")`` gets two cases wrong for this purpose: it drops alpha, so
the hidden colour of transparent pixels would steer hashes and embeddings, and it clips
16-bit and float greyscale at 255 instead of scaling, which turns most such images white.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

WHITE = (255, 255, 255)
_HIGH_DEPTH_GREY = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(img: "Image.Image", background: tuple[int, int, int] = WHITE) -> "Image.Image":
    """``img`` as 8-bit RGB; transparency is composited onto ``background``."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if img.mode in _HIGH_DEPTH_GREY:
        return Image.fromarray(_grey_to_8bit(np.asarray(img)), "L").convert("RGB")
    return img.convert("RGB")


def _grey_to_8bit(values: np.ndarray) -> np.ndarray:
    """Scale greyscale of any depth to 0-255 by the range its type implies: [0, 1] floats,
    16-bit integers, or (anything else) the image's own minimum and maximum."""
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1.0 and values.dtype.kind == "f":
        lo, hi = 0.0, 1.0
    elif lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    elif lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0
    scaled = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
