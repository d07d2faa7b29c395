"""`audit report --force` deletes only a verified earlier report's own files, and a killed
report's staging folder is cleaned up by the next report, never a live one, never through
a symlink. (audit runs as root from cron: a planted manifest must not steer a delete.)"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import audit
from audit.errors import ExitCode, UsageError
from audit.report import verify_report
from audit.report.manifest import FORMAT
from audit.report.testing import build_fixture

from tests.cli_helper import audit_cli, audit_subprocess


@pytest.fixture(scope="module")
def fixture_src(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("force-fixture"))


@pytest.fixture
def index(fixture_src, tmp_path):
    shutil.copytree(fixture_src.index, tmp_path / "idx")
    return tmp_path / "idx"


def _report(index: Path, out: Path, **kw):
    with audit.open(index) as a:
        return a.report(out, argv=["audit", "report"], **kw)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _plant(out: Path, files: dict[str, str]) -> None:
    """A folder holding only a manifest.json of the right format that lists ``files``."""
    out.mkdir(exist_ok=True)
    manifest = {"format": FORMAT, "files": {name: {"sha256": sha, "size": 1} for name, sha in files.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest), "utf-8")


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "outside" / "victim"
    v.parent.mkdir(exist_ok=True)
    v.write_text("precious", "utf-8")
    return v


def _refused(index: Path, out: Path, *needles: str) -> None:
    before = {p.name: (p.is_symlink(), p.lstat().st_size) for p in out.iterdir()}
    with pytest.raises(UsageError) as info:
        _report(index, out, force=True)
    msg = str(info.value)
    assert "\n" not in msg and "nothing was deleted" in msg and str(out) in msg
    for n in needles:
        assert n in msg, msg
    assert {p.name: (p.is_symlink(), p.lstat().st_size) for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name or ".replaced-" in p.name]


# ----------------------------------------------------------------------------- --force


def test_genuine_earlier_report_is_replaced(index, tmp_path):
    out = tmp_path / "r"
    first = _report(index, out)
    assert "findings.parquet" in first.files
    second = _report(index, out, force=True, formats="html,jsonl")
    assert second.report_id != first.report_id
    assert sorted(p.name for p in out.iterdir()) == sorted(second.files), "the old report's other files are gone"
    assert verify_report(out).ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "r"], "no staging or aside folder left"


def test_planted_parent_path_is_refused(index, tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "r"
    _plant(out, {"../outside/victim": _sha(victim)})
    r = audit_cli("report", "--index", index, "--out", out, "--force", expected=ExitCode.USAGE)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unsafe path" in lines[0] and "nothing was deleted" in lines[0]
    assert victim.read_text() == "precious" and (out / "manifest.json").exists()


def test_planted_absolute_path_is_refused(index, tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "r"
    _plant(out, {str(victim): _sha(victim)})
    _refused(index, out, "unsafe path")
    assert victim.read_text() == "precious"


def test_listed_symlink_to_a_file_outside_is_refused(index, tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "r"
    _plant(out, {"findings.csv": _sha(victim)})
    (out / "findings.csv").symlink_to(victim)
    _refused(index, out, "not a regular file")
    assert victim.read_text() == "precious" and (out / "findings.csv").is_symlink()


def test_listed_path_through_a_symlinked_folder_is_refused(index, tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "r"
    _plant(out, {"sub/victim": _sha(victim)})
    (out / "sub").symlink_to(victim.parent, target_is_directory=True)
    _refused(index, out, "symbolic link")
    assert victim.read_text() == "precious"


def test_tampered_earlier_report_is_refused(index, tmp_path):
    out = tmp_path / "r"
    _report(index, out)
    with open(out / "index.html", "a", encoding="utf-8") as fh:
        fh.write("<!-- edited -->")
    _refused(index, out, "does not verify", "index.html: SHA-256 differs")
    assert (out / "index.html").read_text("utf-8").endswith("<!-- edited -->")


@pytest.mark.parametrize("odd", ["unlisted", "fifo", "subfolder", "manifest_symlink"])
def test_anything_odd_in_the_folder_is_refused(index, tmp_path, odd):
    out = tmp_path / "r"
    _report(index, out)
    if odd == "unlisted":
        (out / "notes.txt").write_text("mine")
    elif odd == "fifo":
        os.mkfifo(out / "pipe")
    elif odd == "subfolder":
        (out / "keep").mkdir()
    else:
        (out / "manifest.json").rename(tmp_path / "real-manifest.json")
        (out / "manifest.json").symlink_to(tmp_path / "real-manifest.json")
    _refused(index, out)


def test_out_folder_that_is_a_symlink_is_refused(index, tmp_path):
    real = tmp_path / "real"
    _report(index, real)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with pytest.raises(UsageError, match="not a folder"):
        _report(index, tmp_path / "link", force=True)
    assert verify_report(real).ok


# ----------------------------------------------------------------------------- killed runs


def _report_killed_at(index: Path, out: Path, c_function: str, nth: int = 1) -> None:
    """Run a report in a child that SIGKILLs itself on its ``nth`` call of the C function
    ``c_function`` made while the staging folder exists (os.write: midway through writing files; os.rename: all written, not
    yet moved into place) — a real SIGKILL at a known point."""
    code = f"""
        import os, signal, sys
        seen = 0
        def staging():
            # count only the calls made once the report's staging folder exists: other
            # writes (a cache, a log) may come first and differ from machine to machine
            try:
                return any(".partial-" in n for n in os.listdir({str(out.parent)!r}))
            except FileNotFoundError:
                return False
        def prof(frame, event, arg):
            global seen
            if event == "c_call" and getattr(arg, "__name__", "") == {c_function!r} \\
                    and getattr(arg, "__module__", "") == "posix" and staging():
                seen += 1
                if seen == {nth}:
                    os.kill(os.getpid(), signal.SIGKILL)
        import audit
        a = audit.open({str(index)!r})
        sys.setprofile(prof)
        a.report({str(out)!r}, force=True)
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".replaced-" in p.name)


@pytest.mark.parametrize("at", ["write", "rename"])
def test_staging_of_a_killed_report_is_cleaned_up_by_the_next(index, tmp_path, at):
    out = tmp_path / "reports" / "r"
    _report_killed_at(index, out, at)
    left = _leftovers(out.parent)
    assert len(left) == 1 and left[0].startswith(".r.partial-"), left
    assert not out.exists(), "a killed report never appears half-made"
    s = _report(index, out)
    assert _leftovers(out.parent) == [] and verify_report(s.out_dir).ok


def test_report_killed_between_its_renames_keeps_the_earlier_report(index, tmp_path):
    """Killed after moving the earlier report aside and before moving the new one in: the
    next run puts the earlier report back, then replaces it."""
    out = tmp_path / "r"
    first = _report(index, out)
    _report_killed_at(index, out, "rename", nth=2)
    assert not out.exists() and len(_leftovers(tmp_path)) == 2
    second = _report(index, out, force=True)
    assert _leftovers(tmp_path) == [] and verify_report(out).ok and second.report_id != first.report_id


def test_live_staging_and_odd_leftovers_are_never_removed(index, tmp_path):
    parent = tmp_path / "reports"
    parent.mkdir()
    live = parent / ".r.partial-0000aaaa"
    live.mkdir()
    (live / "index.html").write_text("being written")
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a report in progress (another process in real life)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    (parent / ".r.partial-0000bbbb").symlink_to(outside, target_is_directory=True)
    nested = parent / ".r.partial-0000cccc"
    (nested / "deeper").mkdir(parents=True)
    (nested / "deeper" / "x").write_text("x")
    stale = parent / ".r.partial-0000dddd"
    stale.mkdir()
    (stale / "findings.jsonl").write_text("{}")
    try:
        # flock locks are per open file: this process's own lock must not look free to
        # itself through another descriptor, so run the report in a child process
        r = audit_subprocess("report", "--index", str(index), "--out", str(parent / "r"), "-q")
        assert r.returncode == ExitCode.OK, r.stderr
    finally:
        os.close(fd)
    assert (live / "index.html").read_text() == "being written"
    assert (outside / "precious.txt").read_text() == "keep" and (parent / ".r.partial-0000bbbb").is_symlink()
    assert (nested / "deeper" / "x").exists()
    assert not stale.exists(), "an unlocked staging folder of plain files is a killed run's: removed"


def test_staging_poll_and_kill_from_outside(index, tmp_path):
    """The same from the outside: SIGKILL the report process as soon as its staging folder
    appears (several tries: the window is short), then the next report cleans up."""
    parent = tmp_path / "reports"
    out = parent / "r"
    caught = False
    for _ in range(5):
        p = subprocess.Popen(
            [sys.executable, "-m", "audit", "report", "--index", str(index), "--out", str(out), "--force", "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            if parent.exists() and _leftovers(parent):
                p.kill()
                break
            time.sleep(0.0005)
        p.wait()
        if p.returncode == -9 and _leftovers(parent):
            caught = True
            break
    if not caught:
        pytest.skip("the report finished before its staging folder was seen (machine too fast or too slow)")
    s = _report(index, out, force=True)
    assert _leftovers(parent) == [] and verify_report(s.out_dir).ok
