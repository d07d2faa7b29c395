"""JPEG marker walker: EXIF (APP1), XMP (APP1), IPTC (APP13) and COM segments before the scan data."""

from __future__ import annotations

import struct

from audit.meta import limits
from audit.meta.containers import ContainerReport, exif, iptc, xmp
from audit.meta.textcodec import decode_bytes

_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_STANDALONE = {0x01, *range(0xD0, 0xD9)}


def read(data: bytes) -> ContainerReport:
    reading = limits.current()
    report = ContainerReport(format="JPEG")
    pos, end = 2, len(data)
    while pos + 4 <= end:
        reading.tick()
        if data[pos] != 0xFF:
            report.errors.append("jpeg marker stream out of sync")
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / start of scan: metadata segments come before
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        body = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if marker == 0xE1 and body.startswith(_EXIF):
            report.pieces.extend(exif.read_tiff(body[6:], "exif", report.errors))
        elif marker == 0xED and body.startswith(iptc.HEADER):
            report.pieces.extend(iptc.read(body, report.errors))
        elif marker == 0xE1 and body.startswith(_XMP):
            report.pieces.extend(xmp.read(body[len(_XMP) :], report.errors))
        elif marker == 0xFE and reading.spend(len(body)):  # a segment holds at most 64 KiB
            text = decode_bytes(body)
            piece = reading.piece("jpeg:COM", "Comment", text, report.errors) if text else None
            if piece is not None:
                report.pieces.append(piece)
    return report
