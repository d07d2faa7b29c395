"""Content hashes: SHA-256 (the item id), MD5 (what hash-sharing lists still use) and PDQ.

PDQ comes from Meta's reference C++ through the ``pdqhash`` bindings, on full-resolution
pixels: that reproduces Meta's published hashes of its reference images (0-8 bits; the
512x512 nearest-neighbour pre-resize of Meta's newer CLI tool drifts 12-16 bits from
them). Only images larger than ``PDQ_MAX_SIDE`` are first reduced by an integer box
filter, because the Jarosz filters' cost grows faster than the pixel count.
"""

from __future__ import annotations

import hashlib

import numpy as np

PDQ_BITS = 256
PDQ_MAX_SIDE = 2048


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item_id(data: bytes) -> str:
    """The id of a generation: the SHA-256 (64 lowercase hex digits) of its file's bytes,
    so the same content found at two locations is one item."""
    return sha256_hex(data)


def verify_item(data: bytes, expected_item_id: str) -> bool:
    """Whether ``data`` is still the content catalogued as ``expected_item_id`` (a file
    rewritten since the crawl is not)."""
    return item_id(data) == expected_item_id


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def pdq_of_image(img) -> tuple[str, int]:
    """PDQ hash and quality of a decoded RGB PIL image."""
    longest = max(img.width, img.height)
    if longest > PDQ_MAX_SIDE:
        img = img.reduce(-(-longest // PDQ_MAX_SIDE))  # box filter: close to PDQ's own smoothing
    return pdq(np.asarray(img))


def pdq(rgb: np.ndarray) -> tuple[str, int]:
    """PDQ hash (64 hex digits, Meta's bit order) and quality (0-100) of an HxWx3 uint8 array."""
    import pdqhash

    bits, quality = pdqhash.compute(np.ascontiguousarray(rgb, dtype=np.uint8))
    return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def pdq_distance(a: str, b: str) -> int:
    """Hamming distance between two PDQ hex strings."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def pdq_to_bytes(hex_hash: str) -> bytes:
    return bytes.fromhex(hex_hash)
