"""XMP packets: kept verbatim, with descriptions and user comments pulled out cheaply.

Midjourney and some editors put the prompt in dc:description; full RDF parsing is not
needed for that, a tolerant regular expression is enough and cannot blow up.
"""

from __future__ import annotations

import html
import re

from audit.meta.base import MetadataText
from audit.meta.textcodec import decode_bytes

_ALT_TEXT = re.compile(
    r"<(dc:description|exif:UserComment|tiff:ImageDescription)\b[^>]*>.*?<rdf:li\b[^>]*>(.*?)</rdf:li>",
    re.S,
)
_ATTRIBUTE = re.compile(r'\b(dc:description|exif:UserComment|tiff:ImageDescription)="([^"]*)"')
_MAX_XMP = 4 * 1024 * 1024


def read(packet: bytes) -> list[MetadataText]:
    text = decode_bytes(packet[:_MAX_XMP])
    pieces = [MetadataText(location="xmp", key="XMP", text=text)]
    for match in list(_ALT_TEXT.finditer(text)) + list(_ATTRIBUTE.finditer(text)):
        name = match.group(1).split(":")[1]
        value = html.unescape(match.group(2)).strip()
        if value:
            pieces.append(MetadataText(location=f"xmp:{name}", key=name, text=value))
    return pieces
