"""Imported last in the embedding fork server: it leaves without tearing torch down.

The fork server that ``LocalExecutor`` starts preloads torch and open_clip, then exits when
the audit process closes its end of the server's pipe. Tearing those modules down took it
about 2.4 s (2-core CPU), and it holds the audit process's stdout and stderr until then,
so anything that reads the command's output to the end (``subprocess.run``, cron, a
pipe) waited that long after the audit process itself had finished. The server has no
state of its own to save (each worker it forks leaves with ``os._exit`` already), so its
exit handlers end in ``os._exit`` once the streams are flushed. Exit handlers run last in,
first out: registered after torch's, this one runs first."""

from __future__ import annotations

import atexit
import os
import sys


def _leave_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


atexit.register(_leave_now)
