"""XMP packets: kept verbatim, with descriptions and user comments pulled out cheaply.

Midjourney and some editors put the prompt in dc:description; full RDF parsing is not
needed for that. The scan is linear whatever the packet holds: element and attribute
patterns never reach past the next ``<``, and the search for an ``rdf:li`` value after an
opening tag is shared by every opening tag before it (a lazy ``.*?`` from each of a
hundred thousand unanswered ``<dc:description>`` tags would rescan the packet each time).
"""

from __future__ import annotations

import html
import re

from audit.meta import limits
from audit.meta.base import MetadataText
from audit.meta.textcodec import decode_bytes

_NAMES = r"(dc:description|exif:UserComment|tiff:ImageDescription)"
_OPEN = re.compile(rf"<{_NAMES}\b[^<>]*>")
_ITEM = re.compile(r"<rdf:li\b[^<>]*>")
_ITEM_END = "</rdf:li>"
_ATTRIBUTE = re.compile(rf'\b{_NAMES}="([^"]*)"')


def read(packet: bytes, errors: list[str], prefix: str = "xmp") -> list[MetadataText]:
    reading = limits.current()
    limit = reading.byte_room()
    if limit == 0:
        reading.dropped += 1
        return []
    if not reading.block() or not reading.spend(min(len(packet), limit)):
        return []
    whole = len(packet) <= limit
    text = decode_bytes(bytes(packet[:limit]))
    packet_piece = reading.piece(prefix, "XMP", text, errors, whole=whole, size=len(packet), unit="bytes")
    if packet_piece is None:
        return []
    pieces = [packet_piece]
    for name, value in _values(packet_piece.text):
        piece = reading.piece(f"{prefix}:{name}", name, value, errors)
        if piece is not None:
            pieces.append(piece)
    return pieces


def _values(text: str):
    """(name, value) of each described element (its first ``rdf:li``) and attribute. Like one
    ``finditer`` of ``<name ...>.*?<rdf:li ...>(.*?)</rdf:li>``: matches do not overlap, so an
    opening tag before the end of the previous match starts nothing."""
    resume = 0
    for match in _OPEN.finditer(text):
        limits.tick()
        if match.start() < resume:
            continue
        item = _ITEM.search(text, match.end())
        if item is None:
            break  # no <rdf:li> after this tag: none after any later one either
        close = text.find(_ITEM_END, item.end())
        if close < 0:
            break
        resume = close + len(_ITEM_END)
        value = html.unescape(text[item.end() : close]).strip()
        if value:
            yield match.group(1).split(":")[1], value
    for match in _ATTRIBUTE.finditer(text):
        limits.tick()
        value = html.unescape(match.group(2)).strip()
        if value:
            yield match.group(1).split(":")[1], value
