"""Placeholders in a hosted generator's own record (TensorArt's ``generation_data`` with seed
"-1" and no sampler) filled from the ComfyUI graph that ran, and where each field came from
(``extra["field_sources"]``, stored with the item in the catalog's ``extra`` JSON)."""

from __future__ import annotations

import io
import json

from PIL import Image, ImageDraw
from tests.meta_fixtures import png_chunk

import audit
from audit.meta import extract
from audit.meta.field_sources import is_placeholder

GRAPH = {
    "4": {"class_type": "ECHOCheckpointLoaderSimple", "inputs": {"ckpt_name": "toyShapes_v1.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue circle on a black background", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 987654321012,
            "steps": 28,
            "cfg": 6.0,
            "sampler_name": "euler_ancestral",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
}


def record(**over) -> dict:
    data = {
        "prompt": "a blue circle on a black background",
        "negativePrompt": "blurry",
        "width": 512,
        "height": 512,
        "seed": "-1",
        "steps": 28,
        "cfgScale": 6,
        "clipSkip": 2,
        "baseModel": {"modelId": "600000000000000001", "modelFileName": "Toy Shapes v1", "hash": "AB12CD34"},
    }
    data.update(over)
    return data


def tensorart_png(generation_data: dict | str, prompt: dict | str | None = GRAPH) -> bytes:
    image = Image.new("RGB", (32, 32), "black")
    ImageDraw.Draw(image).ellipse((6, 6, 26, 26), fill="blue")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    text = generation_data if isinstance(generation_data, str) else json.dumps(generation_data)
    chunks = [
        png_chunk(b"tEXt", b"generation_data\x00" + text.encode() + b"\x00")
    ]  # NUL-terminated, as TensorArt writes
    if prompt is not None:
        chunks.append(
            png_chunk(b"tEXt", b"prompt\x00" + (prompt if isinstance(prompt, str) else json.dumps(prompt)).encode())
        )
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + b"".join(chunks) + data[iend:]


def test_placeholder_seed_and_missing_sampler_come_from_the_graph():
    result = extract(tensorart_png(record()))
    best = result.best
    assert best.generator == "tensorart"
    assert (best.seed, best.sampler, best.scheduler) == ("987654321012", "euler_ancestral", "normal")
    assert (best.prompt, best.steps, best.cfg_scale, best.model, best.model_hash) == (
        "a blue circle on a black background",
        28,
        6.0,
        "Toy Shapes v1",
        "AB12CD34",
    )  # its own record's values
    sources = best.extra["field_sources"]
    assert sources["seed"] == sources["sampler"] == sources["scheduler"] == "png:tEXt:prompt"
    assert sources["prompt"] == sources["model"] == sources["model_hash"] == "png:tEXt:generation_data"
    assert best.extra["placeholders"] == {"seed": "-1"}


def test_real_values_in_the_own_record_win_over_the_graph():
    best = extract(tensorart_png(record(seed="42", samplerName="Euler a"))).best
    assert (best.seed, best.sampler) == ("42", "Euler a")
    assert best.extra["field_sources"]["seed"] == "png:tEXt:generation_data"
    assert "placeholders" not in best.extra


def test_without_a_graph_the_placeholder_stays_and_is_attributed():
    best = extract(tensorart_png(record(), prompt=None)).best
    assert best.seed == "-1" and best.sampler is None
    assert best.extra["field_sources"]["seed"] == "png:tEXt:generation_data"
    assert "placeholders" not in best.extra


def test_broken_graph_keeps_the_record_and_says_why():
    result = extract(tensorart_png(record(), prompt='{"3": {"class_type": "KSampler", "inputs": {'))
    assert result.best.generator == "tensorart" and result.best.seed == "-1"
    assert any("not valid JSON" in e for e in result.errors)


def test_every_result_names_its_field_sources():
    graph_only = extract(tensorart_png(record(), prompt=GRAPH).replace(b"generation_data", b"generation_xxxx"))
    assert graph_only.best.generator == "comfyui"
    assert set(graph_only.best.extra["field_sources"].values()) == {"png:tEXt:prompt"}


def test_placeholder_rules():
    assert is_placeholder("seed", "-1") and is_placeholder("seed", None) and not is_placeholder("seed", "0")
    assert (
        is_placeholder("sampler", "")
        and is_placeholder("sampler", "undefined")
        and not is_placeholder("sampler", "euler")
    )
    assert is_placeholder("steps", 0) and not is_placeholder("steps", 1) and is_placeholder("cfg_scale", -1.0)
    assert not is_placeholder("negative_prompt", "") and is_placeholder("prompt", None)  # an empty negative is real


def test_field_sources_are_stored_with_the_item(tmp_path):
    folder = tmp_path / "hosted"
    folder.mkdir()
    (folder / "tensorart.png").write_bytes(tensorart_png(record()))
    audit.crawl([str(folder)], tmp_path / "idx", workers=0)
    items = audit.open(tmp_path / "idx").items()
    row = items.row(0, named=True)
    assert row["seed"] == "987654321012" and row["sampler"] == "euler_ancestral"
    extra = json.loads(row["extra"])
    assert extra["field_sources"]["seed"] == "png:tEXt:prompt" and extra["placeholders"] == {"seed": "-1"}
