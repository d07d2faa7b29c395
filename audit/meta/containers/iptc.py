"""IPTC-IIM text in a JPEG's APP13 "Photoshop 3.0" segment (image resource 0x0404).

Apple's ImageIO writes an app's ``kCGImagePropertyIPTCDictionary`` there: Mochi Diffusion puts
its whole generation record in Caption/Abstract (2:120) with Originating Program (2:65) "Mochi
Diffusion". Layout (Adobe's Photoshop File Formats, "Image resource blocks"; IPTC-NAA IIM 4.2):
``8BIM``, a 2-byte id, a Pascal name padded to even length, a 4-byte size, the data padded to
even; the IPTC data is a run of ``0x1C record dataset length(2) value`` datasets. Lying sizes
end the walk with an error; nothing is read past the segment.
"""

from __future__ import annotations

import struct

from audit.meta import limits
from audit.meta.base import MetadataText
from audit.meta.textcodec import utf8_or_latin1

HEADER = b"Photoshop 3.0\x00"
_IPTC_RESOURCE = 0x0404
# (record, dataset) -> the name the piece is keyed by
DATASETS = {
    (2, 5): "ObjectName",
    (2, 25): "Keywords",
    (2, 65): "OriginatingProgram",
    (2, 70): "ProgramVersion",
    (2, 80): "Byline",
    (2, 105): "Headline",
    (2, 120): "CaptionAbstract",
}
_MAX_DATASETS = 4096


def read(body: bytes, errors: list[str]) -> list[MetadataText]:
    """Text pieces of an APP13 segment body (``HEADER`` included)."""
    pieces: list[MetadataText] = []
    pos = len(HEADER)
    while pos + 12 <= len(body):
        limits.tick()
        if body[pos : pos + 4] != b"8BIM":
            errors.append("iptc: image resource block out of sync")
            break
        (resource,) = struct.unpack(">H", body[pos + 4 : pos + 6])
        name_length = body[pos + 6]
        at = pos + 6 + name_length + 1 + (name_length + 1) % 2  # the Pascal name, padded to even
        if at + 4 > len(body):
            errors.append("iptc: image resource block truncated")
            break
        (size,) = struct.unpack(">I", body[at : at + 4])
        data_at = at + 4
        if data_at + size > len(body):
            errors.append(f"iptc: image resource 0x{resource:04x} claims {size} bytes beyond the segment")
            size = len(body) - data_at
        if resource == _IPTC_RESOURCE:
            pieces.extend(_datasets(body[data_at : data_at + size], errors))
        pos = data_at + size + (size % 2)
    else:
        if body[pos:].strip(b"\x00"):
            errors.append("iptc: image resource block truncated")
    return pieces


def _datasets(data: bytes, errors: list[str]) -> list[MetadataText]:
    reading = limits.current()
    pieces: list[MetadataText] = []
    pos = 0
    for _ in range(_MAX_DATASETS):
        reading.tick()
        if pos + 5 > len(data) or data[pos] != 0x1C:
            if pos < len(data) and data[pos] != 0x1C and data[pos:].strip(b"\x00"):
                errors.append("iptc: dataset stream out of sync")
            break
        record, dataset, length = data[pos + 1], data[pos + 2], struct.unpack(">H", data[pos + 3 : pos + 5])[0]
        pos += 5
        if length & 0x8000:  # extended dataset: the length's length follows
            errors.append("iptc: extended dataset not read")
            break
        value = data[pos : pos + length]
        if len(value) < length:
            errors.append(f"iptc: dataset {record}:{dataset} truncated")
        pos += length
        name = DATASETS.get((record, dataset))
        if name is None or not value or not reading.spend(len(value)):
            continue
        piece = reading.piece(f"iptc:{name}", name, utf8_or_latin1(value), errors)
        if piece is not None:
            pieces.append(piece)
    return pieces
