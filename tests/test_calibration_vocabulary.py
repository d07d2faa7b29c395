"""Threshold calibration against near misses nobody wrote into the policy.

The shipped reference vocabulary is benign and reproducible; the captions a concept names are
left out of its references; and in the toy world, for the concept "a red triangle" with no
contrast texts at all, orange and purple triangles, red squares and red stars land in the
background (none fires) while red triangles still do.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.policy.calibrate import (
    NEUTRAL_CAPTIONS,
    VOCABULARY_FILE,
    names_caption,
    reference_captions,
    reference_vocabulary,
)

ROOT = Path(__file__).resolve().parents[1]


def test_vocabulary_is_shipped_reproducible_broad_and_benign():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_reference_vocabulary.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    vocab = reference_vocabulary()
    assert len(vocab) >= 2000
    groups = {e["group"] for e in vocab}
    assert {
        "people",
        "swimwear-sport",
        "medicine-anatomy",
        "art",
        "cartoon-anime",
        "animals",
        "objects",
        "scenes",
        "text-screenshots",
        "shapes-colours",
    } <= groups
    forbidden = {
        "nude",
        "naked",
        "nudity",
        "sex",
        "sexual",
        "sexy",
        "erotic",
        "porn",
        "lingerie",
        "topless",
        "explicit",
        "gore",
        "abuse",
    }
    for e in vocab:
        words = set(e["caption"].replace("-", " ").split())
        assert not words & forbidden, e
        assert len(e["caption"]) < 90 and e["keys"], e
    assert VOCABULARY_FILE.is_relative_to(ROOT / "audit")  # ships in the package


def test_a_concept_does_not_use_what_it_names_as_background():
    assert names_caption({"red", "triangle"}, [["red"], ["triangle", "triangles"]])
    assert not names_caption({"red", "triangle"}, [["red"], ["star", "stars"]])
    assert not names_caption({"red", "triangle"}, [])
    refs = set(reference_captions(["a red triangle"]))
    assert "a red star on a white background" in refs and "an orange triangle" in refs
    assert not any("red triangle" in r for r in refs)
    minors = set(reference_captions(["a child", "a minor", "a young child"]))
    assert "a young child reading a book" not in minors and "a teenage boy walking a dog" not in minors
    assert "a woman reading a book" in minors and "an elderly man walking a dog" in minors
    assert set(NEUTRAL_CAPTIONS) <= set(reference_captions(["a red triangle"]))


@pytest.fixture(scope="module")
def toy_vectors():
    pytest.importorskip("open_clip")
    from audit.embed import toyworld as tw
    from audit.embed.openclip import load_embedder
    from audit.embed.toy_model import TOY_CHECKPOINT

    if not Path(TOY_CHECKPOINT).is_file():
        pytest.skip("toy-shapes checkpoint not in the package")
    rng = random.Random(11)
    classes = (
        [("red", "triangle")] * 40
        + [("orange", "triangle")] * 30
        + [("purple", "triangle")] * 30
        + [("red", "square")] * 30
        + [("red", "star")] * 30
    )
    scenes = [tw.random_scene(rng, colour=c, shape=s) for c, s in classes]
    while len(scenes) < 300:
        s = tw.random_scene(rng)
        if (s.colour, s.shape) != ("red", "triangle"):
            scenes.append(s)
    emb = load_embedder("toy-shapes")
    vecs = np.asarray(emb.embed_images([tw.draw(s, px=64) for s in scenes]), np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return emb, [(s.colour, s.shape) for s in scenes], vecs


def _policy(tmp_path: Path):
    from audit.policy import load_policy

    p = tmp_path / "p.toml"
    p.write_text(
        '[policy]\nname = "near-miss"\nversion = "1"\n'
        '[[category]]\nid = "red-triangles"\nseverity = "critical"\n'
        '[[concept]]\nid = "red-triangle"\ntexts = ["a red triangle"]\n'
        'templates = ["{}", "a photo of {}", "{} on a white background"]\n'
        '[[flag]]\ncategory = "red-triangles"\nany = ["concept:red-triangle/image"]\n'
    )
    return load_policy(p)


@pytest.mark.slow
def test_near_misses_the_policy_does_not_name_do_not_fire(toy_vectors, tmp_path):
    from audit.flag.base import FlagContext
    from audit.flag.concepts import ConceptDetector

    emb, labels, vecs = toy_vectors
    n = len(labels)
    ctx = FlagContext(
        policy=_policy(tmp_path),
        item_ids=[f"{i:04d}" for i in range(n)],
        prompts=[None] * n,
        negative_prompts=[None] * n,
        md5=[None] * n,
        pdq=[None] * n,
        pdq_quality=[None] * n,
        image_vectors=vecs,
        has_image=np.ones(n, bool),
        prompt_vectors=np.zeros_like(vecs),
        has_prompt=np.zeros(n, bool),
        embedder_factory=lambda: emb,
        sample_vectors=vecs,
    )
    det = ConceptDetector()
    fired = set(det.detect(ctx).signals)
    info = det.vectors.thresholds["red-triangle"]["image"]
    assert info["source"] == "calibrated:samples" and "references" in info["how"]
    truth = {i for i, lab in enumerate(labels) if lab == ("red", "triangle")}
    near = {
        lab: {i for i, x in enumerate(labels) if x == lab}
        for lab in [("orange", "triangle"), ("purple", "triangle"), ("red", "square"), ("red", "star")]
    }
    for lab, rows in near.items():
        assert not fired & rows, (lab, sorted(fired & rows), info)
    assert len(fired & truth) >= 0.95 * len(truth), info
    assert len(fired - truth) == 0, info
    # the same samples with only the ~100 neutral captions as references: near misses do fire
    from audit.policy.calibrate import calibrate_threshold

    c = det.vectors.image["red-triangle"]
    neutral = np.asarray(emb.embed_texts(list(NEUTRAL_CAPTIONS)), np.float32)
    old, _ = calibrate_threshold(c, neutral, None, vecs, min_foreground=10**9)
    scores = vecs @ c
    assert any((scores[list(rows)] >= old).any() for rows in near.values()), "the test archive has no hard near miss"
