"""Stability Matrix: ``parameters-json`` (PositivePrompt, NegativePrompt, Seed, ModelName,
ModelHash, ...) and ``smproj`` (its project state, where sampler and scheduler carry their
ComfyUI names), next to the ComfyUI ``prompt`` graph it ran and an infotext summary.
The JSON is the writer's own record and keeps the prompt verbatim."""

from __future__ import annotations

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import from_mapping, unreadable
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import json_objects


class StabilityMatrixParser:
    name = "stability-matrix"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        project = _project(pieces)
        for data, piece in json_objects(pieces, "parameters-json"):
            meta = from_mapping(data, "stability-matrix")
            if meta is None:
                continue
            meta.source = piece.location
            for key in ("ModelVersionId", "ExtraNetworkModelVersionIds", "Width", "Height"):
                if data.get(key) not in (None, ""):  # Civitai version ids of the checkpoint and LoRAs
                    meta.extra[key] = data[key]
            if project is not None:
                _apply_project(meta, project[0])
            return meta
        if project is not None:  # the project alone still states what was generated
            meta = GenerationMetadata(generator="stability-matrix", source=project[1])
            _apply_project(meta, project[0])
            return meta if meta.prompt is not None or meta.seed is not None else None
        return unreadable(pieces, "stability-matrix", ("parameters-json", "smproj"))


def _project(pieces: list[MetadataText]) -> tuple[dict, str] | None:
    for project, piece in json_objects(pieces, "smproj"):
        if isinstance(project.get("State"), dict):
            return project["State"], piece.location
    return None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _apply_project(meta: GenerationMetadata, state: dict) -> None:
    """Sampler and scheduler by their ComfyUI names always; anything else only where missing."""
    sampler = _dict(state.get("Sampler"))
    if to_text(_dict(sampler.get("SelectedSampler")).get("Name")):
        meta.sampler = to_text(sampler["SelectedSampler"]["Name"])
    if to_text(_dict(sampler.get("SelectedScheduler")).get("Name")):
        meta.scheduler = to_text(sampler["SelectedScheduler"]["Name"])
    prompt = _dict(state.get("Prompt"))
    if meta.prompt is None and isinstance(prompt.get("Prompt"), str):
        meta.prompt = prompt["Prompt"]
    if meta.negative_prompt is None and isinstance(prompt.get("NegativePrompt"), str):
        meta.negative_prompt = prompt["NegativePrompt"]
    meta.seed = meta.seed or seed_text(_dict(state.get("Seed")).get("Seed"))
    meta.steps = meta.steps if meta.steps is not None else to_int(sampler.get("Steps"))
    meta.cfg_scale = meta.cfg_scale if meta.cfg_scale is not None else to_float(sampler.get("CfgScale"))
    model = _dict(state.get("Model"))
    if meta.model is None and to_text(model.get("SelectedModelName")):
        meta.model = to_text(model["SelectedModelName"])
        meta.resources.append(Resource("checkpoint", meta.model, meta.model_hash))
    for key, kind in (("SelectedRefinerName", "refiner"), ("SelectedVaeName", "vae")):
        name = to_text(model.get(key))
        if name and not name.startswith("@") and all(r.name != name for r in meta.resources):  # "@none", "@default"
            meta.resources.append(Resource(kind, name))
    if model.get("IsClipSkipEnabled") and to_int(model.get("ClipSkip")) is not None:
        meta.extra["clip_skip"] = to_int(model["ClipSkip"])
