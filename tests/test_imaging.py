"""One file, the same pixels everywhere: to_rgb is what crawler, embedder and reports see."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from audit.crawler.worker import describe
from audit.imaging import to_rgb


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    return np.add.outer(np.arange(h) * 2, np.arange(w) * 3).astype(np.float64)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    blocks = np.kron(np.random.default_rng(0).random((6, 8)), np.ones((8, 8)))  # structure for PDQ
    grey16 = (blocks * 65535).astype(np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(grey16)))
    assert rgb.shape == (48, 64, 3) and rgb.min() <= 5 and rgb.max() >= 250
    assert 80 < rgb.mean() < 180  # a clipped conversion is almost all white
    reopened = Image.open(io.BytesIO(_png(Image.fromarray(grey16))))
    assert describe(_png(Image.fromarray(grey16)))["pdq_quality"] >= 80
    assert np.array_equal(np.asarray(to_rgb(reopened)), rgb)


def test_float_greyscale_in_unit_range_and_eight_bit_range_agree():
    g8 = _gradient().astype(np.uint8)
    unit = Image.fromarray((g8 / 255.0).astype(np.float32), "F")
    wide = Image.fromarray(g8.astype(np.float32), "F")
    expected = np.asarray(Image.fromarray(g8, "L").convert("RGB"))
    assert np.abs(np.asarray(to_rgb(unit)).astype(int) - expected).max() <= 1
    assert np.array_equal(np.asarray(to_rgb(wide)), expected)


def test_transparent_pixels_are_composited_not_revealed():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # hidden red under full transparency
    rgba[8:24, 8:24] = (0, 0, 255, 255)  # an opaque blue square
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[16, 16]) == (0, 0, 255)
    grey = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"), background=(128, 128, 128)))
    assert tuple(grey[0, 0]) == (128, 128, 128)
    # the hidden colour does not change the hash
    other = rgba.copy()
    other[..., :3][rgba[..., 3] == 0] = (0, 255, 0)
    assert describe(_png(Image.fromarray(rgba, "RGBA")))["pdq"] == describe(_png(Image.fromarray(other, "RGBA")))["pdq"]


def test_rgb_is_returned_as_is_and_other_modes_convert():
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    assert to_rgb(img) is img
    for mode in ("L", "1", "P", "CMYK", "YCbCr"):
        assert to_rgb(img.convert(mode)).mode == "RGB"
