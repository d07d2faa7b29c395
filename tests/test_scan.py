"""`audit scan` as cron runs it: incremental, locked, exit codes, interruption."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from audit.catalog.lock import IndexLock
from audit.errors import ExitCode
from tests.cli_helper import audit_cli, audit_subprocess
from tests.paths import REPO
from tests.sample_subset import copy_sample_subset

SAMPLE = REPO / "samples" / "archive"
LATER = REPO / "samples" / "archive-later"
TOY_POLICY = REPO / "samples" / "policy" / "toy.toml"


def scan(archive: Path, idx: Path, *extra: str):
    res = audit_cli(
        "scan",
        archive,
        "--index",
        idx,
        "--model",
        "toy-shapes",
        "--policy",
        TOY_POLICY,
        "--fail-on",
        "critical",
        "--quiet",
        "--json",
        *extra,
        expected=None,
    )
    assert res.exit_status in (ExitCode.OK, ExitCode.FINDINGS), res.stderr
    return res.exit_status, res.json()


def _wait_for_first_image_vector(catalog: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the scan ended before it could be interrupted"
        if catalog.exists():
            try:
                with closing(sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=1)) as conn:
                    if conn.execute("SELECT 1 FROM vector_keys WHERE space = 'image' LIMIT 1").fetchone():
                        return
            except sqlite3.OperationalError:  # table not created yet
                pass
        time.sleep(0.02)
    raise AssertionError("no image vector was stored in time")


def _last_run_status(catalog: Path) -> str:
    with closing(sqlite3.connect(catalog)) as conn:
        return conn.execute("SELECT status FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()[0]


@pytest.mark.slow
def test_scan_twice_then_new_files(tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(SAMPLE, archive)
    idx = tmp_path / "idx"
    n_first = sum(1 for p in archive.rglob("*") if p.suffix in (".png", ".jpg"))

    code, first = scan(archive, idx, "--report", "--out", str(tmp_path / "report1"))
    assert code == ExitCode.FINDINGS and first["exit_code"] == ExitCode.FINDINGS  # planted red triangles are critical
    assert first["stages"]["crawl"]["read"] == n_first
    assert first["new_by_severity"].get("critical", 0) >= 10
    # "via cluster" candidates are only members close to the category: no red star of the
    # flagged red cluster comes in that way (truth.json says what was drawn)
    drawn = {t["path"]: t for t in json.loads((SAMPLE / "truth.json").read_text())}
    via = [f for f in _new_findings(idx, first) if all(s["kind"] == "cluster" for s in f["signals"])]
    assert first["new_candidates_by_category"].get("red-triangles", 0) == sum(
        f["category"] == "red-triangles" for f in via
    )
    for f in via:
        t = drawn[Path(f["uri"]).relative_to(archive).as_posix()]
        assert (t["colour"], t["shape"]) == ("red", "triangle"), t
    # the quickstart's promise: every finding is right (no red star, directly or via a
    # cluster) and every red-triangle image is found (copies share one item)
    found = _new_findings(idx, first)
    for f in found:
        t = drawn[Path(f["uri"]).relative_to(archive).as_posix()]
        assert (t["colour"], t["shape"]) == ("red", "triangle"), (f["category"], t)
    red_paths = {
        p for p, t in drawn.items() if (t["colour"], t["shape"]) == ("red", "triangle") and (archive / p).exists()
    }  # the "later" batch is copied in below
    found_paths = {Path(f["uri"]).relative_to(archive).as_posix() for f in found if f["category"] == "red-triangles"}
    red_ids = {hashlib.sha256((archive / p).read_bytes()).hexdigest() for p in red_paths}
    found_ids = {hashlib.sha256((archive / p).read_bytes()).hexdigest() for p in found_paths}
    assert found_ids == red_ids
    assert Path(first["report"]).is_dir() and (Path(first["report"]) / "manifest.json").exists()

    code, second = scan(archive, idx)
    assert code == ExitCode.OK and second["new_findings"] == 0
    assert second["stages"]["crawl"]["read"] == 0
    assert second["stages"]["embed"]["images_embedded"] == 0

    for p in sorted(LATER.iterdir()):
        shutil.copy(p, archive / p.name)
    code, third = scan(archive, idx)
    assert third["stages"]["crawl"]["read"] == len(list(LATER.iterdir()))
    assert third["stages"]["embed"]["images_embedded"] == len(list(LATER.iterdir()))
    assert code == ExitCode.FINDINGS and third["new_by_severity"].get("critical", 0) >= 1
    later_names = {p.name for p in LATER.iterdir()}
    new = _new_findings(idx, third)
    # Findings from an item's own signals are about the new files; re-clustering the grown
    # archive may also put older items in a flagged cluster ("via cluster").
    direct = [f for f in new if any(s["kind"] != "cluster" for s in f["signals"])]
    assert direct and all(Path(f["uri"]).name in later_names for f in direct)
    # the summary tells those review candidates apart, per category
    candidates = Counter(f["category"] for f in new if f not in direct)
    assert third["new_candidates_by_category"] == dict(candidates)
    truth = json.loads((SAMPLE / "truth.json").read_text())
    planted_later = {Path(t["path"]).name for t in truth if t["batch"] == "later" and t["planted"]}
    assert planted_later <= {Path(f["uri"]).name for f in direct if f["category"] == "red-triangles"}


def _new_findings(idx: Path, summary: dict) -> list[dict]:
    import audit

    f = audit.open(idx).findings()
    return f.filter(f["status"] == "new").to_dicts()


def test_second_scan_on_a_locked_index_exits_3(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    with IndexLock(idx):
        # a second run is another process: this process's own lock does not stop its own scan
        res = audit_subprocess("scan", SAMPLE, "--index", idx, "--model", "toy-shapes", "--quiet")
    assert res.returncode == ExitCode.ENVIRONMENT and "in use" in res.stderr


def test_bad_fail_on_and_bad_policy_are_usage_errors(tmp_path):
    res = audit_cli(
        "scan", SAMPLE, "--index", tmp_path / "i", "--fail-on", "severe", "--quiet", expected=ExitCode.USAGE
    )
    assert "--fail-on" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nname = 1\n[[categry]]\n")
    res = audit_cli("scan", SAMPLE, "--index", tmp_path / "j", "--policy", bad, "--quiet", expected=ExitCode.USAGE)
    assert res.stderr.startswith("audit: error:") and "Traceback" not in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_scan_exits_130_and_the_next_scan_finishes(tmp_path, sig):
    archive = copy_sample_subset(tmp_path / "archive")  # every kind of file, planted items too
    idx = tmp_path / "idx"
    cmd = [
        sys.executable,
        "-m",
        "audit",
        "scan",
        str(archive),
        "--index",
        str(idx),
        "--model",
        "toy-shapes",
        "--policy",
        str(TOY_POLICY),
        "--quiet",
        "--workers",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signal once the first image vectors are committed: mid-embed, with the flag stage
    # still to come, however fast or slow the machine is.
    _wait_for_first_image_vector(idx / "catalog.sqlite", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == ExitCode.INTERRUPTED, err
        assert err.strip().splitlines()[-1].startswith("audit: interrupted"), err
        assert "Traceback" not in err
        assert _last_run_status(idx / "catalog.sqlite") == "interrupted"
    code, summary = scan(archive, idx)
    import audit

    items = audit.open(idx).items()
    assert items.height == sum(1 for p in archive.rglob("*") if p.suffix in (".png", ".jpg"))
    assert summary["errors"]["crawl"]["count"] == 0
    assert summary["stages"]["embed"]["image_vectors_total"] == items["item_id"].n_unique()
    assert audit.open(idx).findings().height > 0


def test_a_scan_with_nothing_new_skips_model_loading_and_reflagging(tmp_path):
    import audit

    a = audit.open(tmp_path / "idx", create=True)
    first = a.scan([SAMPLE], model="toy-shapes", policy=TOY_POLICY, workers=0)
    again = a.scan([SAMPLE], model="toy-shapes", policy=TOY_POLICY, workers=0)
    assert again.stages["flag"]["mode"] == "unchanged" and again.stages["embed"]["images_embedded"] == 0
    assert again.stages["flag"]["findings"] == first.stages["flag"]["findings"]
    assert sum(again.durations.values()) < 5
    # a new decision is new information: the next flag run applies it
    item = a.findings()["item_id"][0]
    a.review(item=item, decision="dismiss", note="toy check")
    third = a.scan([SAMPLE], model="toy-shapes", policy=TOY_POLICY, workers=0)
    assert third.stages["flag"]["mode"] == "incremental"


def test_a_signal_after_the_outcome_is_decided_does_not_change_the_exit_code(tmp_path):
    # Python restores default signal actions before tearing modules down; a SIGINT landing
    # then (here: from a destructor run during teardown) must not replace the real exit code.
    script = tmp_path / "late_signal.py"
    script.write_text(
        "import os, signal\n"
        "from audit.cli.app import exit_with\n"
        "class Late:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "late = Late()\n"
        f"exit_with({int(ExitCode.ENVIRONMENT)})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == ExitCode.ENVIRONMENT, res.stderr
