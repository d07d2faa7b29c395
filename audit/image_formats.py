"""Which decoder a file needs, and the optional ones registered only when a file needs them.

Pillow decodes PNG, JPEG, WebP, GIF, TIFF, BMP and (Pillow >= 11.2, built with libavif)
AVIF itself. HEIC/HEIF come from ``pillow-heif`` and JPEG XL from ``pillow-jxl-plugin``
(the ``audit[formats]`` extra). Importing them costs 25-45 ms each, so they are imported
the first time a file with their signature is decoded, never at ``import audit``. A file
whose decoder is not installed is a recorded skip naming the extra to install, not an
"unrecognised format".

Signatures are read from the bytes, not the name: a HEIC saved as ``.jpg`` still decodes.
"""

from __future__ import annotations

import threading

INSTALL_HINT = "install audit[formats]"

# ISO-BMFF major/compatible brands (ftyp box): which still-image family the file is.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_JXL_CODESTREAM = b"\xff\x0a"
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def container_kind(data: bytes) -> str | None:
    """ "AVIF", "HEIF" or "JPEG XL" when the bytes start like one, else None. AVIF wins
    over HEIF when a file lists both brands (AVIF files also carry ``mif1``)."""
    if data.startswith((_JXL_CONTAINER, _JXL_CODESTREAM)):
        return "JPEG XL"
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    end = min(len(data), size if 16 <= size <= 4096 else 64)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


_lock = threading.Lock()
_ready: dict[str, str | None] = {}  # kind -> None (registered) or the reason it cannot be


def ensure_decoder(kind: str | None) -> str | None:
    """Register the optional Pillow plugin ``kind`` needs (once per process). None when
    the file can be decoded, else the one-line reason it cannot (decoder not installed)."""
    if kind is None:
        return None
    if kind in _ready:
        return _ready[kind]
    with _lock:
        if kind not in _ready:
            _ready[kind] = _register(kind)
    return _ready[kind]


def _register(kind: str) -> str | None:
    if kind == "HEIF":
        try:
            import pillow_heif
        except ImportError:
            return f"HEIF/HEIC image: no decoder installed ({INSTALL_HINT}: pillow-heif)"
        pillow_heif.register_heif_opener()
        return None
    if kind == "JPEG XL":
        try:
            import pillow_jxl  # noqa: F401 - importing it registers the JXL plugin with Pillow
        except ImportError:
            return f"JPEG XL image: no decoder installed ({INSTALL_HINT}: pillow-jxl-plugin)"
        return None
    if kind == "AVIF":
        from PIL import features

        if "avif" in getattr(features, "modules", {}) and features.check_module("avif"):  # Pillow 11.2+
            return None
        return "AVIF image: this Pillow has no AVIF decoder (Pillow >= 11.2 built with libavif)"
    return None


def plugin_message(text: str, data: bytes) -> str:
    """A plugin's error as a reviewer should read it: pillow-jxl's "Generic Error. Please
    build libjxl from source" advice is about its build, not the file, so the file's kind
    is said instead."""
    if "Please build `libjxl`" in text or text.startswith("Generic Error"):
        return f"{container_kind(data) or 'image'} decoder rejected the data"
    return text
