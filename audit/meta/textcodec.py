"""Turning stored bytes into text the way generators actually wrote it.

Writers disagree with the specs: PNG tEXt is Latin-1 by spec, yet most generators put
UTF-8 there; EXIF "UNICODE" comments are UTF-16 of either endianness whatever the TIFF
byte order says. These helpers recover the intended text and never raise.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import Any

from audit.meta.limits import parse_json

_MAX_JSON_CHARS = 32 * 1024 * 1024  # a metadata JSON larger than this is not worth parsing


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 bytes that were decoded as Latin-1 (tEXt chunks, EXIF ASCII tags)."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def decode_bytes(raw: bytes) -> str:
    """Best-effort decode of bytes whose encoding nobody recorded."""
    raw = raw.strip(b"\x00")
    if not raw:
        return ""
    if _looks_utf16(raw):
        return decode_utf16(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _looks_utf16(raw: bytes) -> bool:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    if len(raw) < 4:
        return False
    sample = raw[:2048]
    zeros = sample.count(0)
    return zeros * 3 >= len(sample)  # ASCII-heavy UTF-16 is about half zero bytes


def decode_utf16(raw: bytes, default_big_endian: bool = False) -> str:
    """Decode UTF-16 choosing endianness from the content, not from the container.

    A BOM wins; otherwise the side of each byte pair that holds the zeros of ASCII
    characters tells the order (Civitai writes big-endian text inside little-endian TIFF).
    """
    if raw[:2] == b"\xfe\xff":
        return raw[2:].decode("utf-16-be", errors="replace").rstrip("\x00")
    if raw[:2] == b"\xff\xfe":
        return raw[2:].decode("utf-16-le", errors="replace").rstrip("\x00")
    sample = raw[:4096]
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    if even_zeros > odd_zeros:
        big_endian = True
    elif odd_zeros > even_zeros:
        big_endian = False
    else:  # no ASCII to tell (an all-CJK prompt): the order whose reading is plausible text
        big_endian = _plausible_order(sample, default_big_endian)
    if len(raw) % 2:
        raw = raw[:-1]
    return raw.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace").rstrip("\x00")


def _plausible_order(sample: bytes, default_big_endian: bool) -> bool:
    """True for big-endian when that reading is the more plausible text: more characters in
    the blocks prompts are written in (ASCII, Latin-1, Cyrillic, CJK punctuation, kana, CJK
    ideographs, Hangul, full-width forms) and fewer unassigned, private-use, surrogate or
    control ones. A swapped reading of CJK lands in rarer blocks (Extension A, Devanagari,
    Latin Extended); ties keep the container's order."""
    sample = sample[: len(sample) - len(sample) % 2]
    score = {}
    for order in ("utf-16-be", "utf-16-le"):
        text = sample.decode(order, errors="replace")
        common = sum(1 for ch in text if any(low <= ord(ch) <= high for low, high in _COMMON_BLOCKS))
        odd = sum(
            1
            for ch in text
            if ch == "\ufffd" or (unicodedata.category(ch) in ("Cn", "Co", "Cs", "Cc") and ch not in "\n\r\t")
        )
        score[order] = common - 2 * odd
    if score["utf-16-be"] == score["utf-16-le"]:
        return default_big_endian
    return score["utf-16-be"] > score["utf-16-le"]


_COMMON_BLOCKS = (
    (0x0020, 0x00FF),
    (0x0400, 0x04FF),
    (0x2000, 0x206F),
    (0x3000, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xFF00, 0xFFEF),
)


def load_json(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)``; never raises. Nesting is bounded
    (``audit.safejson``) and, within one file's reading, each text is parsed once."""
    if len(text) > _MAX_JSON_CHARS:
        return None, "too large"
    return parse_json(text)


def looks_like_json_object(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith("{")


def utf8_or_latin1(raw: bytes, complete: bool = True) -> str:
    """Bytes of a Latin-1 field as their writer meant them: UTF-8 when they are valid UTF-8
    (``repair_mojibake`` of their Latin-1 reading), else Latin-1. ``complete=False``: ``raw``
    is a prefix, so a UTF-8 sequence cut at its end is dropped rather than spoiling the rest."""
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=complete)
    except UnicodeDecodeError:
        return raw.decode("latin-1")
