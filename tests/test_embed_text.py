"""Prompt embedding: padding cut to each batch's longest prompt is exact; duplicates once;
bf16 agrees with fp32."""

from __future__ import annotations

import numpy as np
import pytest

from tests.embed_fixtures import random_toy_checkpoint

PROMPTS = [
    "a red circle",
    "a photo of a small blue square on a black background, highly detailed, 4k, trending",
    "star",
    "a yellow triangle",
    "masterpiece, best quality, " * 30,  # longer than the 77-token context: truncated like open_clip
    "",
    "ünïcödé prompt — with dashes and emoji 🟥",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from audit.embed.openclip import load_embedder

    ckpt = random_toy_checkpoint(tmp_path_factory.mktemp("toy") / "toy.safetensors", seed=3)
    return load_embedder("toy-shapes", None, checkpoint=ckpt, precision="fp32")


def test_trimmed_context_equals_full_context(toy):
    import torch

    assert toy._trimmable()
    full = toy.embed_texts(PROMPTS, trim=False)
    trimmed = toy.embed_texts(PROMPTS, trim=True)
    np.testing.assert_allclose(trimmed, full, atol=2e-6)
    # and against open_clip's own encode_text at 77 tokens, one prompt at a time
    for i, p in enumerate(PROMPTS):
        with torch.inference_mode():
            ref = toy.model.encode_text(toy.tokenizer([p]), normalize=True).numpy()[0]
        np.testing.assert_allclose(trimmed[i], ref, atol=2e-6)


def test_batches_are_cut_to_their_longest_prompt(toy, monkeypatch):
    from audit.embed import openclip

    seen = []
    real = openclip.encode_text_prefix

    def spy(model, tokens):
        seen.append(tuple(tokens.shape))
        return real(model, tokens)

    monkeypatch.setattr(openclip, "encode_text_prefix", spy)
    toy.text_batch = 2
    try:
        toy.embed_texts(["a b", "a b c", "a b c d e f g h", "a b c d e f g h i", "x"])
    finally:
        toy.text_batch = 128
    widths = [w for _, w in seen]
    assert max(widths) < 77 and widths == sorted(widths)  # sorted by length, each batch its own width


def test_identical_prompts_encoded_once(toy, monkeypatch):
    calls = []
    real = toy._encode_text
    monkeypatch.setattr(
        toy, "_encode_text", lambda tokens, trimmed: calls.append(len(tokens)) or real(tokens, trimmed=trimmed)
    )
    v = toy.embed_texts(["a red circle"] * 50 + ["a blue star"] * 50)
    assert sum(calls) == 2
    assert v.shape[0] == 100


def test_bf16_matches_fp32_on_toy_prompts(tmp_path):
    from audit.embed.openclip import cpu_supports_bf16, load_embedder

    if not cpu_supports_bf16():
        pytest.skip("no native bf16 on this CPU")
    ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors", seed=4)
    fp32 = load_embedder("toy-shapes", None, checkpoint=ckpt, precision="fp32")
    bf16 = load_embedder("toy-shapes", None, checkpoint=ckpt, precision="bf16")
    cos = np.sum(fp32.embed_texts(PROMPTS) * bf16.embed_texts(PROMPTS), axis=1)
    assert cos.min() >= 0.995, cos
