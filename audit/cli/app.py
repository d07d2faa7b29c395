"""The ``audit`` command: a thin layer over ``audit.api``; the only place that prints.

Human messages and progress go to stderr, ``--json`` summaries to stdout. Errors are one
line (``audit: error: ...``) with the exit code of ``audit.errors.ExitCode``; pass
``--traceback`` to see where an error came from.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import traceback
from typing import NoReturn, Optional

import typer

from audit.errors import AuditError, ExitCode, storage_error

app = typer.Typer(
    name="audit",
    help="Audit archives of AI-generated images: catalog, embed, index, flag and report.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_INTERRUPTED = "audit: interrupted; work committed so far is kept, rerun to finish"
INTERNAL_ERROR = int(ExitCode.INTERNAL)  # sysexits EX_SOFTWARE: a bug in audit, not in the input
_state = {"traceback": False}


def _version(value: bool) -> None:
    if value:
        from audit import __version__

        typer.echo(f"audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    traceback: bool = typer.Option(False, "--traceback", help="Show the full traceback of an error."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    _state["traceback"] = traceback


def _register_commands() -> None:
    from audit.cli import crawl_cmd  # noqa: F401 - registers on import
    from audit.cli import index_cmd, search_cmd  # noqa: F401
    from audit.cli import embed_cmd  # noqa: F401
    from audit.cli import flag_cmd, review_cmd  # noqa: F401
    from audit.cli import report_cmd  # noqa: F401
    from audit.cli import scan_cmd  # noqa: F401
    from audit.cli import check_prompt_cmd, faces_cmd  # noqa: F401
    from audit.cli import info_cmd  # noqa: F401


def _raise_interrupt(signum, frame):  # SIGTERM from cron/systemd: stop like Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    args = sys.argv[1:] if argv is None else argv
    _state["traceback"] = "--traceback" in args
    try:
        _register_commands()
        # Outside standalone mode click returns the code of a `typer.Exit(code)`; typer turns
        # a KeyboardInterrupt inside a command into Exit(130) on its own, without a word.
        returned = app(args=args, prog_name="audit", standalone_mode=False)
        code = returned if isinstance(returned, int) else 0
        if code == ExitCode.INTERRUPTED:
            code = _fail(None, _INTERRUPTED, code)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except AuditError as exc:
        code = _fail(exc, f"audit: error: {exc}", int(exc.exit_code))
    except KeyboardInterrupt:
        code = _fail(None, _INTERRUPTED, int(ExitCode.INTERRUPTED))
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        # typer ships its own copy of click, so recognise click's exceptions by shape.
        if type(exc).__name__ == "Abort":
            code = _fail(None, _INTERRUPTED, int(ExitCode.INTERRUPTED))
        elif callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # usage errors: click's own message, exit code 2
            code = exc.exit_code
        elif (env := storage_error(exc)) is not None:
            # the storage, not audit: disk full, read-only, I/O error (the library names the
            # path where it can; this is the net under the rest)
            code = _fail(exc, f"audit: error: {env}", int(env.exit_code))
        else:
            code = _fail(
                exc, f"audit: internal error: {type(exc).__name__}: {exc} (rerun with --traceback)", INTERNAL_ERROR
            )
    return int(code)


def _fail(exc: BaseException | None, message: str, code: int) -> int:
    if _state["traceback"] and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    print(message.splitlines()[0] if message else "audit: error", file=sys.stderr)
    return code


def exit_with(code: int) -> NoReturn:
    """Leave the process with ``code``, which a late SIGINT/SIGTERM can no longer change.

    Once the work is done and its outcome decided, Python restores the default actions of
    SIGINT and SIGTERM before it tears down its modules (torch, polars, faiss: about a
    second). A signal landing then would kill the process and a cron job would read
    "killed by SIGINT" instead of the real result, so both are ignored for the last stretch.
    Ignored, not handled: Python keeps SIG_IGN through finalisation, but no handler of its own.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe on the other end: nothing more to say
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _teardown_is_slow() and _only_daemon_threads_left():
        _leave_without_teardown(code)
    sys.exit(code)


# Modules whose teardown at interpreter exit is slow: after an embed, Python took 2.6 s
# (2-core CPU) to take torch and open_clip apart, 10% of a 250-image run, for nothing.
_SLOW_TEARDOWN = ("torch",)


def _teardown_is_slow() -> bool:
    return any(name in sys.modules for name in _SLOW_TEARDOWN)


def _only_daemon_threads_left() -> bool:
    """A live non-daemon thread would be joined by a normal exit: then exit normally."""
    main = threading.main_thread()
    return all(t is main or t.daemon or not t.is_alive() for t in threading.enumerate())


def _leave_without_teardown(code: int) -> NoReturn:
    """What a normal exit does that matters, then ``os._exit``: the exit handlers run (Ray's
    shutdown, logging's flush, temporary directories' cleanup) and the standard streams are
    flushed; only the module teardown is skipped. Every store is committed and closed by
    now (each command closes what it opened before it returns)."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def run() -> None:  # pragma: no cover - console script wrapper
    exit_with(main())
