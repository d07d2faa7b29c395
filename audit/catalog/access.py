"""Opening, creating and checking the catalog file: never lose it, never guess.

*Creating* happens only for ``crawl``/``scan`` and only where no catalog exists. The schema
is built in a temporary file in the index folder, fsynced and renamed into place under the
index lock, so a SIGKILL at any moment leaves either no catalog or a whole one (leftover
temporary files are removed by the next creator, which holds the lock).

*Opening* checks before anything writes: the file is a regular file, not empty, starts
with the SQLite header, holds the audit tables and a schema version (``PRAGMA user_version``,
or for an index of a release before it ``meta.schema_version``), and (when small enough to be
cheap) passes ``PRAGMA quick_check``. Then ``audit.catalog.migrations.ensure_schema`` brings
it to the latest schema (an index of a newer audit is refused in one line). Anything else is a one-line
``CatalogDamaged`` naming the file and what to do; the file is left exactly as it was.
The checks run on a read-only connection. A write-ahead log (``catalog.sqlite-wal``) that
holds committed transactions is part of the catalog: a 0-byte main file beside a non-empty
log is judged by SQLite (which reads the log), never by its size alone.

*Read-only*: where the index cannot be written (a read-only mount of an evidence copy,
no write permission) or the caller asks for it, the catalog is opened with SQLite's
``mode=ro``. A WAL database opened that way still needs its ``-shm`` file; on a read-only
file system where that file does not exist and cannot be created, SQLite cannot open it
at all. Then, and only when the catalog has no write-ahead log with content and no audit
run holds the index lock, it is opened with ``immutable=1``: SQLite reads the main file
without locks or a ``-shm`` file. That is exact in this state: with no log, the main file
is the whole committed catalog, and no audit writer is running on it. A non-empty log that
cannot be read (no ``-shm``) is refused instead, since ``immutable`` would silently ignore
the writes it holds.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import time
from pathlib import Path

from audit.safeio import fsync_dir as _fsync_dir
from audit.errors import (
    CatalogDamaged,
    IndexMissing,
    IndexReadOnly,
    LockHeld,
    UsageError,
    raise_storage_error,
)

CATALOG_FILE = "catalog.sqlite"
SQLITE_MAGIC = b"SQLite format 3\x00"
# quick_check reads every page: ~25 ms for 16 MiB from the page cache, so up to 64 MiB
# every open can afford it; larger catalogs rely on SQLite reporting damage as it reads.
QUICK_CHECK_MAX_BYTES = 64 << 20
_NEW_PREFIX = f".{CATALOG_FILE}.new-"
_CORE_TABLES = ("meta", "items", "locations", "runs")
_FIX = "restore it from a backup, or start a new index with `audit crawl SOURCE --index NEW_DIR`"


class CatalogConnection(sqlite3.Connection):
    """A catalog connection that knows its file and whether it may write."""

    path: str = ""
    read_only: bool = False
    read_only_reason: str | None = None
    immutable: bool = False


def connect(
    path: str | os.PathLike, *, read_only: bool = False, immutable: bool = False, create: bool = False
) -> CatalogConnection:
    """An autocommit connection to ``path``: WAL and ``synchronous=FULL`` when writable;
    ``mode=ro`` (and ``immutable=1`` when asked) when read-only. Never creates the file
    unless ``create``."""
    p = Path(path).absolute()
    mode = "ro" if read_only else ("rwc" if create else "rw")
    uri = f"{p.as_uri()}?mode={mode}" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(
        uri, uri=True, isolation_level=None, timeout=60, check_same_thread=False, factory=CatalogConnection
    )
    conn.path, conn.read_only, conn.immutable = str(p), read_only, immutable
    try:
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
        else:
            conn.execute("PRAGMA temp_store=MEMORY")  # shadow tables of a read-only catalog
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=60000")
    except BaseException:
        conn.close()
        raise
    return conn


# ----------------------------------------------------------------------------- opening


def open_catalog(index_dir: Path, *, read_only: bool = False) -> tuple[CatalogConnection, str | None]:
    """(connection, why it is read-only or None) for the existing catalog of ``index_dir``.

    Raises ``IndexMissing`` when there is none, ``CatalogDamaged`` when it is not a sound
    audit catalog, an ``EnvironmentProblem`` when the storage is in the way."""
    path = index_dir / CATALOG_FILE
    if not os.path.lexists(path):
        raise IndexMissing(f"no audit index at {index_dir} (run `audit crawl SOURCE --index {index_dir}` first)")
    check_catalog_file(path)
    reason = "opened read-only" if read_only else _why_not_writable(path)
    conn = _checked_connection(path, writable=reason is None)
    if reason is None:
        conn.close()  # checked read-only; now the writer's connection
        try:
            conn = connect(path)
        except sqlite3.Error as exc:
            raise_storage_error(exc, path)
    conn.read_only_reason = reason
    try:
        from audit.catalog.migrations import ensure_schema

        ensure_schema(conn)  # the stores find their tables (shadowed when read-only)
    except BaseException:
        conn.close()
        raise
    return conn, reason


def check_catalog_file(path: Path) -> None:
    """The checks that need no SQLite: a regular, non-empty file with the SQLite header
    (a 0-byte file beside a write-ahead log with content is left to SQLite to judge)."""
    try:
        st = os.stat(path)
        wal = _size(Path(f"{path}-wal"))
        if not stat.S_ISREG(st.st_mode):
            raise _damaged(path, "not a regular file")
        if st.st_size == 0:
            if wal:
                return
            raise _damaged(path, "empty (0 bytes): its contents are lost")
        from audit.safeio import open_regular

        with open_regular(path) as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise_storage_error(exc, path)
    if head != SQLITE_MAGIC:
        raise _damaged(path, "not an SQLite database (damaged or replaced)")


def _checked_connection(path: Path, *, writable: bool) -> CatalogConnection:
    """A read-only connection on which the catalog passed ``validate``.

    Without a write-ahead log holding data the check reads the main file with
    ``immutable=1``: exact in that state, and it leaves no ``-wal``/``-shm`` beside a damaged
    file. A reader then gets a plain ``mode=ro`` connection (it sees later commits), or the
    immutable one where the file system cannot hold a ``-shm`` file (see the module doc)."""
    has_log = bool(_size(Path(f"{path}-wal")))
    conn = _try_open(path, immutable=not has_log)
    if conn is None:  # mode=ro cannot open a WAL catalog without its -shm file
        raise IndexReadOnly(
            f"catalog {path} cannot be read here: its write-ahead log ({path.name}-wal) holds writes and "
            f"its -shm file is missing on a read-only file system; copy the index folder to writable storage"
        )
    _validate_or_raise(conn, path)
    if writable or not conn.immutable:
        return conn
    plain = _try_open(path, immutable=False)
    if plain is not None:
        conn.close()
        return plain
    from audit.catalog.lock import writer_active

    if writer_active(path.parent):
        conn.close()
        raise IndexReadOnly(
            f"catalog {path} is being written by another audit run and cannot be read on this "
            "read-only file system until it finishes; try again later"
        )
    return conn


def _try_open(path: Path, *, immutable: bool) -> CatalogConnection | None:
    """A read-only connection that has read page 1, or None when SQLite cannot open the
    catalog read-only (SQLITE_CANTOPEN: a WAL file without a -shm it can create)."""
    conn = None
    try:
        conn = connect(path, read_only=True, immutable=immutable)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_CANTOPEN") and not immutable:
            return None
        what = _damage(exc)
        if what is not None:
            raise _damaged(path, what) from None
        raise_storage_error(exc, path)


def _validate_or_raise(conn: CatalogConnection, path: Path) -> None:
    try:
        validate(conn, path)
    except BaseException:
        conn.close()
        raise


def validate(conn: sqlite3.Connection, path: Path) -> None:
    """Raise ``CatalogDamaged`` unless ``conn`` holds a sound audit catalog of a version
    this audit reads (``InputError`` for one written by a newer audit)."""
    from audit.catalog.migrations import LATEST, META_SCHEMA_VERSION, newer_schema, user_version

    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
        missing = [t for t in _CORE_TABLES if t not in tables]
        if missing:
            what = (
                "an SQLite database but not an audit catalog"
                if len(missing) == len(_CORE_TABLES)
                else f"not a complete audit catalog (no {missing[0]} table)"
            )
            raise _damaged(path, what)
        version = user_version(conn)
        if version > LATEST:
            raise newer_schema(path.parent, version)
        if version == 0:  # unversioned: adopted by migration 1 if its meta.schema_version is one this reads
            row = conn.execute("SELECT value FROM main.meta WHERE key = 'schema_version'").fetchone()
            try:
                meta_version = int(row[0]) if row is not None else None
            except (TypeError, ValueError):
                meta_version = None
            if meta_version is None:
                raise _damaged(path, "not a complete audit catalog (no schema version)")
            if meta_version > META_SCHEMA_VERSION:
                raise newer_schema(path.parent, meta_version, unversioned=True)
        if os.stat(path).st_size + _size(Path(f"{path}-wal")) <= QUICK_CHECK_MAX_BYTES:
            verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                detail = " ".join(verdict.replace("*** in database main ***", "").split())[:200]
                raise _damaged(path, f"corrupt (quick_check: {detail})")
    except sqlite3.DatabaseError as exc:
        what = _damage(exc)
        if what is None:
            raise_storage_error(exc, path)
        raise _damaged(path, what) from None


def _damaged(path: Path, what: str) -> CatalogDamaged:
    return CatalogDamaged(f"catalog {path} is {what}; it was left as is: {_FIX}")


def _damage(exc: sqlite3.DatabaseError) -> str | None:
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        return "not an SQLite database (damaged or replaced)"
    if name.startswith("SQLITE_CORRUPT") or name == "SQLITE_FORMAT":
        return f"corrupt ({exc})"
    return None


def _why_not_writable(path: Path) -> str | None:
    """Why a writer's connection would fail here, or None. ``access`` honours read-only
    mounts and immutable files even for root, and file modes for everyone else."""
    sidecars = [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if os.path.lexists(p)]
    if all(os.access(p, os.W_OK) for p in (path, path.parent, *sidecars)):
        return None
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "no write permission"


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------- creating


def create_catalog(index_dir: Path) -> None:
    """Make a new catalog, at the latest schema, in ``index_dir`` unless one exists there."""
    path = index_dir / CATALOG_FILE
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--index {index_dir}: exists and is not a folder") from None
    except OSError as exc:
        raise_storage_error(exc, index_dir)
    lock = _creation_lock(index_dir, path)
    if lock is None:
        return  # another run made it meanwhile
    try:
        if os.path.lexists(path):
            return
        if _size(Path(f"{path}-wal")):
            raise CatalogDamaged(
                f"index {index_dir} has {CATALOG_FILE}-wal but no {CATALOG_FILE}: the catalog was moved or deleted "
                f"and its write-ahead log left behind; restore the catalog from a backup (or move the -wal file away)"
            )
        _remove_stale_new_files(index_dir)
        tmp = index_dir / f"{_NEW_PREFIX}{secrets.token_hex(6)}"
        try:
            _build(tmp)
            os.rename(tmp, path)  # atomic: the catalog appears whole or not at all
            _fsync_dir(index_dir)
        except BaseException as exc:
            _remove_stale_new_files(index_dir)
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise_storage_error(exc, path)
            raise
    finally:
        lock.release()


def _creation_lock(index_dir: Path, path: Path, *, patience: float = 30.0):
    """The index lock, or None when the catalog appeared while waiting for it."""
    from audit.catalog.lock import IndexLock

    deadline = time.monotonic() + patience
    while True:
        try:
            return IndexLock(index_dir).acquire()
        except LockHeld:
            if os.path.lexists(path):
                return None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _build(tmp: Path) -> None:
    from audit.catalog.migrations import ensure_schema

    conn = connect(tmp, create=True)
    try:
        # A rollback journal while it is built: each migration commits into the file itself
        # (a write-ahead log would double the disk it needs, and one close() could not
        # checkpoint on a full disk would stay behind under the temporary name). The first
        # writer's connection sets WAL again; the file is renamed into place only once every
        # migration is in, so there is never a catalog without its schema version.
        conn.execute("PRAGMA journal_mode=DELETE")
        ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    conn.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_new_files(index_dir: Path) -> None:
    """Temporary catalogs of creators that died (only called under the index lock)."""
    for entry in os.scandir(index_dir):
        if entry.name.startswith(_NEW_PREFIX) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
