"""Builders of tiny image containers by hand, byte by byte, for the metadata tests: PNG chunks,
TIFF/EXIF blocks, JPEG with an APP1 EXIF segment, and images carrying "stealth" (alpha or RGB
low-bit) text. Benign toy content only."""

from __future__ import annotations

import gzip
import io
import struct
import zlib

import numpy as np
from PIL import Image

INFOTEXT = "a red circle on a white background\nNegative prompt: blue square\nSteps: 12, Sampler: Euler a, CFG scale: 6.5, Seed: 42, Model: toy-shapes"


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def png_with_chunks(before: list[bytes] = (), after: list[bytes] = (), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (4, 4), "white").save(buffer, "PNG")
    data = buffer.getvalue()
    iend = data.rindex(b"IEND") - 4
    idat = data.index(b"IDAT") - 4
    return data[:idat] + b"".join(before) + data[idat:iend] + b"".join(after) + data[iend:]


def tiff(entries: list[tuple[int, int, bytes]], big_endian: bool, exif_entries=None) -> bytes:
    """A minimal TIFF: IFD0 with ``entries`` (tag, type, value bytes) and an optional Exif IFD."""
    e = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)

    def ifd(items, start, next_ifd_pointer=None):
        items = list(items)
        if next_ifd_pointer is not None:
            items.append((0x8769, 4, struct.pack(e + "I", next_ifd_pointer)))
        items.sort()
        table_size = 2 + 12 * len(items) + 4
        data_at = start + table_size
        table, blob = struct.pack(e + "H", len(items)), b""
        for tag, typ, value in items:
            count = len(value) if typ in (1, 2, 7) else len(value) // 4
            if len(value) <= 4:
                table += struct.pack(e + "HHI", tag, typ, count) + value.ljust(4, b"\x00")
            else:
                table += struct.pack(e + "HHI", tag, typ, count) + struct.pack(e + "I", data_at + len(blob))
                blob += value
        return table + struct.pack(e + "I", 0) + blob

    if exif_entries is None:
        return head + ifd(entries, 8)
    first = ifd(entries, 8, next_ifd_pointer=0)
    exif_at = 8 + len(first)
    first = ifd(entries, 8, next_ifd_pointer=exif_at)
    return head + first + ifd(exif_entries, exif_at)


def jpeg_with_exif(tiff_bytes: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, "JPEG")
    data = buffer.getvalue()
    segment = b"Exif\x00\x00" + tiff_bytes
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]


def stealth_image(text: str, compressed: bool, rgb: bool) -> Image.Image:
    payload = gzip.compress(text.encode()) if compressed else text.encode()
    signature = (b"stealth_rgb" if rgb else b"stealth_png") + (b"comp" if compressed else b"info")
    bits = np.unpackbits(np.frombuffer(signature + struct.pack(">I", len(payload) * 8) + payload, dtype=np.uint8))
    width = height = 64
    pixels = np.full((height, width, 4), 200, dtype=np.uint8)
    planes = 3 if rgb else 1
    stream = np.zeros(width * height * planes, dtype=np.uint8)
    stream[: len(bits)] = bits
    column_major = stream.reshape(width, height, planes).transpose(1, 0, 2)  # x outer, y inner
    if rgb:
        pixels[:, :, :3] = (pixels[:, :, :3] & 0xFE) | column_major
        return Image.fromarray(pixels[:, :, :3], "RGB")
    pixels[:, :, 3] = (pixels[:, :, 3] & 0xFE) | column_major[:, :, 0]
    return Image.fromarray(pixels, "RGBA")
