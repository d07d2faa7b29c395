"""Run bookkeeping (``audit.catalog.runs``): the one place a command's run row is written."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

import audit
from audit.catalog.runs import current_user, recorded_run
from audit.errors import IndexReadOnly
from audit.hashing import item_id, verify_item


class _Summary:
    def to_dict(self):
        return {"items": 3}


def _runs(index_dir):
    with closing(sqlite3.connect(index_dir / "catalog.sqlite")) as conn:
        return conn.execute("SELECT command, status, summary, user, argv FROM runs ORDER BY run_id").fetchall()


def test_a_run_ends_ok_interrupted_or_failed_with_its_summary(tmp_path):
    a = audit.open(tmp_path / "idx", create=True)
    with recorded_run(a.catalog, "crawl", ["audit", "crawl"]) as run:
        run.summary = _Summary()
    with pytest.raises(KeyboardInterrupt), recorded_run(a.catalog, "embed", []) as run:
        run.summary = {"images": 1}
        raise KeyboardInterrupt
    with pytest.raises(ValueError), recorded_run(a.catalog, "flag", []):
        raise ValueError("boom")
    a.close()
    rows = _runs(tmp_path / "idx")
    assert [(c, s, json.loads(summary)) for c, s, summary, _, _ in rows] == [
        ("crawl", "ok", {"items": 3}),
        ("embed", "interrupted", {"images": 1}),
        ("flag", "failed", {}),
    ]
    assert rows[0][3] == current_user() and json.loads(rows[0][4]) == ["audit", "crawl"]


def test_a_read_only_index_refuses_a_run_unless_best_effort(tmp_path):
    audit.open(tmp_path / "idx", create=True).close()
    ro = audit.open(tmp_path / "idx", read_only=True)
    with pytest.raises(IndexReadOnly), recorded_run(ro.catalog, "flag", []):
        pytest.fail("the body must not run")
    with recorded_run(ro.catalog, "report", [], best_effort=True) as run:
        run.summary = {"out": "x"}
    assert run.run_id is None and run.status == "ok"
    ro.close()
    assert _runs(tmp_path / "idx") == []


def test_the_facade_records_through_the_catalog_layer(tmp_path):
    with audit.open(tmp_path / "idx", create=True) as a, a.recorded_run("index", []) as run:
        run.summary = {"built": 0}
    assert [r[:2] for r in _runs(tmp_path / "idx")] == [("index", "ok")]


def test_item_id_is_the_content_sha256_and_verify_item_notices_a_change():
    # FIPS 180-2's example: SHA-256("abc")
    assert item_id(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify_item(b"abc", item_id(b"abc")) and not verify_item(b"abd", item_id(b"abc"))


def test_the_stages_do_not_import_the_facade():
    """The stage runners work on the catalog: loading them never loads ``audit.api``
    (which imports them lazily), so there is no api <-> stage cycle."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    probe = (
        "import sys, audit.embed.api, audit.flag.runner, audit.report, audit.scan, audit.review, "
        "audit.catalog.runs\nprint('audit.api' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=120,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
