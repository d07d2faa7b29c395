"""The catalog: a SQLite database in the index directory.

SQLite in WAL mode with ``synchronous=FULL`` commits atomically and survives SIGKILL (and
power loss) at any point: a transaction is either wholly in the file or not at all. Every
write below happens inside one ``BEGIN IMMEDIATE ... COMMIT``. Creating, opening and
checking the file (and read-only access) are in ``audit.catalog.access``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from audit.catalog.access import CATALOG_FILE, connect, create_catalog, open_catalog
from audit.catalog.schema import SEQ_FIELDS, ITEM_COLUMNS, LOCATION_COLUMNS
from audit.errors import IndexReadOnly, UsageError, raise_storage_error

__all__ = ["CATALOG_FILE", "Catalog", "connect", "transaction"]
_ITEM_NAMES = [n for n, _ in ITEM_COLUMNS]
_LOCATION_NAMES = [n for n, _ in LOCATION_COLUMNS]
# SQLite's limit on host parameters is 32766 since 3.32; stay well below it.
_IN_CHUNK = 2000


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on an autocommit connection: taken at once (IMMEDIATE, so two
    writers never deadlock half-way), committed whole or rolled back whole.

    Storage trouble becomes an ``EnvironmentProblem`` naming the catalog (disk full, read-only,
    I/O error); SQLite has then already undone the transaction or it is rolled back here."""
    path = getattr(conn, "path", None)
    if getattr(conn, "read_only", False):
        raise IndexReadOnly(
            read_only_message(Path(path).parent, getattr(conn, "read_only_reason", None) or "opened read-only")
        )
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise_storage_error(exc, path)
    try:
        yield conn
    except BaseException as exc:
        if conn.in_transaction:  # SQLITE_FULL and some I/O errors roll back on their own
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError):
            raise_storage_error(exc, path)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise_storage_error(exc, path)


class Catalog:
    """Items, locations, containers and runs of one index.

    Opens an existing catalog (read-only where the storage allows nothing else, or when
    ``read_only``: then ``read_only`` is True and ``read_only_reason`` says why); creates
    one only with ``create=True`` and only where none exists (see ``audit.catalog.access``);
    either way at the latest schema (``audit.catalog.migrations``)."""

    def __init__(self, index_dir: Path, *, create: bool = False, read_only: bool = False):
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / CATALOG_FILE
        if create and not os.path.lexists(self.path):
            if read_only:
                raise UsageError("a new index cannot be created read-only")
            create_catalog(self.index_dir)
        self.conn, self.read_only_reason = open_catalog(self.index_dir, read_only=read_only)
        self.read_only = self.read_only_reason is not None
        try:
            if not self.read_only:
                self._number_unsequenced_items()
        except BaseException:
            self.conn.close()
            raise

    def _number_unsequenced_items(self) -> None:
        """Items of a catalog made before the change sequence get numbers once, in rowid
        order above any already given (one indexed probe when there are none to give)."""
        if self.conn.execute("SELECT 1 FROM items WHERE seq IS NULL LIMIT 1").fetchone() is None:
            return
        with self.transaction() as c:
            top = c.execute("SELECT coalesce(max(seq), 0) FROM items").fetchone()[0]
            c.execute("UPDATE items SET seq = ? + rowid WHERE seq IS NULL", (top,))

    def max_item_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM items").fetchone()[0])

    def require_writable(self, command: str) -> None:
        """Refuse, in one line, a command that writes when the index is read-only."""
        if self.read_only:
            raise IndexReadOnly(read_only_message(self.index_dir, self.read_only_reason, command))

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        return transaction(self.conn)

    # --- runs: who ran what, when; the latest run id is the catalog version reports cite
    def begin_run(self, command: str, *, argv: Sequence[str], tool_version: str, user: str, host: str, now: str) -> int:
        self.require_writable(command)
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (command, argv, tool_version, user, host, started, status) VALUES (?,?,?,?,?,?, 'running')",
                (command, json.dumps(list(argv)), tool_version, user, host, now),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, *, status: str, summary: dict[str, Any], now: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET finished=?, status=?, summary=? WHERE run_id=?",
                (now, status, json.dumps(summary, default=str), run_id),
            )

    def version(self) -> int:
        """Monotonic catalog version: the id of the latest run that wrote to it."""
        row = self.conn.execute("SELECT max(run_id) FROM runs").fetchone()
        return int(row[0] or 0)

    # --- incremental crawling
    def known_locations(self, uris: Sequence[str]) -> dict[str, tuple[int | None, int | None, str, str | None, int]]:
        """uri -> (size, mtime_ns, status, item_id, rowid) for the catalogued ones among ``uris``."""
        found: dict[str, tuple[int | None, int | None, str, str | None, int]] = {}
        for chunk in _chunks(uris, _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            for uri, size, mtime_ns, status, item_id, present, rowid in self.conn.execute(
                f"SELECT uri, size, mtime_ns, status, item_id, present, rowid FROM locations WHERE uri IN ({marks})",
                chunk,
            ):
                found[uri] = (size, mtime_ns, status if present else "missing", item_id, rowid)
        return found

    def stale_items(self, item_ids: Sequence[str], reader_version: int) -> set[str]:
        """The ids among ``item_ids`` whose row a reader older than ``reader_version`` wrote,
        or that failed to decode (a decoder added since may read them): ``crawl --reread``."""
        out: set[str] = set()
        for chunk in _chunks(list(item_ids), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            out.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT item_id FROM items WHERE item_id IN ({marks}) AND (status = 'error' OR "
                    "reader_version IS NULL OR reader_version < ?)",
                    (*chunk, reader_version),
                )
            )
        return out

    # --- per-directory listings: a rescan's shortcut past one lookup per file
    def dir_listing(self, directory: str) -> dict[str, tuple[int, int, int]] | None:
        """name -> (size, mtime_ns, rowid) of the readable files catalogued directly in
        ``directory``, or None when no listing is cached for it."""
        row = self.conn.execute("SELECT listing FROM dir_listings WHERE dir = ?", (directory,)).fetchone()
        return decode_listing(row[0]) if row else None

    def dir_listing_if_unchanged(self, directory: str, mtime_ns: int) -> dict[str, tuple[int, int, int]] | None:
        """The cached listing of ``directory`` when it was listed in full at this mtime and
        nothing under it was written since (a write drops its cached listing); else None."""
        row = self.conn.execute(
            "SELECT listing FROM dir_listings WHERE dir = ? AND dir_mtime_ns = ?", (directory, mtime_ns)
        ).fetchone()
        return decode_listing(row[0]) if row else None

    def build_dir_listings(self, directories: Iterable[str], mtimes: dict[str, int] | None = None) -> None:
        """Cache each directory's listing from its location rows (the truth), with the
        directory mtime read before it was listed, where known."""
        mtimes = mtimes or {}
        rows = []
        for directory in directories:
            lo, hi = _prefix_range(directory + "/")
            listing = {}
            for uri, size, mtime_ns, rowid in self.conn.execute(
                "SELECT uri, size, mtime_ns, rowid FROM locations "
                "WHERE uri >= ? AND uri < ? AND present=1 AND item_id IS NOT NULL AND status != 'missing'",
                (lo, hi),
            ):
                name = uri[len(directory) + 1 :]
                if "/" not in name and "!/" not in name and size is not None and mtime_ns:
                    listing[name] = (size, mtime_ns, rowid)
            rows.append((directory, encode_listing(listing), mtimes.get(directory)))
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO dir_listings (dir, listing, dir_mtime_ns) VALUES (?, ?, ?) ON CONFLICT(dir) "
                "DO UPDATE SET listing=excluded.listing, dir_mtime_ns=excluded.dir_mtime_ns",
                rows,
            )

    def max_location_rowid(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(rowid), 0) FROM locations").fetchone()[0])

    def rowids_under(self, prefix: str) -> list[int]:
        lo, hi = _prefix_range(prefix)
        return [
            r[0]
            for r in self.conn.execute("SELECT rowid FROM locations WHERE uri >= ? AND uri < ? AND present=1", (lo, hi))
        ]

    def touch_locations(self, uris: Sequence[str], *, run_id: int, now: str) -> None:
        """Mark unchanged locations as seen by this run."""
        with self.transaction() as c:
            for chunk in _chunks(uris, _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                c.execute(f"UPDATE locations SET last_seen=?, seen_run=? WHERE uri IN ({marks})", (now, run_id, *chunk))
            _touch_items_of(c, uris, now)

    def container_unchanged(self, uri: str, size: int, mtime_ns: int) -> bool:
        row = self.conn.execute("SELECT size, mtime_ns FROM containers WHERE uri=?", (uri,)).fetchone()
        return row is not None and row[0] == size and row[1] == mtime_ns

    def location_unchanged(self, uri: str, size: int, mtime_ns: int) -> bool:
        row = self.conn.execute(
            "SELECT size, mtime_ns FROM locations WHERE uri=? AND present=1 AND item_id IS NOT NULL", (uri,)
        ).fetchone()
        return row is not None and row[0] == size and row[1] == mtime_ns

    def touch_container(self, uri: str, *, run_id: int, now: str, members: str = "!/") -> int:
        """Mark every present location listed from an unchanged container as seen
        (``members``: what separates the container's uri from its members' uris)."""
        lo, hi = _prefix_range(uri + members)
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE locations SET last_seen=?, seen_run=? WHERE uri >= ? AND uri < ? AND present=1",
                (now, run_id, lo, hi),
            )
            c.execute(
                "UPDATE items SET last_seen=? WHERE item_id IN "
                "(SELECT item_id FROM locations WHERE uri >= ? AND uri < ? AND present=1)",
                (now, lo, hi),
            )
            c.execute("UPDATE containers SET last_seen=? WHERE uri=?", (now, uri))
            return cur.rowcount

    def container_done(self, uri: str, size: int, mtime_ns: int, *, now: str) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO containers VALUES (?,?,?,?) ON CONFLICT(uri) DO UPDATE SET "
                "size=excluded.size, mtime_ns=excluded.mtime_ns, last_seen=excluded.last_seen",
                (uri, size, mtime_ns, now),
            )

    def record(self, items: Iterable[dict[str, Any]], locations: Iterable[dict[str, Any]]) -> None:
        """Upsert crawled items and their locations in one transaction.

        ``first_seen`` is kept from the first time; everything else is refreshed, so a
        newer metadata parser improves old rows on the next full re-read.
        """
        items = list(items)
        loc_rows = [tuple(loc.get(n) for n in _LOCATION_NAMES) for loc in locations]
        dirs = {(parent_dir(loc["uri"]),) for loc in locations}
        with self.transaction() as c:
            if items:
                # Under the write lock: the next numbers of the change sequence are ours.
                top = c.execute("SELECT coalesce(max(seq), 0) FROM items").fetchone()[0]
                rows = [
                    tuple(top + i + 1 if n == "seq" else it.get(n) for n in _ITEM_NAMES) for i, it in enumerate(items)
                ]
                c.executemany(_ITEM_UPSERT, rows)
            if loc_rows:
                c.executemany(_upsert_sql("locations", _LOCATION_NAMES, "uri"), loc_rows)
            # A directory's cached listing is only valid while nothing under it was written.
            c.executemany("DELETE FROM dir_listings WHERE dir = ?", dirs)

    def mark_missing(
        self, root_uri: str, *, run_id: int, now: str, seen: "Sequence[int] | None" = None, seen_count: int = 0
    ) -> list[tuple[str, str | None]]:
        """Locations owned by ``root_uri`` that this run did not see: deleted or moved away.

        A location counts as seen when this run wrote it (``seen_run``) or, for unchanged
        ones that were not rewritten, when its rowid is set in ``seen``.
        """
        seen = bytearray() if seen is None else seen
        limit = len(seen)
        ranges = _owned_ranges(root_uri)
        where = " OR ".join("(uri >= ? AND uri < ?)" for _ in ranges) + " OR uri = ?"
        params = [x for lo, hi in ranges for x in (lo, hi)] + [root_uri]
        with self.transaction() as c:
            # Fast path: counting in SQL costs nanoseconds per row; when every present row was
            # seen there is nothing to look for row by row.
            present, written = c.execute(
                f"SELECT count(*), coalesce(sum(seen_run = ?), 0) FROM locations WHERE ({where}) AND present=1",
                (run_id, *params),
            ).fetchone()
            gone = []
            if present != written + seen_count:
                rows = c.execute(
                    f"SELECT rowid, uri, item_id FROM locations WHERE ({where}) AND present=1 "
                    "AND (seen_run IS NULL OR seen_run != ?)",
                    (*params, run_id),
                )
                gone = [(rowid, uri, item_id) for rowid, uri, item_id in rows if not (rowid < limit and seen[rowid])]
            for chunk in _chunks([g[0] for g in gone], _IN_CHUNK):
                marks = ",".join("?" * len(chunk))
                c.execute(
                    f"UPDATE locations SET present=0, status='missing', missing_since=? WHERE rowid IN ({marks})",
                    (now, *chunk),
                )
            c.executemany("DELETE FROM dir_listings WHERE dir = ?", {(parent_dir(g[1]),) for g in gone})
            c.execute(
                "INSERT INTO scans VALUES (?,?,?) ON CONFLICT(root_uri) DO UPDATE SET run_id=excluded.run_id, at=excluded.at",
                (root_uri, run_id, now),
            )
        return [(uri, item_id) for _, uri, item_id in gone]

    def items_written_in(self, run_id: int, item_ids: Sequence[str]) -> set[str]:
        """Those of ``item_ids`` that this run wrote a present location of, e.g. the new path
        of a moved file (to tell a move from a deletion)."""
        hits: set[str] = set()
        for chunk in _chunks(list(item_ids), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            for (item_id,) in self.conn.execute(
                f"SELECT DISTINCT item_id FROM locations WHERE present=1 AND seen_run=? AND item_id IN ({marks})",
                (run_id, *chunk),
            ):
                hits.add(item_id)
        return hits

    def existing_items(self, item_ids: Sequence[str]) -> set[str]:
        have: set[str] = set()
        for chunk in _chunks(list(item_ids), _IN_CHUNK):
            marks = ",".join("?" * len(chunk))
            have.update(r[0] for r in self.conn.execute(f"SELECT item_id FROM items WHERE item_id IN ({marks})", chunk))
        return have

    # --- reading
    def query(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)


def _touch_items_of(c: sqlite3.Connection, uris: Sequence[str], now: str) -> None:
    for chunk in _chunks(uris, _IN_CHUNK):
        marks = ",".join("?" * len(chunk))
        c.execute(
            f"UPDATE items SET last_seen=? WHERE item_id IN (SELECT item_id FROM locations WHERE uri IN ({marks}))",
            (now, *chunk),
        )


def _upsert_sql(table: str, names: list[str], key: str, computed: dict[str, str] | None = None) -> str:
    cols = ", ".join(names)
    marks = ", ".join("?" * len(names))
    computed = computed or {}
    updates = ", ".join(computed.get(n, f"{n}=excluded.{n}") for n in names if n not in (key, "first_seen"))
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {updates}"


# A re-read item keeps its place in the change sequence unless what the later stages read
# of it changed; then it takes the new number, so they see it again.
_SEQ_CHANGED = " OR ".join(f"items.{n} IS NOT excluded.{n}" for n in SEQ_FIELDS)
_ITEM_UPSERT = _upsert_sql(
    "items",
    _ITEM_NAMES,
    "item_id",
    {"seq": f"seq=CASE WHEN items.seq IS NULL OR {_SEQ_CHANGED} THEN excluded.seq ELSE items.seq END"},
)


def read_only_message(index_dir: Path, reason: str | None, command: str | None = None) -> str:
    what = f"`audit {command}`" if command else "this command"
    return (
        f"index {index_dir} is read-only ({reason}): {what} writes to it; copy the index to writable "
        "storage to run it (search, and report with --out elsewhere, work as is)"
    )


def parent_dir(uri: str) -> str:
    """The directory (or archive) a location uri sits in."""
    return uri.rpartition("/")[0]


def _owned_ranges(root_uri: str) -> list[tuple[str, str]]:
    """The uri ranges a complete source owns: its subtree and, for an archive, its members."""
    root = root_uri.rstrip("/") or "/"
    return [_prefix_range(root + sep if not root.endswith("/") else root + sep.lstrip("/")) for sep in ("/", "!/")]


def _prefix_range(prefix: str) -> tuple[str, str]:
    """[lo, hi) covering every string that starts with ``prefix`` (an index range scan)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def encode_listing(listing: dict[str, tuple[int, int, int]]) -> bytes:
    """A cached directory listing as compact JSON: ``{name: [size, mtime_ns, rowid]}``."""
    return json.dumps(listing, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_listing(blob: object) -> dict[str, tuple[int, int, int]] | None:
    """The listing ``encode_listing`` wrote, or None for anything else (a damaged row, or the
    marshal format of older releases): the crawl then looks the directory's files up again,
    one by one, and caches a fresh listing. A cache is never a reason to fail."""
    try:
        data = json.loads(bytes(blob).decode("utf-8")) if isinstance(blob, (bytes, bytearray, memoryview)) else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    listing = {}
    for name, entry in data.items():
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) for v in entry)
        ):
            return None
        listing[name] = (entry[0], entry[1], entry[2])
    return listing


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
