"""Text that travels beside an image (same-stem .txt/.json/.yaml/.yml, webdataset key.txt and
key.json) and manifest columns, turned into pieces like any embedded metadata.

A .txt sidecar holds either an A1111 infotext (read by the A1111 parser) or just the prompt
(read here). YAML is converted to JSON so the JSON parsers read it; the raw YAML is kept
verbatim for evidence.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from audit.meta.a1111 import parse_infotext
from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.pieces import by_key
from audit.meta.textcodec import decode_bytes

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
            text = decode_bytes(bytes(data))
            location = f"sidecar:{name}"
            suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            raw = MetadataText(location, "sidecar", text)
            if suffix in ("yaml", "yml"):
                import yaml  # only files with YAML sidecars pay for the import

                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    errors.append(f"sidecar {name} is not valid YAML: {str(exc).splitlines()[0]}")
                    continue
                if isinstance(value, dict):
                    parsed = MetadataText(location, "sidecar-json", json.dumps(value, ensure_ascii=False, default=str))
                    groups.append(([parsed], raw))
                elif isinstance(value, str):
                    groups.append(([MetadataText(location, "sidecar-text", value)], raw))
            elif suffix == "json":
                groups.append(([MetadataText(location, "sidecar-json", text)], raw))
            else:
                groups.append(([MetadataText(location, "sidecar-text", text)], raw))
        except Exception as exc:  # noqa: BLE001 - one odd sidecar must not lose the file
            errors.append(f"sidecar {name} unreadable: {type(exc).__name__}")
    return groups


def manifest_piece(fields: Mapping[str, Any] | None) -> MetadataText | None:
    if not fields:
        return None
    usable = {str(k): v for k, v in fields.items() if v is not None and not (isinstance(v, float) and v != v)}
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
