"""Face likeness in the flag stage: crawl toy-world items (some with a real portrait pasted in),
flag them with a [[faces]] policy, and check findings, incrementality and the report.

Portraits come from ../shared/corpora/faces at test time (never copied into the project);
the derived items live in tmp_path only."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
from audit.findings.store import signal_dicts
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("AUDIT_CORPORA", REPO.parent / "shared" / "corpora")) / "faces"

pytestmark = pytest.mark.skipif(not (FACES / "EXPECTED.json").is_file(), reason="../shared/corpora/faces not present")
pytest.importorskip("dlib", reason='the "faces" extra is not installed')


def _scene(portrait: str | None, seed: int) -> Image.Image:
    from audit.embed.toyworld import draw, random_scene

    rng = random.Random(seed)
    img = draw(random_scene(rng), px=64).convert("RGB").resize((800, 800), Image.Resampling.NEAREST)
    if portrait:
        face = Image.open(FACES / portrait).convert("RGB")
        face.thumbnail((420, 420))
        img.paste(face, (rng.randint(0, 800 - face.width), rng.randint(0, 800 - face.height)))
    return img


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    import audit

    root = tmp_path_factory.mktemp("faces-flag")
    items = root / "items"
    items.mkdir()
    for name, portrait in (
        ("protected.png", "obama-2.jpg"),
        ("stranger.png", "rose-leslie-1.jpg"),
        ("plain.png", None),
    ):
        _scene(portrait, seed=len(name)).save(items / name)
    (root / "gallery" / "barack-obama").mkdir(parents=True)
    shutil.copyfile(FACES / "obama-1.jpg", root / "gallery" / "barack-obama" / "1.jpg")
    policy = root / "policy.toml"
    policy.write_text("""
[policy]
name = "faces-flag"
[[category]]
id = "real-person"
severity = "critical"
[[category]]
id = "sexual-real-person"
severity = "critical"
[[rule]]
id = "sexual-terms"
words = ["nude"]
[[faces]]
id = "protected"
gallery = "gallery/"
[[flag]]
category = "real-person"
all = ["face:protected"]
[[flag]]
category = "sexual-real-person"
all = ["face:protected", "rule:sexual-terms"]
""")
    index = root / "index"
    audit.crawl([str(items)], index)
    return root, index, policy


def test_flag_finds_the_protected_face_only_and_is_incremental(indexed):
    import audit

    root, index, policy = indexed
    with audit.open(index) as a:
        summary = a.flag(str(policy))
        found = a.findings()
    stats = summary.detectors["faces"]
    assert stats["described"] == 3 and stats["matches"] == {"protected": 1}
    assert found.height == 1
    row = found.row(0, named=True)
    assert row["uri"].endswith("protected.png") and row["category"] == "real-person"
    (signal,) = [s for s in signal_dicts(row["signals"]) if s["kind"] == "face_match"]
    assert signal["name"] == "face:protected" and signal["detail"]["label"] == "barack-obama"
    assert signal["score"] == signal["detail"]["distance"] <= 0.6 and signal["margin"] > 0

    with audit.open(index) as a:  # a full re-evaluation reuses every stored descriptor
        again = a.flag(str(policy), full=True)
    assert again.detectors["faces"]["described"] == 0 and again.detectors["faces"]["reused"] == 3
    assert again.findings == 1

    with audit.open(index) as a:  # the likeness finding follows its category's no_view
        out = a.report(root / "report", policy=str(policy))
    written = [p for p in Path(out if not hasattr(out, "out_dir") else out.out_dir).rglob("*") if p.is_file()]
    images = [p for p in written if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
    assert not images, f"a no_view likeness finding rendered an image: {images}"
    assert written and not any(b"data:image" in p.read_bytes() for p in written)  # no inline thumbnail either
