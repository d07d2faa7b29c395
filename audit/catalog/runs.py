"""Run bookkeeping: every command that changes an index leaves one row in ``runs``.

Who ran what, when, with which command line and tool version, and how it ended (``ok``,
``interrupted``, ``failed``) with the command's summary. The stages record their runs here
(through the catalog they work on), not through the ``audit.api.Audit`` facade, so a stage
never needs the facade and the facade never needs a stage at import time.
"""

from __future__ import annotations

import getpass
import os
import socket
import sqlite3
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from audit.errors import EnvironmentProblem
from audit.timeutil import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from audit.catalog.store import Catalog


@dataclass
class RunRecord:
    """One run being recorded. ``run_id`` is None when the run is not recorded (a
    best-effort run on a read-only catalog or one that refused the record)."""

    run_id: int | None
    status: str = "failed"
    # anything with ``to_dict()``, or a plain dict: what the run row's summary says
    summary: Any = None


def current_user() -> str:
    """The login name of this process, or its uid where there is none (a container
    running as an unnamed uid): runs and review decisions say who made them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def current_host() -> str:
    return socket.gethostname()


def command_line(argv: Sequence[str] | None) -> list[str]:
    return list(argv if argv is not None else sys.argv)


def begin_run(catalog: "Catalog", command: str, argv: Sequence[str] | None = None) -> int:
    """Insert the ``running`` row of ``command``; returns its run id."""
    from audit import __version__

    return catalog.begin_run(
        command,
        argv=command_line(argv),
        tool_version=__version__,
        user=current_user(),
        host=current_host(),
        now=utc_now(),
    )


@contextmanager
def recorded_run(
    catalog: "Catalog", command: str, argv: Sequence[str] | None = None, *, best_effort: bool = False
) -> Iterator[RunRecord]:
    """Record one run of ``command`` in ``catalog`` (who, when, command line, outcome).

    The caller sets ``run.summary``; the run ends as ``ok``, ``interrupted`` (Ctrl-C,
    SIGTERM) or ``failed``, with that summary. A read-only catalog refuses the run
    (``IndexReadOnly``), unless ``best_effort``: then, as when the catalog cannot take
    the record (a storage problem), the work goes on unrecorded (``run.run_id`` is None):
    a report of a read-only copy of evidence is still written."""
    if best_effort:
        run = RunRecord(None if catalog.read_only else _try_begin(catalog, command, argv))
    else:
        catalog.require_writable(command)
        run = RunRecord(begin_run(catalog, command, argv))
    try:
        yield run
        run.status = "ok"
    except KeyboardInterrupt:
        run.status = "interrupted"
        raise
    finally:
        if run.run_id is not None:
            summary = (
                run.summary
                if isinstance(run.summary, dict)
                else (run.summary.to_dict() if run.summary is not None else {})
            )
            try:
                catalog.finish_run(run.run_id, status=run.status, summary=summary, now=utc_now())
            except (sqlite3.Error, EnvironmentProblem):
                if not best_effort:
                    raise


def _try_begin(catalog: "Catalog", command: str, argv: Sequence[str] | None) -> int | None:
    try:
        return begin_run(catalog, command, argv)
    except (sqlite3.Error, EnvironmentProblem):  # a catalog that cannot take the run record
        return None
