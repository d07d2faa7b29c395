"""Lazy frames and SQL-side filters at scale: with 200k findings and 100k items, asking for
"the findings of cluster X" or a lazy ``filter().head()`` reads a few rows, not the table.

Memory is measured as the rise of the peak RSS of a fresh process (polars' own buffers
included, which tracemalloc would not see), against the same process loading everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import audit

from tests.scale_fixtures import build_scale_index

pytestmark = pytest.mark.slow

N_ITEMS = 100_000

_PROBE = r"""
import json, resource, sys
import polars as pl
import audit
a = audit.open(sys.argv[1], read_only=True)
cid = sys.argv[3]
a.findings(cluster_id="none").shape, a.items(item_ids=["none"]).shape  # warm: imports, schema, caches
import gc
gc.collect()
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as fh:  # resets the peak (VmHWM) to the resident size now
    fh.write("5")
base = status("VmRSS")
what = sys.argv[2]
if what == "everything":
    df = a.findings(all_policies=True)
elif what == "cluster":
    df = a.findings(cluster_id=cid)
elif what == "member_of":
    df = a.findings(member_of=cid)
elif what == "cluster_members":
    df = a.cluster_members(cid)
elif what == "lazy_head":
    df = a.findings(all_policies=True, lazy=True).filter(pl.col("category") == "squares").head(5).collect()
elif what == "items_everything":
    df = a.items()
elif what == "items_lazy_head":
    df = a.items(lazy=True).filter(pl.col("generator") == "comfyui").select("uri", "prompt").head(5).collect()
rise = status("VmHWM") - base
print(json.dumps({"rows": df.height, "rise_mb": rise / 1024}))
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return build_scale_index(
        tmp_path_factory.mktemp("frames-scale") / "idx", n_items=N_ITEMS, other_policy_findings=N_ITEMS, n_clusters=500
    )


def _probe(big, what: str) -> dict:
    """Run one query in a fresh process. ``check=True`` also guards a clean exit: a process
    that exited right after an early-stopped lazy read, while polars was reading a page
    ahead inside SQLite, was aborted (SIGABRT) before ``audit.frames`` waited for it."""
    env = {**os.environ, "PYTHONPATH": str(Path(audit.__file__).parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(big.index), what, big.cluster_ids[7]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cluster_and_lazy_queries_do_not_load_everything(big):
    everything = _probe(big, "everything")
    assert everything["rows"] == 2 * N_ITEMS
    # the control: loading all 200k findings really costs memory, so the bounds below can fail
    assert everything["rise_mb"] > 60, everything
    for what, rows in (
        ("cluster", N_ITEMS // 500),
        ("member_of", N_ITEMS // 500),
        ("cluster_members", N_ITEMS // 500),
        ("lazy_head", 5),
    ):
        got = _probe(big, what)
        assert got["rows"] == rows, (what, got)
        print(what, got)
        assert got["rise_mb"] < everything["rise_mb"] / 5, (what, got, everything)
    items_all = _probe(big, "items_everything")
    assert items_all["rows"] == N_ITEMS and items_all["rise_mb"] > 40, items_all
    head = _probe(big, "items_lazy_head")
    assert head["rows"] == 5 and head["rise_mb"] < items_all["rise_mb"] / 3, (head, items_all)


def test_filters_equal_filtering_everything(big):
    a = audit.open(big.index, read_only=True)
    everything = a.findings()
    cid = big.cluster_ids[11]
    assert a.findings(cluster_id=cid).equals(everything.filter(pl.col("cluster_id") == cid))
    assert a.findings(member_of=cid).equals(everything.filter(pl.col("item_id").is_in(big.cluster_items[cid])))
    assert a.findings(category=["squares", "circles"], severity="low").equals(
        everything.filter(pl.col("category").is_in(["squares", "circles"]) & (pl.col("severity") == "low"))
    )
    some = big.cluster_items[cid][:7]
    assert a.findings(item_id=some).equals(everything.filter(pl.col("item_id").is_in(some)))
    both = a.findings(all_policies=True, item_id=some[0])
    assert sorted(both["policy_hash"]) == sorted([big.policy_hash, big.other_policy_hash])
    # lazy: the same rows (in storage order), projections and slices as the eager frame
    lazy = a.findings(lazy=True)
    assert lazy.collect().sort("finding_id").equals(everything.sort("finding_id"))
    part = lazy.select("finding_id", "severity").slice(0, 70_000).collect()
    assert part.height == 70_000 and part.columns == ["finding_id", "severity"]
    assert part.join(everything, on="finding_id").filter(pl.col("severity") != pl.col("severity_right")).is_empty()
    assert lazy.filter(pl.col("status") == "new").select(pl.len()).collect().item() == everything.height
    assert (
        a.findings(lazy=True, cluster_id=cid)
        .collect()
        .sort("finding_id")
        .equals(a.findings(cluster_id=cid).sort("finding_id"))
    )

    items = a.items()
    assert a.items(lazy=True).collect().equals(items)
    assert a.items(uri_prefix="/archive/00042/").equals(items.filter(pl.col("uri").str.starts_with("/archive/00042/")))
    assert a.items(uri_prefix="/archive/00042/").height == 1000
    assert a.items(item_ids=some).equals(items.filter(pl.col("item_id").is_in(some)))
    assert a.items(generator="comfyui").equals(items.filter(pl.col("generator") == "comfyui"))

    clusters = a.clusters()
    assert a.clusters(kind="near_duplicate").is_empty()
    assert a.clusters(flagged_only=True, kind="semantic").equals(clusters)
    assert a.clusters(lazy=True).select("cluster_id", "size").collect().equals(clusters.select("cluster_id", "size"))
    members = a.cluster_members(cid)
    assert members["item_id"].to_list() == sorted(big.cluster_items[cid])
    cats = everything.filter(pl.col("item_id") == some[0])["category"].to_list()
    assert members.filter(pl.col("item_id") == some[0])["categories"].to_list() == [sorted(set(cats))]
