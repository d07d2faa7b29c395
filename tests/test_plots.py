"""Notebook plots (audit/plots.py): SVG of points and bars, sampled from the vector store,
flagged clusters marked, text escaped, never an embedded image."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

import audit
from audit.catalog.vectors import ModelIdentity, VectorStore
from audit.plots import PALETTE, GREY, project_2d, score_histograms

from tests.scale_fixtures import build_scale_index, item_id


def test_projection_keeps_the_axis_of_most_variance():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    direction = rng.normal(size=16)
    vectors = np.outer(t, direction) + rng.normal(scale=0.01, size=(200, 16))
    xy = project_2d(vectors)
    assert xy.shape == (200, 2)
    assert abs(np.corrcoef(xy[:, 0], t)[0, 1]) > 0.999
    assert project_2d(np.zeros((0, 16))).shape == (0, 2) and project_2d(vectors[:1]).shape == (1, 2)


def test_embedding_map_samples_the_store_and_marks_flagged_clusters(tmp_path):
    idx = build_scale_index(tmp_path / "idx", n_items=600, n_clusters=6, batch=600)
    ids = [item_id(i) for i in range(600)]
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 16))
    vectors = np.stack([centres[i % 6] + rng.normal(scale=0.05, size=16) for i in range(600)]).astype(np.float32)
    with audit.open(idx.index) as a:
        vs = VectorStore(a.catalog.conn)
        key = vs.register_model(ModelIdentity("toy-shapes"), 16)
        vs.put(key, "image", ids, vectors)
        # one cluster unflagged, one with a hostile id: the legend escapes it
        conn = a.catalog.conn
        conn.execute("UPDATE clusters SET flagged = 0 WHERE cluster_id = ?", (idx.cluster_ids[0],))
        conn.execute("UPDATE clusters SET cluster_id = '<b>x</b>' WHERE cluster_id = ?", (idx.cluster_ids[1],))
        plot = a.embedding_map(max_points=250)
    svg = plot.svg
    assert "<image" not in svg and "<img" not in svg and "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    points = re.findall(r'<circle cx="[\d.]+" cy="[\d.]+" r="([\d.]+)" fill="(#[0-9A-Fa-f]{6})"', svg)
    assert len(points) == 250 + 5  # the sample, and one legend dot per flagged cluster
    fills = [f for _, f in points[:250]]
    # the unflagged cluster's members (about a sixth) are grey, the rest in the five colours
    assert 20 < fills.count(GREY) < 70 and set(fills) - {GREY} == set(PALETTE[:5])
    assert plot.summary.startswith("embedding map: 250 points, 5 flagged clusters")


def test_score_histograms_mark_the_threshold_and_escape_names():
    scores = pl.DataFrame(
        {
            "item_id": [str(i) for i in range(10)] * 2,
            "concept": ["red-triangle"] * 10 + ["<script>"] * 10,
            "image_score": [i / 10 for i in range(10)] * 2,
            "prompt_score": [None] * 20,
            "image_threshold": [0.65] * 20,
            "prompt_threshold": [0.9] * 20,
        },
        schema_overrides={"prompt_score": pl.Float64},
    )
    plot = score_histograms(scores, bins=10)
    assert "<script>" not in plot.svg and "&lt;script&gt; · image" in plot.svg
    assert "threshold 0.650: 3 of 10 at or above" in plot.svg and "prompt" not in plot.svg  # no prompt scores
    assert plot.svg.count('fill="#D55E00"') == 2 * 3  # bars at or above the threshold, per concept
    assert "no concept scores" in score_histograms(scores.clear()).summary
