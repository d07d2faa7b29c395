"""Regenerate tests/data/previous_release_index/: a small index written by the previous release.

The index is made by the CLI of commit ``PREVIOUS_RELEASE`` (the last release before the
schema was versioned with ``PRAGMA user_version``; its catalog has only
``meta.schema_version``), run from a ``git archive`` of that commit, on 24 toy-world images
(coloured shapes, tests/toy_world.py) with the shipped toy-shapes CLIP and the toy policy:
``audit crawl``, ``embed``, ``index`` and ``flag`` and one ``audit review`` decision. The images are
not kept: the fixture is the index folder only (catalog and vector shards, well under 1 MB).
tests/test_schema_migrations.py opens a copy of it with today's code.

Usage (from the repository root): ``python tools/make_previous_release_index.py``
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PREVIOUS_RELEASE = "2938393"
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "previous_release_index"
# The locations name these files; a fixed path keeps the fixture the same wherever it is made.
SOURCE = Path("/tmp/audit-previous-release/src")


def main() -> int:
    sys.path.insert(0, str(REPO))
    from tests.toy_world import make_archive_dir

    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(old, filter="data")
        shutil.rmtree(SOURCE.parent, ignore_errors=True)
        make_archive_dir(SOURCE, n=24)  # gen_0008 and gen_0020 are red triangles
        index = Path(tmp) / "index"
        env = {**os.environ, "PYTHONPATH": str(old)}

        def cli(*args: str) -> str:
            r = subprocess.run([sys.executable, "-m", "audit", *args], cwd=old, env=env, capture_output=True, text=True)
            if r.returncode not in (0, 1):  # 1: findings at or above --fail-on
                raise SystemExit(f"audit {args[0]} failed ({r.returncode}): {r.stderr.strip()}")
            return r.stdout

        policy = str(old / "samples" / "policy" / "toy.toml")
        # stage by stage, as `audit scan` runs them, with fp32 named: that release's `auto` could
        # pick int8 (a vector space of its own) on one machine and fp32 on another
        cli("crawl", str(SOURCE), "--index", str(index), "--workers", "0", "-q")
        cli("embed", "--index", str(index), "--model", "toy-shapes", "--precision", "fp32", "--workers", "0", "-q")
        cli("index", "--index", str(index), "-q")
        cli("flag", "--index", str(index), "--policy", policy, "--model", "toy-shapes", "-q")
        red = str(SOURCE / "sub2" / "gen_0008.png")
        cli("review", "--index", str(index), "--item", red, "--decision", "confirm", "--by", "fixture",
            "--note", "toy red triangle")  # fmt: skip
        with sqlite3.connect(index / "catalog.sqlite") as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            counts = {
                t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("items", "vector_rows", "findings", "decisions")
            }
            assert c.execute("PRAGMA user_version").fetchone()[0] == 0
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(index, OUT, ignore=shutil.ignore_patterns("lock", "*-wal", "*-shm", "reports"))
        (OUT / "MADE_BY.json").write_text(
            json.dumps({"commit": PREVIOUS_RELEASE, "tool": "tools/make_previous_release_index.py", **counts}, indent=1)
            + "\n"
        )
    shutil.rmtree(SOURCE.parent, ignore_errors=True)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT.relative_to(REPO)}: {size} bytes, {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
