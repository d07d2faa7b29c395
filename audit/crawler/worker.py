"""Reads one stored generation: bytes, hashes, image facts, generation metadata.

Runs in worker processes. Never raises for a bad file: every problem becomes a record
with ``status="error"`` and a one-line reason, so the audit keeps a row for it.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from audit.hashing import md5_hex, pdq_of_image, sha256_hex
from audit.imaging import to_rgb
from audit.ingest.base import Entry

# Above this many pixels an image is refused before decoding (decompression bombs,
# absurd dimensions): 16k x 16k covers every real generator's output several times over.
MAX_PIXELS = 16_384 * 16_384
MAX_FILE_BYTES = 1 << 30
MAX_SIDECAR_BYTES = 4 << 20


@dataclass
class ReadResult:
    """What a worker learned about one entry; ``item`` is None when no bytes could be read."""

    uri: str
    item: dict[str, Any] | None
    location: dict[str, Any]
    bytes_read: int


def read_entries(entries: list[Entry]) -> list[ReadResult]:
    return [read_entry(e) for e in entries]


def read_entry(entry: Entry) -> ReadResult:
    location: dict[str, Any] = {
        "uri": entry.uri,
        "source": entry.source,
        "container": entry.container,
        "size": entry.size,
        "mtime_ns": entry.mtime_ns,
        "status": "ok",
        "error": None,
        "item_id": None,
    }
    if entry.error:
        return _failed(location, entry.error)
    try:
        data = _read_bytes(entry)
    except _ReadFailure as exc:
        return _failed(location, str(exc))
    item = describe(data, sidecars=_read_sidecars(entry), fields=entry.fields)
    location.update(item_id=item["item_id"], status=item["status"], error=item["error"])
    if location["size"] is None:
        location["size"] = len(data)
    return ReadResult(entry.uri, item, location, len(data))


def describe(data: bytes, *, sidecars: list[tuple[str, bytes]] = (), fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the catalog keeps about one file's content."""
    item: dict[str, Any] = {
        "item_id": sha256_hex(data),
        "md5": md5_hex(data),
        "size": len(data),
        "status": "ok",
        "error": None,
    }
    image = None
    try:
        image = _decode(data, item)
    except _ReadFailure as exc:
        item.update(status="error", error=str(exc))
    _add_metadata(item, data, image, sidecars, fields)
    return item


class _ReadFailure(Exception):
    pass


def _failed(location: dict[str, Any], reason: str) -> ReadResult:
    location.update(status="error", error=reason)
    return ReadResult(location["uri"], None, location, 0)


def _read_bytes(entry: Entry) -> bytes:
    if entry.data is not None:
        return entry.data
    if entry.path is None:
        raise _ReadFailure("no path or data to read")
    try:
        with open(entry.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise _ReadFailure(f"file too large ({size} bytes > {MAX_FILE_BYTES})")
            return fh.read()
    except _ReadFailure:
        raise
    except FileNotFoundError:
        raise _ReadFailure("file vanished before it could be read") from None
    except IsADirectoryError:
        raise _ReadFailure("is a directory") from None
    except PermissionError:
        raise _ReadFailure("permission denied") from None
    except OSError as exc:
        raise _ReadFailure(f"cannot read file: {exc.strerror or exc}") from None


def _read_sidecars(entry: Entry) -> list[tuple[str, bytes]]:
    out = []
    for sc in entry.sidecars:
        if sc.data is not None:
            out.append((sc.name, sc.data[:MAX_SIDECAR_BYTES]))
            continue
        try:
            with open(sc.path, "rb") as fh:  # type: ignore[arg-type]
                out.append((sc.name, fh.read(MAX_SIDECAR_BYTES)))
        except OSError:
            continue  # a vanished sidecar costs metadata, not the item
    return out


def _decode(data: bytes, item: dict[str, Any]):
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _ReadFailure("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(BytesIO(data))
            item["format"] = img.format
            width, height = img.size
            item["width"], item["height"] = width, height
            item["frames"] = int(getattr(img, "n_frames", 1) or 1)
            if width <= 0 or height <= 0:
                raise _ReadFailure(f"invalid dimensions {width}x{height}")
            if width * height > MAX_PIXELS:
                raise _ReadFailure(f"image too large to decode: {width}x{height} exceeds the {MAX_PIXELS} pixel limit")
            img.load()
            rgb = to_rgb(img)  # transparency on white: hidden colours must not steer the hash
    except _ReadFailure:
        raise
    except UnidentifiedImageError:
        raise _ReadFailure("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise _ReadFailure(f"image too large to decode (decompression bomb guard): {_one_line(exc)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise _ReadFailure(f"corrupt or truncated image: {_one_line(exc)}") from None
    except MemoryError:
        raise _ReadFailure("image too large to decode (out of memory)") from None
    item["pdq"], item["pdq_quality"] = pdq_of_image(rgb)
    return img


def _add_metadata(item, data, image, sidecars, fields) -> None:
    try:
        from audit.meta import extract
    except ImportError:  # pragma: no cover - only while audit.meta is being built
        return
    try:
        found = extract(data, image, sidecars=sidecars, fields=fields or {})
    except Exception as exc:  # noqa: BLE001 - a parser bug must cost metadata, not the item
        item["metadata_errors"] = json.dumps([f"metadata reader failed: {_one_line(exc)}"])
        return
    best = found.best
    for name in ("generator", "prompt", "negative_prompt", "seed", "steps", "sampler", "scheduler", "cfg_scale", "model", "model_hash"):
        item[name] = getattr(best, name)
    if item["seed"] is not None:
        item["seed"] = str(item["seed"])
    item["resources"] = json.dumps([r.to_dict() for r in best.resources]) if best.resources else None
    item["metadata_found"] = json.dumps(found.found) if found.found else None
    item["metadata_errors"] = json.dumps(found.errors) if found.errors else None
    item["extra"] = json.dumps(best.extra, default=str, ensure_ascii=False) if best.extra else None
    item["raw_metadata"] = (
        json.dumps([{"location": r.location, "key": r.key, "text": r.text} for r in found.raw], ensure_ascii=False)
        if found.raw
        else None
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
