"""Stability Matrix: ``parameters-json`` (PositivePrompt, NegativePrompt, Seed, ModelName,
ModelHash, ...) and ``smproj`` (its project state, where sampler and scheduler carry their
ComfyUI names), next to the ComfyUI ``prompt`` graph it ran and an infotext summary.
The JSON is the writer's own record and keeps the prompt verbatim."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText
from audit.meta.flat import from_mapping
from audit.meta.normalize import to_int
from audit.meta.pieces import by_key, json_of


class StabilityMatrixParser:
    name = "stability-matrix"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in by_key(pieces, "parameters-json"):
            data, problem = json_of(piece)
            if problem is not None or not isinstance(data, dict):
                continue
            meta = from_mapping(data, "stability-matrix")
            if meta is None:
                continue
            meta.source = piece.location
            _apply_project(meta, pieces)
            return meta
        return None


def _apply_project(meta: GenerationMetadata, pieces: list[MetadataText]) -> None:
    for piece in by_key(pieces, "smproj"):
        project, problem = json_of(piece)
        if problem is not None or not isinstance(project, dict):
            return
        state = project.get("State") if isinstance(project.get("State"), dict) else {}
        sampler = state.get("Sampler") if isinstance(state.get("Sampler"), dict) else {}
        selected = sampler.get("SelectedSampler")
        if isinstance(selected, dict) and selected.get("Name"):
            meta.sampler = str(selected["Name"])
        scheduler = sampler.get("SelectedScheduler")
        if isinstance(scheduler, dict) and scheduler.get("Name"):
            meta.scheduler = str(scheduler["Name"])
        model = state.get("Model") if isinstance(state.get("Model"), dict) else {}
        if model.get("IsClipSkipEnabled") and to_int(model.get("ClipSkip")) is not None:
            meta.extra["clip_skip"] = to_int(model["ClipSkip"])
        return
