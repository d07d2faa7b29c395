"""Decoded images as every stage sees them: 8-bit RGB, as a viewer would show the picture.

``decode_image`` is the one way an original's bytes become pixels: the crawler (PDQ), the
embedder (CLIP), image queries, concept exemplars and report thumbnails all call it, so one
file gives the same pixels everywhere and one hostile file fails (or survives) the same way
everywhere. What it guarantees:

- Ancillary data never costs the pixels. PNG is decoded from its pixel chunks only (IHDR,
  PLTE, tRNS, IDAT, IEND and the APNG frame chunks): text (tEXt/zTXt/iTXt), iCCP, eXIf and
  every other ancillary chunk is left out of the stream Pillow sees, so an oversized,
  corrupt or checksum-broken one cannot turn a decodable image into an error. JPEG likewise
  keeps only the segments libjpeg reads (well-formed JFIF APP0, Adobe APP14, tables, frame,
  scans): EXIF, XMP, ICC, MPF, Photoshop and comment segments never reach Pillow's parsers.
  The pixels are unchanged (libjpeg and Pillow's PNG decoder do not use what is left out).
  Metadata is read from the original bytes by ``audit.meta``, not from here.
- An image cut short (or corrupt part-way) is decoded as far as its data goes, as a browser
  shows it: the result carries the warning "image data truncated: decoded partially (...)".
  A JPEG that ends early is retried with its end marker supplied (libjpeg then finishes
  progressive scans instead of leaving the picture blank). Data with no decodable pixels,
  non-images, empty files and images over the pixel limit raise ``DecodeError``.
- Decoder chatter is captured, not printed: Python warnings raised while decoding (Pillow's
  ``warnings.warn``) and, where safe, what C libraries write straight to file descriptor 2
  (libtiff) become ``DecodedImage.warnings``: short one-line strings, deduplicated, at most
  ``MAX_WARNINGS``.

``to_rgb`` is the pixel convention: PIL's plain ``convert("RGB")`` gets two cases wrong for
this purpose: it drops alpha, so the hidden colour of transparent pixels would steer hashes
and embeddings, and it clips 16-bit and float greyscale at 255 instead of scaling, which
turns most such images white.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.image_formats import container_kind, ensure_decoder, plugin_message
from audit.video import is_video

if TYPE_CHECKING:
    from PIL import Image

WHITE = (255, 255, 255)
_HIGH_DEPTH_GREY = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")

# Above this many pixels an image is refused before decoding (decompression bombs, absurd
# dimensions): 16k x 16k covers every real generator's output several times over. (Pillow's
# own guard, at twice Image.MAX_IMAGE_PIXELS, still refuses larger ones first.)
MAX_PIXELS = 16_384 * 16_384
MAX_WARNINGS = 10
MAX_WARNING_CHARS = 200
TRUNCATED = "image data truncated: decoded partially"
CORRUPT = "image data corrupt: decoded partially"
METADATA_AFTER_DECODE = "pixels complete, metadata after them unreadable"


def to_rgb(img: "Image.Image", background: tuple[int, int, int] = WHITE) -> "Image.Image":
    """``img`` as 8-bit RGB; transparency is composited onto ``background``."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if img.mode in _HIGH_DEPTH_GREY:
        return Image.fromarray(_grey_to_8bit(np.asarray(img)), "L").convert("RGB")
    return img.convert("RGB")


def _grey_to_8bit(values: np.ndarray) -> np.ndarray:
    """Scale greyscale of any depth to 0-255 by the range its type implies: [0, 1] floats,
    16-bit integers, or (anything else) the image's own minimum and maximum."""
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo >= 0 and hi <= 1.0 and values.dtype.kind == "f":
        lo, hi = 0.0, 1.0
    elif lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    elif lo >= 0 and hi <= 65535:
        lo, hi = 0.0, 65535.0
    scaled = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --- the one decode -------------------------------------------------------------------


class DecodeError(ValueError):
    """The bytes give no usable pixels; ``str()`` is a one-line reason. ``facts`` holds what
    was learnt before the failure (format, width, height, frames), ``warnings`` the decoder
    output captured until then."""

    def __init__(self, reason: str, facts: dict[str, Any] | None = None):
        super().__init__(reason)
        self.facts: dict[str, Any] = dict(facts or {})
        self.warnings: list[str] = []


@dataclass
class DecodedImage:
    """Frame 0 of an image, pixels loaded, in the file's own mode (``rgb()`` for 8-bit RGB)."""

    image: "Image.Image"
    format: str | None
    width: int
    height: int
    frames: int = 1
    warnings: list[str] = field(default_factory=list)
    orientation: int = 1  # EXIF orientation 1-8 (only read when asked for)

    def rgb(self, background: tuple[int, int, int] = WHITE) -> "Image.Image":
        return to_rgb(self.image, background)

    def oriented(self, img: "Image.Image | None" = None) -> "Image.Image":
        """``img`` (default: the image) turned upright by the EXIF orientation, as
        ``ImageOps.exif_transpose`` would."""
        from PIL import Image

        img = self.image if img is None else img
        method = _ORIENTATION_TRANSPOSE.get(self.orientation)
        return img if method is None else img.transpose(Image.Transpose(method))


# EXIF orientation -> PIL.Image.Transpose value (as ImageOps.exif_transpose maps them)
_ORIENTATION_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}


def decode_image(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    draft: tuple[int, int] | None = None,
    orientation: bool = False,
    capture_stderr: bool | None = None,
) -> DecodedImage:
    """The pixels of ``data`` (frame 0), or ``DecodeError``. Never raises anything else for
    bad bytes. ``draft``: let JPEG decode at a reduced scale of at least this size
    (thumbnails). ``orientation``: also read the EXIF orientation (best effort).
    ``capture_stderr``: redirect file descriptor 2 while decoding; default: when this
    process runs one Python thread, or for TIFF (libtiff is the decoder that writes there),
    see ``_FdCapture`` for why not always."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if capture_stderr is None:
        capture_stderr = threading.active_count() == 1 or data[:4] in _TIFF_MAGIC
    notes = _Notes()
    error: DecodeError | None = None
    with _captured(notes, fd=capture_stderr):
        try:
            decoded = _decode(data, max_pixels, draft, notes)
            if orientation and decoded.format != "TIFF":  # Pillow turns TIFFs upright as it loads them
                decoded.orientation = _exif_orientation(data, notes)
        except DecodeError as exc:
            error = exc
        except MemoryError:
            error = DecodeError("image too large to decode (out of memory)")
        except RecursionError:
            error = DecodeError("corrupt image: structure nested too deeply to decode")
    if error is not None:
        error.warnings = notes.lines()
        try:
            raise error
        finally:
            # the raised error's traceback holds this frame: without this the frame would
            # hold the error too, a cycle that keeps ``data`` (up to a whole archive
            # member) alive until the cyclic collector happens to run
            del error
    decoded.warnings = notes.lines()
    return decoded


MAX_FILE_BYTES = 1 << 30


def decode_file(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES, **kw: Any) -> DecodedImage:
    """``decode_image`` of the regular file at ``path`` (query images, concept exemplars).
    ``FileNotFoundError`` when there is none; ``DecodeError`` for anything else that stops
    it, including a fifo or device in its place (refused without blocking)."""
    from audit.safeio import NotRegularFile, TooLarge, read_regular

    try:
        data = read_regular(path, max_bytes)
    except FileNotFoundError:
        raise
    except NotRegularFile as exc:
        raise DecodeError(exc.strerror or "not a regular file: not read") from None
    except TooLarge as exc:
        raise DecodeError(f"file too large ({exc})") from None
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, **kw)


def _decode(data: bytes, max_pixels: int, draft: tuple[int, int] | None, notes: "_Notes") -> DecodedImage:
    if is_video(data):  # mp4/webm/mov: the first frame is the picture (audit.video)
        return _decode_video(data, max_pixels)
    stream, has_mpf = _pixel_stream(data)
    kind = container_kind(stream)
    if (missing := ensure_decoder(kind)) is not None:  # HEIF/JPEG XL plugins load on first use
        raise DecodeError(missing, {"format": kind})
    try:
        img = _open(stream)
    except DecodeError:
        # GIF: its extension blocks are parsed while opening; only when that fails (walking
        # every block of every GIF up front would cost the common case) open the image
        # blocks alone
        if not stream.startswith((b"GIF87a", b"GIF89a")) or (bare := _gif_pixel_blocks(stream)) is stream:
            raise
        stream = bare
        img = _open(stream)
    facts: dict[str, Any] = {"format": img.format, "width": img.size[0], "height": img.size[1], "frames": 1}
    width, height = img.size
    if width <= 0 or height <= 0:
        raise DecodeError(f"invalid dimensions {width}x{height}", facts)
    if width * height > max_pixels:
        raise DecodeError(f"image too large to decode: {width}x{height} exceeds the {max_pixels} pixel limit", facts)
    if has_mpf:
        _mpo_facts(data, facts, notes)
    img = _frame_zero(img, stream, facts, notes)
    if draft:
        img.draft("RGB", draft)
    # a JPEG cut short decodes further (progressive: at all) once its end marker is supplied
    jpeg_cut = _is_jpeg(stream) and not stream.endswith(_EOI)
    try:
        partial = _load(img, facts)
    except DecodeError as first:
        if not jpeg_cut:
            raise
        try:
            img, partial = _load_jpeg_with_end_marker(stream, draft, facts)
        except DecodeError:
            raise first from None
    else:
        if partial is not None and jpeg_cut:
            try:
                img, partial = _load_jpeg_with_end_marker(stream, draft, facts)
            except DecodeError:
                pass
    if partial is not None:
        notes.add(partial)
    return DecodedImage(img, facts["format"], width, height, facts["frames"])


def _decode_video(data: bytes, max_pixels: int) -> DecodedImage:
    from audit.video import VideoError, facts, first_frame, sample_times_ms

    try:
        info = facts(data)
    except VideoError as exc:
        raise DecodeError(str(exc), {"format": "VIDEO"}) from None
    found = {"format": info["format"], "width": info["width"], "height": info["height"], "frames": 1}
    if not info["width"] or not info["height"] or info["width"] * info["height"] > max_pixels:
        raise DecodeError(f"video frame size {info['width']}x{info['height']} unusable", found)
    try:
        img = first_frame(data)
    except VideoError as exc:
        raise DecodeError(str(exc), found) from None
    # frames: the key frames sampled over its length (audit.animation.later_frames samples them)
    found["frames"] = len(sample_times_ms(info["duration_s"]))
    return DecodedImage(img, found["format"], img.width, img.height, found["frames"])


def _open(stream: bytes) -> "Image.Image":
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(BytesIO(stream))
    except UnidentifiedImageError:
        kind = _signature(stream)
        if kind:  # it says it is one, but no plugin could read its header
            raise DecodeError(f"corrupt or truncated image: unreadable {kind} header") from None
        raise DecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image too large to decode (decompression bomb guard): {one_line(exc)}") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad headers
        raise DecodeError(f"corrupt or truncated image: {plugin_message(one_line(exc), stream)}") from None


def _frame_zero(img: "Image.Image", stream: bytes, facts: dict[str, Any], notes: "_Notes") -> "Image.Image":
    """``img`` positioned on frame 0, with ``facts["frames"]`` counted (best effort: a frame
    table that cannot be walked costs the count, not the first frame)."""
    if facts["format"] == "MPO" and facts["frames"] > 1:
        return img  # counted from the original (the pixel stream has no MPF index)
    try:
        facts["frames"] = max(1, int(getattr(img, "n_frames", 1) or 1))
        if img.tell() == 0:
            return img
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        notes.add(f"frame count unreadable: {one_line(exc)}")
    return _open(stream)  # the walk left it elsewhere: start again on frame 0


def _load(img: "Image.Image", facts: dict[str, Any]) -> str | None:
    """Decode ``img``'s pixels. None when all of them decoded cleanly; otherwise the warning
    to record when the data failed part-way but left a picture; ``DecodeError`` when the
    failure left nothing to look at."""
    try:
        img.load()
        return None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt data: keep what was decoded
        reason = one_line(exc)
        data_problem = isinstance(exc, OSError)
    if getattr(img, "_im", None) is None:  # failed before any pixel memory existed
        raise DecodeError(f"corrupt or truncated image: {reason}", facts)
    cut_short = bool(img.tile)  # the decode loop itself stopped: the data ran out or broke
    img.tile = []  # what the decoder wrote so far is the picture; do not decode again
    if not cut_short and not data_problem:
        # every tile decoded; the plugin's clean-up afterwards (TIFF: EXIF, orientation) failed
        return f"{METADATA_AFTER_DECODE}: {reason}"
    if _flat(img):
        raise DecodeError(f"corrupt or truncated image: no pixel data decoded ({reason})", facts)
    return f"{TRUNCATED if cut_short else CORRUPT} ({reason})"


def _flat(img: "Image.Image") -> bool:
    """One colour throughout: what a decoder's zero-filled (or background-filled) canvas
    looks like when the data stopped before any picture."""
    try:
        extrema = img.getextrema()
    except Exception:  # noqa: BLE001 - a mode without extrema: trust the decoder's progress
        return False
    bands = extrema if extrema and isinstance(extrema[0], tuple) else (extrema,)
    return all(lo == hi for lo, hi in bands)


def _load_jpeg_with_end_marker(stream: bytes, draft, facts) -> tuple["Image.Image", str | None]:
    img = _open(stream + _EOI)
    if draft:
        img.draft("RGB", draft)
    partial = _load(img, facts)
    return img, (partial or f"{TRUNCATED} (JPEG data ends before its end marker)")


def _mpo_facts(data: bytes, facts: dict[str, Any], notes: "_Notes") -> None:
    """Format and frame count of a JPEG with a multi-picture index, read from the original
    (Pillow only calls it MPO when the index parses; a broken one costs the count only)."""
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as im:
            if im.format == "MPO":
                facts["format"], facts["frames"] = "MPO", max(1, int(im.n_frames))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        notes.add(f"multi-picture (MPO) index unreadable, decoded as one JPEG: {one_line(exc)}")


def _exif_orientation(data: bytes, notes: "_Notes") -> int:
    """EXIF orientation of the original (1 when absent or unreadable)."""
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as im:
            value = int(im.getexif().get(0x0112, 1) or 1)
        return value if value in _ORIENTATION_TRANSPOSE else 1
    except MemoryError:
        return 1
    except Exception as exc:  # noqa: BLE001 - metadata trouble never costs the pixels
        notes.add(f"EXIF orientation unreadable: {one_line(exc)}")
        return 1


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


# --- the pixel stream: what the decoder needs, nothing it might choke on ----------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that make pixels: everything else (text, iCCP, eXIf, gAMA, pHYs, private ones) is
# metadata to the decoder and is left out of the stream it parses.
_PNG_PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"acTL", b"fcTL", b"fdAT"})
_JPEG_SOI = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"
_TIFF_MAGIC = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})
# A stream with more segments than this is handed over as it is from there on: the walk
# stays cheap whatever the file (real files have tens).
_MAX_SEGMENTS = 100_000
_NOT_FF = re.compile(rb"[^\xff]")


def _signature(data: bytes) -> str | None:
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(_JPEG_SOI):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in _TIFF_MAGIC:
        return "TIFF"
    if _is_webp(data):
        return "WebP"
    if data[:2] == b"BM":
        return "BMP"
    return container_kind(data)


def _pixel_stream(data: bytes) -> tuple[bytes, bool]:
    """(the bytes to decode, whether a JPEG multi-picture index was left out). The original
    object itself when nothing needs leaving out (no copy on the common path)."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_pixel_chunks(data), False
    if data.startswith(_JPEG_SOI):
        return _jpeg_pixel_segments(data)
    if _is_webp(data):
        return _webp_pixel_chunks(data), False
    return data, False


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


# WebP chunks that make pixels; ICCP, EXIF, XMP and unknown chunks are left out (and their
# VP8X flags cleared), so a broken one cannot stop libwebp's demuxer.
_WEBP_PIXEL_CHUNKS = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF"})
_VP8X_METADATA_FLAGS = 0x20 | 0x08 | 0x04  # ICC profile, EXIF, XMP


def _webp_pixel_chunks(data: bytes) -> bytes:
    n = len(data)
    kept: list[bytes | memoryview] = []
    view = memoryview(data)
    pos = 12
    dropped = False
    for _ in range(_MAX_SEGMENTS):
        if pos + 8 > n:
            break
        ctype = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        if ctype == b"VP8X" and size >= 1 and pos + 9 <= n and data[pos + 8] & _VP8X_METADATA_FLAGS:
            kept.append(data[pos : pos + 8] + bytes([data[pos + 8] & ~_VP8X_METADATA_FLAGS & 0xFF]))
            kept.append(view[pos + 9 : min(end, n)])
            dropped = True
        elif ctype in _WEBP_PIXEL_CHUNKS:
            kept.append(view[pos : min(end, n)])  # a cut one is handed over: libwebp judges it
        else:
            dropped = True
        if end >= n:
            break
        pos = end
    if not dropped:
        return data
    body = b"WEBP" + b"".join(kept)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _png_pixel_chunks(data: bytes) -> bytes:
    view = memoryview(data)
    n = len(data)
    parts: list[memoryview] = [view[: len(_PNG_SIGNATURE)]]
    pos = run = len(_PNG_SIGNATURE)  # run: start of the current stretch of kept chunks
    dropped = False
    for _ in range(_MAX_SEGMENTS):
        if pos + 8 > n:
            break
        ctype = data[pos + 4 : pos + 8]
        if not ctype.isalpha():  # not a chunk: the decoder judges the rest as it is
            break
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if ctype in _PNG_PIXEL_CHUNKS or not ctype[0] & 0x20:  # unknown critical ones stay too
            if ctype == b"IEND":  # the decoder reads nothing after it
                if not dropped:
                    return data
                parts.append(view[run:end])
                return b"".join(parts)
            pos = end  # a cut one (end > n) is handed over as it is: the decoder reads what is there
            continue
        parts.append(view[run:pos])
        dropped = True
        if end >= n:  # an ancillary chunk runs to (or past) the end: nothing after it is known
            return b"".join(parts)
        pos = run = end
    if not dropped:
        return data
    parts.append(view[run:n])
    return b"".join(parts)


def _jpeg_pixel_segments(data: bytes) -> tuple[bytes, bool]:
    view = memoryview(data)
    keep: list[memoryview] = []
    n = len(data)
    pos = run = 2
    dropped = has_mpf = False
    for _ in range(_MAX_SEGMENTS):
        if pos >= n:
            break
        if data[pos] != 0xFF:  # bytes between segments: libjpeg skips them too
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                break
            keep.append(view[run:pos])
            run = pos = nxt
            dropped = True
            continue
        fill = _NOT_FF.search(data, pos + 1)  # 0xFF fill bytes before the marker code
        if fill is None:
            break
        mpos = fill.start()
        marker = data[mpos]
        if marker in (0xDA, 0xD9):  # scans (or the end): handed over as they are
            break
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos = mpos + 1
            continue
        if mpos + 3 > n:
            break
        end = mpos + 1 + int.from_bytes(data[mpos + 1 : mpos + 3], "big")
        if end < mpos + 3 or end > n:  # a broken or cut segment: the decoder judges it
            break
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            body = data[mpos + 3 : end]
            if marker == 0xE2 and body.startswith(b"MPF\x00"):
                has_mpf = True
            if not _libjpeg_reads(marker, body):
                keep.append(view[run:pos])
                run = end
                dropped = True
        pos = end
    if not dropped:
        return data, has_mpf
    keep.append(view[run:n])
    return data[:2] + b"".join(keep), has_mpf


def _gif_pixel_blocks(data: bytes) -> bytes:
    """``data`` without the extension blocks a decoder may choke on: comments, application
    and unknown extensions, and graphic control blocks too short to hold their fields
    (a well-formed one stays: it carries the transparent colour)."""
    n = len(data)
    flags = data[10] if n > 10 else 0
    pos = run = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, global colour table
    view = memoryview(data)
    parts: list[memoryview] = [view[:run]]
    dropped = False
    budget = _MAX_SEGMENTS
    while pos < n and budget > 0:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x2C:  # image: descriptor, local colour table, LZW size, data sub-blocks
            if pos + 10 > n:
                break
            local = data[pos + 9]
            start = pos + 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        elif kind == 0x21 and pos + 1 < n:  # extension: label, sub-blocks
            start = pos + 2
        else:
            break  # not a block: the decoder judges the rest
        end = start
        while end < n and data[end] and budget > 0:
            end += 1 + data[end]
            budget -= 1
        end += 1  # the terminating empty sub-block
        if end > n or budget <= 0:
            break
        if kind == 0x21 and not (data[pos + 1] == 0xF9 and data[start] >= 4):
            parts.append(view[run:pos])
            run = end
            dropped = True
        pos = end
    if not dropped:
        return data
    parts.append(view[run:n])
    return b"".join(parts)


def _libjpeg_reads(marker: int, body: bytes) -> bool:
    """Whether libjpeg uses this APPn/COM segment for pixels: only a JFIF APP0 or an Adobe
    APP14 of the size libjpeg recognises (colour space and transform); it ignores the rest,
    so leaving them out changes no pixel."""
    if marker == 0xE0:
        return body.startswith(b"JFIF\x00") and len(body) >= 14
    if marker == 0xEE:
        return body.startswith(b"Adobe") and len(body) >= 12
    return False


def _is_jpeg(stream: bytes) -> bool:
    return stream.startswith(_JPEG_SOI)


# --- decoder output: Python warnings and file descriptor 2 ------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


class _Notes:
    """Short, deduplicated, bounded one-line warnings, in the order they came."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}
        self._more = 0

    def add(self, text: str) -> None:
        line = _SPACE.sub(" ", _CONTROL.sub("", str(text))).strip()
        if not line:
            return
        if len(line) > MAX_WARNING_CHARS:
            line = line[: MAX_WARNING_CHARS - 3] + "..."
        if line in self._seen:
            return
        if len(self._seen) >= MAX_WARNINGS - 1:
            self._more += 1
            return
        self._seen[line] = None

    def add_output(self, raw: bytes) -> None:
        for line in raw.decode("utf-8", "replace").splitlines():
            if "\x1b" not in line:  # a progress bar's redraw caught in the window, not a decoder's
                self.add(line)

    def lines(self) -> list[str]:
        out = list(self._seen)
        if self._more:
            out.append(f"... {self._more} more warning(s) not recorded")
        return out


_local = threading.local()
_install_lock = threading.Lock()
_previous_showwarning: list[Any] = [None]
_FILTER_MODULES = r"(PIL|audit\.imaging)(\.|$)"


def _showwarning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` for the whole process: inside a decode (on this thread) the
    warning is recorded for that image; anywhere else it goes where it went before."""
    notes = getattr(_local, "notes", None)
    if notes is not None:
        notes.add(f"{category.__name__}: {message}")
        return
    previous = _previous_showwarning[0]
    if previous is None or previous is _showwarning or getattr(_local, "delegating", False):
        previous = warnings._showwarning_orig  # type: ignore[attr-defined]
    _local.delegating = True
    try:
        previous(message, category, filename, lineno, file, line)
    finally:
        _local.delegating = False


def _ensure_warning_hook() -> None:
    """Install (again, if a ``catch_warnings`` block elsewhere restored an older one) the
    process-wide hook, and an "always" filter for Pillow's warnings: with the default
    "once per location" a second file with the same problem would record nothing, so a
    row's warnings would depend on what the process decoded before. Trade-off: outside a
    decode, Pillow warnings are now shown each time rather than once. Thread-safe, unlike
    ``warnings.catch_warnings``, which swaps module globals and breaks under threads."""
    if warnings.showwarning is _showwarning and _local_filter_present():
        return
    with _install_lock:
        if warnings.showwarning is not _showwarning:
            _previous_showwarning[0] = warnings.showwarning
            warnings.showwarning = _showwarning
        if not _local_filter_present():
            warnings.filterwarnings("always", module=_FILTER_MODULES)


def _local_filter_present() -> bool:
    for action, _msg, category, module, _lineno in warnings.filters[:1]:
        return action == "always" and category is Warning and module is not None and module.pattern == _FILTER_MODULES
    return False


class _captured:
    """Within the block, this thread's warnings go to ``notes``; with ``fd``, so does what
    is written to file descriptor 2 (C libraries)."""

    def __init__(self, notes: _Notes, *, fd: bool) -> None:
        self.notes = notes
        self.fd = fd
        self.start: int | None = None

    def __enter__(self) -> "_captured":
        _ensure_warning_hook()
        self.outer = getattr(_local, "notes", None)
        _local.notes = self.notes
        if self.fd:
            self.start = _FD_CAPTURE.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.start is not None:
                self.notes.add_output(_FD_CAPTURE.exit(self.start))
        finally:
            _local.notes = self.outer


class _FdCapture:
    """File descriptor 2 pointed at a temporary file for the length of a decode.

    Redirecting fd 2 affects the whole process, so: it is reference-counted (concurrent
    decodes on several threads share one redirection; the last one out restores fd 2, and
    each reads back what was written during its own window, which may include a
    neighbour's lines); it is restored in ``finally`` (an exception or Ctrl-C inside a
    decode cannot leave stderr redirected); and by default it is used only where nothing
    else writes to stderr meanwhile: a process with one Python thread (crawl workers), or
    a TIFF (libtiff is the decoder that prints). In a process drawing a progress bar from a
    thread, a redraw that falls inside a TIFF's decode goes to the temporary file (it is
    dropped, the next redraw repaints): one lost frame, never a raw libtiff line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: int | None = None
        self.tmp: int | None = None
        self.pid: int | None = None

    def enter(self) -> int | None:
        import sys

        with self.lock:
            try:
                if self.depth == 0:
                    if self.pid != os.getpid() or self.tmp is None:
                        self.tmp = _temp_fd()  # one per process (a forked child makes its own)
                        self.pid = os.getpid()
                    os.ftruncate(self.tmp, 0)
                    os.lseek(self.tmp, 0, os.SEEK_SET)
                    if sys.stderr is not None:
                        sys.stderr.flush()  # earlier Python output goes out before the window
                    saved = os.dup(2)
                    try:
                        os.dup2(self.tmp, 2)
                    except OSError:
                        os.close(saved)
                        raise
                    self.saved = saved
                self.depth += 1
                return os.lseek(self.tmp, 0, os.SEEK_CUR)  # type: ignore[arg-type]
            except OSError:  # no fd 2 (a daemon), no temp dir: decode without capturing
                return None

    def exit(self, start: int) -> bytes:
        with self.lock:
            try:
                end = os.lseek(self.tmp, 0, os.SEEK_CUR)  # type: ignore[arg-type]
                return os.pread(self.tmp, min(max(0, end - start), 64 * 1024), start) if end > start else b""  # type: ignore[arg-type]
            except OSError:
                return b""
            finally:
                self.depth -= 1
                if self.depth == 0 and self.saved is not None:
                    os.dup2(self.saved, 2)
                    os.close(self.saved)
                    self.saved = None


def _temp_fd() -> int:
    fh = tempfile.TemporaryFile(prefix="audit-decoder-stderr-")
    fd = os.dup(fh.fileno())
    fh.close()
    return fd


_FD_CAPTURE = _FdCapture()
