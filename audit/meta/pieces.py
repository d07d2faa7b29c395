"""Helpers to find pieces by key and to unwrap pieces that hold other pieces.

``expand`` runs once per file before the parsers: EXIF tags such as ``Make="Prompt: {...}"``
(ComfyUI save nodes) or a UserComment holding ``{"prompt": ..., "workflow": ...}`` become
sub-pieces keyed like PNG chunks, so each parser looks for one shape only.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from audit.meta import limits
from audit.meta.base import MetadataText
from audit.meta.textcodec import load_json, looks_like_json_object

_LABELLED = ("Workflow:", "Prompt:", "prompt:", "workflow:")
# keys whose string or object values are themselves metadata pieces
_CONTAINER_KEYS = {
    "prompt",
    "workflow",
    "comment",
    "description",
    "parameters",
    "source",
    "software",
    "title",
    "sui_image_params",
    "extrametadata",
    "invokeai_metadata",
    "generation_data",
}
_MAX_EXPANDED = 64


def expand(pieces: list[MetadataText]) -> list[MetadataText]:
    out = list(pieces)
    for piece in pieces:
        limits.tick()
        out.extend(_children(piece))
        if len(out) > _MAX_EXPANDED * 4:
            break
    return out


def _children(piece: MetadataText) -> Iterable[MetadataText]:
    text = piece.text.lstrip()
    for label in _LABELLED:
        if text.startswith(label) and text[len(label) :].lstrip().startswith("{"):
            key = label[:-1].lower()
            yield MetadataText(f"{piece.location}:{key}", key, text[len(label) :].lstrip())
            return
    if not looks_like_json_object(text) or piece.key in ("prompt", "workflow"):
        return
    value, problem = load_json(text)
    if problem is not None or not isinstance(value, dict):
        return
    lowered = {str(k).lower(): k for k in value}
    if not any(k in _CONTAINER_KEYS for k in lowered):
        return
    for low, original in lowered.items():
        if low not in _CONTAINER_KEYS:
            continue
        child = value[original]
        if isinstance(child, str):
            child_text = child
        elif isinstance(child, (dict, list)):
            child_text = json.dumps(child, ensure_ascii=False)
            limits.remember_json(child_text, child)  # parsers read it next: no need to parse it again
        else:
            continue
        yield MetadataText(f"{piece.location}:{original}", str(original), child_text)


def by_key(pieces: list[MetadataText], *keys: str) -> list[MetadataText]:
    wanted = {k.lower() for k in keys}
    return [p for p in pieces if p.key.lower() in wanted]


def json_of(piece: MetadataText) -> tuple[Any, str | None]:
    if not looks_like_json_object(piece.text):
        return None, "not a JSON object"
    return load_json(piece.text)


def json_objects(pieces: list[MetadataText], *keys: str) -> Iterator[tuple[dict, MetadataText]]:
    """Each piece stored under one of ``keys`` whose text is a JSON object: (object, piece).
    Pieces that are not are skipped; ``flat.unreadable`` reports them where that matters."""
    for piece in by_key(pieces, *keys):
        data, problem = json_of(piece)
        if problem is None and isinstance(data, dict):
            yield data, piece
