"""A flagger that learns from review decisions (``audit.flag.learned``), in the toy world.

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

pytest.importorskip("open_clip")
from audit.embed.toy_model import TOY_CHECKPOINT  # noqa: E402

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


@pytest.mark.slow
def test_after_40_truthful_decisions_the_next_flag_is_precise_and_complete(tmp_path):
    from audit.embed import toyworld as tw
    from audit.review import import_decisions

    rng = random.Random(21)
    classes = [("red", "triangle")] * 70 + [("orange", "triangle")] * 25 + [("purple", "triangle")] * 25 \
        + [("red", "square")] * 25 + [("red", "star")] * 25
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
        return {r["item_id"] for r in a.findings().to_dicts() if r["category"] == "red-triangles"
                and not (own_evidence and {x["kind"] for x in json.loads(r["signals"])} == {"cluster"})}

    before = found()
    assert len(before - truth) >= 10, "the loose policy must make false alarms for the test to mean anything"
    # a reviewer decides 40 findings of the first scan, truthfully, through the import path
    rows = sorted(a.findings().to_dicts(), key=lambda r: r["finding_id"])[:40]
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps([{"finding_id": r["finding_id"], "decision": "confirm"
                                      if r["item_id"] in truth else "dismiss", "by": "sim"} for r in rows]))
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
    p0 = len((before - decided) & rest_truth) / max(1, len(before - decided))
    p_all = len(overall & rest_truth) / max(1, len(overall))
    print(f"first scan precision {p0:.3f}; with via-cluster candidates {p_all:.3f}; after 40 decisions precision {precision:.3f} recall {recall:.3f}; "
          f"{rec}; {second.detectors.get('learned')}")
    assert precision >= 0.97 and recall >= 0.97, (precision, recall, rec, second.detectors.get("learned"))
    # the recorded run says how the model was derived; an unchanged next run keeps it
    third = a.flag(policy)
    assert third.mode == "unchanged" and third.thresholds["learned:red-triangles"] == rec
    assert first.thresholds.get("learned:red-triangles") is None
    a.close()
