"""Frames of animated images (GIF, APNG, animated WebP), sampled for PDQ and CLIP
(videos: key frames by time, ``audit.video``, through the same ``later_frames``).

Frame 0 is what ``decode_image`` gives every stage (the item's own PDQ and image vector).
An animation can hide a different picture in a later frame, so up to ``MAX_FRAMES`` frames
are also looked at: the first, the last and evenly spaced ones between
(``sample_indices``). Each sampled frame other than 0 gets a PDQ at crawl time (the
catalog's ``frame_pdq``) and an image vector at embed time (vector space ``frame``, key
``<item_id>#<frame index>``); the flag stage matches hash lists against every frame and
takes each concept's best frame, and a finding names the frame it came from.

Frames are composited as a viewer shows them (Pillow applies disposal and blending while
seeking) and turned to RGB on white like frame 0 (``imaging.to_rgb``). A frame that cannot
be decoded (a corrupt or cut later frame) ends the sampling there with a warning: the
frames before it still count, the item is never lost for it. Seeking decodes every frame
up to the one asked for, so ``FRAME_BUDGET_S`` bounds the time one file may take.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from io import BytesIO
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

MAX_FRAMES = 8  # frames sampled per animation, frame 0 included
FRAME_BUDGET_S = 5.0  # seconds of frame decoding per file; past it, sampling stops (a warning says so)
FRAME_KEY_SEP = "#"


def sample_indices(n_frames: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """First, last and evenly spaced frame indices, at most ``max_frames``, ascending."""
    n = max(0, int(n_frames))
    k = min(n, max(1, int(max_frames)))
    if k <= 1:
        return [0] if n else []
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def frame_key(item_id: str, index: int) -> str:
    return f"{item_id}{FRAME_KEY_SEP}{index}"


def split_frame_key(key: str) -> tuple[str, int]:
    item_id, _, index = key.rpartition(FRAME_KEY_SEP)
    return item_id, int(index)


def later_frames(
    data: bytes,
    n_frames: int,
    *,
    max_frames: int = MAX_FRAMES,
    budget_s: float = FRAME_BUDGET_S,
    warnings: list[str] | None = None,
) -> Iterator[tuple[int, Image.Image]]:
    """(index, RGB frame) for the sampled frames after frame 0, as far as they decode.
    Problems are appended to ``warnings`` (one line each); nothing is raised for bad data."""
    from PIL import Image

    from audit.imaging import _pixel_stream, one_line, to_rgb
    from audit.video import is_video, key_frames

    notes = warnings if warnings is not None else []
    if is_video(data):  # key frames by time: the "index" is the frame's time in ms
        yield from key_frames(data, max_frames=max_frames, warnings=notes)
        return
    wanted = [i for i in sample_indices(n_frames, max_frames) if i > 0]
    if not wanted:
        return
    started = time.monotonic()
    try:
        img = Image.open(BytesIO(_pixel_stream(data)[0]))
    except Exception as exc:  # noqa: BLE001 - frame 0 decoded elsewhere; the later frames are lost only
        notes.append(f"later frames unreadable: {one_line(exc)}")
        return
    with img:
        for index in wanted:
            if time.monotonic() - started > budget_s:
                notes.append(f"frame sampling stopped at frame {index}: over the {budget_s:g} s budget")
                return
            try:
                img.seek(index)
                img.load()
                frame = to_rgb(img)
                if frame is img:  # the next seek draws into img: keep this frame's own copy
                    frame = img.copy()
            except EOFError:
                notes.append(f"frame {index} missing: the animation ends before its stated {n_frames} frames")
                return
            except MemoryError:
                notes.append(f"frame {index} too large to decode")
                return
            except Exception as exc:  # noqa: BLE001 - a corrupt later frame: keep the earlier ones
                notes.append(f"frame {index} unreadable: {one_line(exc)}")
                return
            yield index, frame


def frame_pdq_json(data: bytes, n_frames: int, warnings: list[str]) -> str | None:
    """The catalog's ``frame_pdq``: JSON list of {frame, pdq, quality} for the sampled
    frames after frame 0 (None for a still image or when no later frame decodes)."""
    from audit.hashing import pdq_of_image

    out: list[dict[str, Any]] = []
    for index, frame in later_frames(data, n_frames, warnings=warnings):
        pdq, quality = pdq_of_image(frame)
        out.append({"frame": index, "pdq": pdq, "quality": quality})
    return json.dumps(out) if out else None


def parse_frame_pdq(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        rows = json.loads(text)
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("pdq"), str)] if isinstance(rows, list) else []
