"""Video files (mp4, webm, mov: AnimateDiff, SVD, hosted video generators) as items.

A video goes through the same stages as an animation (``audit.animation``): its first
frame is the item's picture (PDQ, image vector, thumbnail), and up to ``MAX_FRAMES`` key
frames spread over its length (first, last, evenly spaced by time) are its later frames
(``frame_pdq`` at crawl, vector space ``frame`` at embed); a finding names the frame by its
time in milliseconds. The whole video also gets a vPDQ hash (``vpdq``, one PDQ a second,
Meta's video hash) in ``items.extra``-style JSON, the ``video_hash`` column.

Decoding is PyAV (FFmpeg) with key frames only (``skip_frame = NONKEY``): seeking to a
time lands on the key frame before it, so a minute of video costs a handful of frame
decodes. ``BUDGET_S_PER_MINUTE`` bounds the work per minute of video (at least
``MIN_BUDGET_S``): past it, sampling stops with a warning. A stream that cannot be opened,
has no video track or no decodable frame is a ``DecodeError`` (a recorded skip); a frame
that breaks later ends the sampling there with a warning. Needs the ``formats`` extra
(``av``, ``vpdq``); without it a video is a skip naming the extra.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from typing import TYPE_CHECKING, Any

from audit.animation import MAX_FRAMES

if TYPE_CHECKING:
    from PIL import Image

INSTALL_HINT = "install audit[formats]: av"
BUDGET_S_PER_MINUTE = 10.0  # seconds of decoding (key frames + vPDQ) per minute of video
MIN_BUDGET_S = 5.0
VPDQ_SECONDS_PER_HASH = 1.0
MAX_VPDQ_FEATURES = 3600  # an hour at one a second; longer videos keep the first hour
_VIDEO_BRANDS = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"avc1",
        b"M4V ",
        b"M4VP",
        b"qt  ",
        b"dash",
        b"3gp4",
        b"3gp5",
        b"mmp4",
        b"MSNV",
    }
)
_EBML = b"\x1a\x45\xdf\xa3"


def is_video(data: bytes) -> bool:
    """An MP4/MOV (ISO-BMFF with a video brand) or Matroska/WebM stream."""
    if data.startswith(_EBML):
        return True
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _VIDEO_BRANDS


class VideoError(ValueError):
    pass


def _open(data: bytes):
    try:
        import av
    except ImportError:
        raise VideoError(f"video: no decoder installed ({INSTALL_HINT})") from None
    try:
        container = av.open(BytesIO(data), mode="r", metadata_errors="ignore")
    except Exception as exc:  # noqa: BLE001 - FFmpeg's errors on hostile bytes
        raise VideoError(f"corrupt or truncated video: {_line(exc)}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("video file without a video stream")
    return container


def facts(data: bytes) -> dict[str, Any]:
    """format, width, height, duration_s, key-frame sampling count (``frames``) of a video;
    ``VideoError`` when it has none to give."""
    container = _open(data)
    with container:
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        name = (container.format.name or "video").split(",")[0].upper()
        fmt = {"MOV": "MP4", "MATROSKA": "WEBM"}.get(name, name)
        if data.startswith(_EBML):
            fmt = "WEBM"
        elif data[8:12] == b"qt  ":
            fmt = "MOV"
        return {
            "format": fmt,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "duration_s": duration,
            "codec": stream.codec_context.name,
        }


def first_frame(data: bytes) -> Image.Image:
    """The first decodable frame, RGB."""
    container = _open(data)
    with container:
        try:
            for frame in container.decode(video=0):
                return frame.to_image()
        except Exception as exc:  # noqa: BLE001
            raise VideoError(f"corrupt video stream: no decodable frame ({_line(exc)})") from None
    raise VideoError("corrupt video stream: no decodable frame")


def sample_times_ms(duration_s: float | None, max_frames: int = MAX_FRAMES) -> list[int]:
    """Times (ms) to sample: first, last, evenly spaced, at most ``max_frames``."""
    if not duration_s or duration_s <= 0:
        return [0]
    k = max(1, int(max_frames))
    end = int(duration_s * 1000)
    if k == 1:
        return [0]
    return sorted({round(i * end / (k - 1)) for i in range(k)})


def budget_s(duration_s: float | None) -> float:
    return max(MIN_BUDGET_S, BUDGET_S_PER_MINUTE * (duration_s or 0.0) / 60.0)


def key_frames(
    data: bytes, *, max_frames: int = MAX_FRAMES, warnings: list[str] | None = None, skip_first: bool = True
) -> Iterator[tuple[int, Image.Image]]:
    """(time in ms, RGB key frame) spread over the video; problems go to ``warnings``."""
    notes = warnings if warnings is not None else []
    try:
        container = _open(data)
    except VideoError as exc:
        notes.append(str(exc))
        return
    with container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        duration = _duration(container, stream)
        limit = budget_s(duration)
        started = time.monotonic()
        tb = float(stream.time_base) if stream.time_base else None
        seen: set[int] = set()
        for target in sample_times_ms(duration, max_frames):
            if time.monotonic() - started > limit:
                notes.append(
                    f"key-frame sampling stopped at {target} ms: over the {limit:g} s budget "
                    f"({BUDGET_S_PER_MINUTE:g} s per minute of video)"
                )
                return
            try:
                if tb:
                    container.seek(int(target / 1000 / tb), stream=stream, any_frame=False, backward=True)
                frame = next(container.decode(stream), None)
            except Exception as exc:  # noqa: BLE001 - a broken stream part-way: keep what came before
                notes.append(f"video frame at {target} ms unreadable: {_line(exc)}")
                return
            if frame is None:
                continue
            at = round((frame.time or 0.0) * 1000)
            if at in seen or (skip_first and at == 0):
                seen.add(at)
                continue
            seen.add(at)
            yield at, frame.to_image().convert("RGB")


def vpdq_json(data: bytes, duration_s: float | None, warnings: list[str]) -> str | None:
    """vPDQ of the video as JSON [[pdq hex, quality, frame number, timestamp s], ...] (None
    without ``vpdq`` or when it fails: a warning says why)."""
    try:
        import vpdq
    except ImportError:
        warnings.append("video hash (vPDQ) not computed (install audit[formats]: vpdq)")
        return None
    fd, path = tempfile.mkstemp(prefix="audit-video-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as fh:  # vpdq reads a file, not bytes
            fh.write(data)
        started = time.monotonic()
        features = vpdq.computeHash(path, seconds_per_hash=VPDQ_SECONDS_PER_HASH, thread_count=1)
        spent = time.monotonic() - started
        if spent > budget_s(duration_s):
            warnings.append(f"video hash took {spent:.1f} s, over the {budget_s(duration_s):g} s budget")
    except Exception as exc:  # noqa: BLE001 - vpdq raises on streams FFmpeg rejects
        warnings.append(f"video hash (vPDQ) failed: {_line(exc)}")
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    rows = [
        [str(f.hex), int(f.quality), int(f.frame_number), round(float(f.timestamp), 3)]
        for f in features[:MAX_VPDQ_FEATURES]
    ]
    return json.dumps(rows) if rows else None


def _duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]
