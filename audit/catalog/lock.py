"""One writer per index at a time.

An advisory ``flock`` on ``<index>/lock``: the kernel drops it when the holder dies, even
by SIGKILL, so a crashed run never leaves a stale lock behind. The lock is re-entrant
within a process, so ``audit scan`` can hold it across every stage it runs while each
stage takes it as usual.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from audit.errors import LockHeld

# index lock path -> [fd, depth] for the locks this process holds
_HELD: dict[str, list[int]] = {}


class IndexLock:
    def __init__(self, index_dir: Path, *, wait: bool = False, timeout: float | None = None):
        self.path = Path(index_dir) / "lock"
        self.wait = wait
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> "IndexLock":
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
            self._fd = _HELD[key][0]
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not self.wait or (deadline is not None and time.monotonic() > deadline):
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise LockHeld(
                        f"index {self.path.parent} is in use by another audit run{holder}; "
                        "try again later or pass --wait"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd
        _HELD[key] = [fd, 1]
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        key = os.path.realpath(self.path)
        held = _HELD.get(key)
        if held is not None:
            held[1] -= 1
            if held[1] > 0:
                self._fd = None
                return
            del _HELD[key]
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "IndexLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""
