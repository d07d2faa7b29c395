"""PNG chunk walker: tEXt, zTXt and iTXt anywhere in the stream, including after IDAT."""

from __future__ import annotations

import struct
import zlib

from audit.meta.base import MetadataText
from audit.meta.containers import ContainerReport
from audit.meta.textcodec import repair_mojibake

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_INFLATED = 64 * 1024 * 1024  # a compressed text chunk may not inflate beyond this
_MAX_CHUNKS = 100_000


def _inflate(payload: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload, _MAX_INFLATED)
    if inflater.unconsumed_tail:
        raise ValueError("inflates beyond the size limit")
    return out


def read(data: bytes) -> ContainerReport:
    report = ContainerReport(format="PNG", lossless=True)
    pos = len(SIGNATURE)
    end = len(data)
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > end:
            break
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body_start = pos + 8
        body_end = body_start + length
        if body_end > end:
            report.errors.append(f"png chunk {ctype!r} truncated")
            body_end = end
        pos = body_end + 4  # skip CRC
        if ctype == b"IHDR" and length >= 13:
            color_type = data[body_start + 9]
            report.has_alpha = color_type in (4, 6)
        elif ctype == b"tRNS":
            report.has_alpha = True
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            piece = _text_chunk(ctype.decode(), data[body_start:body_end], report)
            if piece is not None:
                report.pieces.append(piece)
        elif ctype == b"IEND":
            break
    return report


def _text_chunk(ctype: str, body: bytes, report: ContainerReport) -> MetadataText | None:
    key_raw, sep, rest = body.partition(b"\x00")
    if not sep:
        report.errors.append(f"png {ctype} chunk without keyword separator")
        return None
    key = key_raw.decode("latin-1", errors="replace")
    try:
        if ctype == "tEXt":
            text = repair_mojibake(rest.decode("latin-1"))
        elif ctype == "zTXt":
            text = repair_mojibake(_inflate(rest[1:]).decode("latin-1"))
        else:  # iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
            if len(rest) < 2:
                raise ValueError("header truncated")
            compressed = rest[0] == 1
            tail = rest[2:]
            _language, _, tail = tail.partition(b"\x00")
            _translated, _, tail = tail.partition(b"\x00")
            raw = _inflate(tail) if compressed else tail
            text = raw.decode("utf-8", errors="replace")
    except (zlib.error, ValueError) as exc:
        report.errors.append(f"png {ctype}:{key} unreadable: {exc}")
        return None
    return MetadataText(location=f"png:{ctype}:{key}", key=key, text=text)
