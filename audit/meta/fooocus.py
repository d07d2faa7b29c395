"""Fooocus and RuinedFooocus.

Fooocus (``modules/meta_parser.py``) writes ``parameters`` (PNG) or EXIF UserComment (JPEG/WebP,
with Software "Fooocus v…" and the scheme in MakerNote), in one of two schemes named by the
``fooocus_scheme`` chunk:

* "fooocus": JSON keyed ``prompt, negative_prompt, styles, performance, steps, resolution,
  guidance_scale, sharpness, base_model(_hash), refiner_model(_hash), sampler, scheduler, vae,
  seed, lora_combined_N`` ("name : weight"), ``loras`` ([[name, weight, hash]]), ``full_prompt``
  / ``full_negative_prompt`` (lists, styles applied), ``version``. Fooocus also reads the log's
  copy keyed by labels ("Prompt", "Negative Prompt", "Guidance Scale", "LoRA 1", …), so we do too.
* "a1111": infotext whose first line is the styled prompt; the user's own prompt is in
  ``Raw prompt`` / ``Raw negative prompt`` and LoRA weights in ``Lora weights``.

The user's prompt is reported as the prompt in both schemes; the styled one goes to ``extra``.

Fooocus-MRE writes a ``Comment`` JSON of its own keys (``cfg``, ``l1``..``l5``/``w1``..``w5``, ``software``
"Fooocus-MRE v…"): see ``_from_mre``.

RuinedFooocus writes ``parameters`` JSON with ``"software": "RuinedFooocus"``, ``Prompt``/
``Negative``, ``cfg``, ``sampler_name``, ``base_model_name``/``base_model_hash`` and ``loras`` as
``[[hash, "weight - name"]]`` (older builds: the string ``"Loras:<name:weight>,…"``).
"""

from __future__ import annotations

import re
from typing import Any

from audit.meta.base import GenerationMetadata, MetadataText, Resource
from audit.meta.normalize import seed_text, to_float, to_int, to_text
from audit.meta.pieces import by_key, json_of

# Fooocus's Performance enum -> its Steps enum (label-keyed copies may omit steps)
_PERFORMANCE_STEPS = {"quality": 60, "speed": 30, "extreme speed": 8, "lightning": 4, "hyper-sd": 4}
# keys only Fooocus writes (a bare "guidance_scale" is every diffusers app's)
_LABEL_HINTS = ("fooocus_v2_expansion", "adm_guidance", "full_prompt", "full_negative_prompt")
_UNSET = ("", "None", None)


class FooocusParser:
    name = "fooocus"

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None:
        scheme = next((p.text.strip().lower() for p in by_key(pieces, "fooocus_scheme", "MakerNote")), None)
        by_fooocus = any(p.text.strip().startswith("Fooocus") for p in by_key(pieces, "Software"))
        for piece in by_key(pieces, "parameters", "Comment", "UserComment"):
            data, problem = json_of(piece)
            meta = None
            if problem is None and isinstance(data, dict):
                software = str(data.get("software", data.get("Software", "")))
                if "ruinedfooocus" in software.lower().replace(" ", ""):
                    meta = _from_ruined(data)
                elif "fooocus-mre" in software.lower():
                    meta = _from_mre(data, software)
                else:
                    record = _normalise(data)
                    if (
                        scheme == "fooocus"
                        or by_fooocus
                        or "fooocus" in str(record.get("version", "")).lower()
                        or any(k in record for k in _LABEL_HINTS)
                    ):
                        meta = _from_fooocus(record)
            elif scheme == "a1111" or by_fooocus or "Version: Fooocus" in piece.text:
                meta = _from_infotext(piece.text)
            if meta is not None:
                meta.source = piece.location
                return meta
        return None


def _normalise(data: dict) -> dict:
    """Label keys ("Guidance Scale", "LoRA 1") to Fooocus's own keys; own keys win, as in Fooocus."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        norm = str(key).strip().lower().replace(" ", "_")
        lora = re.fullmatch(r"lora_(\d+)", norm)
        norm = f"lora_combined_{lora.group(1)}" if lora else norm
        if norm not in out or key == norm:
            out[norm] = value
    return out


def _named(meta: GenerationMetadata, kind: str, name: Any, digest: Any = None) -> None:
    name = to_text(name)
    if name and name not in _UNSET and name != "Default (model)":
        meta.resources.append(Resource(kind, name, to_text(digest)))


def _from_fooocus(record: dict) -> GenerationMetadata | None:
    meta = GenerationMetadata(generator="fooocus")
    meta.prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
    meta.negative_prompt = record.get("negative_prompt") if isinstance(record.get("negative_prompt"), str) else None
    meta.seed = seed_text(record.get("seed"))
    meta.steps = to_int(record.get("steps"))
    if meta.steps is None:
        meta.steps = _PERFORMANCE_STEPS.get(str(record.get("performance", "")).strip().lower())
    meta.cfg_scale = to_float(record.get("guidance_scale", record.get("cfg_scale")))
    meta.sampler = to_text(record.get("sampler"))
    meta.scheduler = to_text(record.get("scheduler"))
    model = to_text(record.get("base_model"))
    meta.model = model if model not in _UNSET else None
    meta.model_hash = to_text(record.get("base_model_hash"))
    _named(meta, "checkpoint", meta.model, meta.model_hash)
    _named(meta, "refiner", record.get("refiner_model"), record.get("refiner_model_hash"))
    _named(meta, "vae", record.get("vae"))
    loras = record.get("loras")
    if isinstance(loras, list) and loras:  # [[name, weight, hash]]: the complete list, with hashes
        for entry in loras:
            if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str) and entry[0] not in _UNSET:
                weight = to_float(entry[1]) if len(entry) > 1 else None
                digest = to_text(entry[2]) if len(entry) > 2 else None
                meta.resources.append(Resource("lora", entry[0], digest, weight))
    else:
        for key in sorted((k for k in record if k.startswith("lora_combined_")), key=lambda k: to_int(k[14:]) or 0):
            resource = _combined_lora(record[key])
            if resource is not None:
                meta.resources.append(resource)
    for key in (
        "version",
        "styles",
        "performance",
        "resolution",
        "sharpness",
        "adm_guidance",
        "refiner_switch",
        "full_prompt",
        "full_negative_prompt",
        "fooocus_v2_expansion",
        "created_by",
        "metadata_scheme",
    ):
        if record.get(key) not in (None, ""):
            meta.extra[key] = record[key]
    return meta if meta.richness() else None


def _combined_lora(value: Any) -> Resource | None:
    """ "name : weight", or "enabled : name : weight" (Fooocus 2.3+)."""
    if not isinstance(value, str):
        return None
    parts = [p.strip() for p in value.split(" : ")]
    if len(parts) == 3:
        if parts[0] == "False":
            return None
        parts = parts[1:]
    if len(parts) != 2 or parts[0] in _UNSET:
        return None
    return Resource("lora", parts[0], None, to_float(parts[1]))


def _from_infotext(text: str) -> GenerationMetadata | None:
    from audit.meta.a1111 import parse_infotext  # the infotext grammar lives there

    meta = parse_infotext(text)
    if meta is None:
        return None
    params = meta.extra.get("parameters") if isinstance(meta.extra.get("parameters"), dict) else {}
    if "Version" in params and "fooocus" not in str(params["Version"]).lower():
        return None
    meta.generator = "fooocus"
    if isinstance(params.get("Raw prompt"), str):
        meta.extra["full_prompt"], meta.prompt = meta.prompt, params["Raw prompt"]
    if isinstance(params.get("Raw negative prompt"), str):
        meta.extra["full_negative_prompt"], meta.negative_prompt = meta.negative_prompt, params["Raw negative prompt"]
    weights = {}
    for item in str(params.get("Lora weights", "")).split(", "):
        name, _, weight = item.rpartition(": ")
        if name:
            weights[name] = to_float(weight)
    for resource in meta.resources:
        if resource.kind == "lora" and resource.weight is None:
            resource.weight = weights.pop(resource.name, None)
    meta.resources.extend(Resource("lora", name, None, weight) for name, weight in weights.items())
    meta.resources = [r for r in meta.resources if not (r.kind == "vae" and r.name == "Default (model)")]
    return meta


def _from_ruined(data: dict) -> GenerationMetadata | None:
    meta = GenerationMetadata(generator="ruined-fooocus")
    meta.prompt = (
        data.get("Prompt", data.get("prompt")) if isinstance(data.get("Prompt", data.get("prompt")), str) else None
    )
    meta.negative_prompt = data.get("Negative") if isinstance(data.get("Negative"), str) else None
    meta.seed = seed_text(data.get("seed"))
    meta.steps = to_int(data.get("steps"))
    meta.cfg_scale = to_float(data.get("cfg"))
    meta.sampler = to_text(data.get("sampler_name"))
    meta.scheduler = to_text(data.get("scheduler"))
    meta.model = to_text(data.get("base_model_name"))
    meta.model_hash = to_text(data.get("base_model_hash"))
    _named(meta, "checkpoint", meta.model, meta.model_hash)
    _named(meta, "refiner", data.get("refiner_model_name"))
    loras = data.get("loras")
    if isinstance(loras, list):
        for entry in loras:
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str):
                weight, _, name = entry[1].partition(" - ")  # [hash, "weight - name"]
                if name and name != "None":
                    meta.resources.append(Resource("lora", name, to_text(entry[0]) or None, to_float(weight)))
    elif isinstance(loras, str):  # "Loras:<name:weight>,<name:weight>"
        for name, weight in re.findall(r"<([^<>]+):([^:<>]+)>", loras):
            meta.resources.append(Resource("lora", name, None, to_float(weight)))
    for key in ("width", "height", "clip_skip", "denoise", "start_step", "switch"):
        if data.get(key) is not None:
            meta.extra[key] = data[key]
    return meta if meta.richness() else None


def _from_mre(data: dict, software: str) -> GenerationMetadata | None:
    """Fooocus-MRE (MoonRide303) writes a ``Comment`` chunk (EXIF UserComment in JPEG) of its own
    keys: ``prompt``, ``negative_prompt``, ``real_prompt`` (styles applied), ``seed``, ``sampler``,
    ``scheduler``, ``steps``, ``cfg``, ``base_model``, ``refiner_model``, LoRAs as ``l1``..``l5``
    with weights ``w1``..``w5`` ("None" when unused), ``software`` "Fooocus-MRE v…"."""
    meta = _from_fooocus({**_normalise(data), "cfg_scale": data.get("cfg")})
    if meta is None:
        return None
    meta.generator = "fooocus-mre"
    for i in range(1, 6):
        name = to_text(data.get(f"l{i}"))
        if name and name not in _UNSET:
            meta.resources.append(Resource("lora", name, None, to_float(data.get(f"w{i}"))))
    for key in ("real_prompt", "real_negative_prompt", "base_clip_skip", "switch"):
        if data.get(key) not in (None, ""):
            meta.extra[key] = data[key]
    meta.extra["software"] = software
    return meta
