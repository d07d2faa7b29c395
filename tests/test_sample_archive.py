"""The bundled sample archive is what the quickstart and the notebook run on."""

from __future__ import annotations

import json

import polars as pl

import audit
from audit.sample import make_sample_archive
from tests.paths import REPO

SAMPLE = REPO / "samples" / "archive"


def test_bundled_sample_archive_crawls_cleanly_with_metadata(tmp_path):
    truth = json.loads((SAMPLE / "truth.json").read_text())
    first = [t for t in truth if t["batch"] == "first"]
    s = audit.crawl([SAMPLE], tmp_path / "idx", workers=0)
    assert s.errors == 0 and s.read == len(first)
    items = audit.open(tmp_path / "idx").items()
    assert set(items["generator"].unique()) >= {"a1111", "comfyui"}
    assert items["prompt"].null_count() == 0 and items["seed"].null_count() == 0
    assert (
        items.filter(
            pl.col("resources").list.eval(pl.element().struct.field("name").str.contains("flatColours_v3")).list.any()
        ).height
        > 0
    )
    assert sum(t["planted"] for t in first) >= 10


def test_generator_is_deterministic_in_content(tmp_path):
    a = make_sample_archive(tmp_path / "a", n=30, n_later=5)
    b = make_sample_archive(tmp_path / "b", n=30, n_later=5)
    strip = lambda m: [{k: v for k, v in i.items()} for i in m.items]  # noqa: E731
    assert strip(a) == strip(b)
    assert len(a.planted()) >= 1 and (tmp_path / "a-later").is_dir()
