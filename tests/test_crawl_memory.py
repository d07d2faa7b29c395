"""A crawl's memory does not follow what an archive expands to: zip and tar.gz bombs of a
few megabytes, whose members expand to 64 MiB of zeros each, are crawled in a subprocess
(with its workers) well under a gigabyte, and every member gets its row."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.bomb_fixtures import tar_gz_bomb, zip_bomb

MEMBERS = 12
MEMBER_BYTES = 64 << 20  # 768 MiB per bomb: the old crawler held all of it at once
LIMIT = 640 << 20  # summed over the crawl process, the forkserver and the workers


def _crawl_peak(source: Path, index: Path) -> tuple[int, int]:
    """(exit status, peak memory of the crawl's whole process tree): the proportional set
    size where the kernel reports it (pages shared between workers counted once), else RSS."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "audit", "crawl", str(source), "--index", str(index), "--workers", "2", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = psutil.Process(proc.pid)
    peak = 0
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        total = 0
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = []
        for p in family:
            try:
                mem = p.memory_full_info()
                total += getattr(mem, "pss", mem.rss)
            except psutil.Error:
                pass  # a worker that just exited
        peak = max(peak, total)
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
        pytest.fail("the crawl did not finish in 240 s")
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    assert proc.returncode == 0, err
    return proc.returncode, peak


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_bomb_crawls_in_bounded_memory_with_a_row_per_member(tmp_path: Path, kind: str) -> None:
    bomb = tmp_path / f"bomb.{kind}"
    (zip_bomb if kind == "zip" else tar_gz_bomb)(bomb, MEMBERS, MEMBER_BYTES)
    assert os.path.getsize(bomb) < 4 << 20
    _, peak = _crawl_peak(bomb, tmp_path / "idx")
    assert peak < LIMIT, f"crawl peaked at {peak >> 20} MiB for a {os.path.getsize(bomb) >> 10} KiB archive"
    with sqlite3.connect(tmp_path / "idx" / "catalog.sqlite") as db:
        rows = db.execute("SELECT uri, status, error FROM locations ORDER BY uri").fetchall()
    assert [r[0] for r in rows] == [f"{bomb}!/bomb/{i:04d}.png" for i in range(MEMBERS)]
    assert all(status == "error" and error for _, status, error in rows)  # zeros are no image: said so
