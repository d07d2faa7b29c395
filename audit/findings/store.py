"""Findings, clusters and decisions tables in the catalog database.

A *finding* is one item in one category under one policy (``policy_hash``), with every
signal that put it there. Findings are keyed so that re-flagging the same item for the
same category under the same policy updates the row instead of adding one. *Decisions*
are an append-only log; the latest decision on a target wins.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import polars as pl

from audit.frames import IDS_TYPE, SIGNALS_TYPE, SqlQuery, collect_query, frame, lazy_query, signals_sql
from audit.timeutil import utc_now

# the vocabulary (defined in audit.vocabulary), re-exported: DECIDED_STATUSES are no news to anyone
from audit.vocabulary import DECIDED_STATUSES, DECISIONS, SEVERITIES, STATUSES  # noqa: F401

SIGNAL_KINDS = (
    "concept",
    "prompt_rule",
    "name",
    "hash_match",
    "face_match",
    "cluster",
    "seed_neighbor",
    "combination",
    "negative",
    "learned",
    "provenance",
)
# Signals derived from other findings or decisions, not from the item itself.
DERIVED_KINDS = ("cluster", "seed_neighbor")


def is_review_candidate(signals: Iterable[Any]) -> bool:
    """A finding whose every signal (as stored: dicts) is derived (its flagged cluster, a
    confirmed neighbour): a candidate for review, with no evidence of its own."""
    kinds = {s.get("kind") if isinstance(s, dict) else None for s in signals}
    return bool(kinds) and kinds <= set(DERIVED_KINDS)


def is_review_candidate_json(signals_json: str | None) -> bool:
    """``is_review_candidate`` of a finding's stored ``signals`` column (JSON text)."""
    try:
        signals = json.loads(signals_json or "[]")
    except ValueError:
        return False
    return isinstance(signals, list) and is_review_candidate(signals)


@dataclass
class Signal:
    """One reason an item was flagged, with everything a reviewer needs to judge it."""

    kind: str  # one of SIGNAL_KINDS
    name: str  # "kind:id" as policies name signals, e.g. "concept:red-triangle"
    score: float | None = None  # cosine, hamming distance, 1.0 for a rule hit
    threshold: float | None = None
    margin: float | None = None  # score - threshold (for distances: threshold - distance)
    detail: dict[str, Any] = field(default_factory=dict)  # span, matched text, bank label, space, ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Finding:
    item_id: str
    category: str
    severity: str
    policy_hash: str
    signals: list[Signal]
    cluster_id: str | None = None
    status: str = "new"

    @property
    def finding_id(self) -> str:
        return finding_id(self.policy_hash, self.item_id, self.category)


def finding_id(policy_hash: str, item_id: str, category: str) -> str:
    return hashlib.sha256(f"{policy_hash}\0{item_id}\0{category}".encode()).hexdigest()[:24]


class FindingsStore:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn  # its tables are made at open (audit.catalog.migrations)

    def transaction(self):
        from audit.catalog.store import transaction

        return transaction(self.conn)

    # --- writing (the flag stage)
    def upsert_findings(self, findings: Iterable[Finding], *, run_id: int | None, now: str | None = None) -> int:
        with self.transaction() as c:
            return self.upsert_findings_in(c, findings, run_id=run_id, now=now)

    def upsert_findings_in(
        self, c: sqlite3.Connection, findings: Iterable[Finding], *, run_id: int | None, now: str | None = None
    ) -> int:
        """``upsert_findings`` inside a transaction the caller holds (the flag stage writes
        findings, clusters and its run record in one transaction)."""
        now = now or utc_now()
        rows = [
            (
                f.finding_id,
                f.policy_hash,
                f.item_id,
                f.category,
                f.severity,
                f.status,
                f.cluster_id,
                json.dumps([s.to_dict() for s in f.signals], default=float, ensure_ascii=False),
                now,
                now,
                run_id,
            )
            for f in findings
        ]
        c.executemany(
            "INSERT INTO findings (finding_id, policy_hash, item_id, category, severity, status, cluster_id, "
            "signals, first_flagged, last_flagged, run_id, active) VALUES (?,?,?,?,?,?,?,?,?,?,?,1) "
            "ON CONFLICT(finding_id) DO UPDATE SET severity=excluded.severity, cluster_id=excluded.cluster_id, "
            "signals=excluded.signals, last_flagged=excluded.last_flagged, run_id=excluded.run_id, active=1, "
            "status=CASE WHEN findings.status='new' AND findings.run_id IS NOT excluded.run_id THEN 'known' "
            "ELSE findings.status END",
            rows,
        )
        return len(rows)

    # --- what a scan reports: "new" until a completed scan has delivered it
    def unreported(self, policy_hash: str) -> pl.DataFrame:
        """Active findings of ``policy_hash`` that no completed ``audit scan`` has reported and
        no reviewer has decided on (dismissed, confirmed, escalated), with a present uri."""
        marks = ",".join("?" * len(DECIDED_STATUSES))
        sql = f"""
            SELECT f.finding_id, f.item_id,
                   (SELECT min(uri) FROM locations l WHERE l.item_id = f.item_id AND l.present = 1) AS uri,
                   f.category, f.severity, f.status, f.signals, f.run_id
            FROM findings f
            WHERE f.policy_hash = ? AND f.active = 1 AND f.reported_run IS NULL AND f.status NOT IN ({marks})
            ORDER BY CASE f.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
                     f.category, f.item_id
        """
        schema = {
            "finding_id": pl.Utf8,
            "item_id": pl.Utf8,
            "uri": pl.Utf8,
            "category": pl.Utf8,
            "severity": pl.Utf8,
            "status": pl.Utf8,
            "signals": pl.Utf8,
            "run_id": pl.Int64,
        }
        return frame(self.conn, sql, [policy_hash, *DECIDED_STATUSES], schema)

    def mark_reported(self, finding_ids: Iterable[str], run_id: int) -> int:
        """Record, in one transaction, that a completed scan (its flag run ``run_id``) reported
        ``finding_ids``; a finding already marked keeps its first mark. Returns rows marked."""
        ids = list(dict.fromkeys(finding_ids))
        if not ids:
            return 0
        marked = 0
        with self.transaction() as c:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cur = c.execute(
                    f"UPDATE findings SET reported_run = ? WHERE reported_run IS NULL "
                    f"AND finding_id IN ({','.join('?' * len(chunk))})",
                    (run_id, *chunk),
                )
                marked += cur.rowcount
        return marked

    def set_statuses_in(self, c: sqlite3.Connection, statuses: dict[str, str]) -> None:
        """finding_id -> status (from review decisions), inside the caller's transaction."""
        c.executemany(
            "UPDATE findings SET status = ? WHERE finding_id = ?", [(status, fid) for fid, status in statuses.items()]
        )

    def deactivate_others_in(self, c: sqlite3.Connection, policy_hash: str, keep: Iterable[str]) -> int:
        """Mark findings of ``policy_hash`` not in ``keep`` inactive (the item no longer meets the policy)."""
        c.execute("CREATE TEMP TABLE IF NOT EXISTS _keep_findings (finding_id TEXT PRIMARY KEY)")
        c.execute("DELETE FROM _keep_findings")
        c.executemany("INSERT OR IGNORE INTO _keep_findings VALUES (?)", [(k,) for k in keep])
        cur = c.execute(
            "UPDATE findings SET active = 0 WHERE policy_hash = ? AND active = 1 "
            "AND finding_id NOT IN (SELECT finding_id FROM _keep_findings)",
            (policy_hash,),
        )
        c.execute("DELETE FROM _keep_findings")
        return cur.rowcount

    def replace_clusters_in(self, c: sqlite3.Connection, policy_hash: str, rows: Iterable[dict]) -> int:
        """Replace the clusters of ``policy_hash`` (each run recomputes them) with ``rows``
        (dicts of the clusters columns; JSON columns as Python objects)."""
        c.execute("DELETE FROM clusters WHERE policy_hash = ?", (policy_hash,))
        cols = (
            "cluster_id",
            "policy_hash",
            "kind",
            "size",
            "members",
            "medoids",
            "top_terms",
            "concept_scores",
            "flagged_share",
            "flagged",
            "categories",
            "run_id",
        )
        json_cols = {"members", "medoids", "top_terms", "concept_scores", "categories"}
        data = [
            tuple(json.dumps(r.get(k), default=float, ensure_ascii=False) if k in json_cols else r.get(k) for k in cols)
            for r in rows
        ]
        c.executemany(f"INSERT INTO clusters ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})", data)
        return len(data)

    def record_flag_run_in(
        self,
        c: sqlite3.Connection,
        *,
        policy_hash: str,
        run_id: int | None = None,
        policy_name: str | None = None,
        policy_version: str | None = None,
        policy_path: str | None = None,
        model_key: str | None = None,
        thresholds: dict | None = None,
        at: str | None = None,
    ) -> int:
        """Record which policy (and model, thresholds) a flag run used; returns its run id."""
        cur = c.execute(
            "INSERT INTO flag_runs (run_id, policy_hash, policy_name, policy_version, policy_path, model_key, "
            "thresholds, at) VALUES (?,?,?,?,?,?,?,?)",
            (
                run_id,
                policy_hash,
                policy_name,
                policy_version,
                policy_path,
                model_key,
                json.dumps(thresholds or {}, default=float),
                at or utc_now(),
            ),
        )
        return int(cur.lastrowid)

    def record_decision(
        self,
        *,
        target_kind: str,
        target_id: str,
        decision: str,
        decided_by: str,
        note: str | None = None,
        category: str | None = None,
        source: str = "cli",
        at: str | None = None,
    ) -> int:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO decisions (target_kind, target_id, decision, note, category, decided_by, decided_at, source) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (target_kind, target_id, decision, note, category, decided_by, at or utc_now(), source),
            )
            return int(cur.lastrowid)

    # --- reading (reports, notebooks, CLI)
    def findings_query(
        self,
        *,
        policy_hash: str | None = None,
        active_only: bool = True,
        category=None,
        severity=None,
        status=None,
        cluster_id=None,
        item_id=None,
        member_of: str | None = None,
        finding_id=None,
        paged: bool = False,
    ) -> SqlQuery:
        """The query behind ``findings``: each keyword (a value or a list of values) is a
        ``WHERE`` term; ``member_of``: findings of the items in that cluster (or group)."""
        where = ["1=1"]
        params: list[Any] = []
        # paged (lazy frames): read in rowid order, so walk the table, not the policy index
        narrow = paged or any(v is not None for v in (cluster_id, item_id, member_of, finding_id))
        if policy_hash:
            # with a narrower indexed filter, a unary + keeps SQLite off the policy index
            # (which would walk every finding of the policy)
            where.append("+f.policy_hash = ?" if narrow else "f.policy_hash = ?")
            params.append(policy_hash)
        if active_only:
            where.append("f.active = 1")
        for column, value in (
            ("category", category),
            ("severity", severity),
            ("status", status),
            ("cluster_id", cluster_id),
            ("item_id", item_id),
            ("finding_id", finding_id),
        ):
            _where_in(where, params, f"f.{column}", value)
        if member_of is not None:
            sql, p = cluster_member_ids_sql(self.conn, member_of)
            where.append(f"f.item_id IN ({sql})")
            params.extend(p)
        columns = {
            "finding_id": "f.finding_id",
            "item_id": "f.item_id",
            "uri": "(SELECT min(uri) FROM locations l WHERE l.item_id = f.item_id AND l.present = 1)",
            "category": "f.category",
            "severity": "f.severity",
            "status": "f.status",
            "cluster_id": "f.cluster_id",
            "signals": signals_sql("f.signals"),
            "policy_hash": "f.policy_hash",
            "first_flagged": "f.first_flagged",
            "last_flagged": "f.last_flagged",
            "run_id": "f.run_id",
        }
        schema = {
            "finding_id": pl.Utf8,
            "item_id": pl.Utf8,
            "uri": pl.Utf8,
            "category": pl.Utf8,
            "severity": pl.Utf8,
            "status": pl.Utf8,
            "cluster_id": pl.Utf8,
            "signals": pl.Utf8,
            "policy_hash": pl.Utf8,
            "first_flagged": pl.Utf8,
            "last_flagged": pl.Utf8,
            "run_id": pl.Int64,
        }
        order = (
            "CASE f.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END, "
            "f.category, f.item_id"
        )
        return SqlQuery(
            columns,
            schema,
            f"FROM findings f WHERE {' AND '.join(where)}",
            tuple(params),
            order,
            page_key="f.rowid",
            decode={"signals": SIGNALS_TYPE},
        )

    def findings(self, *, lazy: bool = False, **filters) -> pl.DataFrame | pl.LazyFrame:
        """Findings joined with one present location per item (uri), most severe first;
        filters as in ``findings_query``; ``lazy``: a LazyFrame read in pages when collected
        (in storage order: sort it where order matters)."""
        q = self.findings_query(paged=lazy, **filters)
        return lazy_query(self.conn, q, name="findings") if lazy else collect_query(self.conn, q)

    def clusters_query(
        self, *, policy_hash: str | None = None, kind=None, flagged_only: bool = False, cluster_id=None
    ) -> SqlQuery:
        schema = {
            "cluster_id": pl.Utf8,
            "policy_hash": pl.Utf8,
            "kind": pl.Utf8,
            "size": pl.Int64,
            "members": pl.Utf8,
            "medoids": pl.Utf8,
            "top_terms": pl.Utf8,
            "concept_scores": pl.Utf8,
            "flagged_share": pl.Float64,
            "flagged": pl.Int64,
            "categories": pl.Utf8,
            "run_id": pl.Int64,
            "review": pl.Utf8,
        }
        where, params = ["1=1"], []
        if policy_hash:
            where.append("policy_hash = ?")
            params.append(policy_hash)
        _where_in(where, params, "kind", kind)
        _where_in(where, params, "cluster_id", cluster_id)
        if flagged_only:
            where.append("flagged = 1")
        columns = {n: n for n in schema} | {"members": members_sql(self.conn)}
        # member lists and categories as lists of ids, flagged as a boolean; top_terms,
        # concept_scores and review keep their JSON text (mixed shapes keyed by concept)
        return SqlQuery(
            columns,
            schema,
            f"FROM clusters WHERE {' AND '.join(where)}",
            tuple(params),
            "size DESC",
            casts={"flagged": pl.Boolean},
            page_key="rowid",
            decode={"members": IDS_TYPE, "medoids": IDS_TYPE, "categories": IDS_TYPE},
        )

    def clusters(self, *, lazy: bool = False, **filters) -> pl.DataFrame | pl.LazyFrame:
        q = self.clusters_query(**filters)
        return lazy_query(self.conn, q, name="clusters") if lazy else collect_query(self.conn, q)

    def decisions(self) -> pl.DataFrame:
        schema = {
            "decision_id": pl.Int64,
            "target_kind": pl.Utf8,
            "target_id": pl.Utf8,
            "decision": pl.Utf8,
            "note": pl.Utf8,
            "category": pl.Utf8,
            "decided_by": pl.Utf8,
            "decided_at": pl.Utf8,
            "source": pl.Utf8,
        }
        return frame(self.conn, f"SELECT {', '.join(schema)} FROM decisions ORDER BY decision_id", (), schema)

    def latest_decisions(self, target_kind: str = "item") -> dict[str, str]:
        """target_id -> its latest decision."""
        rows = self.conn.execute(
            "SELECT target_id, decision FROM decisions d WHERE target_kind = ? AND decision_id = "
            "(SELECT max(decision_id) FROM decisions d2 WHERE d2.target_kind = d.target_kind AND d2.target_id = d.target_id)",
            (target_kind,),
        )
        return dict(rows.fetchall())


def signal_dicts(row_signals: str | Sequence[dict] | None) -> list[dict[str, Any]]:
    """A finding's signals as plain dicts with ``detail`` a dict: from the stored JSON text,
    or from a ``findings()`` row (a list of structs whose ``detail`` is JSON text)."""
    if row_signals is None:
        return []
    data = json.loads(row_signals) if isinstance(row_signals, str) else row_signals
    out = []
    for s in data:
        s = dict(s)
        detail = s.get("detail")
        s["detail"] = (json.loads(detail) if isinstance(detail, str) else detail) or {}
        out.append(s)
    return out


def signals_of(row_signals: str | Sequence[dict] | None) -> list[Signal]:
    return [Signal(**s) for s in signal_dicts(row_signals)]


def _where_in(where: list[str], params: list[Any], column: str, value) -> None:
    """``column = ?`` for one value, ``column IN (SELECT value FROM json_each(?))`` for a list
    (one parameter, any length; SQLite still uses an index on ``column``)."""
    if value is None:
        return
    if isinstance(value, (str, bytes, int, float)):
        where.append(f"{column} = ?")
        params.append(value)
        return
    where.append(f"{column} IN (SELECT value FROM json_each(?))")
    params.append(json.dumps([v for v in value]))


# The flag stage keeps a semantic cluster's members only in its ``cluster_members`` rows (an
# incremental run touching most clusters must not rewrite every member list): the cluster
# row's ``members`` then holds {"scope": s, "cluster": k}. Older indexes (and near-duplicate
# groups) hold the JSON list itself; both read the same through these two helpers.
def members_ref(scope: int, cluster: int) -> str:
    return json.dumps({"scope": int(scope), "cluster": int(cluster)})


# the ``members`` column as a JSON list of item ids, whichever way the row holds it (the
# sorted member rows of a reference, read from the (scope, cluster) index); a query selecting
# it reads ``FROM clusters``
_MEMBERS_SQL = (
    "(CASE WHEN substr(clusters.members, 1, 1) = '{' THEN (SELECT json_group_array(item_id) FROM "
    "(SELECT item_id FROM cluster_members WHERE scope = json_extract(clusters.members, '$.scope') "
    "AND cluster = json_extract(clusters.members, '$.cluster') ORDER BY item_id)) "
    "ELSE clusters.members END)"
)


def members_sql(conn: sqlite3.Connection) -> str:
    """The SQL expression of ``clusters.members`` as a JSON list (an index the flag stage
    never ran on has no cluster_members table, and no references either)."""
    has_table = (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cluster_members'").fetchone()
        is not None
    )
    return _MEMBERS_SQL if has_table else "clusters.members"


def flagged_cluster_categories(conn: sqlite3.Connection, wanted: Sequence[str]) -> dict[str, set[str]]:
    """item -> the categories of the flagged clusters holding it. A flagged cluster's members
    that fired nothing themselves are still near-alike to those that did (often just under a
    threshold), so a view treats them as of the cluster's categories (``audit.notebook.show``: a no_view
    cluster's members are never shown, listed as findings or not)."""
    out: dict[str, set[str]] = {}
    if not wanted:
        return out
    try:
        rows = conn.execute("SELECT members, categories FROM clusters WHERE flagged = 1").fetchall()
    except sqlite3.OperationalError:  # no flag run yet
        return out
    refs: dict[tuple[int, int], set[str]] = {}
    wanted_set = set(wanted)
    for members, cats in rows:
        try:
            cats = set(json.loads(cats or "[]"))
            ref = json.loads(members or "[]")
        except ValueError:
            continue
        if isinstance(ref, dict):  # members kept in cluster_members, named by (scope, cluster)
            refs.setdefault((int(ref["scope"]), int(ref["cluster"])), set()).update(cats)
        else:  # an explicit member list (near-duplicate groups, older indexes)
            for item_id in wanted_set.intersection(ref):
                out.setdefault(item_id, set()).update(cats)
    if refs:
        scopes = sorted({scope for scope, _ in refs})
        marks = ",".join("?" * len(wanted))
        for scope, item_id, cluster in conn.execute(
            f"SELECT scope, item_id, cluster FROM cluster_members WHERE scope IN ({','.join('?' * len(scopes))}) "
            f"AND item_id IN ({marks})",
            [*scopes, *wanted],
        ):
            cats = refs.get((scope, cluster))
            if cats:
                out.setdefault(item_id, set()).update(cats)
    return out


def cluster_member_ids_sql(conn: sqlite3.Connection, cluster_id: str) -> tuple[str, list[Any]]:
    """(SQL selecting the item ids of one cluster, its parameters): a reference row reads its
    ``cluster_members`` rows from their index; a JSON list is expanded by SQLite (one row
    read, never the whole table)."""
    row = conn.execute("SELECT members FROM clusters WHERE cluster_id = ?", (cluster_id,)).fetchone()
    if row is not None and isinstance(row[0], str) and row[0].startswith("{"):
        ref = json.loads(row[0])
        return "SELECT item_id FROM cluster_members WHERE scope = ? AND cluster = ?", [ref["scope"], ref["cluster"]]
    return ("SELECT je.value AS item_id FROM clusters c, json_each(c.members) je WHERE c.cluster_id = ?", [cluster_id])
