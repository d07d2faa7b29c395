"""A crawl killed with SIGKILL leaves a consistent catalog; the next crawl finishes the work."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import audit
from tests.cli_helper import audit_cli
from tests.toy_world import write_generation


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes_without_duplicates(tmp_path):
    src = tmp_path / "src"
    n = 600
    for i in range(n):
        write_generation(
            src / f"d{i % 7}" / f"img_{i:05d}.png",
            ["red", "green", "blue", "yellow"][i % 4],
            "circle",
            seed=i,
            size=96,
            offset=i % 9,
        )
    idx = tmp_path / "idx"
    db = idx / "catalog.sqlite"
    counts_after_kill = []
    for attempt in range(3):  # kill at a few different moments
        proc = subprocess.Popen(
            [sys.executable, "-m", "audit", "crawl", str(src), "--index", str(idx), "--quiet", "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        target = 100 * (attempt + 1)
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=1) as c:
                        if c.execute("SELECT count(*) FROM locations").fetchone()[0] >= target:
                            break
                except sqlite3.Error:
                    pass
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            locs = c.execute("SELECT count(*) FROM locations").fetchone()[0]
            orphans = c.execute(
                "SELECT count(*) FROM locations l LEFT JOIN items i USING(item_id) WHERE i.item_id IS NULL"
            ).fetchone()[0]
        assert 0 < locs <= n and orphans == 0
        counts_after_kill.append(locs)
    assert counts_after_kill[0] < n, "the first kill came too late to interrupt anything"
    summary = audit.crawl([str(src)], idx, workers=2)
    assert summary.errors == 0
    items = audit.open(idx).items()
    assert items.height == n and items["uri"].n_unique() == n and items["item_id"].n_unique() == n
    assert audit.crawl([str(src)], idx, workers=0).read == 0


@pytest.mark.slow
def test_embed_sigkilled_at_random_moments_leaves_a_whole_vector_store(tmp_path):
    """SIGKILL during embed (one vector per batch: many shard commits and merges) at random
    moments; each time the catalog is sound, and the rerun finishes: every item's vector
    readable, every shard's checksum right, no orphan shard file after the next open."""
    import random

    import numpy as np

    from audit.catalog.vectors import VectorStore
    from tests.embed_fixtures import random_toy_checkpoint, toy_scene_archive

    n = 160
    toy_scene_archive(tmp_path / "src", n, prompts_per=4)
    ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors")
    idx = tmp_path / "idx"
    audit.crawl([str(tmp_path / "src")], idx, workers=0)
    db = idx / "catalog.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "audit",
        "embed",
        "--index",
        str(idx),
        "--model",
        "toy-shapes",
        "--checkpoint",
        str(ckpt),
        "--workers",
        "0",
        "--batch-size",
        "1",
        "--quiet",
    ]
    rng = random.Random(11)
    counts = []
    for attempt in range(3):
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # until this run stored a vector
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
                    done = c.execute("SELECT count(*) FROM vector_keys WHERE space='image'").fetchone()[0]
                if done > (counts[-1] if counts else 0):
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))  # then a random moment: mid-shard, mid-merge, mid-commit
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            counts.append(c.execute("SELECT count(*) FROM vector_keys WHERE space='image'").fetchone()[0])
            # every committed key row names a committed shard, within its rows
            assert (
                c.execute(
                    "SELECT count(*) FROM vector_rows r LEFT JOIN vector_shards s USING (shard_id) "
                    "WHERE s.shard_id IS NULL OR r.row >= s.rows"
                ).fetchone()[0]
                == 0
            )
    assert counts[0] < n, "the first kill came too late to interrupt anything"

    audit_cli(*cmd[3:-1], "--json", "--quiet")  # the rerun: in this process, nothing kills it
    with audit.open(idx) as a:
        vs = VectorStore(a.catalog.conn)  # the next writable open: orphans go
        key = a.catalog.query("SELECT model_key FROM models").fetchone()[0]
        ids = [i for (i,) in a.catalog.query("SELECT item_id FROM items")]
        got, vecs = vs.get(key, "image", ids)
        assert sorted(got) == sorted(ids) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
        assert vs.count(key, "image") == n and vs.count(key, "prompt") > 0
        report = vs.verify(full=True)
        assert report["damaged"] == [] and report["shards"] > 0
        referenced = {f for (f,) in a.catalog.query("SELECT file FROM vector_shards")}
    on_disk = {str(p.relative_to(idx)) for p in (idx / "vectors").rglob("*") if p.is_file()}
    assert on_disk == referenced
