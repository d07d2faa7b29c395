"""Generation metadata: what every generator wrote about how an image was made.

``extract()`` is the one entry point the crawler calls for every file. It reads the
container (PNG chunks, EXIF, XMP, JPEG comments, pixel "stealth" data), sidecar files and
manifest columns into ``MetadataText`` pieces, runs every registered parser over each
group of pieces, and keeps the best result. It never raises.

Choosing between results when a file holds several formats: results at least 75% as rich
as the richest are candidates, and among those the writer's own record outranks a
summary (``RANK``): e.g. a ComfyUI graph beats the infotext a save node wrote beside it,
Stability Matrix's parameters-json beats both. Everything recognised is listed in
``found`` as "generator@location".

The chosen result's placeholders (seed -1, no sampler: hosted generators' own records) are
filled from the file's other results, the ComfyUI graph that ran first, and
``extra["field_sources"]`` says where each field was read (``audit.meta.field_sources``).

Reading is bounded (``audit.meta.limits``): text kept per piece and per file, decompression
work, pieces, and CPU time per file. Whatever a limit cuts is said in ``errors``; when the
time budget runs out the reading stops with what it has found so far and says so
("metadata reading stopped: exceeded the 2 s budget"). The caller audits the pixels anyway.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from audit.meta import field_sources, limits, stealth
from audit.meta.a1111 import A1111Parser
from audit.meta.base import GenerationMetadata, MetadataParser, MetadataText, Resource
from audit.meta.civitai import CivitaiParser
from audit.meta.comfyui import ComfyUIParser
from audit.meta.containers import ContainerReport, read_container
from audit.meta.drawthings import DrawThingsParser
from audit.meta.easydiffusion import EasyDiffusionParser
from audit.meta.flat import FlatJSONParser
from audit.meta.fooocus import FooocusParser
from audit.meta.invokeai import InvokeAIParser
from audit.meta.midjourney import MidjourneyParser
from audit.meta.mochi import MochiDiffusionParser
from audit.meta.novelai import NovelAIParser
from audit.meta.pieces import expand
from audit.meta.sidecar import SidecarTextParser, manifest_piece, sidecar_pieces
from audit.meta.stability_matrix import StabilityMatrixParser
from audit.meta.swarmui import SwarmUIParser
from audit.meta.tensorart import TensorArtParser
from audit.meta.text_chunks import TextChunkParser

__all__ = ["Extraction", "GenerationMetadata", "MetadataText", "Resource", "PARSERS", "extract", "limits"]

PARSERS: tuple[MetadataParser, ...] = (
    StabilityMatrixParser(),
    CivitaiParser(),
    NovelAIParser(),
    InvokeAIParser(),
    FooocusParser(),
    SwarmUIParser(),
    TensorArtParser(),
    EasyDiffusionParser(),
    DrawThingsParser(),
    MochiDiffusionParser(),
    ComfyUIParser(),
    A1111Parser(),
    MidjourneyParser(),
    SidecarTextParser(),
    TextChunkParser(),
    FlatJSONParser(),
)
# How much a parser's result is the writer's own, complete record (higher wins among
# results of similar richness).
RANK = {
    "stability-matrix": 6,
    "civitai": 5,
    "novelai": 5,
    "invokeai": 5,
    "fooocus": 5,
    "swarmui": 5,
    "tensorart": 5,
    "easydiffusion": 5,
    "draw-things": 5,
    "mochi-diffusion": 5,
    "comfyui": 4,
    "a1111": 3,
    "midjourney": 2,
    "sidecar-text": 1,
    "png-text": 1,
    "json": 1,
}
_SIMILAR_RICHNESS = 0.75
# extract() without decoded pixels opens the image itself for stealth data: not a huge one
_MAX_STEALTH_PIXELS = 8192 * 8192


@dataclass
class Extraction:
    best: GenerationMetadata = field(default_factory=GenerationMetadata)
    found: list[str] = field(default_factory=list)
    raw: list[MetadataText] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    has_generation_metadata: bool = False
    results: list[GenerationMetadata] = field(default_factory=list)  # every parser's result, best first


def extract(
    data: bytes,
    image: Any = None,
    *,
    sidecars: Sequence[tuple[str, bytes]] = (),
    fields: Mapping[str, Any] | None = None,
    cpu_budget_s: float | None = limits.CPU_BUDGET_S,
) -> Extraction:
    """Read all generation metadata of one file. Never raises; stops after ``cpu_budget_s``
    seconds of CPU (None: no time limit) with what it has found."""
    extraction = Extraction()
    candidates: list[tuple[int, GenerationMetadata]] = []
    _preload(sidecars)
    reading = limits.Reading(cpu_budget_s)
    token = limits.activate(reading)
    alarm = limits.alarm_for(reading)
    try:
        try:
            alarm.arm()
            _extract(extraction, candidates, data or b"", image, sidecars, fields)
        finally:
            alarm.disarm()
    except limits.BudgetExceeded:
        alarm.disarm()  # again: the timer may have fired inside the first disarm
        extraction.errors.append(f"metadata reading stopped: exceeded the {cpu_budget_s:g} s budget")
    except Exception as exc:  # noqa: BLE001 - the crawl must go on; the reason is recorded
        extraction.errors.append(f"metadata extraction failed: {type(exc).__name__}: {exc}")
    finally:
        limits.deactivate(token)
    try:
        _choose(extraction, candidates)
    except Exception as exc:  # noqa: BLE001
        extraction.errors.append(f"metadata extraction failed: {type(exc).__name__}: {exc}")
    extraction.errors = limits.bound_errors(extraction.errors + reading.summary())
    return extraction


def _preload(sidecars) -> None:
    """Imports a reading may need, done before its time budget starts: an import cut short by
    the budget's timer could leave a half-initialised module behind."""
    try:
        if any(str(name).lower().endswith((".yaml", ".yml")) for name, _ in sidecars):
            import yaml  # noqa: F401
    except Exception:  # noqa: BLE001 - odd sidecar lists are sidecar_pieces' to report
        pass


def _extract(extraction: Extraction, candidates: list, data: bytes, image: Any, sidecars, fields) -> None:
    report = _read_file(data, image)
    extraction.errors.extend(report.errors)
    groups: list[tuple[int, list[MetadataText]]] = []  # (group rank bonus, pieces)
    embedded = [p for p in report.pieces if ":stealth:" not in p.location]
    stealth_pieces = [p for p in report.pieces if ":stealth:" in p.location]
    extraction.raw.extend(report.pieces)
    if embedded:
        groups.append((0, embedded))
    if stealth_pieces:
        groups.append((0, stealth_pieces))
    for pieces, raw in sidecar_pieces(sidecars, extraction.errors):
        extraction.raw.append(raw)
        if pieces:
            groups.append((-1, pieces))
    manifest = manifest_piece(fields, extraction.errors)
    if manifest is not None:
        extraction.raw.append(manifest)
        groups.append((-1, [manifest]))

    for bonus, pieces in groups:
        pieces = expand(pieces)
        _report_too_deep(pieces, extraction.errors)
        for parser in PARSERS:
            limits.check()
            try:
                result = parser.parse(pieces)
            except Exception as exc:  # noqa: BLE001 - contract says parsers never raise; be safe anyway
                extraction.errors.append(f"{parser.name} parser failed: {type(exc).__name__}: {exc}")
                continue
            if result is None:
                continue
            extraction.errors.extend(result.extra.get("errors", []))
            if result.richness() == 0:
                continue
            location = result.source or pieces[0].location
            label = f"{result.generator or parser.name}@{location}"
            if parser.name == "json" and any(f.endswith("@" + location) for f in extraction.found):
                continue  # the catch-all re-reading a record a specific parser already understood
            if label not in extraction.found:
                extraction.found.append(label)
            candidates.append((RANK.get(parser.name, 0) + bonus * 10, result))


def _report_too_deep(pieces: list[MetadataText], errors: list[str]) -> None:
    """JSON nested deeper than ``audit.safejson`` reads is refused by every parser alike; say
    so once per piece, whichever parser would have wanted it (parsing is cached: the parsers
    then get the same answer for free)."""
    for piece in pieces:
        if piece.text.lstrip()[:1] in ("[", "{"):
            _value, problem = limits.parse_json(piece.text)
            if problem is not None and problem.startswith("JSON nested"):
                errors.append(f"{piece.location}: {problem}: not read")


def _choose(extraction: Extraction, candidates: list[tuple[int, GenerationMetadata]]) -> None:
    """The best result among similarly rich ones, bounded for the catalog."""
    if not candidates:
        return
    richest = max(result.richness() for _, result in candidates)
    similar = [(rank, r) for rank, r in candidates if r.richness() >= richest * _SIMILAR_RICHNESS]
    similar.sort(key=lambda item: (item[0], item[1].richness()), reverse=True)
    extraction.best = limits.bound_result(similar[0][1], extraction.errors)
    others = [r for _, r in similar[1:]] + [r for _, r in candidates if all(r is not s for _, s in similar)]
    extraction.results = [extraction.best] + [limits.bound_result(r, []) for r in others]
    field_sources.attribute(extraction.best, extraction.results[1:])
    extraction.has_generation_metadata = True


def _read_file(data: bytes, image: Any) -> ContainerReport:
    report = read_container(data) if data else ContainerReport()
    if report.format is None and image is not None:
        _from_pil_info(image, report)
    if report.has_alpha or (image is not None and report.lossless):
        opened = image
        if opened is None:
            try:
                from PIL import Image

                opened = Image.open(io.BytesIO(data))
                width, height = opened.size
                if width * height > _MAX_STEALTH_PIXELS:
                    report.errors.append(
                        f"stealth check skipped: {width}x{height} pixels is more than "
                        f"{_MAX_STEALTH_PIXELS} to decode for it"
                    )
                    return report
            except Exception as exc:  # noqa: BLE001
                report.errors.append(f"pixels unreadable for stealth check: {type(exc).__name__}")
                return report
        piece = stealth.read(
            opened,
            try_alpha=report.has_alpha,
            try_rgb=image is not None and report.lossless,
            location_prefix=(report.format or "image").lower(),
            errors=report.errors,
        )
        if piece is not None:
            report.pieces.append(piece)
    return report


def _from_pil_info(image: Any, report: ContainerReport) -> None:
    """Formats without a hand-written walker (TIFF, GIF, AVIF...): PIL's info and EXIF."""
    from audit.meta.containers import exif

    reading = limits.current()
    info = getattr(image, "info", {}) or {}
    report.format = getattr(image, "format", None)
    for key, value in list(info.items()):
        reading.tick()
        if isinstance(value, str) and key not in ("icc_profile",):
            location = f"{str(report.format or 'image').lower()}:info:{key}"
            piece = reading.piece(location, str(key), value, report.errors)
            if piece is not None:
                report.pieces.append(piece)
        elif key == "exif" and isinstance(value, (bytes, bytearray)):
            report.pieces.extend(exif.read_tiff(bytes(value), "exif", report.errors))
    report.has_alpha = "A" in getattr(image, "mode", "")
