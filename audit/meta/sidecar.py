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

from audit.meta.a1111 import parse_infotext
from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.pieces import by_key
from audit.meta.textcodec import decode_bytes, looks_like_json_object

_MAX_SIDECAR = 16 * 1024 * 1024


def sidecar_pieces(sidecars: Sequence[tuple[str, bytes]], errors: list[str]) -> list[tuple[list[MetadataText], MetadataText]]:
    """One group per sidecar: ([pieces parsers read], verbatim raw piece)."""
    groups = []
    for name, data in sidecars:
        try:
            if not isinstance(data, (bytes, bytearray)):
                continue
            if len(data) > _MAX_SIDECAR:
                errors.append(f"sidecar {name} larger than {_MAX_SIDECAR} bytes, skipped")
                continue
            text = decode_bytes(bytes(data)).lstrip("\ufeff")  # a BOM is not part of the prompt
            location = f"sidecar:{name}"
            suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            raw = MetadataText(location, "sidecar", text)
            if suffix in ("yaml", "yml"):
                import yaml  # only files with YAML sidecars pay for the import

                try:
                    value = yaml.load(text, Loader=_loader(yaml))
                except yaml.YAMLError as exc:
                    errors.append(f"sidecar {name} is not valid YAML: {str(exc).splitlines()[0]}")
                    continue
                if isinstance(value, dict):
                    parsed = MetadataText(location, "sidecar-json", json.dumps(value, ensure_ascii=False, default=str))
                    groups.append(([parsed], raw))
                elif isinstance(value, str):
                    groups.append(([MetadataText(location, "sidecar-text", value)], raw))
            elif suffix == "json" or looks_like_json_object(text):
                groups.append(([MetadataText(location, "sidecar-json", text)], raw))
            elif text.strip():
                groups.append(([MetadataText(location, "sidecar-text", text)], raw))
        except Exception as exc:  # noqa: BLE001 - one odd sidecar must not lose the file
            errors.append(f"sidecar {name} unreadable: {type(exc).__name__}")
    return groups


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


def manifest_piece(fields: Mapping[str, Any] | None) -> MetadataText | None:
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
    return MetadataText("manifest", "manifest", json.dumps(usable, ensure_ascii=False, default=str))


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
