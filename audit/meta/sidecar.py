"""Text that travels beside an image (same-stem .txt/.json/.yaml/.yml, webdataset key.txt and
key.json) and manifest columns, turned into pieces like any embedded metadata.

A .txt sidecar holds either an A1111 infotext (read by the A1111 parser) or just the prompt
(read here). YAML is converted to JSON so the JSON parsers read it; the raw YAML is kept
verbatim for evidence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from audit.meta import limits
from audit.meta.a1111 import parse_infotext
from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.pieces import by_key
from audit.meta.textcodec import decode_bytes, looks_like_json_object

# what MetadataText.location says for a sidecar: names of tar members can be very long
_MAX_NAME = 160
# PyYAML's safe loader is pure Python (about 5 s a megabyte); honest YAML sidecars are a few KB
_MAX_YAML_CHARS = 128 * 1024


def sidecar_pieces(
    sidecars: Sequence[tuple[str, bytes]], errors: list[str]
) -> list[tuple[list[MetadataText], MetadataText]]:
    """One group per sidecar: ([pieces parsers read, maybe none], verbatim raw piece). Each is kept within
    the file's limits like embedded text; a cut YAML or JSON sidecar then fails to parse (recorded)."""
    reading = limits.current()
    groups = []
    for name, data in sidecars:
        reading.check()
        name = limits.clip_name(name, _MAX_NAME)
        try:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                continue
            limit = reading.byte_room()
            if limit == 0:
                reading.dropped += 1
                continue
            if not reading.spend(min(len(data), limit)):
                continue
            text = decode_bytes(bytes(data[:limit])).lstrip("\ufeff")  # a BOM is not part of the prompt
            location = f"sidecar:{name}"
            raw = reading.piece(
                location, "sidecar", text, errors, whole=len(data) <= limit, size=len(data), unit="bytes"
            )
            if raw is None:
                continue
            text = raw.text
            suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if suffix in ("yaml", "yml"):  # unreadable YAML is still kept as evidence
                parsed = _yaml_piece(location, name, text, errors)
                groups.append(([parsed] if parsed is not None else [], raw))
            elif suffix == "json" or looks_like_json_object(text):
                groups.append(([MetadataText(location, "sidecar-json", text)], raw))
            elif text.strip():
                groups.append(([MetadataText(location, "sidecar-text", text)], raw))
        except Exception as exc:  # noqa: BLE001 - one odd sidecar must not lose the file
            errors.append(f"sidecar {name} unreadable: {type(exc).__name__}")
    return groups


def _yaml_piece(location: str, name: str, text: str, errors: list[str]) -> MetadataText | None:
    """A YAML sidecar as a JSON piece (a mapping) or a text piece (a plain string)."""
    import yaml  # imported by extract() before the time budget starts when YAML sidecars come

    if len(text) > _MAX_YAML_CHARS:
        errors.append(
            f"sidecar {name}: YAML of {len(text)} characters not parsed (more than {_MAX_YAML_CHARS}); kept as text"
        )
        return None
    try:
        value = yaml.load(text, Loader=_loader(yaml))
    except yaml.YAMLError as exc:
        errors.append(
            f"sidecar {name} is not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
        return None
    except RecursionError:
        errors.append(f"sidecar {name} is not readable YAML: nested too deep")
        return None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        errors.append(f"sidecar {name} is not readable YAML: {str(exc).split(':')[0]}")
        return None
    if isinstance(value, dict):
        copy, cut = limits.bounded_copy(value, limits.MAX_PIECE_CHARS)  # shared and cyclic nodes stop here too
        if cut:
            errors.append(f"sidecar {name}: YAML value cut to about {limits.MAX_PIECE_CHARS} characters")
        dumped = json.dumps(copy, ensure_ascii=False, default=str)
        limits.remember_json(dumped, copy)
        return MetadataText(location, "sidecar-json", dumped)
    if isinstance(value, str):
        return MetadataText(location, "sidecar-text", value)
    return None


def _loader(yaml):
    """SafeLoader without aliases: "billion laughs" anchors would explode when re-serialised."""

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("YAML aliases are not accepted in sidecars")
            return super().compose_node(parent, index)

    return NoAliasLoader


# what CSV/Parquet readers put in empty cells
_MISSING_TEXT = {"", "nan", "none", "null", "<na>", "nat"}


def _manifest_value(value: Any) -> Any:
    """A manifest cell as JSON can carry it, or _MISSING: NaN/NA/NaT and their text forms are empty."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return _MISSING
    if isinstance(value, float) and math.isnan(value):
        return _MISSING
    if isinstance(value, (bytes, bytearray)):
        value = decode_bytes(bytes(value))
    if isinstance(value, str) and value.strip().lower() in _MISSING_TEXT:
        return _MISSING
    if hasattr(value, "tolist") and not isinstance(value, (str, int, float)):  # numpy scalars and arrays
        try:
            return value.tolist()
        except Exception:  # noqa: BLE001 - an exotic object: json's str() fallback applies
            return value
    return value


_MISSING = object()


def manifest_piece(fields: Mapping[str, Any] | None, errors: list[str] | None = None) -> MetadataText | None:
    """The manifest row's columns as one JSON piece, within the file's limits (a cell may hold
    megabytes, or nested lists from Parquet): cut values are recorded in ``errors``."""
    if not fields:
        return None
    try:
        items = list(fields.items())
    except Exception:  # noqa: BLE001 - a mapping-like object that cannot be listed
        return None
    usable = {}
    for key, value in items:
        value = _manifest_value(value)
        if value is not _MISSING:
            usable[str(key)] = value
    if not usable:
        return None
    reading = limits.current()
    copy, cut = limits.bounded_copy(usable, reading.room())
    text = json.dumps(copy, ensure_ascii=False, default=str)
    if len(text) > reading.room():  # escapes took more room than counted (\u0000 is six characters)
        copy, cut = limits.bounded_copy(usable, reading.room() // 6)
        text = json.dumps(copy, ensure_ascii=False, default=str)
    limits.remember_json(text, copy)
    problems = errors if errors is not None else []
    if cut:
        problems.append(f"manifest fields cut to about {reading.room()} characters")
    return reading.piece("manifest", "manifest", text, problems)


class SidecarTextParser:
    """A .txt sidecar that is not an infotext is the prompt itself (webdataset captions)."""

    name = "sidecar-text"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "sidecar-text"):
            text = piece.text.strip()
            if not text or parse_infotext(text) is not None:
                continue
            return GenerationMetadata(generator="sidecar", prompt=text, source=piece.location)
        return None
