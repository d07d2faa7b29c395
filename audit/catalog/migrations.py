"""The catalog's schema, owned here: every table, index and view, as an ordered list of migrations.

The version of a catalog is SQLite's ``PRAGMA user_version``: the number of the last
migration applied (0: none yet). ``ensure_schema`` runs at every open (``audit.catalog.access``)
and applies the missing ones in order, each in one transaction (``BEGIN IMMEDIATE``, its
statements, ``PRAGMA user_version = n``, ``COMMIT``): a crash mid-migration leaves the
previous version whole, and the next open applies it again. A catalog of a version newer than
``LATEST`` is refused at open, in one line. Stores never create tables: they find them.

Migration 1 is the schema of the release before versioning (``meta.schema_version`` 2, user
version 0). It is written so that it also *adopts* such an index in place: ``CREATE ... IF NOT
EXISTS`` for every object, and ``ALTER TABLE ... ADD COLUMN`` for the columns that releases
added to existing tables. An index of the release before that (vectors as float32 BLOB rows
in table ``vectors``) also gets migration 1, then its vectors are moved into shard files by
``audit.catalog.vector_migration`` (in batches of their own transactions, resumed by the next
writable open when killed; it is not one transaction, so it is not a numbered migration).

``meta.schema_version`` stays: releases before ``user_version`` read only it and refuse a
catalog whose number is above theirs. It is ``META_SCHEMA_VERSION`` (2) as long as migrations
only add what those releases ignore (tables, nullable columns); a migration that such a
release would misread raises it in its own transaction. This code reads it only to adopt an
unversioned index (and to refuse one written by a newer unversioned release).

Read-only catalogs (an evidence copy, a read-only mount) are never written: the tables and
columns of the migrations they lack become empty TEMP tables and NULL columns of TEMP views
on that connection, so readers see the current layout.

A new migration: append ``Migration(n, why, ddl, columns)`` to ``MIGRATIONS``; never edit one
that was released (indexes in the field have it applied already).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from audit.catalog.schema import ITEM_COLUMNS_1, LOCATION_COLUMNS_1
from audit.errors import InputError, raise_storage_error

# meta.schema_version of the catalogs this code writes (see the module doc)
META_SCHEMA_VERSION = 2
# float32 BLOB vectors of the release before shard files (audit.catalog.vector_migration)
LEGACY_VECTOR_TABLE = "vectors"


def _columns(cols: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{n} {t}" for n, t in cols)


# items, locations, containers, listings, scans, runs (audit.catalog.store)
CATALOG_TABLES = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items ({_columns(ITEM_COLUMNS_1)});
CREATE TABLE IF NOT EXISTS locations ({_columns(LOCATION_COLUMNS_1)});
CREATE INDEX IF NOT EXISTS locations_item ON locations(item_id);
CREATE INDEX IF NOT EXISTS items_seq ON items(seq);
-- covers a rescan's "were all present locations under this root seen?" count
CREATE INDEX IF NOT EXISTS locations_presence ON locations(uri, present, seen_run);
CREATE TABLE IF NOT EXISTS containers (
    uri TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dir_listings (
    dir TEXT PRIMARY KEY, listing BLOB NOT NULL,
    dir_mtime_ns INTEGER  -- the directory's mtime read just before the listing (trust_dir_mtime)
);
CREATE TABLE IF NOT EXISTS scans (
    root_uri TEXT PRIMARY KEY, run_id INTEGER NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL, argv TEXT, tool_version TEXT, user TEXT, host TEXT,
    started TEXT NOT NULL, finished TEXT, status TEXT NOT NULL, summary TEXT
);
"""

# models, vector spaces, shards and rows (audit.catalog.vectors), embed progress
VECTOR_TABLES = """
CREATE TABLE IF NOT EXISTS models (
    model_key TEXT PRIMARY KEY, name TEXT NOT NULL, pretrained TEXT, checkpoint_sha256 TEXT,
    dim INTEGER NOT NULL, identity TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_spaces (
    vspace INTEGER PRIMARY KEY, model_key TEXT NOT NULL, space TEXT NOT NULL, dim INTEGER NOT NULL,
    UNIQUE (model_key, space)
);
CREATE TABLE IF NOT EXISTS vector_shards (
    shard_id INTEGER PRIMARY KEY AUTOINCREMENT, vspace INTEGER NOT NULL, file TEXT NOT NULL,
    rows INTEGER NOT NULL, live INTEGER NOT NULL, dim INTEGER NOT NULL, dtype TEXT NOT NULL,
    bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS vector_shards_space ON vector_shards(vspace);
-- seq is the rowid: AUTOINCREMENT, so it never goes back, even after deletions
CREATE TABLE IF NOT EXISTS vector_rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, vspace INTEGER NOT NULL, key TEXT NOT NULL,
    shard_id INTEGER NOT NULL, row INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS vector_rows_key ON vector_rows(vspace, key);
-- (vspace, seq): a rowid table's index holds the rowid, so this is the seq order of a space
CREATE INDEX IF NOT EXISTS vector_rows_space ON vector_rows(vspace);
CREATE INDEX IF NOT EXISTS vector_rows_shard ON vector_rows(shard_id, row);
-- for SQL readers (notebooks, tests): which keys have a vector of which model and space
CREATE VIEW IF NOT EXISTS vector_keys AS
    SELECT s.model_key AS model_key, s.space AS space, r.key AS key, r.seq AS seq
    FROM vector_rows r JOIN vector_spaces s ON s.vspace = r.vspace;
CREATE TABLE IF NOT EXISTS embed_skips (
    model_key TEXT NOT NULL, item_id TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (model_key, item_id)
) WITHOUT ROWID;
-- embed's watermark: every item with items.seq <= item_seq was handled for this model and space
CREATE TABLE IF NOT EXISTS embed_progress (
    model_key TEXT NOT NULL, space TEXT NOT NULL, item_seq INTEGER NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (model_key, space)
) WITHOUT ROWID;
-- ok items passed by the watermark while no location of them was present: looked at again each run
CREATE TABLE IF NOT EXISTS embed_absent (
    model_key TEXT NOT NULL, item_id TEXT NOT NULL, PRIMARY KEY (model_key, item_id)
) WITHOUT ROWID;
"""

# findings, clusters, decisions, flag runs (audit.findings.store)
FINDINGS_TABLES = """
CREATE TABLE IF NOT EXISTS findings (
    finding_id TEXT PRIMARY KEY,
    policy_hash TEXT NOT NULL,
    item_id TEXT NOT NULL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    cluster_id TEXT,
    signals TEXT NOT NULL,           -- JSON list of Signal dicts
    first_flagged TEXT NOT NULL,
    last_flagged TEXT NOT NULL,
    run_id INTEGER,
    active INTEGER NOT NULL DEFAULT 1, -- 0 once the item no longer meets the policy
    reported_run INTEGER             -- flag run of the completed `audit scan` that reported it; NULL: not yet
);
CREATE INDEX IF NOT EXISTS findings_item ON findings(item_id);
CREATE INDEX IF NOT EXISTS findings_policy ON findings(policy_hash, category);
-- "the findings of cluster X" (notebooks, reports) without a scan of every finding
CREATE INDEX IF NOT EXISTS findings_cluster ON findings(cluster_id);
CREATE TABLE IF NOT EXISTS clusters (
    cluster_id TEXT PRIMARY KEY,     -- "<policy hash[:12]>:<kind>:<n>"
    policy_hash TEXT NOT NULL,
    kind TEXT NOT NULL,              -- "semantic" | "near_duplicate"
    size INTEGER NOT NULL,
    members TEXT NOT NULL,           -- JSON list of item_ids, or (semantic clusters of the flag
                                     -- stage) {"scope": s, "cluster": k}: the members are the
                                     -- cluster_members rows of that scope and cluster
    medoids TEXT,                    -- JSON list of item_ids closest to the centroid
    top_terms TEXT,                  -- JSON list of [term, count]
    concept_scores TEXT,             -- JSON {concept_id: {score, threshold, margin}}
    flagged_share REAL,
    flagged INTEGER NOT NULL DEFAULT 0,
    categories TEXT,                 -- JSON list of category ids the cluster was flagged for
    run_id INTEGER,
    review TEXT                      -- JSON {category: fired members, candidates, counts} (flagged semantic clusters)
);
CREATE INDEX IF NOT EXISTS clusters_policy ON clusters(policy_hash, kind);
CREATE TABLE IF NOT EXISTS decisions (
    decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_kind TEXT NOT NULL,       -- "item" | "cluster" | "finding"
    target_id TEXT NOT NULL,
    decision TEXT NOT NULL,          -- confirm | dismiss | escalate
    note TEXT,
    category TEXT,
    decided_by TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    source TEXT                      -- "cli", "import:<file sha256>", "notebook"
);
CREATE INDEX IF NOT EXISTS decisions_target ON decisions(target_kind, target_id);
CREATE TABLE IF NOT EXISTS flag_runs (
    run_id INTEGER PRIMARY KEY,
    policy_hash TEXT NOT NULL,
    policy_name TEXT, policy_version TEXT, policy_path TEXT,
    model_key TEXT,
    thresholds TEXT,                 -- JSON {concept_id: {image: t, prompt: t, calibrated: bool, how: str}}
    at TEXT NOT NULL,
    -- the incremental flag stage's account of the run (audit.flag.runner)
    seq_done INTEGER, mode TEXT, why TEXT, reclustered INTEGER, recluster_why TEXT, items_handled INTEGER
);
"""

# what a flag run keeps between runs (audit.flag.state)
FLAG_STATE_TABLES = """
CREATE TABLE IF NOT EXISTS flag_scopes (
    scope INTEGER PRIMARY KEY, policy_hash TEXT NOT NULL, model_key TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'empty',
    seq_done INTEGER NOT NULL DEFAULT 0, vectors_seen INTEGER NOT NULL DEFAULT 0,
    decisions_seen INTEGER NOT NULL DEFAULT 0,
    k INTEGER, trained_items INTEGER, trained_run INTEGER, dim INTEGER, learned_fp TEXT,
    UNIQUE (policy_hash, model_key)
);
CREATE TABLE IF NOT EXISTS flag_centroids (
    scope INTEGER NOT NULL, cluster INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (scope, cluster)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cluster_members (
    scope INTEGER NOT NULL, item_id TEXT NOT NULL, cluster INTEGER NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (scope, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cluster_members_cluster ON cluster_members(scope, cluster, score);
CREATE TABLE IF NOT EXISTS cluster_terms (
    scope INTEGER NOT NULL, cluster INTEGER NOT NULL, term TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (scope, cluster, term)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cluster_state (
    scope INTEGER NOT NULL, cluster_id TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (scope, cluster_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flag_pending (
    scope INTEGER NOT NULL, item_id TEXT NOT NULL, PRIMARY KEY (scope, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flag_signals (
    scope INTEGER NOT NULL, item_id TEXT NOT NULL, category TEXT NOT NULL, source TEXT NOT NULL,
    severity TEXT NOT NULL, signals TEXT NOT NULL,
    PRIMARY KEY (scope, item_id, category, source)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flag_signals_source ON flag_signals(scope, source);
CREATE TABLE IF NOT EXISTS flag_suppressed (
    scope INTEGER NOT NULL, item_id TEXT NOT NULL, categories TEXT NOT NULL, PRIMARY KEY (scope, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dup_groups (
    scope INTEGER NOT NULL, item_id TEXT NOT NULL, root TEXT NOT NULL, PRIMARY KEY (scope, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dup_groups_root ON dup_groups(scope, root);
CREATE TABLE IF NOT EXISTS pdq_bands (
    scope INTEGER NOT NULL, key INTEGER NOT NULL, item INTEGER NOT NULL, PRIMARY KEY (scope, key, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seed_neighbors (
    scope INTEGER NOT NULL, seed TEXT NOT NULL, item_id TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (scope, seed, item_id)
) WITHOUT ROWID;
"""

# imported embedding parts (audit.embed.imported)
IMPORT_TABLES = """
CREATE TABLE IF NOT EXISTS embedding_imports (
    model_key TEXT NOT NULL, file TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    rows INTEGER NOT NULL, imported INTEGER NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (model_key, file)
) WITHOUT ROWID;
"""

# prompt key -> items (audit.index.prompts)
PROMPT_TABLES = """
CREATE TABLE IF NOT EXISTS prompt_refs (
    prompt_key TEXT NOT NULL, item_id TEXT NOT NULL, field TEXT NOT NULL,
    PRIMARY KEY (prompt_key, item_id, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prompt_refs_item ON prompt_refs(item_id, field);
"""

# face descriptors per item and model (audit.faces.store)
FACE_TABLES = """
CREATE TABLE IF NOT EXISTS face_descriptors (
    item_id TEXT NOT NULL,
    model_key TEXT NOT NULL,        -- e.g. "dlib-hog+sp5+resnet-v1@640"
    faces INTEGER NOT NULL,         -- number of faces found (0: none, or error)
    descriptors BLOB,               -- faces x 128 float32, little-endian
    sizes TEXT,                     -- JSON list: face box side in the downscaled copy, pixels
    error TEXT,                     -- why the item could not be described
    at TEXT NOT NULL,
    PRIMARY KEY (item_id, model_key)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``ddl`` (``CREATE ... IF NOT EXISTS`` statements, and plain SQL)
    and ``columns`` (table -> {column: type}) added to tables that exist without them; the
    columns go first, so an index of ``ddl`` may name one."""

    version: int
    why: str
    ddl: str
    columns: dict[str, dict[str, str]] = field(default_factory=dict)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the schema of the last unversioned release (meta.schema_version 2), adopting such an index",
        "\n".join(
            (
                CATALOG_TABLES,
                VECTOR_TABLES,
                FINDINGS_TABLES,
                FLAG_STATE_TABLES,
                IMPORT_TABLES,
                PROMPT_TABLES,
                FACE_TABLES,
                # a catalog that has one keeps it: a BLOB-vector index stays at 1 until its move
                f"INSERT OR IGNORE INTO meta VALUES ('schema_version', '{META_SCHEMA_VERSION}');",
            )
        ),
        {
            "items": dict(ITEM_COLUMNS_1),
            "locations": dict(LOCATION_COLUMNS_1),
            "dir_listings": {"dir_mtime_ns": "INTEGER"},
            "findings": {"reported_run": "INTEGER"},
            "clusters": {"review": "TEXT"},
            "flag_runs": {
                "seq_done": "INTEGER",
                "mode": "TEXT",
                "why": "TEXT",
                "reclustered": "INTEGER",
                "recluster_why": "TEXT",
                "items_handled": "INTEGER",
            },
            "flag_scopes": {"learned_fp": "TEXT"},
        },
    ),
)
LATEST = MIGRATIONS[-1].version
assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1)), "migrations are numbered 1, 2, ..."

_CREATE_OBJECT = re.compile(r"CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX|VIEW)\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.I)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA main.user_version").fetchone()[0])


def newer_schema(index_dir: object, version: int, *, unversioned: bool = False) -> InputError:
    """The one-line refusal of a catalog written by a newer audit."""
    known = META_SCHEMA_VERSION if unversioned else LATEST
    what = "schema" if unversioned else "schema version"
    return InputError(
        f"index {index_dir} was written by a newer audit ({what} {version}; this audit reads up to {known}); "
        "upgrade audit"
    )


def has_legacy_vectors(conn: sqlite3.Connection) -> bool:
    """Whether the float32 BLOB table of the release before shard files is still there."""
    return "vector" in {r[1] for r in conn.execute(f"PRAGMA main.table_info({LEGACY_VECTOR_TABLE})")}


def ensure_schema(conn: sqlite3.Connection) -> int:
    """Bring the catalog of ``conn`` to ``LATEST``; returns the version it was at.

    A no-op (one PRAGMA read, and one for leftover BLOB vectors) on a current catalog. On a
    read-only connection nothing is written: what the missing migrations would add is
    shadowed (see the module doc)."""
    path = getattr(conn, "path", None)
    try:
        found = user_version(conn)
        if found > LATEST:
            raise newer_schema(Path(path).parent if path else "?", found)
        if getattr(conn, "read_only", False):
            if found < LATEST:
                _shadow(conn, MIGRATIONS[found:])
            return found
        for migration in MIGRATIONS[found:]:
            _apply(conn, migration)
        legacy = has_legacy_vectors(conn)
    except sqlite3.Error as exc:
        raise_storage_error(exc, path)
    if legacy:
        from audit.catalog.vector_migration import migrate_legacy
        from audit.catalog.vectors import VectorStore

        migrate_legacy(VectorStore(conn))
    return found


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    """``migration`` in one transaction. What it alters is read just before; when another
    process applied it meanwhile (the ALTER then fails, or it finds the version moved), the
    catalog is where it should be."""
    if user_version(conn) >= migration.version:
        return
    have = _objects(conn)
    script = [
        f"ALTER TABLE {t} ADD COLUMN {n} {sql_type}"
        for t, cols in _missing_columns(conn, migration.columns, have).items()
        for n, sql_type in cols
    ]
    script += [migration.ddl, f"PRAGMA user_version = {migration.version}"]
    try:
        # one script, so BEGIN ... COMMIT is one transaction (executescript commits a
        # transaction already open before it starts)
        body = "".join(stmt.strip().rstrip(";") + ";\n" for stmt in script)
        conn.executescript(f"BEGIN IMMEDIATE;\n{body}COMMIT;")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if user_version(conn) < migration.version:
            raise


def _objects(conn: sqlite3.Connection) -> set[str]:
    return {
        r[0].lower()
        for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type IN ('table', 'index', 'view')")
    }


def _statements(ddl: str) -> Iterable[tuple[str, str, str]]:
    """(TABLE|INDEX|VIEW, name, statement) of each CREATE statement of ``ddl``."""
    chunk = ""
    for piece in ddl.split(";"):
        chunk += piece + ";"
        if not sqlite3.complete_statement(chunk):
            continue
        m = _CREATE_OBJECT.search(chunk)
        if m:
            yield m.group(1).upper(), m.group(2), chunk.strip().rstrip(";")
        chunk = ""


def _missing_columns(conn, columns: dict[str, dict[str, str]], have: set[str]) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for table, cols in columns.items():
        if table.lower() not in have:
            continue
        present = {r[1].lower() for r in conn.execute(f"PRAGMA main.table_info({table})")}
        todo = [(n, t) for n, t in cols.items() if n.lower() not in present]
        if todo:
            out[table] = todo
    return out


def _shadow(conn: sqlite3.Connection, pending: Iterable[Migration]) -> None:
    """Empty TEMP tables for the missing tables (and views) of ``pending``, and TEMP views
    with NULL columns for the missing columns (an index is of no use to an empty table)."""
    have = _objects(conn)
    temp = {r[0].lower() for r in conn.execute("SELECT name FROM temp.sqlite_master")}
    additions: dict[str, list[tuple[str, str]]] = {}
    for migration in pending:
        for kind, name, stmt in _statements(migration.ddl):
            if kind in ("TABLE", "VIEW") and name.lower() not in have | temp:
                body = re.sub(r"^(\s*--[^\n]*\n)+", "", stmt)  # comment lines before the statement
                conn.execute(re.sub(r"^\s*CREATE\s+(TABLE|VIEW)", r"CREATE TEMP \1", body, count=1, flags=re.I))
                temp.add(name.lower())
        for table, cols in _missing_columns(conn, migration.columns, have).items():
            additions.setdefault(table, []).extend(cols)
    for table, cols in additions.items():
        if table.lower() not in temp:
            nulls = ", ".join(f"NULL AS {n}" for n, _ in cols)
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT rowid AS rowid, *, {nulls} FROM main.{table}")
