"""The toy-world CLIP shipped as model ``toy-shapes``: it loads through open_clip's
ordinary path and really understands its world; its training script still runs."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

import audit.embed.toy_model  # noqa: E402,F401  (registers "toy-shapes" with open_clip)
from audit.embed import toyworld as tw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_SEED = 20240917  # never used by training (seed 0 + its offsets)


@pytest.fixture(scope="module")
def toy():
    """Loaded exactly the way any local checkpoint is: registered config name,
    pretrained=None, then a strict safetensors load."""
    from safetensors.torch import load_file

    from audit.embed.toy_model import TOY_CHECKPOINT

    assert TOY_CHECKPOINT.is_file(), f"shipped checkpoint missing: {TOY_CHECKPOINT}"
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("toy-shapes", pretrained=None)
    model.load_state_dict(load_file(str(TOY_CHECKPOINT)), strict=True)
    model.eval()
    tokenizer = open_clip.get_tokenizer("toy-shapes")
    return model, preprocess, tokenizer


@pytest.fixture(scope="module")
def eval_set(toy):
    """600 fresh scenes (64 px), their image embeddings and labels."""
    model, preprocess, _ = toy
    scenes = tw.random_scenes(EVAL_SEED, 600)
    with torch.no_grad():
        x = torch.stack([preprocess(tw.draw(s)) for s in scenes])
        feats = model.encode_image(x, normalize=True)
    return scenes, feats


def _text(toy, prompts):
    model, _, tokenizer = toy
    with torch.no_grad():
        return model.encode_text(tokenizer(prompts), normalize=True)


# ------------------------------------------------------------------ the world


def test_world_is_deterministic_and_resolution_independent():
    a = tw.random_scenes(7, 20)
    assert a == tw.random_scenes(7, 20)
    assert a != tw.random_scenes(8, 20)
    img = tw.draw(a[0])
    assert img.size == (64, 64) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(tw.draw(a[0])))
    assert tw.draw(a[0], 512).size == (512, 512)
    assert len(tw.CLASSES) == 24 and len(tw.class_prompts()) == 24
    assert tw.class_prompts()[tw.CLASSES.index(("orange", "star"))] == "a photo of an orange star"
    caps = tw.captions(a[0], random.Random(1), 50)
    assert all(a[0].colour in c and a[0].shape in c for c in caps)
    assert len(set(caps)) > 10


def test_training_input_matches_open_clip_preprocess(toy):
    from audit.embed.train_toy import encode_text_trimmed, to_model_input

    model, preprocess, tokenizer = toy
    scenes = tw.random_scenes(3, 4)
    arr = tw.draw_batch(scenes)
    ref = torch.stack([preprocess(tw.draw(s)) for s in scenes])
    assert torch.allclose(to_model_input(arr), ref, atol=1e-5)
    # padding to the batch's longest prompt is exact for the causal text tower
    tokens = tokenizer(["a red star", "a photo of a small blue circle on a black background, 4k, masterpiece"])
    with torch.no_grad():
        assert torch.allclose(encode_text_trimmed(model, tokens), model.encode_text(tokens), atol=1e-5)


# ------------------------------------------------------------------ acceptance


def test_zero_shot_accuracy_on_fresh_images(toy, eval_set):
    scenes, feats = eval_set
    text = _text(toy, tw.class_prompts())
    pred = (feats @ text.T).argmax(dim=1)
    labels = torch.tensor([s.label for s in scenes])
    acc = (pred == labels).float().mean().item()
    print(f"\ntoy-shapes zero-shot accuracy, 24 colour-shape classes, {len(scenes)} fresh images: {acc:.4f}")
    assert len(scenes) >= 500
    assert acc >= 0.95


@pytest.mark.parametrize(
    "query, match, n",
    [
        ("a red triangle", lambda s: (s.colour, s.shape) == ("red", "triangle"), 200),
        ("a blue triangle", lambda s: (s.colour, s.shape) == ("blue", "triangle"), 200),
        (
            "a photo of a red triangle, masterpiece, best quality, 4k",
            lambda s: (s.colour, s.shape) == ("red", "triangle"),
            200,
        ),
        (
            "a green star on a black background",
            lambda s: (s.colour, s.shape, s.background) == ("green", "star", "black"),
            600,
        ),
        (
            "a yellow circle on a white background",
            lambda s: (s.colour, s.shape, s.background) == ("yellow", "circle", "white"),
            600,
        ),
    ],
)
def test_text_retrieval(toy, eval_set, query, match, n):
    scenes, feats = eval_set
    scenes, feats = scenes[:n], feats[:n]
    relevant = sum(map(match, scenes))
    k = min(10, relevant)
    assert k >= 2, "eval set too small for this query"
    scores = feats @ _text(toy, [query])[0]
    top = scores.topk(k).indices.tolist()
    precision = sum(match(scenes[i]) for i in top) / k
    print(f"\n{query!r}: precision@{k} = {precision:.2f} ({relevant} relevant among {n})")
    assert precision >= 0.9


def test_large_drawings_through_open_clip_preprocess(toy):
    """Sample archives draw at 512 px and may re-encode as JPEG; the model's
    own preprocessing brings them back to its world."""
    import io

    from PIL import Image

    model, preprocess, _ = toy
    scenes = tw.random_scenes(EVAL_SEED + 1, 48)
    imgs = []
    for i, s in enumerate(scenes):
        img = tw.draw(s, 512)
        if i % 2:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        imgs.append(preprocess(img))
    with torch.no_grad():
        feats = model.encode_image(torch.stack(imgs), normalize=True)
    pred = (feats @ _text(toy, tw.class_prompts()).T).argmax(dim=1)
    acc = (pred == torch.tensor([s.label for s in scenes])).float().mean().item()
    assert acc >= 0.9


def test_load_toy_model_convenience():
    from audit.embed.toy_model import load_toy_model

    model, preprocess, tokenizer = load_toy_model()
    assert not model.training
    with torch.no_grad():
        t = model.encode_text(tokenizer(["a red circle"]), normalize=True)
        i = model.encode_image(preprocess(tw.draw(tw.random_scenes(1, 1)[0])).unsqueeze(0))
    assert t.shape == (1, 128) and i.shape == (1, 128)


# ------------------------------------------------------------------ the training script


def test_training_script_runs_and_its_output_loads(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "tiny.safetensors"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train_toy_clip.py"),
            "--steps",
            "5",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--seed",
            "3",
            "--eval-images",
            "24",
            "--log-every",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zero-shot accuracy" in proc.stdout
    assert out.is_file()
    model = open_clip.create_model("toy-shapes", pretrained=None)
    model.load_state_dict(load_file(str(out)), strict=True)
