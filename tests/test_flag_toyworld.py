"""Acceptance: the flag stage and the review loop on a toy-world archive, with the shipped
toy-shapes CLIP. "Red triangles" stand in for a prohibited category throughout.

One archive per module (~420 benign coloured shapes, drawn here): 80 red triangles, near
misses (red non-triangles, non-red triangles) and random other shapes; half the prompts name
what the image shows, half are neutral ("generation number N"), so image concepts are judged
on pixels. Three originals with high PDQ quality get resized+re-encoded, re-encoded and
slightly cropped copies. Tests that record decisions work on a copy of the index.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

import audit
from audit.findings.store import signal_dicts
from tests.cli_helper import audit_cli

pytest.importorskip("open_clip")
from audit.embed.toy_model import TOY_CHECKPOINT  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(TOY_CHECKPOINT).is_file(), reason="toy-shapes checkpoint not in the package yet"),
]

TOY = Path(__file__).resolve().parents[1] / "samples" / "policy" / "toy.toml"
RED_TRIANGLES = 80
NEAR_MISSES = 80
OTHERS = 240
PX = 128


def _save(path: Path, img: Image.Image, prompt: str, seed: int, fmt: str = "PNG", **kw) -> None:
    text = f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Size: {img.width}x{img.height}"
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        img.save(path, pnginfo=info)
    else:
        img.save(path, format=fmt, **kw)


def label(uri: str) -> str:
    """'red_triangle' etc. from a file name ``NNNN_colour_shape[...].ext``."""
    parts = Path(uri).stem.split("_")
    return f"{parts[1]}_{parts[2]}"


def _copies(img: Image.Image) -> dict | None:
    """Resized + re-encoded, re-encoded and slightly cropped copies of ``img`` (as decoded
    after saving), or None when PDQ does not hold them within 24 bits of the original.

    PDQ is fragile on flat synthetic shapes (few stable DCT coefficients): the originals are
    picked among those on which it behaves as on photographs, so the test checks the bank
    matching (distance, quality floor, nothing else matched), not PDQ itself."""
    from audit.hashing import pdq_distance, pdq_of_image

    h, quality = pdq_of_image(img)
    if quality < 80:
        return None

    def roundtrip(im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    made = {  # kind: (format, image to save, save options)
        "resized": ("JPEG", img.resize((100, 100), Image.Resampling.BICUBIC), {"quality": 80}),
        "reencoded": ("JPEG", img, {"quality": 60}),
        "cropped": ("PNG", img.crop((2, 2, PX - 2, PX - 2)), {}),
    }
    for fmt, copy, kw in made.values():
        hc, qc = pdq_of_image(roundtrip(copy, fmt, **kw))
        if qc < 50 or pdq_distance(h, hc) > 24:
            return None
    return made


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from audit.embed import toyworld as tw

    root = tmp_path_factory.mktemp("flagworld")
    archive, index = root / "archive", root / "index"
    (archive / "copies").mkdir(parents=True)
    rng = random.Random(5)
    scenes = [tw.random_scene(rng, colour="red", shape="triangle") for _ in range(RED_TRIANGLES)]
    for i in range(NEAR_MISSES):
        if i % 2:
            scenes.append(tw.random_scene(rng, colour="red", shape=rng.choice(["circle", "square", "star"])))
        else:
            scenes.append(
                tw.random_scene(
                    rng, colour=rng.choice(["orange", "purple", "blue", "yellow", "green"]), shape="triangle"
                )
            )
    while len(scenes) < RED_TRIANGLES + NEAR_MISSES + OTHERS:
        s = tw.random_scene(rng)
        if (s.colour, s.shape) != ("red", "triangle"):
            scenes.append(s)
    rng.shuffle(scenes)
    originals, copies = [], []
    for i, s in enumerate(scenes):
        img = tw.draw(s, px=PX)
        prompt = f"a photo of {tw._a(s.colour + ' ' + s.shape)}" if i % 2 == 0 else f"generation number {i}"
        path = archive / f"{i:04d}_{s.colour}_{s.shape}.png"
        _save(path, img, prompt, i)
        if len(originals) < 3 and (s.colour, s.shape) != ("red", "triangle") and s.size > 0.3:
            made = _copies(img)
            if made is not None:
                originals.append(path)
                for kind, (fmt, copy, kw) in made.items():
                    c = archive / "copies" / f"{path.stem}_{kind}.{fmt.lower().replace('jpeg', 'jpg')}"
                    _save(c, copy, f"generation copy {i}", 9000 + i, fmt=fmt, **kw)
                    copies.append(c)
    a = audit.open(index, create=True)
    a.crawl([archive], workers=0)
    a.embed(model="toy-shapes", workers=0)
    a.index()
    items = a.items().to_dicts()
    by_name = {Path(r["uri"]).name: r for r in items}
    a.close()
    return {
        "root": root,
        "archive": archive,
        "index": index,
        "items": items,
        "by_name": by_name,
        "originals": [p.name for p in originals],
        "copies": [p.name for p in copies],
    }


@pytest.fixture(scope="module")
def flagged(toy):
    """The toy policy (thresholds calibrated for the model), flagged once."""
    a = audit.open(toy["index"])
    summary = a.flag(TOY)
    yield a, summary
    a.close()


def _findings(a, category=None, policy_hash=None) -> list[dict]:
    rows = a.findings(policy_hash=policy_hash).to_dicts()
    for r in rows:
        r["signals"] = signal_dicts(r["signals"])
    return [r for r in rows if category is None or r["category"] == category]


def _kinds(f) -> set[str]:
    return {s["kind"] for s in f["signals"]}


def _copy_index(toy, name: str) -> Path:
    dst = toy["root"] / name
    shutil.copytree(toy["index"], dst, ignore=shutil.ignore_patterns("lock"))
    return dst


def _write_policy(dirpath: Path, body: str) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    p = dirpath / "policy.toml"
    p.write_text('[policy]\nname = "acceptance"\nversion = "1"\n' + body)
    return p


CONCEPT = """
[[concept]]
id = "red-triangle"
texts = ["a red triangle"]
templates = ["{}", "a photo of {}", "{} on a white background"]
contrast = ["a red circle", "a red square", "a red star", "a blue triangle", "a green triangle", "a yellow triangle"]
"""


# ------------------------------------------------------------------------------ acceptance


def test_proxy_category_recall_and_precision(toy, flagged):
    a, summary = flagged
    truth = {r["item_id"] for r in toy["items"] if label(r["uri"]) == "red_triangle"}
    assert len(toy["items"]) >= 300 and len(truth) >= RED_TRIANGLES
    direct = {f["item_id"] for f in _findings(a, "red-triangles") if "concept" in _kinds(f)}
    tp = len(direct & truth)
    recall, precision = tp / len(truth), tp / max(1, len(direct))
    assert recall >= 0.95, (recall, precision)
    assert precision >= 0.9, (recall, precision)
    # every signal shows score, threshold and margin; the threshold and how it was found are recorded
    f = next(f for f in _findings(a, "red-triangles") if "concept" in _kinds(f))
    s = next(s for s in f["signals"] if s["kind"] == "concept")
    assert s["name"] == "concept:red-triangle/image" and s["detail"]["space"] == "image"
    assert s["margin"] == pytest.approx(s["score"] - s["threshold"], abs=1e-5) and s["margin"] >= 0
    t = json.loads(a.catalog.conn.execute("SELECT thresholds FROM flag_runs ORDER BY run_id DESC").fetchone()[0])
    assert t["red-triangle"]["image"]["source"] == "calibrated:samples"
    assert t["red-triangle"]["image"]["value"] == pytest.approx(s["threshold"])
    assert summary.thresholds["red-triangle"]["prompt"]["source"] == "calibrated:reference"
    assert all(f["severity"] == "critical" for f in _findings(a, "red-triangles"))


def test_combination_fires_only_when_image_concept_and_prompt_rule_hold(toy, flagged):
    a, _ = flagged
    prompts = {r["item_id"]: r["prompt"] or "" for r in toy["items"]}
    image_hit = {
        f["item_id"]
        for f in _findings(a, "red-triangles")
        if any(s["name"] == "concept:red-triangle/image" for s in f["signals"])
    }
    says_triangle = {i for i, p in prompts.items() if "triangle" in p.lower()}
    found = _findings(a, "red-triangle-prompted")
    combined = {f["item_id"]: f for f in found if "combination" in _kinds(f)}
    assert set(combined) == image_hit & says_triangle
    # the rest of the category are review candidates pulled in by their cluster, marked so
    assert all(_kinds(f) == {"cluster"} for f in found if f["item_id"] not in combined)
    assert image_hit - says_triangle and says_triangle - image_hit  # both "only one holds" cases exist
    for f in combined.values():
        names = {s["name"] for s in f["signals"]}
        assert {"concept:red-triangle/image", "rule:triangle-words"} <= names
        assert "combination" in _kinds(f)
        rule = next(s for s in f["signals"] if s["name"] == "rule:triangle-words")
        assert rule["detail"]["text"].lower().startswith("triangle")


def test_pdq_bank_catches_copies_and_nothing_else(toy, tmp_path):
    by_name = toy["by_name"]
    assert len(toy["originals"]) == 3
    bank = tmp_path / "bank" / "known.csv"
    bank.parent.mkdir()
    bank.write_text(
        "hash_type,hash,label\n"
        + "".join(f"pdq,{by_name[n]['pdq']},original-{k}\n" for k, n in enumerate(toy["originals"]))
    )
    policy = _write_policy(
        tmp_path / "bank",
        """
[[category]]
id = "known-match"
severity = "critical"
no_view = true

[[hashlist]]
id = "known"
path = "known.csv"
category = "known-match"
pdq_max_distance = 31
""",
    )
    with audit.open(toy["index"]) as a:
        a.flag(policy)
        found = {Path(f["uri"]).name: f for f in _findings(a, "known-match")}
    expected = set(toy["originals"]) | set(toy["copies"])
    assert set(found) == expected
    for name, f in found.items():
        (s,) = [s for s in f["signals"] if s["kind"] == "hash_match"]
        assert 0 <= s["score"] <= 31 and s["margin"] == 31 - s["score"]
        stem = name.split("_resized")[0].split("_reencoded")[0].split("_cropped")[0].removesuffix(".png")
        assert s["detail"]["label"] == f"original-{[Path(o).stem for o in toy['originals']].index(stem)}"


def test_cluster_flags_rest_on_member_evidence_and_list_only_close_candidates(toy, flagged):
    """The toy policy: a semantic cluster is flagged for a category exactly when enough of its
    members (count and share) are flagged directly; its "via cluster" findings are members close
    to the concept (within the margin below the threshold, nearer the flagged members), ranked,
    at most ``cluster_candidates``; the rest is counted on the cluster."""
    from audit.flag.runner import FlagOptions, concept_scores

    a, _ = flagged
    opts = FlagOptions()
    ph = audit.load_policy(TOY).content_hash  # other tests flag other policies on this index
    scores = {r["item_id"]: r for r in concept_scores(a, TOY).to_dicts() if r["concept"] == "red-triangle"}
    findings = _findings(a, policy_hash=ph)
    direct = {(f["item_id"], f["category"]) for f in findings if _kinds(f) - {"cluster", "seed_neighbor"}}
    via = [f for f in findings if _kinds(f) == {"cluster"}]
    n_flagged = 0
    for cl in a.clusters(kind="semantic", policy_hash=ph).to_dicts():
        members = cl["members"]
        review = json.loads(cl["review"] or "{}")
        for cat in ("red-triangles", "red-triangle-prompted"):
            n = sum((m, cat) in direct for m in members)
            should = n >= opts.cluster_min_flagged and n / len(members) >= opts.cluster_share
            assert (cat in (cl["categories"] or [])) == should, (cl["cluster_id"], cat, n, len(members))
            if should:
                n_flagged += 1
                unit = review[cat]
                assert unit["flagged"] == n and len(unit["fired"]) == min(n, 50)
                assert len(unit["candidates"]) <= opts.cluster_candidates
                assert unit["flagged"] + len(unit["candidates"]) + unit["rest"] == len(members)
    assert n_flagged >= 1
    for f in via:
        (s,) = [s for s in f["signals"] if s["kind"] == "cluster"]
        d = s["detail"]
        assert d["reason"] == "members" and d["flagged_members"] >= opts.cluster_min_flagged
        assert d["to_flagged"] > d["to_unflagged"]
        own = scores[f["item_id"]]
        assert own["image_score"] >= own["image_threshold"] - opts.cluster_margin
        assert s["score"] == pytest.approx(own["image_score"], abs=1e-4) and s["margin"] >= 0
    # precision of the "via cluster" candidates: red triangles (none of the near misses)
    names = {r["item_id"]: Path(r["uri"]).name for r in toy["items"]}
    wrong = [names[f["item_id"]] for f in via if label(names[f["item_id"]]) != "red_triangle"]
    assert not wrong, wrong


def test_centroid_alone_never_flags_a_cluster(toy, flagged, tmp_path):
    """A threshold that the best cluster's centroid crosses while fewer members than the
    minimum fire: the cluster is not flagged and no member is a "via cluster" finding."""
    from audit.flag.runner import concept_scores

    a, _ = flagged
    base = _write_policy(
        tmp_path / "c0",
        '[[category]]\nid = "red-triangles"\nseverity = "critical"\n'
        + CONCEPT
        + "image_threshold = 0.5\nprompt_threshold = 1.0\n"
        + '[[flag]]\ncategory = "red-triangles"\nany = ["concept:red-triangle/image"]\n',
    )
    a.flag(base)
    scores = {r["item_id"]: r["image_score"] for r in concept_scores(a, base).to_dicts()}
    best = max(
        a.clusters(kind="semantic").to_dicts(), key=lambda c: json.loads(c["concept_scores"])["red-triangle"]["score"]
    )
    centroid = json.loads(best["concept_scores"])["red-triangle"]["score"]
    members = best["members"]
    above = sum(scores[m] >= centroid - 1e-4 for m in members)
    policy = _write_policy(
        tmp_path / "c1",
        '[[category]]\nid = "red-triangles"\nseverity = "critical"\n'
        + CONCEPT
        + f"image_threshold = {centroid - 1e-4!r}\nprompt_threshold = 1.0\n"
        + '[[flag]]\ncategory = "red-triangles"\nany = ["concept:red-triangle/image"]\n',
    )
    a.flag(policy, cluster_min_flagged=above + 1)
    cl = next(c for c in a.clusters(kind="semantic").to_dicts() if set(c["members"]) == set(members))
    assert json.loads(cl["concept_scores"])["red-triangle"]["margin"] >= 0  # the centroid fires the concept
    assert cl["flagged"] == 0 and cl["review"] is None
    assert not [f for f in _findings(a, "red-triangles") if "cluster" in _kinds(f)]


def test_confirmed_seed_brings_in_neighbours_dismissed_not_new(toy, flagged, tmp_path):
    index = _copy_index(toy, "seeds")
    by_name = toy["by_name"]
    with audit.open(index) as a:
        a.flag(TOY)
        before = _findings(a)
        assert not any("seed_neighbor" in _kinds(f) for f in before)  # automatic flags never seed
        flagged_items = {f["item_id"] for f in before}
        seed = by_name[toy["originals"][0]]["item_id"]
        assert seed not in flagged_items
        a.review(seed, decision="confirm", note="reviewer confirmed", by="ann")
        dismissed = next(f for f in before if f["category"] == "red-triangles")
        a.review(dismissed["item_id"], decision="dismiss", note="false alarm", by="bob")
        s = a.flag(TOY)
        assert s.seeds == 1 and s.mode == "incremental"
        after = _findings(a)
        seeded = [f for f in after if "seed_neighbor" in _kinds(f)]
        copies = {by_name[n]["item_id"] for n in toy["copies"][:3]}
        assert copies <= {f["item_id"] for f in seeded}
        for f in seeded:
            (sig,) = [x for x in f["signals"] if x["kind"] == "seed_neighbor"]
            assert sig["detail"]["seed_item_id"] == seed and sig["score"] >= sig["threshold"]
            assert f["item_id"] != seed and 1 <= sig["detail"]["rank"] <= 10
            assert f["category"] == "seed-neighbor" and f["status"] == "new"
        again = {(f["item_id"], f["category"]): f["status"] for f in after}
        assert again[(dismissed["item_id"], "red-triangles")] == "dismissed"
        assert all(v != "new" for (i, c), v in again.items() if c != "seed-neighbor")  # the rest is known now
        a.flag(TOY, full=True)  # a full re-evaluation keeps the dismissal
        st = {(f["item_id"], f["category"]): f["status"] for f in _findings(a)}
        assert st[(dismissed["item_id"], "red-triangles")] == "dismissed"
        # confirmed items export as a bank that matches them back
        out = tmp_path / "confirmed.csv"
        assert a.export_bank(out) == 3
        assert by_name[toy["originals"][0]]["pdq"] in out.read_text()


def test_negative_bank_suppresses_known_false_positive(toy, flagged, tmp_path):
    a, _ = flagged
    red = _findings(a, "red-triangles")
    wrong = [f for f in red if label(f["uri"]) != "red_triangle" and "concept" in _kinds(f)]
    victim = (wrong or [f for f in red if "concept" in _kinds(f)])[0]
    item = next(r for r in toy["items"] if r["item_id"] == victim["item_id"])
    d = tmp_path / "neg"
    d.mkdir()
    (d / "fp.csv").write_text(f"hash_type,hash,label\nsha256,{item['item_id']},known-false-positive\n")
    text = TOY.read_text().replace('path = "banks/false-positives.csv"', 'path = "fp.csv"')
    text = text.replace('path = "banks/known.csv"', f'path = "{(TOY.parent / "banks" / "known.csv").as_posix()}"')
    text = text.replace(
        'path = "names/toy-persons.txt"', f'path = "{(TOY.parent / "names" / "toy-persons.txt").as_posix()}"'
    )
    (d / "policy.toml").write_text(text)
    s = a.flag(d / "policy.toml")
    assert s.suppressed >= 1
    remaining = {f["item_id"] for f in _findings(a)}
    assert victim["item_id"] not in remaining
    assert (
        len(_findings(a, "red-triangles")) >= len(red) - 1 - 10
    )  # the rest still flagged (cluster pull-ins may shift)


def test_cli_flag_and_review_on_the_archive(toy, flagged):
    index = _copy_index(toy, "cli")
    proc = audit_cli("flag", "--index", index, "--policy", TOY, "--json", "-q")
    data = json.loads(proc.stdout)
    assert data["by_category"]["red-triangles"] >= RED_TRIANGLES * 0.95 and data["clusters"] >= 10
    assert data["thresholds"]["red-triangle"]["image"]["source"] == "calibrated:samples"
    with audit.open(index) as a:
        cid = a.clusters(kind="semantic")["cluster_id"][0]
    audit_cli("review", "--index", index, "--cluster", cid, "--decision", "escalate", "--note", "look", "--json")
    with audit.open(index) as a:
        assert a.decisions()["target_kind"].to_list()[0] == "cluster"
        assert len(a.decisions()) >= 2


def test_default_policy_without_policy_flag(toy):
    """`audit flag` without --policy uses the packaged default: concept thresholds calibrated
    for this model and recorded; a short clinical prompt term fires its category."""
    index = _copy_index(toy, "default")
    extra = toy["root"] / "extra"
    extra.mkdir()
    from audit.embed import toyworld as tw

    scene = tw.random_scene(random.Random(1), colour="blue", shape="square")
    _save(extra / "9001_blue_square.png", tw.draw(scene, px=PX), "gore", 9001)
    _save(extra / "9002_blue_square.png", tw.draw(scene, px=PX - 8), "a blue square", 9002)
    with audit.open(index) as a:
        a.crawl([extra], workers=0)
        a.embed(model="toy-shapes", workers=0)
        a.index()
    proc = audit_cli("flag", "--index", index, "--json", "-q")
    data = json.loads(proc.stdout)
    assert data["policy"]["name"] == "audit-default"
    assert {"minor", "sexual", "graphic-violence"} <= set(data["thresholds"])
    assert all(t["image"]["source"].startswith("calibrated:") for k, t in data["thresholds"].items() if "image" in t)
    with audit.open(index) as a:
        rows = {(Path(f["uri"]).name, f["category"]): f for f in _findings(a)}
    f = rows[("9001_blue_square.png", "graphic-violence")]
    assert f["severity"] == "high"
    assert any(s["name"] == "rule:violence-terms" and s["detail"]["text"] == "gore" for s in f["signals"])
    assert ("9002_blue_square.png", "graphic-violence") not in rows or "prompt_rule" not in _kinds(
        rows[("9002_blue_square.png", "graphic-violence")]
    )


def test_precision_and_recall_per_category_with_near_misses(toy, flagged):
    """Every finding of the toy policy, review candidates included, against what was drawn:
    near misses the policy does not name (orange and purple triangles, red squares and stars)
    are in the archive. "red-triangle-prompted" is a red triangle whose prompt says triangle."""
    a, _ = flagged
    ph = audit.load_policy(TOY).content_hash
    names = {r["item_id"]: Path(r["uri"]).name for r in toy["items"]}
    prompts = {r["item_id"]: (r["prompt"] or "").lower() for r in toy["items"]}
    truth = {
        "red-triangles": {i for i, n in names.items() if label(n) == "red_triangle"},
        "red-triangle-prompted": {
            i for i, n in names.items() if label(n) == "red_triangle" and "triangle" in prompts[i]
        },
    }
    for cat, want in truth.items():
        got = {f["item_id"] for f in _findings(a, cat, policy_hash=ph)}
        tp = len(got & want)
        precision, recall = tp / max(1, len(got)), tp / len(want)
        assert recall >= 0.95 and precision >= 0.9, (cat, precision, recall, sorted(names[i] for i in got - want))


def test_report_statuses_equal_the_index_after_mixed_decisions(toy, flagged):
    """Item (with and without a category), finding and cluster decisions, in an order where
    each kind overrides another: the report shows for every finding the status that
    ``audit.open(DIR).findings()`` holds after the next flag run."""
    from audit.report.data import gather

    index = _copy_index(toy, "decisions")
    ph = audit.load_policy(TOY).content_hash
    with audit.open(index) as a:
        a.flag(TOY)
        found = _findings(a, policy_hash=ph)
        flagged_cl = [c for c in a.clusters(kind="semantic", flagged_only=True, policy_hash=ph).to_dicts()]
        assert flagged_cl
        cl = flagged_cl[0]
        cat = cl["categories"][0]
        in_cl = [f for f in found if f["cluster_id"] == cl["cluster_id"] and f["category"] == cat]
        in_cl_items = {f["item_id"] for f in in_cl}
        two_cats = sorted(
            i
            for i in {f["item_id"] for f in found} - in_cl_items
            if len({f["category"] for f in found if f["item_id"] == i}) > 1
        )
        assert len(in_cl) >= 3 and two_cats
        x, y = in_cl[0], in_cl[1]
        a.review(x["item_id"], decision="confirm", by="ann")  # item, no category
        a.review(finding=x["finding_id"], decision="dismiss", by="bob")  # later: the finding wins
        # the report page is the review unit: the flagged cluster with one decision for it ...
        out = toy["root"] / "decisions-report"
        a.report(out, formats=["html"], policy=TOY)
        page = next(out.rglob("index.html")).read_text()
        assert f'class="unit" data-cluster-id="{cl["cluster_id"]}" data-cat="{cat}"' in page
        # ... whose download (the decisions format) review --import takes: later, every reviewed member
        from audit.report.decisions import validate_decisions

        entry = [
            {
                "cluster_id": cl["cluster_id"],
                "category": cat,
                "decision": "escalate",
                "note": "",
                "by": "cy",
                "at": "2026-12-02T04:00:00.000Z",
            }
        ]
        (toy["root"] / "cluster-decision.json").write_text(json.dumps(validate_decisions(entry)))
        assert len(a.import_decisions(toy["root"] / "cluster-decision.json")) == 1
        a.review(y["item_id"], decision="dismiss", category=cat, by="dee")  # later: y's item + category
        z = two_cats[0]
        z_cats = sorted({f["category"] for f in found if f["item_id"] == z})
        a.review(z, decision="confirm", category=z_cats[0], by="eve")  # one category of two
        a.review(z, decision="dismiss", category="some-other-category", by="eve")  # applies to none of z's findings
        a.flag(TOY)
        index_status = {f["finding_id"]: f["status"] for f in _findings(a, policy_hash=ph)}
        report_status = {f.finding_id: f.status for f in gather(a, policy_path=TOY).findings}
        assert report_status == index_status
        assert index_status[x["finding_id"]] == "escalated" and index_status[y["finding_id"]] == "dismissed"
        assert all(index_status[f["finding_id"]] == "escalated" for f in in_cl[2:])
        z_status = {f["category"]: index_status[f["finding_id"]] for f in found if f["item_id"] == z}
        assert z_status[z_cats[0]] == "confirmed"  # the item decision of its category
        assert all(v not in ("confirmed", "dismissed") for c, v in z_status.items() if c != z_cats[0])


def test_via_cluster_candidates_are_the_alike_members_just_below_the_threshold(toy, flagged, tmp_path):
    """A threshold that leaves a fifth of the red triangles just below it: the flagged
    clusters bring back (as ranked, capped candidates) only red triangles, none of the near
    misses (red stars and squares, orange and purple triangles) that share their clusters."""
    import numpy as np

    from audit.flag.runner import FlagOptions, concept_scores

    a, _ = flagged
    names = {r["item_id"]: Path(r["uri"]).name for r in toy["items"]}
    scores = {
        r["item_id"]: r["image_score"] for r in concept_scores(a, TOY).to_dicts() if r["concept"] == "red-triangle"
    }
    reds = sorted(scores[i] for i, n in names.items() if label(n) == "red_triangle")
    threshold = float(np.quantile(reds, 0.2))
    policy = _write_policy(
        tmp_path / "p",
        '[[category]]\nid = "red-triangles"\nseverity = "critical"\n'
        + CONCEPT
        + f"image_threshold = {threshold!r}\nprompt_threshold = 1.0\n"
        + '[[flag]]\ncategory = "red-triangles"\nany = ["concept:red-triangle/image"]\n',
    )
    a.flag(policy)
    found = _findings(a, "red-triangles")
    via = [f for f in found if _kinds(f) == {"cluster"}]
    below = {i for i, n in names.items() if label(n) == "red_triangle" and threshold - 0.05 <= scores[i] < threshold}
    assert via and below
    assert all(label(names[f["item_id"]]) == "red_triangle" for f in via), sorted(names[f["item_id"]] for f in via)
    per_cluster = {}
    for f in via:
        (s,) = [s for s in f["signals"] if s["kind"] == "cluster"]
        per_cluster.setdefault(s["detail"]["cluster_id"], []).append(s["detail"]["rank"])
    assert all(
        sorted(r) == list(range(1, len(r) + 1)) and len(r) <= FlagOptions().cluster_candidates
        for r in per_cluster.values()
    )


def test_concept_vectors_are_prepared_once_per_run_whatever_the_batches(toy, flagged, monkeypatch):
    """A flag run prepares the concept vectors once and hands them to the concept detector,
    the learned models and the cluster stage: small batches prepare nothing more and find
    the same findings, and the clusters still show the centroids' concept scores."""
    from audit.flag import concepts

    prepared = []
    real = concepts.prepare_concepts

    def counting(ctx):
        prepared.append(len(ctx))
        return real(ctx)

    monkeypatch.setattr(concepts, "prepare_concepts", counting)
    index = _copy_index(toy, "prepared-once")
    with audit.open(index) as a:
        one = a.flag(TOY, full=True)
        ph = one.policy["hash"]
        before = {(f["item_id"], f["category"], f["severity"]) for f in _findings(a, policy_hash=ph)}
        many = a.flag(TOY, full=True, batch_size=37)
        after = {(f["item_id"], f["category"], f["severity"]) for f in _findings(a, policy_hash=ph)}
        scores = a.clusters(policy_hash=ph, kind="semantic")["concept_scores"].to_list()
    assert prepared == [0, 0]  # once per run, on no rows (thresholds come from the archive's sample)
    assert many.evaluated == one.evaluated > 37
    assert before and after == before
    assert many.thresholds == one.thresholds
    assert scores and all("red-triangle" in (json.loads(s) if isinstance(s, str) else s) for s in scores)
