"""``exit_with`` after torch has been imported leaves with ``os._exit`` once the exit
handlers have run and the streams are flushed (module teardown skipped: seconds after an
embed); everything else a normal exit guarantees must still hold."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audit.cli.app import _only_daemon_threads_left, _teardown_is_slow

pytest.importorskip("torch")


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "leave.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)


def test_exit_handlers_run_output_is_kept_and_the_code_is_the_commands(tmp_path):
    marker = tmp_path / "handler-ran"
    done = _run(
        f"""
        import atexit, sys, tempfile, os
        import torch  # the slow teardown that the fast path skips
        from audit.cli.app import exit_with, _teardown_is_slow
        assert _teardown_is_slow()
        keep = tempfile.TemporaryDirectory()  # its cleanup is an exit-time finaliser
        open({str(tmp_path / "tempdir")!r}, "w").write(keep.name)
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        sys.stdout.write("buffered, never flushed by the script")  # no newline, no flush
        sys.stderr.write("to stderr as well")
        exit_with(3)
        """,
        tmp_path,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, never flushed by the script"
    assert done.stderr == "to stderr as well"
    assert marker.read_text() == "ran"
    assert not Path((tmp_path / "tempdir").read_text()).exists()  # weakref.finalize ran at exit


def test_a_live_non_daemon_thread_is_still_joined(tmp_path):
    out = tmp_path / "thread-finished"
    done = _run(
        f"""
        import threading, time
        import torch
        from audit.cli.app import exit_with
        def work():
            time.sleep(0.5)
            open({str(out)!r}, "w").write("done")
        threading.Thread(target=work).start()
        exit_with(0)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "done"


def test_without_torch_the_exit_is_the_normal_one(tmp_path):
    done = _run(
        """
        import sys
        from audit.cli.app import _teardown_is_slow
        print(_teardown_is_slow(), "torch" in sys.modules)
        """,
        tmp_path,
    )
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_predicates_in_this_process():
    import threading

    assert _teardown_is_slow() == ("torch" in sys.modules)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not _only_daemon_threads_left()
    finally:
        stop.set()
        t.join()
