"""Acceptance: our metadata reader against every file of the real-world corpora.

Reads ../shared/corpora/metadata/*/EXPECTED.json at test time (the corpora are never copied
into the repository); prints a per-field score table and fails below 98% overall.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.meta import extract
from audit.meta.scoring import format_table, observe_extraction, score_corpus

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "metadata"
THRESHOLD = 0.98

pytestmark = pytest.mark.skipif(not any(CORPORA.glob("*/EXPECTED.json")), reason="../shared/corpora not present")


def observe(path: Path) -> dict:
    return observe_extraction(extract(path.read_bytes()))


def test_corpus_score_per_field():
    report = score_corpus(observe, CORPORA)
    print()
    print(format_table({"audit.meta": report}))
    for failure in report.failures():
        print(
            f"MISS {failure.file} {failure.field}: expected {str(failure.expected)[:80]!r} got {str(failure.observed)[:80]!r}"
        )
    assert report.total > 100
    assert report.score >= THRESHOLD, f"metadata score {report.score:.1%} below {THRESHOLD:.0%}"


def test_every_corpus_file_extracts_without_raising_and_with_an_image():
    from io import BytesIO

    from PIL import Image

    for path in sorted(CORPORA.glob("*/*")):
        if path.name == "EXPECTED.json":
            continue
        data = path.read_bytes()
        try:
            image = Image.open(BytesIO(data))
        except Exception:  # noqa: BLE001 - 0-byte and broken files: extract must cope without pixels
            image = None
        with_image = extract(data, image)
        without_image = extract(data)
        assert with_image.best.prompt == without_image.best.prompt, path.name
