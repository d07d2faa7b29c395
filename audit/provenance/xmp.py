"""IPTC ``DigitalSourceType`` in an XMP packet (``Iptc4xmpExt:DigitalSourceType``).

Found by a byte search, whatever the container: the packet is stored uncompressed in JPEG
APP1, WebP/AVIF/HEIF/TIFF/JXL metadata boxes and PNG ``iTXt``; a PNG ``iTXt``/``zTXt`` XMP
chunk that is compressed is inflated first (bounded). The property is written as an
element, an attribute or an ``rdf:resource``; all three are read. C2PA's own
``digitalSourceType`` (lower-case d, inside CBOR) is not matched here: ``c2pa_manifest``
reads that through the SDK, with its signature.
"""

from __future__ import annotations

import re
import zlib

from audit.provenance.sources import short_source_type

_PROPERTY = re.compile(rb"DigitalSourceType(?:\s*=\s*[\"']|\s*>\s*|\s+rdf:resource\s*=\s*[\"'])([^\"'<>\s]{1,300})")
_MAX_HITS = 8
_MAX_INFLATED = 4 << 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_XMP_KEY = b"XML:com.adobe.xmp"


def xmp_source_types(data: bytes) -> list[str]:
    """Short names of the digital source types the file's XMP states (in order, unique)."""
    out: list[str] = []
    for blob in (data, *_compressed_png_xmp(data)):
        if b"DigitalSourceType" not in blob:
            continue
        for i, m in enumerate(_PROPERTY.finditer(blob)):
            if i >= _MAX_HITS:
                break
            name = short_source_type(m.group(1).decode("utf-8", "replace"))
            if name and name not in out:
                out.append(name)
    return out


def _compressed_png_xmp(data: bytes) -> list[bytes]:
    """The inflated text of compressed XMP chunks of a PNG (usually none)."""
    if not data.startswith(_PNG_SIGNATURE) or _XMP_KEY not in data:
        return []
    out = []
    pos, n = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= n and len(out) < 4:
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : min(n, pos + 8 + length)]
        if ctype == b"IEND" or not ctype.isalpha():
            break
        if ctype in (b"iTXt", b"zTXt") and body.startswith(_XMP_KEY + b"\x00"):
            rest = body[len(_XMP_KEY) + 1 :]
            if ctype == b"zTXt":
                packed = rest[1:]
            elif rest[:1] == b"\x01":  # iTXt compressed: flag, method, language\0, keyword\0
                parts = rest[2:].split(b"\x00", 2)
                packed = parts[2] if len(parts) == 3 else b""
            else:
                packed = b""
            if packed:
                try:
                    out.append(zlib.decompressobj().decompress(packed, _MAX_INFLATED))
                except zlib.error:
                    pass
        pos += 12 + length
    return out
