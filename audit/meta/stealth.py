"""A1111 "stealth" infotext hidden in pixel least-significant bits.

Written by the stealth_pnginfo extension (and by NovelAI, which duplicates its metadata
this way). Bits are laid out column by column (x outer, y inner). Alpha mode stores one
bit per pixel in A; RGB mode three bits per pixel (R, G, B). The payload starts with a
15-byte signature, then a 32-bit big-endian bit count, then the data (gzip for *comp).

Only the first columns are decoded to look for the signature, so images without stealth
data cost a crop, not a full scan.
"""

from __future__ import annotations

import codecs
import zlib

import numpy as np

from audit.meta import limits
from audit.meta.base import MetadataText

_SIGNATURES = {
    "alpha": {b"stealth_pnginfo": False, b"stealth_pngcomp": True},
    "rgb": {b"stealth_rgbinfo": False, b"stealth_rgbcomp": True},
}
_HEADER_BITS = 15 * 8 + 32
# The payload read from the pixels: at most a piece's worth of bytes, so a claimed length of
# 2**32 bits costs a bounded crop (512 columns of a 16k-high image).
_MAX_PAYLOAD_BITS = limits.MAX_PIECE_CHARS * 8


def read(image, *, try_alpha: bool, try_rgb: bool, location_prefix: str, errors: list[str]) -> MetadataText | None:
    """The stealth text of ``image`` (a PIL image), or None. Never raises."""
    try:
        for mode, wanted in (("alpha", try_alpha), ("rgb", try_rgb)):
            if not wanted:
                continue
            found = _read_mode(image, mode, errors, location_prefix)
            if found is not None:
                return found
    except Exception as exc:  # noqa: BLE001 - pixels of a broken file must not stop the crawl
        errors.append(f"stealth data unreadable: {type(exc).__name__}: {exc}")
    return None


def _bits(image, mode: str, count: int):
    """The first ``count`` stealth bits as a numpy uint8 array (column-major order)."""
    width, height = image.size
    per_pixel = 1 if mode == "alpha" else 3
    columns = min(width, -(-count // (per_pixel * height)))
    region = image.crop((0, 0, columns, height))
    if mode == "alpha":
        plane = np.asarray(region.getchannel("A"), dtype=np.uint8)[:, :, None]
    else:
        plane = np.asarray(region.convert("RGB") if region.mode != "RGB" else region, dtype=np.uint8)
    # (height, columns, channels) -> column-major stream of channel bits
    stream = np.ascontiguousarray(plane.transpose(1, 0, 2)).reshape(-1) & 1
    return stream[:count]


def _read_mode(image, mode: str, errors: list[str], location_prefix: str) -> MetadataText | None:
    reading = limits.current()
    width, height = image.size
    per_pixel = 1 if mode == "alpha" else 3
    if width * height * per_pixel < _HEADER_BITS:
        return None
    if mode == "alpha" and "A" not in image.getbands():
        return None
    header = _bits(image, mode, _HEADER_BITS)
    signature = np.packbits(header[:120]).tobytes()
    compressed = _SIGNATURES[mode].get(signature)
    if compressed is None:
        return None
    name = signature.decode()
    location = f"{location_prefix}:stealth:{name}"
    length = int.from_bytes(np.packbits(header[120:152]).tobytes(), "big")
    available = width * height * per_pixel - _HEADER_BITS
    if length > available:
        errors.append(f"stealth {name} claims {length} bits, image holds {available}")
        length = available
    room = reading.room()
    if room == 0:
        reading.dropped += 1
        return None
    limit = room * limits.MAX_BYTES_PER_CHAR
    read_bits = min(length, _MAX_PAYLOAD_BITS, limit * 8)
    reading.check()
    payload = np.packbits(_bits(image, mode, _HEADER_BITS + read_bits)[_HEADER_BITS:]).tobytes()
    whole, size, exact = read_bits == length, (length + 7) // 8, True
    if compressed:
        result = reading.inflate(payload, limit, 16 + zlib.MAX_WBITS)  # gzip wrapper
        if result.error is not None and len(result.data) < limit:
            errors.append(f"stealth {name} gzip data corrupt: {result.error}")
            return None
        if result.size == 0 and not result.complete:
            return None
        whole = whole and result.complete and result.size <= limit
        payload, size, exact = result.data, result.size, result.complete and read_bits == length
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(payload, final=whole)
    return reading.piece(location, "stealth", text, errors, whole=whole, size=size, unit="bytes", exact=exact)
