"""Opening files an adversary may have planted: regular files only, never blocking.

An archive under audit is controlled by the people being audited, and ``audit`` runs as
root from cron. A name that looks like an image or a sidecar can be a fifo (``open``
blocks forever waiting for a writer), a device (``/dev/zero`` reads forever) or a
socket; a file listed as regular can be swapped for any of them before it is read.
``open_regular`` opens with ``O_NONBLOCK`` (a fifo opens at once instead of waiting),
checks with ``fstat`` on the open descriptor (no check-then-open race) that it is a
regular file, and only then hands back an ordinary blocking file object. Reads are
capped: nothing here reads more than the caller's stated maximum.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path names something other than a regular file (fifo, device, socket, directory)."""


def kind_of(mode: int) -> str:
    """A reader's word for a file type: "fifo", "socket", "device file", "directory", ..."""
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "special file"


def open_regular(path: str | os.PathLike, *, nofollow: bool = False) -> BinaryIO:
    """``open(path, "rb")`` that refuses, without blocking, anything but a regular file.

    Raises ``NotRegularFile`` (an ``OSError``) naming what the path is instead, or the
    ``OSError`` of the open itself (not found, permission denied, symlink loop...).
    ``nofollow`` also refuses a symbolic link as the last component."""
    flags = _FLAGS | (getattr(os, "O_NOFOLLOW", 0) if nofollow else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if nofollow and exc.errno == errno.ELOOP and os.path.islink(path):
            raise NotRegularFile(
                errno.EINVAL, "not a regular file (symbolic link): not read", os.fspath(path)
            ) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind_of(mode)}): not read", os.fspath(path))
        if _FLAGS & getattr(os, "O_NONBLOCK", 0):
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class TooLarge(ValueError):
    """More bytes than the caller allows."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"{size} bytes > {limit} byte limit")
        self.size = size
        self.limit = limit


def read_capped(fh: BinaryIO, limit: int, *, chunk: int = 1 << 20) -> bytes:
    """Everything ``fh`` yields, or ``TooLarge`` as soon as it passes ``limit`` bytes.

    Reads in chunks, so a stream that lies about its size (or has none: a pipe, a
    decompressor) never costs more than ``limit + chunk`` bytes of memory."""
    parts: list[bytes] = []
    total = 0
    while True:
        block = fh.read(min(chunk, limit + 1 - total))
        if not block:
            return b"".join(parts)
        total += len(block)
        if total > limit:
            raise TooLarge(total, limit)
        parts.append(block)


def read_regular(path: str | os.PathLike, limit: int, *, nofollow: bool = False) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them (``TooLarge``
    beyond); ``NotRegularFile``/``OSError`` as for ``open_regular``."""
    with open_regular(path, nofollow=nofollow) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise TooLarge(size, limit)
        return read_capped(fh, limit)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in ``path`` durable; best effort (some file systems
    cannot open or fsync a directory: then there is nothing more to do)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
