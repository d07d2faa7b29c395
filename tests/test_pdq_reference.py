"""PDQ against Meta's published hashes for its reference images (../shared/corpora/pdq-reference)."""

from __future__ import annotations

import json

import pytest

from audit.crawler.worker import describe
from audit.hashing import pdq_distance
from tests.paths import CORPORA

REF = CORPORA / "pdq-reference"
pytestmark = pytest.mark.skipif(not (REF / "EXPECTED.json").exists(), reason="../shared/corpora not present")


def _entries():
    return json.loads((REF / "EXPECTED.json").read_text())["files"]


def test_every_reference_image_is_within_10_bits_where_quality_is_at_least_80():
    rows = []
    for e in _entries():
        item = describe((REF / e["file"]).read_bytes())
        distances = [pdq_distance(item["pdq"], s["pdq_hex"]) for s in e["all_statements"]]
        rows.append((e["file"], e["quality"], item["pdq_quality"], distances[0], min(distances)))
    print(f"\n{'file':<48}{'ref q':>6}{'our q':>6}{'d(primary)':>11}{'d(min)':>7}")
    for r in rows:
        print(f"{r[0]:<48}{str(r[1]):>6}{r[2]:>6}{r[3]:>11}{r[4]:>7}")
    for file, ref_q, our_q, d_primary, _ in rows:
        assert 0 <= our_q <= 100
        if (ref_q if ref_q is not None else our_q) >= 80:
            assert d_primary <= 10, f"{file}: {d_primary} bits from the published hash"
        if ref_q is not None:
            assert abs(our_q - ref_q) <= 5, file


def test_identical_pixels_give_identical_hashes(tmp_path):
    from PIL import Image

    src = REF / "bridge-mods" / "aaa-orig.jpg"
    Image.open(src).save(tmp_path / "same.png")  # same pixels, other container
    a = describe(src.read_bytes())
    b = describe((tmp_path / "same.png").read_bytes())
    assert a["pdq"] == b["pdq"] and a["item_id"] != b["item_id"]
