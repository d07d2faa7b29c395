"""bf16 against fp32 on the same inputs: cosine >= 0.995 per item."""

from __future__ import annotations

import numpy as np
import pytest

from audit.embed.openclip import BF16_MIN_COSINE, cpu_supports_bf16, load_embedder
from tests.embed_fixtures import random_toy_checkpoint

needs_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")


def _scenes(n, px):
    from audit.embed import toyworld

    return [toyworld.draw(s, px=px) for s in toyworld.random_scenes(11, n)]


def _check(ckpt_kwargs, model, n, px):
    fp32 = load_embedder(model, **ckpt_kwargs, precision="fp32")
    bf16 = load_embedder(model, **ckpt_kwargs, precision="bf16")
    assert bf16.precision == "bf16"
    imgs = _scenes(n, px)
    cos = np.sum(fp32.embed_images(imgs) * bf16.embed_images(imgs), axis=1)
    assert cos.min() >= BF16_MIN_COSINE, cos
    return cos


@needs_bf16
def test_bf16_toy_shapes_random(tmp_path):
    ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors", seed=5)
    _check({"pretrained": None, "checkpoint": ckpt}, "toy-shapes", 24, 64)


@needs_bf16
def test_bf16_toy_shapes_shipped():
    from audit.embed import toy_model

    if not toy_model.TOY_CHECKPOINT.is_file():
        pytest.skip("the toy-shapes checkpoint has not been shipped yet")
    _check({}, "toy-shapes", 48, 64)


@needs_bf16
@pytest.mark.slow
def test_bf16_vit_b32_random():
    _check({"pretrained": None}, "ViT-B-32", 4, 256)


def test_auto_measures_bf16_against_fp32(tmp_path):
    ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors", seed=6)
    emb = load_embedder("toy-shapes", None, checkpoint=ckpt)  # precision="auto"
    rep = emb.precision_report
    if cpu_supports_bf16():
        assert rep["precision"] == "bf16" and emb.precision == "bf16"
        assert rep["min_cosine_image"] >= BF16_MIN_COSINE and rep["min_cosine_text"] >= BF16_MIN_COSINE
    else:  # auto never picks int8 (its own vector space; test_embed_int8.py)
        assert rep["precision"] == "fp32" and emb.precision == "fp32"


def test_auto_falls_back_to_fp32_when_bf16_disagrees(tmp_path, monkeypatch):
    from audit.embed import openclip

    monkeypatch.setattr(openclip, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(openclip, "BF16_MIN_COSINE", 1.01)  # nothing can pass
    ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors", seed=6)
    emb = openclip.load_embedder("toy-shapes", None, checkpoint=ckpt)
    assert emb.precision == "fp32"
    assert emb.precision_report["precision"] == "fp32" and "fallback" in emb.precision_report
    assert emb.spec.precision == "fp32"  # workers get the fallback too
