"""WebP RIFF chunk walker: EXIF and XMP chunks, and whether pixels carry alpha."""

from __future__ import annotations

import struct

from audit.meta import limits
from audit.meta.containers import ContainerReport, exif, xmp

_MAX_CHUNKS = 10_000


def read(data: bytes) -> ContainerReport:
    reading = limits.current()
    report = ContainerReport(format="WEBP")
    pos, end = 12, len(data)
    view = memoryview(data)
    for _ in range(_MAX_CHUNKS):
        reading.tick()
        if pos + 8 > end:
            break
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = view[pos + 8 : pos + 8 + size]  # a view: a chunk may claim most of the file
        if pos + 8 + size > end:
            report.errors.append(f"webp chunk {fourcc!r} truncated")
        pos += 8 + size + (size & 1)
        if fourcc == b"VP8X" and body:
            report.has_alpha = bool(body[0] & 0x10)
        elif fourcc == b"VP8L":
            report.lossless = True
            if len(body) >= 5:  # alpha_is_used bit of the VP8L header
                report.has_alpha = report.has_alpha or bool((body[4] >> 4) & 0x01)
        elif fourcc == b"ALPH":
            report.has_alpha = True
        elif fourcc == b"EXIF":
            report.pieces.extend(exif.read_tiff(body, "exif", report.errors))
        elif fourcc == b"XMP ":
            report.pieces.extend(xmp.read(body, report.errors))
    return report
