"""Errors the user can act on, each tied to the exit code the CLI returns for it.

Anything that is not an ``AuditError`` is a bug: the CLI reports it in one line too,
and ``--traceback`` shows where it came from.
"""

from __future__ import annotations

import enum
import errno
import os
import resource
import typing


@enum.unique  # each code means one thing to a script reading it
class ExitCode(enum.IntEnum):
    OK = 0
    FINDINGS = 1  # `audit scan`: findings at or above --fail-on; `audit check-prompt`: denied
    USAGE = 2  # bad flag, invalid policy, missing index, unreadable input
    ENVIRONMENT = 3  # weights unavailable, dependency missing, lock held, disk full, read-only index
    REPORT_CHANGED = 4  # `audit report --verify`: the report folder no longer matches its manifest
    INTERNAL = 70  # sysexits EX_SOFTWARE: a bug in audit, not in the input
    INTERRUPTED = 130


class AuditError(Exception):
    """Base of every error meant for the user; ``str()`` is a one-line message."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(AuditError):
    exit_code = ExitCode.USAGE


class InputError(AuditError):
    """An input (source, manifest, policy, index) cannot be used as given."""

    exit_code = ExitCode.USAGE


class IndexMissing(InputError):
    pass


class CatalogDamaged(InputError):
    """The catalog file exists but is empty, not SQLite, not an audit catalog, or corrupt.
    It is never overwritten or repaired in place: the message says what to do instead."""


class EnvironmentProblem(AuditError):
    exit_code = ExitCode.ENVIRONMENT


class LockHeld(EnvironmentProblem):
    pass


class IndexReadOnly(EnvironmentProblem):
    """A command that writes met an index it cannot write (read-only mount, permissions)."""


class DiskFull(EnvironmentProblem):
    """No space left (or a quota or file size limit reached) while writing ``path``."""


class StorageError(EnvironmentProblem):
    """The storage failed under a file audit reads or writes (I/O error, cannot open)."""


class DependencyMissing(EnvironmentProblem):
    pass


class WeightsUnavailable(EnvironmentProblem):
    pass


# errno values that mean "no room to write": out of space, out of quota, over the size limit.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


def storage_error(exc: BaseException, path: "str | os.PathLike | None" = None) -> "AuditError | None":
    """The ``EnvironmentProblem`` an ``OSError`` or ``sqlite3`` error stands for, naming
    ``path`` (else the error's own file name), ``CatalogDamaged`` for SQLite's "corrupt" and
    "not a database", or None when it is neither (a bug).

    SQLite reports ENOSPC as SQLITE_FULL but EFBIG (RLIMIT_FSIZE) and EDQUOT as a plain
    SQLITE_IOERR_WRITE; such write errors are called "disk full" when the file system is
    (nearly) full or a file size limit is set, else an I/O error."""
    if isinstance(exc, AuditError):
        return exc if isinstance(exc, (EnvironmentProblem, CatalogDamaged)) else None
    if isinstance(exc, OSError) and exc.errno is not None:
        where = str(path or exc.filename or "?")
        reason = exc.strerror or str(exc)
        if exc.errno in _NO_ROOM:
            return DiskFull(f"disk full writing {where} ({reason})")
        if exc.errno in _READ_ONLY:
            return IndexReadOnly(f"{where} is on a read-only file system ({reason})")
        if exc.errno in _DENIED:
            return StorageError(f"permission denied on {where} ({reason})")
        if exc.errno == errno.EIO:
            return StorageError(f"I/O error on {where} ({reason})")
        return None
    name = getattr(exc, "sqlite_errorname", None)
    if not isinstance(name, str):
        return None
    where = str(path or "the catalog")
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB":
        return CatalogDamaged(
            f"{where} is corrupt ({exc}); restore it from a backup, or start a new index "
            "with `audit crawl SOURCE --index NEW_DIR`"
        )
    if name == "SQLITE_FULL":
        return DiskFull(f"disk full writing {where} ({exc})")
    if name.startswith("SQLITE_READONLY") or name == "SQLITE_PERM":
        return IndexReadOnly(f"{where} is read-only ({exc})")
    if name.startswith("SQLITE_IOERR"):
        why = _no_room_left(path) if name in _WRITE_ERRORS else None
        if why:
            return DiskFull(f"disk full writing {where} ({why})")
        return StorageError(f"I/O error on {where} ({name.lower().removeprefix('sqlite_ioerr_') or 'read'}: {exc})")
    if name.startswith("SQLITE_CANTOPEN"):
        return StorageError(f"cannot open {where} ({exc}); check that its folder exists and can be read")
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or name.startswith("SQLITE_BUSY"):
        return LockHeld(f"{where} is locked by another process ({exc}); try again later")
    return None


_WRITE_ERRORS = ("SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE", "SQLITE_IOERR_SHMSIZE")


def _no_room_left(path: "str | os.PathLike | None") -> str | None:
    """What explains a failed write to ``path``: a file size limit or a (nearly) full file
    system; None when neither does."""

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return f"file size limit of {soft:,} bytes reached"
    if path is None:
        return None
    try:
        st = os.statvfs(os.path.dirname(os.fspath(path)) or ".")
    except OSError:
        return None
    if st.f_bavail * st.f_frsize < 1 << 20:  # under a MiB free: the write ran out of room
        return "no space left on the file system"
    return None


def raise_storage_error(exc: BaseException, path: "str | os.PathLike | None" = None) -> "typing.NoReturn":
    """Raise what ``storage_error`` makes of ``exc`` (from it), else ``exc`` itself."""
    mapped = storage_error(exc, path)
    if mapped is None or mapped is exc:
        raise exc
    raise mapped from exc
