"""Combination flags and threshold calibration (synthetic embeddings, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.policy import load_policy
from audit.policy.calibrate import NEUTRAL_CAPTIONS, calibrate_threshold, ensemble
from audit.policy.combine import (
    concept_signal_names,
    evaluate_flag,
    evaluate_flags,
    suppress_concepts,
)
from audit.policy.schema import Flag

TOY = Path(__file__).resolve().parents[1] / "samples" / "policy" / "toy.toml"


@pytest.fixture(scope="module")
def toy():
    return load_policy(TOY)


def categories(hits):
    return [hit.category for hit in hits]


def test_image_concept_and_prompt_rule_fire_only_together(toy):
    image = concept_signal_names("red-triangle", image=True)
    assert image == {"concept:red-triangle", "concept:red-triangle/image"}
    both = evaluate_flags(toy, image | {"rule:triangle-words"})
    assert categories(both) == ["red-triangles", "red-triangle-prompted"]
    prompted = both[1]
    assert prompted.signals == ("concept:red-triangle/image", "rule:triangle-words")
    assert prompted.flags == ("red-triangle-prompted",)
    assert categories(evaluate_flags(toy, image)) == ["red-triangles"]
    assert evaluate_flags(toy, {"rule:triangle-words"}) == []
    # a concept seen only on the prompt embedding is not the image concept
    prompt_only = concept_signal_names("red-triangle", prompt=True) | {"rule:triangle-words"}
    assert "red-triangle-prompted" not in categories(evaluate_flags(toy, prompt_only))


def test_results_carry_severity_and_no_view(toy):
    (hit,) = evaluate_flags(toy, {"concept:red-triangle/image"})
    assert hit.severity == "critical" and hit.no_view


def test_all_any_none_semantics():
    flag = Flag("f", "c", all=("a:x|a:y", "b:z"), any=("c:1", "c:2", "c:3"), none=("d:no",), min_any=2)
    assert evaluate_flag(flag, {"a:y", "b:z", "c:1", "c:3"}) == ("a:y", "b:z", "c:1", "c:3")
    assert evaluate_flag(flag, {"a:y", "b:z", "c:1"}) is None  # min_any
    assert evaluate_flag(flag, {"b:z", "c:1", "c:2"}) is None  # all
    assert evaluate_flag(flag, {"a:x", "b:z", "c:1", "c:2", "d:no"}) is None  # none
    wildcard = Flag("w", "c", any=("hash:*",))
    assert evaluate_flag(wildcard, {"hash:bank-a", "rule:r"}) == ("hash:bank-a",)
    assert evaluate_flag(wildcard, {"rule:r"}) is None


def test_hash_list_category_fires_via_implicit_flag(toy):
    assert categories(evaluate_flags(toy, {"hash:toy-known"})) == ["known-match"]
    assert categories(evaluate_flags(toy, {"hash:toy-known": 3})) == ["known-match"]


def test_negative_concept_suppression(toy):
    signals = concept_signal_names("red-triangle", image=True) | {"rule:triangle-words"}
    kept = suppress_concepts(signals, toy.negative_concepts[0].suppresses)
    assert kept == {"rule:triangle-words"}
    assert evaluate_flags(toy, kept) == []


def test_default_policy_combinations():
    policy = load_policy(None)
    assert categories(evaluate_flags(policy, {"rule:minor-age", "rule:sexual-terms"}))[0] == "sexual-minors"
    assert "sexual-minors" not in categories(evaluate_flags(policy, {"rule:minor-age"}))
    assert categories(evaluate_flags(policy, {"rule:sexual-terms"})) == ["sexual"]
    hits = evaluate_flags(policy, {"names:real-persons", "concept:sexual", "concept:sexual/image"})
    assert categories(hits)[:1] == ["sexual-real-person"]
    assert categories(evaluate_flags(policy, {"prompt:overlong"})) == ["prompt-evasion"]
    assert categories(evaluate_flags(policy, {"hash:any-bank"})) == ["known-match"]


# ------------------------------------------------------------------ calibration


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic(dim=64, seed=0):
    rng = np.random.default_rng(seed)
    concept = unit(rng.normal(size=dim))
    neutral = unit(rng.normal(size=(len(NEUTRAL_CAPTIONS), dim)))
    # images: background near random directions; positives near the concept
    background = unit(neutral[rng.integers(0, len(neutral), 400)] + 0.6 * rng.normal(size=(400, dim)) / np.sqrt(dim))
    positives = unit(concept + 0.6 * rng.normal(size=(30, dim)) / np.sqrt(dim))
    return concept, neutral, background, positives


def test_neutral_captions_are_a_fixed_benign_set():
    assert len(NEUTRAL_CAPTIONS) >= 100
    assert len(set(NEUTRAL_CAPTIONS)) == len(NEUTRAL_CAPTIONS)


def test_reference_method_is_max_plus_margin():
    concept, neutral, _, _ = synthetic()
    threshold, explanation = calibrate_threshold(concept, neutral, method="reference", margin=0.05)
    assert threshold == pytest.approx(float((neutral @ concept).max()) + 0.05)
    assert explanation.startswith("reference:") and "margin 0.05" in explanation
    # near misses raise the bar
    near = unit(concept + 0.3 * unit(np.ones_like(concept)))
    higher, _ = calibrate_threshold(concept, neutral, near[None], method="reference")
    assert higher > threshold
    assert calibrate_threshold(concept, neutral)[0] == pytest.approx(float((neutral @ concept).max()) + 0.02)


def test_reference_stats_method():
    concept, neutral, _, _ = synthetic()
    scores = neutral @ concept
    threshold, explanation = calibrate_threshold(concept, neutral, method="reference-stats", percentile=95, k=2)
    assert threshold == pytest.approx(np.percentile(scores, 95) + 2 * scores.std())
    assert "std" in explanation


def test_samples_method_separates_concept_from_background():
    concept, neutral, background, positives = synthetic()
    samples = np.concatenate([background, positives])
    threshold, explanation = calibrate_threshold(concept, neutral, None, samples)
    assert explanation.startswith("samples:")
    assert (positives @ concept >= threshold).mean() >= 0.95
    assert (background @ concept >= threshold).mean() <= 0.01
    # prompt-ensembled input (t, d) works too
    stacked = np.stack([concept, concept])
    assert calibrate_threshold(stacked, neutral, None, samples)[0] == pytest.approx(threshold)
    assert np.allclose(ensemble(stacked), concept)


def test_samples_method_falls_back_without_background():
    concept, neutral, _, positives = synthetic()
    threshold, explanation = calibrate_threshold(concept, neutral, None, positives[:5], method="samples")
    assert explanation.startswith("reference (only")
    with pytest.raises(ValueError):
        calibrate_threshold(concept, neutral, method="bogus")
