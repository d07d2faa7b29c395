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
from conftest import run_cli

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
            scenes.append(tw.random_scene(rng, colour=rng.choice(["orange", "purple", "blue", "yellow", "green"]),
                                          shape="triangle"))
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
    return {"root": root, "archive": archive, "index": index, "items": items, "by_name": by_name,
            "originals": [p.name for p in originals], "copies": [p.name for p in copies]}


@pytest.fixture(scope="module")
def flagged(toy):
    """The toy policy (thresholds calibrated for the model), flagged once."""
    a = audit.open(toy["index"])
    summary = a.flag(TOY)
    yield a, summary
    a.close()


def _findings(a, category=None) -> list[dict]:
    rows = a.findings().to_dicts()
    for r in rows:
        r["signals"] = json.loads(r["signals"])
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
    image_hit = {f["item_id"] for f in _findings(a, "red-triangles")
                 if any(s["name"] == "concept:red-triangle/image" for s in f["signals"])}
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
    bank.write_text("hash_type,hash,label\n" + "".join(
        f"pdq,{by_name[n]['pdq']},original-{k}\n" for k, n in enumerate(toy["originals"])))
    policy = _write_policy(tmp_path / "bank", """
[[category]]
id = "known-match"
severity = "critical"
no_view = true

[[hashlist]]
id = "known"
path = "known.csv"
category = "known-match"
pdq_max_distance = 31
""")
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


def test_cluster_with_flagged_centroid_pulls_in_members_below_threshold(toy, flagged, tmp_path):
    from audit.flag.runner import concept_scores

    a, _ = flagged
    policy = _write_policy(tmp_path / "c0", '[[category]]\nid = "red-triangles"\nseverity = "critical"\n' + CONCEPT
                           + 'image_threshold = 0.5\nprompt_threshold = 1.0\n'
                           + '[[flag]]\ncategory = "red-triangles"\nany = ["concept:red-triangle/image"]\n')
    a.flag(policy)  # clusters, with centroid scores for the concept
    scores = {r["item_id"]: r["image_score"] for r in concept_scores(a, policy).to_dicts()}
    best = None
    for cl in a.clusters(kind="semantic").to_dicts():
        c = json.loads(cl["concept_scores"])["red-triangle"]["score"]
        members = json.loads(cl["members"])
        below = [m for m in members if scores[m] < c - 1e-4]
        if below and (best is None or c > best[0]):
            best = (c, cl["cluster_id"], members, below)
    assert best is not None
    centroid_score, cluster_id, members, below = best
    threshold = centroid_score - 1e-4  # the centroid just crosses; some members do not
    policy = _write_policy(tmp_path / "c1", '[[category]]\nid = "red-triangles"\nseverity = "critical"\n' + CONCEPT
                           + f'image_threshold = {threshold!r}\nprompt_threshold = 1.0\n'
                           + '[[flag]]\ncategory = "red-triangles"\nany = ["concept:red-triangle/image"]\n')
    a.flag(policy)
    cl = next(c for c in a.clusters(kind="semantic").to_dicts() if set(json.loads(c["members"])) == set(members))
    assert cl["flagged"] == 1 and "red-triangles" in json.loads(cl["categories"])
    found = {f["item_id"]: f for f in _findings(a, "red-triangles")}
    for m in below:
        f = found[m]
        (s,) = [s for s in f["signals"] if s["kind"] == "cluster"]
        assert s["detail"]["reason"] == "centroid" and s["detail"]["cluster_id"] == cl["cluster_id"]
        assert s["detail"]["member_score"] < threshold <= s["score"]
        assert "concept" not in _kinds(f) and f["cluster_id"] == cl["cluster_id"]
    for m in set(members) - set(below):
        assert "concept" in _kinds(found[m])  # at or above the item threshold: flagged directly


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
    text = text.replace('path = "names/toy-persons.txt"', f'path = "{(TOY.parent / "names" / "toy-persons.txt").as_posix()}"')
    (d / "policy.toml").write_text(text)
    s = a.flag(d / "policy.toml")
    assert s.suppressed >= 1
    remaining = {f["item_id"] for f in _findings(a)}
    assert victim["item_id"] not in remaining
    assert len(_findings(a, "red-triangles")) >= len(red) - 1 - 10  # the rest still flagged (cluster pull-ins may shift)


def test_cli_flag_and_review_on_the_archive(toy, flagged):
    index = _copy_index(toy, "cli")
    proc = run_cli("flag", "--index", str(index), "--policy", str(TOY), "--json", "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["by_category"]["red-triangles"] >= RED_TRIANGLES * 0.95 and data["clusters"] >= 10
    assert data["thresholds"]["red-triangle"]["image"]["source"] == "calibrated:samples"
    with audit.open(index) as a:
        cid = a.clusters(kind="semantic")["cluster_id"][0]
    proc = run_cli("review", "--index", str(index), "--cluster", cid, "--decision", "escalate", "--note", "look", "--json")
    assert proc.returncode == 0, proc.stderr
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
    proc = run_cli("flag", "--index", str(index), "--json", "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["policy"]["name"] == "audit-default"
    assert {"minor", "sexual", "graphic-violence"} <= set(data["thresholds"])
    assert all(t["image"]["source"].startswith("calibrated:") for k, t in data["thresholds"].items() if "image" in t)
    with audit.open(index) as a:
        rows = {(Path(f["uri"]).name, f["category"]): f for f in _findings(a)}
    f = rows[("9001_blue_square.png", "graphic-violence")]
    assert f["severity"] == "high"
    assert any(s["name"] == "rule:violence-terms" and s["detail"]["text"] == "gore" for s in f["signals"])
    assert ("9002_blue_square.png", "graphic-violence") not in rows or \
        "prompt_rule" not in _kinds(rows[("9002_blue_square.png", "graphic-violence")])
