"""Cron always hears of a finding: "new" means "not yet reported by a completed scan".

A finding made by a plain `audit flag`, or by a scan killed before its summary got out, is
reported (and fails --fail-on) by the next scan; a completed scan's findings are not again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from audit.errors import ExitCode
from tests.cli_helper import audit_cli

from tests.toy_world import make_archive_dir

POLICY = """
[policy]
name = "alerts"
version = "1"
[[category]]
id = "red-triangles"
severity = "critical"
[[category]]
id = "squares"
severity = "low"
[[rule]]
id = "triangle-words"
words = ["triangle"]
[[rule]]
id = "square-words"
words = ["square"]
[[flag]]
category = "red-triangles"
any = ["rule:triangle-words"]
[[flag]]
category = "squares"
any = ["rule:square-words"]
"""


@pytest.fixture
def setup(tmp_path):
    archive = tmp_path / "archive"
    make_archive_dir(archive, 12)  # circle, square, triangle in turn: 4 triangles, 4 squares
    policy = tmp_path / "alerts.toml"
    policy.write_text(POLICY)
    return archive, policy, tmp_path / "idx"


def scan_args(archive: Path, idx: Path, policy: Path, *extra: str) -> list[str]:
    return [
        "scan",
        str(archive),
        "--index",
        str(idx),
        "--policy",
        str(policy),
        "--model",
        "toy-shapes",
        "--workers",
        "0",
        "--fail-on",
        "critical",
        "--quiet",
        "--json",
        *extra,
    ]


def scan(archive: Path, idx: Path, policy: Path) -> tuple[ExitCode, dict]:
    res = audit_cli(*scan_args(archive, idx, policy), expected=None)
    assert res.exit_status in (ExitCode.OK, ExitCode.FINDINGS), res.stderr
    return res.exit_status, res.json()


def unreported(idx: Path) -> int:
    with closing(sqlite3.connect(idx / "catalog.sqlite")) as conn:
        return conn.execute("SELECT count(*) FROM findings WHERE active = 1 AND reported_run IS NULL").fetchone()[0]


def test_findings_of_a_plain_flag_run_are_reported_by_the_next_scan_once(setup):
    archive, policy, idx = setup
    audit_cli("crawl", archive, "--index", idx, "--workers", "0", "--quiet")
    flagged = audit_cli("flag", "--index", idx, "--policy", policy, "--quiet", "--json").json()
    assert flagged["by_category"] == {"red-triangles": 4, "squares": 4}

    code, first = scan(archive, idx, policy)  # (a) what `audit flag` found is news to cron
    assert code == ExitCode.FINDINGS and first["exit_code"] == ExitCode.FINDINGS
    assert first["new_findings"] == 8
    assert first["new_by_category"] == {"red-triangles": 4, "squares": 4}
    assert first["new_by_severity"] == {"critical": 4, "low": 4}
    assert unreported(idx) == 0

    code, second = scan(archive, idx, policy)  # (c) a completed scan's findings are not news again
    assert code == ExitCode.OK and second["new_findings"] == 0 and second["new_by_category"] == {}


def test_a_scan_killed_after_flagging_has_its_findings_reported_by_the_next(setup):
    archive, policy, idx = setup
    # (b) The scan's stdout is a pipe we fill up first and never read: the scan blocks writing
    # its --json summary, after its flag stage committed, before the summary is delivered (and
    # so before it may mark anything reported). A SIGKILL then is a kill at exactly that gap.
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    with open(idx.parent / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "audit", *scan_args(archive, idx, policy)], stdout=write_end, stderr=err
        )
    os.close(write_end)
    try:
        _wait_for_flag_findings(idx / "catalog.sqlite", proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(read_end)
    assert unreported(idx) == 8  # committed, never delivered

    code, after = scan(archive, idx, policy)
    assert code == ExitCode.FINDINGS, "the next scan must report what the killed scan found"
    assert after["new_by_category"] == {"red-triangles": 4, "squares": 4}
    assert after["stages"]["flag"]["mode"] == "unchanged"  # nothing re-evaluated: only reported
    code, again = scan(archive, idx, policy)
    assert code == ExitCode.OK and again["new_findings"] == 0


def _wait_for_flag_findings(catalog: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the scan ended before its summary could be written"
        try:
            with closing(sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=1)) as conn:
                if conn.execute("SELECT 1 FROM flag_runs f JOIN findings g ON g.run_id = f.run_id LIMIT 1").fetchone():
                    return
        except sqlite3.OperationalError:  # no catalog or no tables yet
            pass
        time.sleep(0.05)
    raise AssertionError("the flag stage did not commit in time")


def test_decided_findings_are_not_new_and_the_library_marks_unless_told_not_to(setup):
    import audit
    from audit.scan import mark_reported, run_scan

    archive, policy, idx = setup
    a = audit.open(idx, create=True)
    a.crawl([archive], workers=0)
    a.flag(str(policy))
    squares = a.findings().filter(a.findings()["category"] == "squares")["item_id"].to_list()
    for item in squares:
        a.review(item=item, decision="dismiss", note="toy check")
    a.review(
        item=a.findings().filter(a.findings()["category"] == "red-triangles")["item_id"][0],
        decision="escalate",
        note="toy check",
    )

    held = run_scan(a, [archive], policy=policy, model="toy-shapes", workers=0, fail_on="critical", mark=False)
    assert held.new_by_category == {"red-triangles": 3}  # dismissed and escalated: not news
    assert held.exit_code == ExitCode.FINDINGS and not held.reported
    again = run_scan(a, [archive], policy=policy, model="toy-shapes", workers=0, fail_on="critical", mark=False)
    assert again.new_by_category == {"red-triangles": 3}  # not marked: still new
    assert mark_reported(a, again) == 3 and again.reported
    assert mark_reported(a, again) == 0  # once

    # Audit.scan (the library) marks when it returns the summary
    a.review(item=squares[0], decision="confirm", note="toy check")  # decided: not news either
    assert a.scan([archive], policy=policy, model="toy-shapes", workers=0).new_findings == []


def test_an_index_made_before_reported_run_gains_it_and_reports_old_findings(tmp_path):
    from audit.catalog.migrations import CATALOG_TABLES, FINDINGS_TABLES, ensure_schema
    from audit.findings.store import FindingsStore

    old_ddl = FINDINGS_TABLES.replace(
        "    active INTEGER NOT NULL DEFAULT 1, -- 0 once the item no longer meets the policy\n"
        "    reported_run INTEGER             -- flag run of the completed `audit scan` that reported it; NULL: not yet\n",
        "    active INTEGER NOT NULL DEFAULT 1\n",
    )
    assert "reported_run" not in old_ddl
    db = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:  # unversioned: user_version 0
        conn.executescript(CATALOG_TABLES + old_ddl)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        conn.execute(
            "INSERT INTO findings (finding_id, policy_hash, item_id, category, severity, status, signals, "
            "first_flagged, last_flagged, run_id) VALUES ('f1','p','i1','c','critical','known','[]','t','t',1)"
        )
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        assert ensure_schema(conn) == 0  # migration 1 adopts it
        store = FindingsStore(conn)
        assert "reported_run" in {r[1] for r in conn.execute("PRAGMA table_info(findings)")}
        assert store.unreported("p")["finding_id"].to_list() == ["f1"]  # reported once more, never lost
        assert store.mark_reported(["f1"], 7) == 1
        assert store.unreported("p").is_empty()
        assert ensure_schema(conn) == 1  # a second open does not try to add it again
