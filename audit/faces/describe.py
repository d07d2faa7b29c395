"""The faces of one image: found on a downscaled copy, described by 128 numbers each.

The copy's longest side is at most ``max_side`` (640 by default): HOG detection costs about
linearly in pixels and a face that fills less than ~1/15 of a 640-pixel image is too small
to be a likeness worth matching. With ``upsample = 1`` dlib looks for faces down to ~40 px
in the copy. Descriptors are computed on the copy too (the descriptor network sees a
150x150 aligned chip whatever the source resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.faces.models import FaceModel

MAX_SIDE = 640
DETECT_MIN_PX = 20  # stored faces; a gallery's min_face_px filters further at match time


@dataclass
class Faces:
    descriptors: np.ndarray  # (k, 128) float32
    sizes: np.ndarray  # (k,) int: face box side in the downscaled copy, pixels
    scale: float  # copy size / original size

    def __len__(self) -> int:
        return len(self.sizes)


def downscaled(img, max_side: int = MAX_SIDE):
    """``img`` (PIL, RGB) with its longest side at most ``max_side``, and the scale used."""
    from PIL import Image

    longest = max(img.size)
    if longest <= max_side:
        return img, 1.0
    scale = max_side / longest
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), scale


def describe_faces(model: FaceModel, img, *, max_side: int = MAX_SIDE, upsample: int = 1) -> Faces:
    """Every frontal face of ``img`` (PIL, any mode) at least ``DETECT_MIN_PX`` wide in the copy."""
    small, scale = downscaled(img.convert("RGB"), max_side)
    pixels = np.ascontiguousarray(np.asarray(small, dtype=np.uint8))
    descriptors, sizes = [], []
    with model.lock:
        for box in model.detector(pixels, upsample):
            side = min(box.width(), box.height())
            if side < DETECT_MIN_PX:
                continue
            shape = model.landmarks(pixels, box)
            descriptors.append(np.asarray(model.descriptor.compute_face_descriptor(pixels, shape), np.float32))
            sizes.append(side)
    return Faces(
        np.stack(descriptors) if descriptors else np.zeros((0, 128), np.float32),
        np.asarray(sizes, dtype=np.int32),
        scale,
    )
