"""Moving a previous release's vectors (float32 BLOB rows in table ``vectors``) into shards.

Done once, on the first writable open of such an index (after schema migration 1,
``audit.catalog.migrations.ensure_schema``), in place and crash-safe: the rows
are taken in key order, ``MIGRATE_BATCH`` at a time; each batch becomes one shard per
(model, space) and is committed in one transaction with its key rows *and the deletion of
the BLOB rows it replaces*. So at every moment each vector is in exactly one of the two
places, readers consult both, and a migration killed midway resumes where it stopped (its
last, uncommitted shard file is an orphan, deleted on the next open). When the table is
empty it is dropped.

Freed space: SQLite keeps the pages of deleted rows in the file's freelist (reused by
later writes; ``PRAGMA incremental_vacuum`` needs ``auto_vacuum``, which these catalogs
never had). The file shrinks only by a ``VACUUM``, which writes a copy of the whole
database (and, in WAL mode, a log as large): it is run at the end of the migration when
the free pages are most of the file and the disk has room for twice what remains;
otherwise the freelist stays and a later ``VACUUM`` (``sqlite3 catalog.sqlite VACUUM``,
with no audit run active) returns it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np

from audit.catalog.shards import to_fp16
from audit.timeutil import utc_now

if TYPE_CHECKING:  # pragma: no cover
    from audit.catalog.vectors import VectorStore

MIGRATE_BATCH = 65536  # BLOB rows per transaction (~128 MiB of float32 512-d in memory)


def migrate_legacy(store: "VectorStore") -> int:
    """Move every BLOB row into shards; returns how many were moved."""
    from audit.catalog.migrations import META_SCHEMA_VERSION
    from audit.catalog.vectors import LEGACY_TABLE, _has_legacy

    moved = 0
    while True:
        written = []
        try:
            with store._txn() as c:
                if not _has_legacy(c):  # another process finished it meanwhile
                    break
                rows = c.execute(
                    f"SELECT model_key, space, key, vector FROM {LEGACY_TABLE} ORDER BY model_key, space, key LIMIT ?",
                    (MIGRATE_BATCH,),
                ).fetchall()
                if not rows:
                    c.execute(f"DROP TABLE {LEGACY_TABLE}")
                    # a release that knows only the BLOB table would see an index without
                    # vectors: from now on it refuses the catalog as too new instead
                    c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(META_SCHEMA_VERSION),))
                    break
                now = utc_now()
                for (model_key, space), group in groupby(rows, key=lambda r: (r[0], r[1])):
                    group = list(group)
                    vecs = np.frombuffer(b"".join(g[3] for g in group), dtype=np.float32).reshape(len(group), -1)
                    vs, _ = store._space_for_write(c, model_key, space, vecs.shape[1])
                    store._append(c, vs, model_key, space, [g[2] for g in group], [to_fp16(vecs)], now, written)
                moved += len(rows)
        except BaseException:
            store._unlink_uncommitted(written)
            raise
    store._legacy = False
    for model_key, space in store.conn.execute("SELECT model_key, space FROM vector_spaces").fetchall():
        store.maintain(model_key, space)
    _vacuum_if_worth_it(store.conn)
    return moved


def _vacuum_if_worth_it(conn: sqlite3.Connection) -> bool:
    page, pages, free = (
        conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count")
    )
    if free * 2 < pages or free * page < (64 << 20):
        return False  # little to gain: the freelist is reused by later writes
    path = getattr(conn, "path", None) or conn.execute("PRAGMA database_list").fetchone()[2]
    kept = (pages - free) * page
    if shutil.disk_usage(os.path.dirname(path)).free < 2 * kept + (64 << 20):
        return False
    try:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        return False  # optional: another connection is reading, or the disk filled up (rolled back)
    return True
