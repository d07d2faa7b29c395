"""Reads one stored generation: bytes, hashes, image facts, generation metadata.

Runs in worker processes (in the main process with ``workers <= 1``). Never raises for a
bad file: every problem becomes a record with ``status="error"`` and a one-line reason, so
the audit keeps a row for it. Pixels come from ``audit.imaging.decode_image`` (the decode
every stage shares): a file whose metadata is broken is still hashed, a truncated one is
hashed as far as it decodes, and what the decoder reported lands in ``warnings``.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from typing import Any

from audit.animation import frame_pdq_json
from audit.video import is_video, vpdq_json
from audit.hashing import item_id, md5_hex, pdq_of_image
from audit.imaging import MAX_PIXELS, DecodeError, DecodedImage, decode_image, one_line
from audit.ingest.base import Entry
from audit.provenance import provenance_json
from audit.safeio import NotRegularFile, TooLarge, open_regular, read_regular

__all__ = ["MAX_PIXELS", "MAX_FILE_BYTES", "MAX_SIDECAR_BYTES", "ReadResult", "describe", "read_entry", "read_entries"]

# What the reader gets out of a file; raise it when it learns a new fact (a column, a format)
# so ``audit crawl --reread`` knows which rows were read without it. 2: provenance (C2PA,
# IPTC), animation frames (frame_pdq), videos (video_hash), HEIC/AVIF/JXL decoders.
READER_VERSION = 2
MAX_FILE_BYTES = 1 << 30
MAX_SIDECAR_BYTES = 4 << 20


@dataclass
class ReadResult:
    """What a worker learned about one entry; ``item`` is None when no bytes could be read."""

    uri: str
    item: dict[str, Any] | None
    location: dict[str, Any]
    bytes_read: int


# After reading an entry this large, collect reference cycles at once: an exception's
# traceback in any parser can keep the entry's bytes alive until the cyclic collector runs,
# and a worker must not hold several archive members' worth of such garbage.
COLLECT_AFTER_BYTES = 16 << 20


def read_entries(entries: list[Entry]) -> list[ReadResult]:
    out = []
    for e in entries:
        result = read_entry(e)
        out.append(result)
        if result.bytes_read >= COLLECT_AFTER_BYTES:
            gc.collect()
    return out


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
    fields = entry.fields
    # what a source could not read of a dataset's own metadata (a part JSON that does not
    # parse, a broken metadata table): listed with the item's metadata errors
    skipped: list[str] = [str(p) for p in fields.get("dataset_metadata_errors", ())] if fields else []
    if skipped:
        fields = {k: v for k, v in fields.items() if k != "dataset_metadata_errors"}
    sidecars = _read_sidecars(entry, skipped)
    item = describe(data, sidecars=sidecars, fields=fields, problems=skipped)
    location.update(item_id=item["item_id"], status=item["status"], error=item["error"])
    if location["size"] is None:
        location["size"] = len(data)
    return ReadResult(entry.uri, item, location, len(data))


def describe(
    data: bytes,
    *,
    sidecars: list[tuple[str, bytes]] = (),
    fields: dict[str, Any] | None = None,
    problems: list[str] = (),
) -> dict[str, Any]:
    """Everything the catalog keeps about one file's content.

    Pixels and metadata fail separately: an undecodable image is an error row (still
    hashed, its metadata still read); metadata trouble of any kind, including a reader
    that raises, is only listed in ``metadata_errors`` (with ``problems``, e.g. sidecars
    that could not be read) on a row whose pixels were audited."""
    item: dict[str, Any] = {
        "item_id": item_id(data),
        "md5": md5_hex(data),
        "size": len(data),
        "status": "ok",
        "error": None,
        "warnings": None,
    }
    image = None
    try:
        image = _decode(data, item)
    except _ReadFailure as exc:
        item.update(status="error", error=str(exc))
    _add_metadata(item, data, image, sidecars, fields, list(problems))
    item["provenance"] = provenance_json(data, item.get("format"))  # C2PA, IPTC source type
    item["reader_version"] = READER_VERSION
    return item


class _ReadFailure(Exception):
    pass


def _failed(location: dict[str, Any], reason: str) -> ReadResult:
    location.update(status="error", error=reason)
    return ReadResult(location["uri"], None, location, 0)


def _read_bytes(entry: Entry) -> bytes:
    """The entry's bytes. A path is opened as a regular file only, without blocking: a
    fifo, device or socket put in an image's place (even after the listing) becomes an
    error row instead of a hung or endless read."""
    if entry.data is not None:
        return entry.data
    if entry.path is None:
        raise _ReadFailure("no path or data to read")
    try:
        return read_regular(entry.path, MAX_FILE_BYTES)
    except TooLarge as exc:
        raise _ReadFailure(f"file too large ({exc.size} bytes > {MAX_FILE_BYTES})") from None
    except NotRegularFile as exc:
        raise _ReadFailure(exc.strerror or "not a regular file: not read") from None
    except FileNotFoundError:
        raise _ReadFailure("file vanished before it could be read") from None
    except IsADirectoryError:
        raise _ReadFailure("is a directory") from None
    except PermissionError:
        raise _ReadFailure("permission denied") from None
    except OSError as exc:
        raise _ReadFailure(f"cannot read file: {exc.strerror or exc}") from None


def _read_sidecars(entry: Entry, skipped: list[str]) -> list[tuple[str, bytes]]:
    """The sidecars' bytes (at most ``MAX_SIDECAR_BYTES`` each); one that is not a regular
    file, vanished or cannot be read is left out and the reason added to ``skipped``: it
    costs metadata, never the item."""
    out = []
    for sc in entry.sidecars:
        if sc.data is not None:
            out.append((sc.name, sc.data[:MAX_SIDECAR_BYTES]))
            continue
        try:
            with open_regular(sc.path) as fh:  # type: ignore[arg-type]
                out.append((sc.name, fh.read(MAX_SIDECAR_BYTES)))
        except NotRegularFile as exc:
            skipped.append(f"sidecar {sc.name}: {exc.strerror or 'not a regular file: not read'}")
        except FileNotFoundError:
            skipped.append(f"sidecar {sc.name}: vanished before it could be read")
        except OSError as exc:
            skipped.append(f"sidecar {sc.name}: unreadable: {exc.strerror or type(exc).__name__}")
    return out


def _decode(data: bytes, item: dict[str, Any]):
    """Image facts, PDQ and warnings into ``item``; the decoded image (for the metadata
    readers' pixel checks), or ``_ReadFailure``."""
    try:
        decoded: DecodedImage = decode_image(data, max_pixels=MAX_PIXELS)
    except DecodeError as exc:
        item.update({k: v for k, v in exc.facts.items() if k in ("format", "width", "height", "frames")})
        item["warnings"] = json.dumps(exc.warnings, ensure_ascii=False) if exc.warnings else None
        raise _ReadFailure(str(exc)) from None
    item.update(format=decoded.format, width=decoded.width, height=decoded.height, frames=decoded.frames)
    item["warnings"] = json.dumps(decoded.warnings, ensure_ascii=False) if decoded.warnings else None
    try:  # transparency on white: hidden colours must not steer the hash
        item["pdq"], item["pdq_quality"] = pdq_of_image(decoded.rgb())
    except MemoryError:
        raise _ReadFailure("image too large to hash (out of memory)") from None
    if decoded.frames > 1:  # animations and videos: sampled later frames hashed too (audit.animation)
        frame_notes: list[str] = []
        item["frame_pdq"] = frame_pdq_json(data, decoded.frames, frame_notes)
        if is_video(data):
            item["video_hash"] = vpdq_json(data, None, frame_notes)
        if frame_notes:
            item["warnings"] = json.dumps([*decoded.warnings, *frame_notes], ensure_ascii=False)
    return decoded.image


def _add_metadata(item, data, image, sidecars, fields, problems: list[str]) -> None:
    item["metadata_errors"] = json.dumps(problems, ensure_ascii=False) if problems else None
    try:
        from audit.meta import extract
    except ImportError:  # pragma: no cover - only while audit.meta is being built
        return
    try:
        found = extract(data, image, sidecars=sidecars, fields=fields or {})
        best = found.best
        values = {name: getattr(best, name) for name in _GENERATION_FIELDS}
        if values["seed"] is not None:
            values["seed"] = str(values["seed"])
        values["resources"] = json.dumps([r.to_dict() for r in best.resources]) if best.resources else None
        values["metadata_found"] = json.dumps(found.found) if found.found else None
        values["extra"] = json.dumps(best.extra, default=str, ensure_ascii=False) if best.extra else None
        values["raw_metadata"] = (
            json.dumps([{"location": r.location, "key": r.key, "text": r.text} for r in found.raw], ensure_ascii=False)
            if found.raw
            else None
        )
        errors = [*problems, *(str(e) for e in found.errors)]
    except Exception as exc:  # noqa: BLE001 - any reader failure (RecursionError, MemoryError too) costs metadata, not the item
        errors = [*problems, f"metadata reader failed: {type(exc).__name__}: {one_line(exc, 240)}"]
        values = {}
    item.update(values)
    item["metadata_errors"] = json.dumps(errors, ensure_ascii=False) if errors else None


_GENERATION_FIELDS = (
    "generator",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "sampler",
    "scheduler",
    "cfg_scale",
    "model",
    "model_hash",
)
