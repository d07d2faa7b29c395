"""Run the ``audit`` command in this process, in the style of HTTPie's test helper ``http()``.

``audit_cli("crawl", str(src), "--index", str(idx))`` runs ``audit.cli.app.main`` with those
arguments, captures stdout and stderr, and asserts that the exit status is the expected
``ExitCode`` (``OK`` unless told otherwise; ``expected=None`` checks nothing). It returns a
``CLIResult`` whose ``exit_status`` is an ``ExitCode`` where the number is one.

In-process is what most CLI tests need: the same ``main()`` the console script calls, at a
fraction of a subprocess's start-up (no fresh import of torch per call). Tests of signals,
kills and process exit (``exit_with``), and of the ``python -m audit`` entry point itself, keep
their subprocesses: ``audit_subprocess`` runs ``python -m audit`` and returns the completed process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import ExitCode


@dataclass
class CLIResult:
    exit_status: "ExitCode | int"
    stdout: str
    stderr: str

    # the names of subprocess.CompletedProcess, so a test reads the same either way
    @property
    def returncode(self) -> int:
        return int(self.exit_status)

    def json(self) -> Any:
        """stdout parsed as the one JSON document a ``--json`` command prints."""
        return json.loads(self.stdout)


class _Stream(io.TextIOWrapper):
    """A text stream with a ``.buffer`` (like the real sys.stdout) that is never a TTY."""

    def __init__(self, text: str = "") -> None:
        super().__init__(
            io.BytesIO(text.encode()), encoding="utf-8", errors="replace", newline=None, write_through=True
        )

    def isatty(self) -> bool:  # noqa: D401 - io API
        return False

    def text(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", "replace")  # type: ignore[attr-defined]


@contextlib.contextmanager
def _environment(env: dict[str, str] | None, cwd: Path | str | None):
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    try:
        if env:
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


def audit_cli(
    *args: Any,
    expected: "ExitCode | None" = ExitCode.OK,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
) -> CLIResult:
    """Run ``audit ARGS`` in process; assert the exit status is ``expected`` (unless None)."""
    from audit.cli.app import main

    argv = [str(a) for a in args]
    out, err = _Stream(), _Stream()
    sin = _Stream(stdin or "")
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    try:
        with _environment(env, cwd):
            sys.stdin, sys.stdout, sys.stderr = sin, out, err
            code = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for sig, handler in saved.items():  # main() installs its own SIGTERM handler
            signal.signal(sig, handler)
    try:
        status: ExitCode | int = ExitCode(code)
    except ValueError:
        status = code
    result = CLIResult(status, out.text(), err.text())
    if expected is not None:
        assert status == expected, (
            f"audit {' '.join(argv)}: exit status {status!r}, expected {expected!r}\n"
            f"--- stderr ---\n{result.stderr}\n--- stdout ---\n{result.stdout[:2000]}"
        )
    return result


def audit_subprocess(
    *args: Any, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m audit ARGS`` in a fresh process and return it completed (text output).

    Only for what needs a process of its own: signals, kills, start-up cost, the environment a
    fresh interpreter sees, the entry point. Everything else uses ``audit_cli``."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )
