"""The catalog's schema versions (``audit.catalog.migrations``): an index written by the previous
release (tests/data/previous_release_index, made by tools/make_previous_release_index.py from
commit 2938393) opens with today's code and loses nothing; a migration killed midway leaves the
previous version whole and the next open finishes it; an index of a newer audit is refused in
one line; a fresh index and a migrated one have the same layout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

import audit
from audit.catalog.access import CATALOG_FILE
from audit.catalog.migrations import LATEST, META_SCHEMA_VERSION, MIGRATIONS, ensure_schema
from audit.catalog.schema import ITEM_COLUMNS, LOCATION_COLUMNS
from audit.errors import ExitCode, InputError
from tests.cli_helper import audit_cli
from tests.paths import REPO

FIXTURE = REPO / "tests" / "data" / "previous_release_index"
MADE_BY = json.loads((FIXTURE / "MADE_BY.json").read_text())
TOY_POLICY = REPO / "samples" / "policy" / "toy.toml"
# what the previous release's index holds, compared row for row before and after the upgrade
KEPT_TABLES = ("items", "locations", "runs", "models", "vector_rows", "vector_shards", "findings", "clusters",
               "decisions", "flag_runs", "flag_scopes", "cluster_members", "prompt_refs")  # fmt: skip


@pytest.fixture
def old_index(tmp_path) -> Path:
    idx = tmp_path / "old"
    shutil.copytree(FIXTURE, idx)
    return idx


def _raw(idx: Path) -> "closing[sqlite3.Connection]":
    """Plain SQLite, read-only: what is in the file, without audit's opening."""
    return closing(sqlite3.connect(f"file:{idx / CATALOG_FILE}?mode=ro", uri=True))


def _version(idx: Path) -> tuple[int, str | None]:
    with _raw(idx) as c:
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return c.execute("PRAGMA user_version").fetchone()[0], row and row[0]


def _rows(idx: Path, columns: dict[str, list[str]] | None = None) -> dict[str, set[tuple]]:
    """Every row of KEPT_TABLES, in the columns given (default: all columns the table has)."""
    out = {}
    with _raw(idx) as c:
        for t in KEPT_TABLES:
            cols = (columns or {}).get(t) or [r[1] for r in c.execute(f"PRAGMA table_info({t})")]
            out[t] = set(c.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall())
    return out


def _columns(idx: Path) -> dict[str, list[str]]:
    with _raw(idx) as c:
        return {t: [r[1] for r in c.execute(f"PRAGMA table_info({t})")] for t in KEPT_TABLES}


def _layout(conn: sqlite3.Connection) -> dict:
    """Tables (columns: name, type, not null, default, key), indexes (table, unique, columns)
    and views of the main database: what the SQL of sqlite_master says, whatever its spelling
    (an ALTERed table's text differs from a created one's)."""
    tables, indexes, views = {}, {}, set()
    for kind, name, table in conn.execute("SELECT type, name, tbl_name FROM main.sqlite_master"):
        if kind == "table":
            tables[name] = [tuple(r[1:]) for r in conn.execute(f"PRAGMA main.table_info({name})")]
        elif kind == "index":
            cols = [r[2] for r in conn.execute(f"PRAGMA main.index_info({name})")]
            unique = conn.execute(f"SELECT \"unique\" FROM pragma_index_list('{table}') WHERE name = ?", (name,))
            indexes[name] = (table, unique.fetchone()[0], cols)
        elif kind == "view":
            views.add(name)
    return {"tables": tables, "indexes": indexes, "views": views}


def _fresh(tmp_path: Path) -> Path:
    idx = tmp_path / "fresh"
    audit.open(idx, create=True).close()
    return idx


# ----------------------------------------------------------------------------- the previous release


def test_the_fixture_is_an_unversioned_index_of_the_previous_release(old_index):
    """The checks below can fail: the fixture is what that release wrote, not today's layout.
    (Read from a copy: even a read-only SQLite open of a WAL file leaves -wal/-shm beside it.)"""
    assert MADE_BY["commit"] == "2938393"
    assert _version(old_index) == (0, str(META_SCHEMA_VERSION))
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 1 << 20
    with _raw(old_index) as c:
        for table in ("items", "vector_rows", "findings", "decisions"):
            assert c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == MADE_BY[table] > 0


def test_previous_release_index_upgrades_and_keeps_everything(old_index):
    columns = _columns(old_index)
    before = _rows(old_index)
    with audit.open(old_index) as a:
        assert a.catalog.conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert a.items().height == MADE_BY["items"]
        assert a.findings().height == MADE_BY["findings"]
        assert a.decisions().height == MADE_BY["decisions"]
        from audit.catalog.vectors import VectorStore

        vs = VectorStore(a.catalog.conn)
        (model,) = [m["key"] for m in vs.models()]
        assert vs.count(model, "image") == MADE_BY["items"]
        assert vs.verify()["damaged"] == []
    assert _version(old_index) == (LATEST, str(META_SCHEMA_VERSION))  # older releases still read it
    assert _rows(old_index, columns) == before  # every row, as it was


def test_previous_release_index_searches_and_flags_after_the_upgrade(old_index):
    pytest.importorskip("open_clip")
    with _raw(old_index) as c:
        item, uri = c.execute("SELECT item_id, uri FROM locations ORDER BY uri LIMIT 1").fetchone()
        old_findings = set(c.execute("SELECT finding_id FROM findings"))
        old_runs = c.execute("SELECT count(*) FROM flag_runs").fetchone()[0]
    r = audit_cli("search", "--index", old_index, "--item", item, "-k", "3", "--json")
    hits = r.json()["results"]
    assert hits[0]["item_id"] == item and len(hits) == 3
    # --full: every item evaluated again by today's detectors, on the vectors the old release stored
    flagged = audit_cli(
        "flag", "--index", old_index, "--policy", TOY_POLICY, "--model", "toy-shapes", "--full", "-q", "--json",
        expected=None,
    )  # fmt: skip
    assert flagged.returncode in (ExitCode.OK, ExitCode.FINDINGS), flagged.stderr
    assert "Traceback" not in flagged.stderr
    summary = flagged.json()
    assert summary["seq_done"] == MADE_BY["items"] and summary["errors"] == []
    with _raw(old_index) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert old_findings <= set(c.execute("SELECT finding_id FROM findings"))
        runs = c.execute("SELECT count(*) FROM flag_runs").fetchone()[0]
    assert runs == old_runs + 1


def test_read_only_previous_release_index_is_read_as_is(old_index):
    """Read-only (an evidence copy): nothing is migrated or written; readers see today's
    layout, the missing tables empty."""
    catalog_bytes = (old_index / CATALOG_FILE).read_bytes()
    with audit.open(old_index, read_only=True) as a:
        assert a.items().height == MADE_BY["items"] and a.findings().height == MADE_BY["findings"]
        conn = a.catalog.conn
        assert conn.execute("SELECT count(*) FROM face_descriptors").fetchone()[0] == 0  # a TEMP shadow
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert (old_index / CATALOG_FILE).read_bytes() == catalog_bytes


def test_migrated_layout_equals_a_fresh_one(old_index, tmp_path):
    with audit.open(old_index) as old, audit.open(_fresh(tmp_path)) as new:
        migrated, fresh = _layout(old.catalog.conn), _layout(new.catalog.conn)
    assert migrated["tables"].keys() == fresh["tables"].keys()
    for table, cols in fresh["tables"].items():
        assert migrated["tables"][table] == cols, table
    assert migrated == fresh


# ----------------------------------------------------------------------------- fresh index


def test_fresh_index_is_at_the_latest_version_and_ensure_schema_twice_is_a_no_op(tmp_path):
    idx = _fresh(tmp_path)
    assert _version(idx) == (LATEST, str(META_SCHEMA_VERSION))
    with closing(sqlite3.connect(idx / CATALOG_FILE, isolation_level=None)) as c:
        layout, changes = _layout(c), c.total_changes
        assert ensure_schema(c) == LATEST and ensure_schema(c) == LATEST
        assert c.total_changes == changes and _layout(c) == layout
        tables = _layout(c)["tables"]
    # the stores' column lists are the tables' columns
    assert [col[0] for col in tables["items"]] == [n for n, _ in ITEM_COLUMNS]
    assert [col[0] for col in tables["locations"]] == [n for n, _ in LOCATION_COLUMNS]
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


def test_unversioned_index_missing_later_columns_gains_them(old_index):
    """Adoption adds what releases added to existing tables (here: two columns dropped)."""
    with closing(sqlite3.connect(old_index / CATALOG_FILE)) as c:
        c.execute("ALTER TABLE items DROP COLUMN reader_version")
        c.execute("ALTER TABLE flag_runs DROP COLUMN items_handled")
        c.commit()
    with audit.open(old_index) as a:
        conn = a.catalog.conn
        assert "reader_version" in {r[1] for r in conn.execute("PRAGMA table_info(items)")}
        assert "items_handled" in {r[1] for r in conn.execute("PRAGMA table_info(flag_runs)")}


# ----------------------------------------------------------------------------- newer index


@pytest.mark.parametrize("stamp", ["user_version", "meta"])
def test_index_of_a_newer_audit_is_refused_in_one_line(tmp_path, stamp):
    idx = _fresh(tmp_path)
    with closing(sqlite3.connect(idx / CATALOG_FILE)) as c:
        if stamp == "user_version":
            c.execute(f"PRAGMA user_version = {LATEST + 1}")
        else:  # a newer release from before user_version
            c.execute("PRAGMA user_version = 0")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(META_SCHEMA_VERSION + 1),))
        c.commit()
    before = (idx / CATALOG_FILE).read_bytes()
    for argv in (
        ("info", "--index", idx),
        ("search", "--index", idx, "--item", "abc"),
        ("crawl", tmp_path, "--index", idx),
    ):
        r = audit_cli(*argv, expected=ExitCode.USAGE)
        msg = r.stderr.strip()
        assert "\n" not in msg and "Traceback" not in msg, msg
        assert f"index {idx} was written by a newer audit" in msg and "upgrade audit" in msg
    for read_only in (False, True):
        with pytest.raises(InputError, match="newer audit"):
            audit.open(idx, read_only=read_only)
    assert (idx / CATALOG_FILE).read_bytes() == before


# ----------------------------------------------------------------------------- killed midway


def _killed_migration(idx: Path, when: str) -> subprocess.CompletedProcess:
    """Open ``idx`` in a child that SIGKILLs itself as SQLite starts the statement that sets
    migration 1's version (``before_commit``: its ALTERs and CREATEs have run, uncommitted),
    or the first statement after that migration's COMMIT (``after_commit``)."""
    code = f"""
        import os, signal
        import audit, audit.catalog.access as access
        real = access.connect
        seen = []
        def trace(sql):
            sql = sql.strip().rstrip(";")
            if {when!r} == "before_commit" and sql == "PRAGMA user_version = 1":
                os.kill(os.getpid(), signal.SIGKILL)
            if seen[-2:] == ["PRAGMA user_version = 1", "COMMIT"]:
                os.kill(os.getpid(), signal.SIGKILL)
            seen.append(sql)
        def traced(*args, **kwargs):
            conn = real(*args, **kwargs)
            if not conn.read_only:
                conn.set_trace_callback(trace)
            return conn
        access.connect = traced
        audit.open({str(idx)!r})
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("when", ["before_commit", "after_commit"])
def test_migration_killed_midway_is_finished_by_the_next_open(old_index, when):
    columns = _columns(old_index)
    before = _rows(old_index)
    with _raw(old_index) as c:
        tables_before = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    r = _killed_migration(old_index, when)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with _raw(old_index) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    if when == "before_commit":  # the previous version, whole: none of the migration's objects
        assert _version(old_index) == (0, str(META_SCHEMA_VERSION)) and tables == tables_before
    else:
        assert _version(old_index) == (1, str(META_SCHEMA_VERSION)) and tables > tables_before
    assert _rows(old_index, columns) == before
    with audit.open(old_index) as a:
        assert a.catalog.conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert a.items().height == MADE_BY["items"] and a.findings().height == MADE_BY["findings"]
    assert _rows(old_index, columns) == before
