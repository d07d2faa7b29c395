"""What an index holds, at a glance (``audit info``): counts read from the catalog, read-only,
and the size of its files on disk. Reads only tables that exist: a freshly crawled index has
no vectors, findings or decisions yet."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from audit.catalog.access import open_catalog


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def _one(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
    return conn.execute(sql, args).fetchone()[0]


def _sizes(index_dir: Path) -> dict[str, int]:
    """Bytes on disk per top-level entry of the index folder (a folder: everything under it)."""
    sizes: dict[str, int] = {}
    for entry in sorted(os.scandir(index_dir), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            total = 0
            for root, _, files in os.walk(entry.path):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(root, name)).st_size
                    except OSError:  # removed while we looked: not part of the index any more
                        pass
            sizes[entry.name + "/"] = total
        else:
            try:
                sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return sizes


def index_info(index_dir: str | os.PathLike) -> dict[str, Any]:
    """Items, errors, models, policies, runs, findings and decisions of ``index_dir``, and the
    size of its files. Raises ``IndexMissing`` / ``CatalogDamaged`` like ``audit.open``."""
    index_dir = Path(index_dir)
    conn, _ = open_catalog(index_dir, read_only=True)
    try:
        have = _tables(conn)
        info: dict[str, Any] = {"index": str(index_dir)}
        info["items"] = {
            "total": _one(conn, "SELECT count(*) FROM items"),
            "ok": _one(conn, "SELECT count(*) FROM items WHERE status = 'ok'"),
            "errors": _one(conn, "SELECT count(*) FROM items WHERE status = 'error'"),
        }
        info["locations"] = {
            "total": _one(conn, "SELECT count(*) FROM locations"),
            "present": _one(conn, "SELECT count(*) FROM locations WHERE present = 1"),
            "errors": _one(conn, "SELECT count(*) FROM locations WHERE status = 'error'"),
            "missing": _one(conn, "SELECT count(*) FROM locations WHERE present = 0 OR status = 'missing'"),
        }
        info["models"] = []
        if {"models", "vector_spaces", "vector_rows"} <= have:
            for key, name, pretrained, checkpoint, dim in conn.execute(
                "SELECT model_key, name, pretrained, checkpoint_sha256, dim FROM models ORDER BY created"
            ):
                vectors = dict(
                    conn.execute(
                        "SELECT s.space, count(r.seq) FROM vector_spaces s LEFT JOIN vector_rows r ON r.vspace = s.vspace "
                        "WHERE s.model_key = ? GROUP BY s.space",
                        (key,),
                    )
                )
                info["models"].append(
                    {
                        "model_key": key,
                        "name": name,
                        "pretrained": pretrained,
                        "checkpoint_sha256": checkpoint,
                        "dim": dim,
                        "vectors": vectors,
                    }
                )
        info["policies"] = []
        if "flag_runs" in have:
            for ph, name, version, runs, last in conn.execute(
                "SELECT policy_hash, max(policy_name), max(policy_version), count(*), max(at) FROM flag_runs "
                "GROUP BY policy_hash ORDER BY max(at)"
            ):
                policy = {"policy_hash": ph, "name": name, "version": version, "flag_runs": runs, "last_flagged": last}
                if "findings" in have:
                    policy["findings"] = _one(
                        conn, "SELECT count(*) FROM findings WHERE policy_hash = ? AND active = 1", ph
                    )
                info["policies"].append(policy)
        info["findings"] = {"active": 0, "by_severity": {}}
        if "findings" in have:
            info["findings"]["active"] = _one(conn, "SELECT count(*) FROM findings WHERE active = 1")
            info["findings"]["by_severity"] = dict(
                conn.execute(
                    "SELECT severity, count(*) FROM findings WHERE active = 1 GROUP BY severity ORDER BY count(*) DESC"
                )
            )
        info["decisions"] = _one(conn, "SELECT count(*) FROM decisions") if "decisions" in have else 0
        runs = conn.execute("SELECT count(*), max(run_id) FROM runs").fetchone()
        last = conn.execute(
            "SELECT run_id, command, status, started, finished FROM runs ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        info["runs"] = {
            "total": runs[0],
            "latest": dict(zip(("run_id", "command", "status", "started", "finished"), last)) if last else None,
        }
    finally:
        conn.close()
    sizes = _sizes(index_dir)
    info["disk"] = {"total_bytes": sum(sizes.values()), "files": sizes}
    return info
