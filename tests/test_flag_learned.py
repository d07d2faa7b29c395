"""A flagger that learns from review decisions (``audit.flag.learned``), in the toy world.

Also: seed neighbours meet the rest of a category's flag themselves (``screen_seed_signals``).

A loose policy (an explicit image threshold low enough that orange and purple triangles, red
squares and red stars fire) is flagged; a simulated reviewer decides 40 findings truthfully
through the real import path; the next ``audit flag`` trains a model per category on those
decisions and reaches precision and recall >= 0.97 on the items the decisions did not cover.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import PngImagePlugin

import audit
from audit.findings.store import signal_dicts

pytest.importorskip("open_clip")
from audit.embed.toy_model import TOY_CHECKPOINT

pytestmark = pytest.mark.skipif(not Path(TOY_CHECKPOINT).is_file(), reason="toy-shapes checkpoint not in the package")

POLICY = """[policy]
name = "loose"
version = "1"
[[category]]
id = "red-triangles"
severity = "critical"
[[concept]]
id = "red-triangle"
texts = ["a red triangle"]
templates = ["{}", "a photo of {}"]
image_threshold = 0.45
prompt_threshold = 0.99
[[flag]]
category = "red-triangles"
any = ["concept:red-triangle/image"]
"""


def test_fit_logistic_and_minimums():
    from audit.flag import learned as lm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    y = (x[:, 0] + 0.1 * rng.normal(size=200) > 0).astype(int)
    w, b = lm.fit_logistic(x, y)
    assert ((x @ w + b >= 0) == (y == 1)).mean() > 0.95
    p, r = lm.cross_validate(x, y)
    assert p > 0.9 and r > 0.9
    labels = {(f"i{k}", "c"): (1 if k < lm.MIN_CONFIRMED else 0, k) for k in range(lm.MIN_CONFIRMED + 4)}
    have = {i for i, _ in labels}
    assert lm.usable_labels(labels, {"c"}, have) == {}  # too few dismissals: no model
    labels[("i99", "c")] = (0, 99)
    assert set(lm.usable_labels(labels, {"c"}, have | {"i99"})) == {"c"}
    assert lm.labels_fingerprint({}) == ""
    img = {"concept:x", "concept:x/image"}
    assert lm.without_image_evidence({"concept:x", "concept:x/image", "rule:r"}, img) == {"rule:r"}
    assert lm.without_image_evidence({"concept:x", "concept:x/prompt"}, img) == {"concept:x", "concept:x/prompt"}


def test_seed_neighbours_must_meet_the_rest_of_the_flag_and_dismissals_count(tmp_path):
    from audit.findings.store import Signal
    from audit.flag.combine import fires_with_image_evidence, image_evidence_names
    from audit.flag.seeds import screen_seed_signals
    from audit.policy import load_policy

    toy = load_policy(Path(__file__).resolve().parents[1] / "samples" / "policy" / "toy.toml")
    assert image_evidence_names(toy, "red-triangle-prompted") == {"concept:red-triangle", "concept:red-triangle/image"}
    # the combination needs the prompt rule too: the seed stands in for the image part only
    assert not fires_with_image_evidence(toy, "red-triangle-prompted", set())
    assert fires_with_image_evidence(toy, "red-triangle-prompted", {"rule:triangle-words"})
    assert fires_with_image_evidence(toy, "red-triangles", set())
    sig = Signal("seed_neighbor", "seed:x", 0.95, 0.9, 0.05, {})
    made = [
        ("a", "red-triangle-prompted", sig),
        ("b", "red-triangle-prompted", sig),
        ("c", "red-triangles", sig),
        ("d", "red-triangles", sig),
    ]
    keep, dropped = screen_seed_signals(
        toy,
        made,
        {"a": {"rule:triangle-words"}, "b": set()},
        {("c", "red-triangles"): (0, 7)},
        {("d", "red-triangles"): 0.97},
    )
    assert [(i, c) for i, c, _ in keep] == [("a", "red-triangle-prompted")]
    assert dropped == {"flag_not_met": 1, "dismissed": 1, "nearer_dismissed": 1}


@pytest.mark.slow
def test_after_40_truthful_decisions_the_next_flag_is_precise_and_complete(tmp_path):
    from audit.embed import toyworld as tw
    from audit.review import import_decisions

    rng = random.Random(21)
    classes = (
        [("red", "triangle")] * 70
        + [("orange", "triangle")] * 25
        + [("purple", "triangle")] * 25
        + [("red", "square")] * 25
        + [("red", "star")] * 25
    )
    scenes = [tw.random_scene(rng, colour=c, shape=s) for c, s in classes]
    while len(scenes) < 260:
        s = tw.random_scene(rng)
        if (s.colour, s.shape) != ("red", "triangle"):
            scenes.append(s)
    archive = tmp_path / "archive"
    archive.mkdir()
    for i, s in enumerate(scenes):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"generation number {i}\nSteps: 20, Seed: {i}, Size: 64x64")
        tw.draw(s, px=64).save(archive / f"{i:04d}_{s.colour}_{s.shape}.png", pnginfo=info)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    a = audit.open(tmp_path / "index", create=True)
    a.crawl([archive], workers=0)
    a.embed(model="toy-shapes", workers=0)
    first = a.flag(policy)
    items = {r["item_id"]: Path(r["uri"]).stem.split("_")[1:3] for r in a.items().to_dicts()}
    truth = {i for i, cs in items.items() if cs == ["red", "triangle"]}

    def found(own_evidence: bool = False):
        """Items found; ``own_evidence``: less the "via cluster" candidates whose only signal is
        their cluster's flag (cluster flagging on member evidence is issue 13's other half)."""
        return {
            r["item_id"]
            for r in a.findings().to_dicts()
            if r["category"] == "red-triangles"
            and not (own_evidence and {x["kind"] for x in r["signals"]} == {"cluster"})
        }

    before, before_own = found(), found(own_evidence=True)
    assert len(before - truth) >= 10, "the loose policy must make false alarms for the test to mean anything"
    # a reviewer decides 40 findings of the first scan, truthfully, through the import path
    rows = sorted(a.findings().to_dicts(), key=lambda r: r["finding_id"])[:40]
    decisions = tmp_path / "decisions.json"
    decisions.write_text(
        json.dumps(
            [
                {
                    "finding_id": r["finding_id"],
                    "decision": "confirm" if r["item_id"] in truth else "dismiss",
                    "by": "sim",
                }
                for r in rows
            ]
        )
    )
    import_decisions(a.catalog.conn, decisions)
    second = a.flag(policy)
    assert second.mode == "full" and "learned" in second.why
    rec = second.thresholds["learned:red-triangles"]
    assert rec["decisions"]["confirmed"] + rec["decisions"]["dismissed"] == 40
    assert rec["cv_precision"] is not None and rec["cv_recall"] is not None
    decided = {r["item_id"] for r in rows}
    after = found(own_evidence=True) - decided
    overall = found() - decided
    rest_truth = truth - decided
    tp = len(after & rest_truth)
    precision, recall = tp / max(1, len(after)), tp / len(rest_truth)
    own0 = before_own - decided
    p0 = len(own0 & rest_truth) / max(1, len(own0))
    p_all = len(overall & rest_truth) / max(1, len(overall))
    print(
        f"first scan precision {p0:.3f} (own evidence); after 40 decisions, with via-cluster candidates {p_all:.3f}; own evidence: precision {precision:.3f} recall {recall:.3f}; "
        f"{rec}; {second.detectors.get('learned')}"
    )
    assert precision >= 0.97 and recall >= 0.97, (precision, recall, rec, second.detectors.get("learned"))
    # review candidates included: the learned model also decides which cluster members are candidates
    assert p_all >= 0.97 and len(overall & rest_truth) >= 0.97 * len(rest_truth), (p_all, second.detectors)
    # the learned model shows in the findings' signals and in the report, with how it was derived
    sigs = [x for r in a.findings().to_dicts() for x in signal_dicts(r["signals"]) if x["kind"] == "learned"]
    assert sigs and all(x["detail"]["decisions"] == rec["decisions"] for x in sigs)
    rep = a.report(tmp_path / "report", formats=["html"])
    html = next((tmp_path / "report").glob("*.html")).read_text()
    assert rep and "Learned from decisions" in html
    assert (
        f"red-triangles: {rec['decisions']['confirmed']} confirmed, {rec['decisions']['dismissed']} dismissed" in html
    )
    # the recorded run says how the model was derived; an unchanged next run keeps it
    third = a.flag(policy)
    assert third.mode == "unchanged" and third.thresholds["learned:red-triangles"] == rec
    assert first.thresholds.get("learned:red-triangles") is None
    a.close()
