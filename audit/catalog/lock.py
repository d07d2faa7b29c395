"""One writer per index at a time.

An advisory ``flock`` on ``<index>/lock``: the kernel drops it when the holder dies, even
by SIGKILL, so a crashed run never leaves a stale lock behind. The lock is re-entrant
within a process, so ``audit scan`` can hold it across every stage it runs while each
stage takes it as usual.

Only writers take it: readers never need write access to the index (``writer_active``
looks with a shared lock on a read-only descriptor). A writer that cannot create or open
the lock file for writing gets ``IndexReadOnly`` (exit 3) naming the index.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from audit.errors import IndexMissing, IndexReadOnly, LockHeld, raise_storage_error

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
        fd = self._open()
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
        try:  # who holds it, for the message of the next run; only informative (a full disk must not matter)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd = fd
        _HELD[key] = [fd, 1]
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileNotFoundError:
            raise IndexMissing(f"no audit index at {self.path.parent}") from None
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                from audit.catalog.store import read_only_message

                why = "read-only file system" if exc.errno == errno.EROFS else "no write permission"
                raise IndexReadOnly(read_only_message(self.path.parent, why)) from None
            raise_storage_error(exc, self.path)

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


def writer_active(index_dir: Path) -> bool:
    """Whether an audit run holds the lock of ``index_dir`` now. Needs no write access: a
    shared lock on a read-only descriptor conflicts with a writer's exclusive one."""
    try:
        fd = os.open(Path(index_dir) / "lock", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False  # no lock file: no writer has ever run here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
