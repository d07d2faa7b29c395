"""PNG chunk walker: tEXt, zTXt and iTXt anywhere in the stream, including after IDAT.

Text is decoded and inflated only as far as the file's reading can keep it
(``audit.meta.limits``): a zTXt bomb costs its kept megabyte plus bounded counting.
"""

from __future__ import annotations

import codecs
import struct

from audit.meta import limits
from audit.meta.base import MetadataText
from audit.meta.containers import ContainerReport, exif, xmp
from audit.meta.textcodec import utf8_or_latin1

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_CHUNKS = 100_000
_MAX_KEYWORD = 1024  # the spec says 79 bytes; further than this no separator is looked for
# ImageMagick and exiftool keep EXIF in PNGs written before eXIf existed as a text chunk
# "Raw profile type exif" (older exiftool: "Raw profile type APP1"): "\n<name>\n<decimal
# length>\n" then the bytes as hex, 72 digits a line
_RAW_EXIF_KEYS = {"raw profile type exif", "raw profile type app1"}
_XMP_KEY = "XML:com.adobe.xmp"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def read(data: bytes) -> ContainerReport:
    reading = limits.current()
    report = ContainerReport(format="PNG", lossless=True)
    pos = len(SIGNATURE)
    end = len(data)
    for _ in range(_MAX_CHUNKS):
        reading.tick()
        if pos + 8 > end:
            break
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body_start = pos + 8
        body_end = body_start + length
        if body_end > end:
            report.errors.append(f"png chunk {ctype!r} truncated")
            body_end = end
        pos = body_end + 4  # skip CRC
        if ctype == b"IHDR" and body_end - body_start >= 13:
            color_type = data[body_start + 9]
            report.has_alpha = color_type in (4, 6)
        elif ctype == b"tRNS":
            report.has_alpha = True
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            piece = _text_chunk(ctype.decode(), memoryview(data)[body_start:body_end], report, reading)
            if piece is not None and piece.key.lower() in _RAW_EXIF_KEYS:
                report.pieces.extend(_raw_profile_exif(piece, report))
            elif piece is not None and piece.key == _XMP_KEY:
                # Apple ImageIO (Mochi Diffusion, Draw Things) and Adobe tools keep XMP here: its
                # dc:description and exif:UserComment are pieces of their own, as in JPEG
                xmp_pieces = xmp.read(piece.text.encode("utf-8"), report.errors, "png:xmp")
                report.pieces.extend(xmp_pieces if xmp_pieces else [piece])
            elif piece is not None:
                report.pieces.append(piece)
        elif ctype == b"eXIf":  # PNG 1.5 / Pillow / libpng: a TIFF structure, some writers keep "Exif\0\0"
            report.pieces.extend(exif.read_tiff(data[body_start:body_end], "png:eXIf", report.errors))
        elif ctype == b"IEND":
            break
    return report


def _text_chunk(ctype: str, body: memoryview, report: ContainerReport, reading: limits.Reading) -> MetadataText | None:
    separator = bytes(body[: _MAX_KEYWORD + 1]).find(b"\x00")
    if separator < 0:
        too_long = " within the first 1024 bytes" if len(body) > _MAX_KEYWORD else ""
        report.errors.append(f"png {ctype} chunk without keyword separator{too_long}")
        return None
    key = bytes(body[:separator]).decode("latin-1")
    location = f"png:{ctype}:{key}"
    rest = body[separator + 1 :]
    room = reading.room()
    if room == 0:
        reading.dropped += 1
        return None
    if ctype == "tEXt":  # Latin-1 by the spec, UTF-8 in practice: one byte at most one character
        whole = len(rest) <= room
        if not reading.spend(min(len(rest), room)):
            return None
        text = utf8_or_latin1(bytes(rest[:room]), complete=whole)
        return reading.piece(location, key, text, report.errors, whole=whole, size=len(rest))
    if ctype == "zTXt":
        if len(rest) < 1:
            report.errors.append(f"png zTXt:{key} unreadable: compression method missing")
            return None
        return _inflated(location, key, rest[1:], room, 1, reading, report)
    # iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        report.errors.append(f"png iTXt:{key} unreadable: header truncated")
        return None
    compressed = rest[0] == 1
    tail = bytes(rest[2 : 2 + 2 * _MAX_KEYWORD + 2])
    language_end = tail.find(b"\x00")
    translated_end = tail.find(b"\x00", language_end + 1) if language_end >= 0 else -1
    skip = 2 + (translated_end + 1 if translated_end >= 0 else len(rest))  # as partition would: none left
    text_bytes = rest[skip:]
    if compressed:
        return _inflated(location, key, text_bytes, room, limits.MAX_BYTES_PER_CHAR, reading, report, utf8=True)
    limit = room * limits.MAX_BYTES_PER_CHAR
    whole = len(text_bytes) <= limit
    if not reading.spend(min(len(text_bytes), limit)):
        return None
    text = _utf8(bytes(text_bytes[:limit]), whole)
    return reading.piece(location, key, text, report.errors, whole=whole, size=len(text_bytes), unit="bytes")


def _utf8(raw: bytes, complete: bool) -> str:
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw, final=complete)


def _inflated(
    location: str,
    key: str,
    payload: memoryview,
    room: int,
    bytes_per_char: int,
    reading: limits.Reading,
    report: ContainerReport,
    utf8: bool = False,
) -> MetadataText | None:
    limit = room * bytes_per_char
    result = reading.inflate(payload, limit)
    if result.error is not None and len(result.data) < limit:
        report.errors.append(f"png {location[4:]} unreadable: {result.error}")
        return None
    if result.size == 0 and not result.complete:
        return None  # the file's decompression budget was spent before this chunk: counted by the reading
    whole = result.complete and result.size <= limit
    text = _utf8(result.data, whole) if utf8 else utf8_or_latin1(result.data, complete=whole)
    if result.error is not None:
        report.errors.append(f"png {location[4:]} corrupt after {result.size} inflated bytes: {result.error}")
    unit = "bytes" if utf8 else "characters"
    return reading.piece(
        location, key, text, report.errors, whole=whole, size=result.size, unit=unit, exact=result.complete
    )


def _raw_profile_exif(piece: MetadataText, report: ContainerReport) -> list[MetadataText]:
    """The EXIF tags of an ImageMagick/exiftool raw profile text chunk (its hex dump is not
    kept as a piece: the tags it holds are)."""
    where = piece.location[4:]
    lines = piece.text.lstrip("\n").split("\n", 2)
    if len(lines) < 3 or not lines[1].strip().isdigit():
        report.errors.append(f"png {where}: not a raw profile (name, length, hex)")
        return []
    declared = int(lines[1].strip())
    digits = bytes(c for c in lines[2].encode("latin-1", "ignore") if c not in b" \t\r\n")
    if len(digits) % 2 or not set(digits) <= _HEX_DIGITS:
        cut = next((i for i, c in enumerate(digits) if c not in _HEX_DIGITS), len(digits))
        report.errors.append(f"png {where}: hex dump damaged after {cut // 2} bytes")
        digits = digits[: cut - cut % 2]
    payload = bytes.fromhex(digits.decode("ascii"))
    if len(payload) != declared:
        report.errors.append(f"png {where}: holds {len(payload)} bytes, its header says {declared}")
    if payload.startswith(b"Exif\x00\x00"):
        payload = payload[6:]
    if payload.startswith(_XMP_HEADER):
        return xmp.read(payload[len(_XMP_HEADER) :], report.errors, "png:raw-xmp")
    if payload[:2] not in (b"II", b"MM"):
        if piece.key.lower() == "raw profile type exif":
            report.errors.append(f"png {where}: not a TIFF/EXIF block")
        return []  # an APP1 profile may hold XMP instead: not EXIF
    return exif.read_tiff(payload, "png:raw-exif", report.errors)
