"""AVIF / HEIF (ISO base media file format): the Exif and XMP *items* of the top-level meta box.

A1111 saves AVIF with the same piexif UserComment as JPEG; PIL reads AVIF only with a plugin
and HEIF not at all, so the items are found here: ``iinf`` names each item's type ("Exif", or
"mime" with an XMP content type), ``iloc`` says where its bytes lie in the file. An Exif item
starts with a 4-byte offset to its TIFF header.
"""

from __future__ import annotations

import struct

from audit.meta import limits
from audit.meta.containers import ContainerReport, exif, xmp

BRANDS = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_MAX_BOXES = 10_000
_MAX_ITEM = 16 * 1024 * 1024


def is_isobmff_image(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and (
        data[8:12] in BRANDS or any(data[i : i + 4] in BRANDS for i in range(16, min(len(data), 64), 4))
    )


def read(data: bytes) -> ContainerReport:
    report = ContainerReport(format="AVIF" if b"avif" in data[8:64] else "HEIF")
    try:
        meta = next((body for kind, body in _boxes(data, 0, len(data)) if kind == b"meta"), None)
        if meta is None:
            return report
        start, end = meta
        children = dict(_boxes(data, start + 4, end))  # meta is a full box: skip version/flags
        wanted = _item_types(data, children.get(b"iinf"))
        view = memoryview(data)
        read_spans: set[tuple[str, int, int]] = set()
        for item_id, (offset, length) in _locations(data, children.get(b"iloc")).items():
            limits.tick()
            kind = wanted.get(item_id)
            if (
                kind is None
                or length > _MAX_ITEM
                or offset + length > len(data)
                or (kind, offset, length) in read_spans
            ):
                continue  # many items naming one span are read once
            read_spans.add((kind, offset, length))
            payload = view[offset : offset + length]
            if kind == "Exif" and len(payload) >= 4:
                skip = struct.unpack(">I", payload[:4])[0]
                report.pieces.extend(exif.read_tiff(payload[4 + skip :], "exif", report.errors))
            elif kind == "xmp":
                report.pieces.extend(xmp.read(payload, report.errors))
    except (struct.error, ValueError, IndexError) as exc:
        report.errors.append(f"{report.format.lower()} boxes unreadable: {exc}")
    return report


def _boxes(data: bytes, pos: int, end: int):
    for _ in range(_MAX_BOXES):
        limits.tick()
        if pos + 8 > end:
            return
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError(f"box {kind!r} of size {size}")
        yield kind, (pos + header, min(pos + size, end))
        pos += size


def _item_types(data: bytes, span) -> dict[int, str]:
    """item id -> "Exif" or "xmp" for the items worth reading."""
    if span is None:
        return {}
    start, end = span
    version = data[start]
    pos = start + 4 + (2 if version == 0 else 4)  # entry count
    found: dict[int, str] = {}
    for kind, (body, body_end) in _boxes(data, pos, end):
        if kind != b"infe" or data[body] < 2:
            continue  # infe versions 0/1 carry no item type
        id_size = 2 if data[body] == 2 else 4
        item_id = int.from_bytes(data[body + 4 : body + 4 + id_size], "big")
        item_type = data[body + 6 + id_size : body + 10 + id_size]
        if item_type == b"Exif":
            found[item_id] = "Exif"
        elif item_type == b"mime":
            name_and_type = data[body + 10 + id_size : body_end]
            if b"rdf+xml" in name_and_type or b"xmp" in name_and_type.lower():
                found[item_id] = "xmp"
    return found


def _locations(data: bytes, span) -> dict[int, tuple[int, int]]:
    """item id -> (file offset, length) of items stored in the file in one extent."""
    if span is None:
        return {}
    start, _end = span
    version = data[start]
    sizes = data[start + 4], data[start + 5]
    offset_size, length_size = sizes[0] >> 4, sizes[0] & 15
    base_size, index_size = sizes[1] >> 4, (sizes[1] & 15) if version in (1, 2) else 0
    pos = start + 6
    count, pos = _uint(data, pos, 4 if version == 2 else 2)
    found: dict[int, tuple[int, int]] = {}
    for _ in range(min(count, _MAX_BOXES)):
        limits.tick()
        item_id, pos = _uint(data, pos, 4 if version == 2 else 2)
        method = 0
        if version in (1, 2):
            method, pos = _uint(data, pos, 2)
            method &= 15
        pos += 2  # data reference index
        base, pos = _uint(data, pos, base_size)
        extents, pos = _uint(data, pos, 2)
        if extents != 1:  # only single-extent items are read: skip the others without a loop
            pos += extents * (index_size + offset_size + length_size)  # (zero-size fields: 65535 x nothing)
            continue
        pos += index_size
        offset, pos = _uint(data, pos, offset_size)
        length, pos = _uint(data, pos, length_size)
        if method == 0:  # offsets into this file; idat-stored items are rare for Exif
            found[item_id] = (base + offset, length)
    return found


def _uint(data: bytes, pos: int, size: int) -> tuple[int, int]:
    if pos + size > len(data):
        raise ValueError("iloc truncated")
    return int.from_bytes(data[pos : pos + size], "big"), pos + size
