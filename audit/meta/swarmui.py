"""SwarmUI: ``{"sui_image_params": {...}, "sui_extra_data": {...}, "sui_models": [...]}`` in the
PNG ``parameters`` chunk, an EXIF UserComment, or a ``.swarm.json`` sidecar.

``sui_image_params`` uses lower-case parameter ids (``prompt``, ``negativeprompt``, ``cfgscale``,
``model`` as a path without extension, ``loras`` and ``loraweights`` as parallel lists, weights
often as strings). ``sui_models`` lists each model file used with the parameter it filled
(``model``, ``loras``, ``vae``, ``refinermodel``, ...) and its hash ("0x…" sha256)."""

from __future__ import annotations

from audit.meta import limits
from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.flat import from_mapping
from audit.meta.normalize import to_float, to_text
from audit.meta.pieces import json_of

_KINDS = {
    "model": "checkpoint",
    "loras": "lora",
    "vae": "vae",
    "refinermodel": "refiner",
    "used_embeddings": "embedding",
    "embeddings": "embedding",
}


_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")


def _stem(name: str) -> str:
    """Params name models by path without extension ("sd_xl_base_1.0"), sui_models with it."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return next((base[: -len(e)] for e in _EXTENSIONS if base.endswith(e)), base)


class SwarmUIParser:
    name = "swarmui"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        for piece in pieces:
            if "sui_image_params" not in piece.text:
                continue
            data, problem = json_of(piece)
            if problem is not None or not isinstance(data, dict) or not isinstance(data.get("sui_image_params"), dict):
                continue
            return _parse(data, piece.location)
        return None


def _parse(data: dict, location: str) -> GenerationMetadata:
    params = data["sui_image_params"]
    meta = from_mapping(
        {k: v for k, v in params.items() if k not in ("loras", "loraweights")}, "swarmui"
    ) or GenerationMetadata(generator="swarmui")
    meta.source = location
    names = params.get("loras") if isinstance(params.get("loras"), list) else []
    weights = params.get("loraweights") if isinstance(params.get("loraweights"), list) else []
    for i, name in enumerate(names[: limits.MAX_RESOURCES]):
        if isinstance(name, str) and name.strip():
            meta.resources.append(Resource("lora", name, None, to_float(weights[i]) if i < len(weights) else None))
    models = data.get("sui_models") if isinstance(data.get("sui_models"), list) else []
    by_stem = {}
    for resource in reversed(meta.resources):  # the first of a name wins
        by_stem[(resource.kind, _stem(resource.name))] = resource
    for model in models:
        limits.tick()
        if not isinstance(model, dict) or not to_text(model.get("name")):
            continue
        name, digest = str(model["name"]), to_text(model.get("hash"))
        param = str(model.get("param", "model")).lower()
        kind = _KINDS.get(param, param.rstrip("s"))
        if kind == "checkpoint" and digest and not meta.model_hash:
            meta.model_hash = digest
        # the file named in sui_models is the one already listed from the params: add its hash there
        same = by_stem.get((kind, _stem(name)))
        if same is not None:
            same.hash = same.hash or digest
        elif len(meta.resources) < limits.MAX_RESOURCES:
            meta.resources.append(Resource(kind, name, digest))
            by_stem.setdefault((kind, _stem(name)), meta.resources[-1])
    for key in ("swarm_version", "width", "height", "aspectratio", "vae", "refinermodel", "original_prompt"):
        if params.get(key) not in (None, ""):
            meta.extra[key] = params[key]
    if isinstance(data.get("sui_extra_data"), dict):
        meta.extra["sui_extra_data"] = data["sui_extra_data"]
    return meta
