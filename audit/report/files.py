"""Owner-only files and folders, SHA-256 of files, text that is always valid UTF-8."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as owner-only folders."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
        os.chmod(p, DIR_MODE)
    return path


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a new owner-only file (0600); refuses to replace an existing one. An
    ``OSError`` (disk full, quota, file size limit) names ``path``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        os.close(fd)
    return Path(path)


class PrivateFile:
    """A new owner-only file (0600) written in pieces: refuses to replace an existing one,
    fsyncs on close; an ``OSError`` names the path. A binary file object (``write``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
            os.fchmod(fd, FILE_MODE)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        self.fh = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            return self.fh.write(data)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    # pyarrow's writers ask for these of a file object
    closed = property(lambda self: self.fh.closed)

    def tell(self) -> int:
        return self.fh.tell()

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        if self.fh.closed:
            return
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        finally:
            self.fh.close()

    def __enter__(self) -> "PrivateFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def clean_text(value) -> str | None:
    """``value`` as a str that encodes to UTF-8: bytes are decoded with U+FFFD for bad
    sequences, lone surrogates become ``\\udcXX`` escapes (visible, not lost)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
