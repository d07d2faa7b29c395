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
from tests.conftest import write_generation


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes_without_duplicates(tmp_path):
    src = tmp_path / "src"
    n = 600
    for i in range(n):
        write_generation(src / f"d{i % 7}" / f"img_{i:05d}.png", ["red", "green", "blue", "yellow"][i % 4], "circle", seed=i, size=96, offset=i % 9)
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
