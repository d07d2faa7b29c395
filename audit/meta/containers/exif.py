"""A small TIFF/EXIF IFD walker that survives wrong types, bad offsets and loops.

Only text-bearing tags are read. The Exif sub-IFD is followed from IFD0, and UserComment
is accepted in IFD0 too, where some ComfyUI save nodes misplace it.
"""

from __future__ import annotations

import struct

from audit.meta import limits
from audit.meta.base import MetadataText
from audit.meta.textcodec import decode_bytes, decode_utf16, repair_mojibake

# tag -> name of the text tags worth keeping
TEXT_TAGS = {
    0x010D: "DocumentName",
    0x010E: "ImageDescription",
    0x010F: "Make",
    0x0110: "Model",
    0x0131: "Software",
    0x013B: "Artist",
    0x8298: "Copyright",
    0x9286: "UserComment",
    0x9C9B: "XPTitle",
    0x9C9C: "XPComment",
    0x9C9D: "XPAuthor",
    0x9C9E: "XPKeywords",
    0x9C9F: "XPSubject",
}
_EXIF_IFD_POINTER = 0x8769
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_MAX_ENTRIES = 1000
_MAX_IFDS = 8


def read_tiff(tiff: bytes, prefix: str, errors: list[str]) -> list[MetadataText]:
    """Text pieces from a TIFF structure (the payload of an EXIF block). Values are sliced
    only for the tags kept, and no further than the file's reading could keep."""
    reading = limits.current()
    view = memoryview(tiff)
    if view[:6] == b"Exif\x00\x00":
        view = view[6:]
    if len(view) < 8 or view[:2] not in (b"II", b"MM"):
        errors.append(f"{prefix}: not a TIFF/EXIF block")
        return []
    if not reading.block():
        return []
    endian = "<" if view[:2] == b"II" else ">"
    pieces: list[MetadataText] = []
    first = struct.unpack(endian + "I", view[4:8])[0]
    queue = [(first, "IFD0")]
    seen: set[int] = set()
    while queue and len(seen) < _MAX_IFDS:
        offset, ifd_name = queue.pop(0)
        if offset in seen or offset <= 0 or offset + 2 > len(view):
            if offset and offset not in seen:
                errors.append(f"{prefix}: {ifd_name} offset {offset} outside the block")
            continue
        seen.add(offset)
        for tag, typ, start, size in _entries(view, offset, endian, errors, prefix):
            reading.tick()
            if tag == _EXIF_IFD_POINTER:
                pointer = _as_int(bytes(view[start : start + min(size, 4)]), typ, endian) if start is not None else None
                if pointer is not None:
                    queue.append((pointer, "ExifIFD"))
                continue
            name = TEXT_TAGS.get(tag)
            if name is None or start is None:
                continue
            piece = _text_piece(view, tag, typ, start, size, endian, f"{prefix}:{name}", name, reading, errors)
            if piece is not None:
                pieces.append(piece)
    return pieces


def _text_piece(
    view: memoryview,
    tag: int,
    typ: int,
    start: int,
    size: int,
    endian: str,
    location: str,
    name: str,
    reading: limits.Reading,
    errors: list[str],
) -> MetadataText | None:
    end = min(start + size, len(view))
    limit = reading.byte_room() + 8  # + UserComment's character-code prefix
    if limit == 8:
        reading.dropped += 1
        return None
    whole = end - start <= limit
    if not reading.spend(min(end - start, limit)):
        return None
    text = _decode_tag(tag, typ, bytes(view[start : min(end, start + limit)]), endian)
    if not text:
        return None
    return reading.piece(location, name, text, errors, whole=whole, size=end - start, unit="bytes")


def _entries(view: memoryview, offset: int, endian: str, errors: list[str], prefix: str):
    """(tag, type, value start or None, value size) of each entry of the IFD at ``offset``."""
    (count,) = struct.unpack(endian + "H", view[offset : offset + 2])
    if count > _MAX_ENTRIES:
        errors.append(f"{prefix}: IFD claims {count} entries")
        count = _MAX_ENTRIES
    for index in range(count):
        at = offset + 2 + index * 12
        if at + 12 > len(view):
            errors.append(f"{prefix}: IFD truncated")
            return
        tag, typ, n = struct.unpack(endian + "HHI", view[at : at + 8])
        size = _TYPE_SIZES.get(typ, 1) * n
        if size <= 4:
            yield tag, typ, at + 8, size
            continue
        (pointer,) = struct.unpack(endian + "I", view[at + 8 : at + 12])
        if pointer + size > len(view):
            errors.append(f"{prefix}: tag 0x{tag:04x} points outside the block")
            yield tag, typ, (pointer if pointer < len(view) else None), size
        else:
            yield tag, typ, pointer, size


def _as_int(value: bytes | None, typ: int, endian: str) -> int | None:
    if not value:
        return None
    if typ == 3 and len(value) >= 2:
        return struct.unpack(endian + "H", value[:2])[0]
    if len(value) >= 4:
        return struct.unpack(endian + "I", value[:4])[0]
    return None


def _decode_tag(tag: int, typ: int, value: bytes, endian: str) -> str:
    if tag == 0x9286:
        return decode_user_comment(value, big_endian_container=endian == ">")
    if 0x9C9B <= tag <= 0x9C9F:  # Windows XP tags: UTF-16LE stored as BYTE
        return decode_utf16(value, default_big_endian=False).strip("\x00")
    # ASCII-typed tags often carry UTF-8 (and NovelAI pads ImageDescription with NULs)
    return repair_mojibake(decode_bytes(value))


def decode_user_comment(value: bytes, big_endian_container: bool = False) -> str:
    """Decode an EXIF UserComment whatever its 8-byte character-code prefix says."""
    code, payload = value[:8], value[8:]
    # writers disagree on case and padding ("Unicode\0", "ASCII\0\0\0", "UNICODE ")
    name = code.rstrip(b"\x00 ").upper()
    if name == b"UNICODE":
        if b"\x00" not in payload and _is_utf8(payload):  # labelled UNICODE, written as UTF-8
            return decode_bytes(payload)
        return decode_utf16(payload, default_big_endian=big_endian_container)
    if name == b"ASCII" or code == b"\x00" * 8:  # eight NULs: "undefined" code
        return decode_bytes(payload)
    if name == b"JIS":
        for codec in ("iso2022_jp", "shift_jis", "euc_jp"):
            try:
                return payload.rstrip(b"\x00").decode(codec)
            except UnicodeDecodeError:
                continue
        return decode_bytes(payload)
    if len(code) == 8 and any(byte < 0x20 and byte not in b"\t\n\r" for byte in code):
        return decode_bytes(payload)  # an unknown or garbage code field (text has no control bytes)
    return decode_bytes(value)  # no prefix at all: plain UTF-8 or raw UTF-16


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
