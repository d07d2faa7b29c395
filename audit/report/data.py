"""Everything a report shows, gathered once from the catalog and the policy.

Writers never touch the catalog: they get a ``ReportData``. Text columns are read as bytes
and decoded leniently, so a catalog holding non-UTF-8 text (an odd generator, a mangled
file name) still reports, with U+FFFD where bytes were not text.

Reviewer safety is decided here, once: ``Item.no_view`` is true when any finding of the
item is in a ``no_view`` category, when its category is unknown to the policy, or when the
policy file cannot be loaded at all (fail closed). Writers must not render an image of a
``no_view`` item, and ``thumbs.attach_thumbnails`` never decodes one.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from audit.findings.store import is_review_candidate, members_sql
from audit.report.files import clean_text
from audit.vocabulary import DECISION_STATUS, SEVERITY_ORDER


_ITEM_TEXT = (
    "md5",
    "pdq",
    "format",
    "generator",
    "prompt",
    "negative_prompt",
    "seed",
    "sampler",
    "scheduler",
    "model",
    "model_hash",
    "resources",
    "status",
    "error",
    "provenance",
)
_ITEM_NUM = ("size", "width", "height", "frames", "pdq_quality", "steps", "cfg_scale")


@dataclass
class Thumb:
    cover: bytes  # heavily blurred pixels: what the page shows until a click
    reveal: bytes  # what a click shows: lightly blurred, or clear with --no-blur
    mime: str = "image/jpeg"
    width: int = 0
    height: int = 0


@dataclass
class Item:
    item_id: str  # SHA-256 of the bytes
    facts: dict[str, Any]  # md5, pdq, size, format, width, height, generator, prompt, ...
    resources: list[Any]
    locations: list[dict[str, Any]]  # uri, source, container, size, mtime_ns, present, missing_since
    categories: list[str] = field(default_factory=list)
    no_view: bool = True
    # filled at report time by thumbs.check_and_thumbnail
    checked: bool = False
    present: bool | None = None  # a location could be read now
    verified: bool | None = None  # the bytes read now hash to item_id
    read_uri: str | None = None
    read_error: str | None = None
    thumb: Thumb | None = None

    @property
    def missing(self) -> bool:
        return self.checked and not self.present


@dataclass
class FindingRow:
    finding_id: str
    item_id: str
    uri: str | None
    category: str
    severity: str
    status: str
    cluster_id: str | None
    signals: list[dict[str, Any]]
    policy_hash: str
    first_flagged: str
    last_flagged: str
    new_since_last_report: bool
    decision: dict[str, Any] | None = None

    @property
    def review_candidate(self) -> bool:
        """No signal of its own: flagged through its cluster or a confirmed neighbour."""
        return is_review_candidate(self.signals)


@dataclass
class ReportData:
    index_name: str
    index_dir: str
    findings: list[FindingRow]
    items: dict[str, Item]
    clusters: list[dict[str, Any]]
    categories: dict[str, dict[str, Any]]  # id -> severity, no_view, description, in_policy
    policy: dict[str, Any]
    model: dict[str, Any] | None
    flag_run: dict[str, Any] | None
    catalog_version: int
    previous_report: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)  # things the reader must know (policy unavailable, ...)
    other_policies: list[str] = field(default_factory=list)
    # A streamed report (``gather_stream``): ``findings``/``items``/``clusters`` hold what the
    # HTML page shows; ``source`` reads every finding from the catalog in batches.
    source: "FindingSource | None" = None
    totals: dict[str, Any] | None = None  # counts of every finding, set by the check pass
    category_stats: dict[str, dict[str, int]] | None = None  # category -> findings, new, per decision

    @property
    def streamed(self) -> bool:
        return self.source is not None

    def batches(self) -> Iterator[tuple[list[FindingRow], dict[str, Item]]]:
        """Every finding in report order, in batches, with the items they need."""
        if self.source is None:
            yield self.findings, self.items
        else:
            yield from self.source.batches()

    def finding_batches(self) -> Iterator[list[FindingRow]]:
        """Every finding in report order, in batches, without their items (``uri`` unset
        when streamed): the manifest's list."""
        if self.source is None:
            yield self.findings
        else:
            yield from self.source.finding_batches()

    def item_batches(self) -> Iterator[list[Item]]:
        """Every item in a finding, by item_id, in batches (the manifest's list)."""
        if self.source is None:
            yield [self.items[i] for i in sorted(self.items)]
        else:
            yield from self.source.item_batches()

    def cluster_rows(self) -> Iterator[dict[str, Any]]:
        """Every cluster the report covers (flagged, or holding a finding)."""
        if self.source is None:
            yield from self.clusters
        else:
            yield from self.source.cluster_rows()

    def counts(self) -> dict[str, Any]:
        if self.totals is not None:
            return self.totals
        return _counts(self.findings, self.items, len(self.clusters))


def _counts(findings, items, n_clusters: int) -> dict[str, Any]:
    tally = Tally()
    for f in findings:
        tally.add(f, items[f.item_id])
    return tally.result(n_clusters)


class Tally:
    """The report's counts, accumulated one finding at a time."""

    def __init__(self) -> None:
        self.n = self.new = self.candidates = 0
        self.by_cat: dict[str, int] = {}
        self.by_sev: dict[str, int] = {s: 0 for s in SEVERITY_ORDER}
        self.by_status: dict[str, int] = {}
        self.per_cat: dict[str, dict[str, int]] = {}
        self.items: dict[str, tuple[bool, bool, bool]] = {}  # id -> (no_view, missing, changed)

    def add(self, f: "FindingRow", item: "Item") -> None:
        self.n += 1
        self.new += f.new_since_last_report
        self.candidates += f.review_candidate
        self.by_cat[f.category] = self.by_cat.get(f.category, 0) + 1
        self.by_sev[f.severity] = self.by_sev.get(f.severity, 0) + 1
        self.by_status[f.status] = self.by_status.get(f.status, 0) + 1
        c = self.per_cat.setdefault(
            f.category, {"findings": 0, "new": 0, "confirmed": 0, "dismissed": 0, "escalated": 0}
        )
        c["findings"] += 1
        c["new"] += f.new_since_last_report
        if f.status in c:
            c[f.status] += 1
        self.items[f.item_id] = (item.no_view, item.missing, item.verified is False)

    def result(self, n_clusters: int) -> dict[str, Any]:
        flags = self.items.values()
        return {
            "findings": self.n,
            "items": len(self.items),
            "new_since_last_report": self.new,
            "review_candidates": self.candidates,
            "by_category": self.by_cat,
            "by_severity": self.by_sev,
            "by_status": self.by_status,
            "no_view_items": sum(1 for v in flags if v[0]),
            "missing_items": sum(1 for v in flags if v[1]),
            "changed_items": sum(1 for v in flags if v[2]),
            "clusters": n_clusters,
        }


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _text(v) -> str | None:
    return clean_text(v)


def _json(v, default):
    if v is None:
        return default
    if not isinstance(v, (str, bytes)):  # already decoded (a frame's list column)
        return v
    try:
        return json.loads(v)
    except (TypeError, ValueError):
        return default


def _chunks(seq: list, n: int = 500):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def latest_flag_run(conn: sqlite3.Connection, policy_hash: str | None = None) -> dict[str, Any] | None:
    if not _table_exists(conn, "flag_runs"):
        return None
    sql = (
        "SELECT run_id, policy_hash, policy_name, policy_version, policy_path, model_key, thresholds, at "
        "FROM flag_runs {} ORDER BY run_id DESC LIMIT 1"
    )
    row = conn.execute(
        sql.format("WHERE policy_hash = ?" if policy_hash else ""), (policy_hash,) if policy_hash else ()
    ).fetchone()
    if row is None:
        return None
    keys = ("run_id", "policy_hash", "policy_name", "policy_version", "policy_path", "model_key", "thresholds", "at")
    out = dict(zip(keys, row))
    out["thresholds"] = _json(out["thresholds"], {})
    return out


def model_identity(conn: sqlite3.Connection, model_key: str | None) -> dict[str, Any] | None:
    if not model_key:
        return None
    ident: dict[str, Any] = {"model_key": model_key}
    if _table_exists(conn, "models"):
        row = conn.execute(
            "SELECT name, pretrained, checkpoint_sha256, dim, identity FROM models WHERE model_key = ?", (model_key,)
        ).fetchone()
        if row:
            ident.update({"name": row[0], "pretrained": row[1], "checkpoint_sha256": row[2], "dim": row[3]})
            extra = _json(row[4], {})
            if isinstance(extra, dict):
                for k, v in extra.items():
                    ident.setdefault(k, v)
    return ident


def previous_report(conn: sqlite3.Connection) -> dict[str, Any] | None:
    if not _table_exists(conn, "runs"):
        return None
    row = conn.execute(
        "SELECT run_id, started, finished, summary FROM runs WHERE command = 'report' AND status = 'ok' "
        "ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    summary = _json(row[3], {})
    return {
        "run_id": row[0],
        "started": row[1],
        "finished": row[2],
        "out": summary.get("out") if isinstance(summary, dict) else None,
    }


def resolve_policy(
    conn: sqlite3.Connection, policy_path: str | Path | None
) -> tuple[Any, str | None, dict | None, list[str]]:
    """(Policy or None, policy_hash of the findings to report, flag run, notes)."""
    from audit.errors import InputError
    from audit.policy import load_policy

    notes: list[str] = []
    if policy_path is not None:
        policy = load_policy(policy_path)  # errors here are the user's: exit 2
        return policy, policy.content_hash, latest_flag_run(conn, policy.content_hash), notes
    run = latest_flag_run(conn)
    policy_hash = run["policy_hash"] if run else None
    if policy_hash is None and _table_exists(conn, "findings"):
        row = conn.execute("SELECT policy_hash FROM findings ORDER BY last_flagged DESC LIMIT 1").fetchone()
        policy_hash = row[0] if row else None
    policy = None
    if run and run.get("policy_path"):
        try:
            policy = load_policy(run["policy_path"])
        except (InputError, OSError, ValueError) as exc:
            notes.append(
                f"the policy file of the flag run ({run['policy_path']}) could not be loaded ({exc}); "
                "images are withheld for every category"
            )
        else:
            if policy.content_hash != policy_hash:
                notes.append(
                    f"the policy file {run['policy_path']} changed since the flag run; categories and "
                    "no_view settings are taken from its current content"
                )
    elif policy_hash is not None:
        notes.append(
            "no policy file is recorded for these findings; images are withheld for every category "
            "(pass --policy FILE to use its no_view settings)"
        )
    return policy, policy_hash, run, notes


def gather(audit, *, policy_path: str | Path | None = None) -> ReportData:
    """Read findings, their items and clusters, the policy and model identity from ``audit``."""
    from audit.findings.store import FindingsStore

    conn: sqlite3.Connection = audit.catalog.conn
    store = FindingsStore(conn)  # creates the (empty) tables when the flag stage never ran
    own = not conn.in_transaction
    if own:  # one read snapshot (WAL): a flag run committing meanwhile is seen whole or not at all
        conn.execute("BEGIN")
    try:
        return _gather(audit, conn, store, policy_path)
    finally:
        if own:
            conn.execute("COMMIT")


def _gather(audit, conn: sqlite3.Connection, store, policy_path) -> ReportData:
    catalog_version = audit.catalog.version()
    policy, policy_hash, run, notes = resolve_policy(conn, policy_path)
    prev = previous_report(conn)

    categories: dict[str, dict[str, Any]] = {}
    if policy is not None:
        for c in policy.categories:
            categories[c.id] = {
                "severity": c.severity,
                "no_view": bool(c.no_view),
                "description": c.description,
                "in_policy": True,
            }

    rows = []
    other: list[str] = []
    if policy_hash is not None:
        rows = conn.execute(
            "SELECT finding_id, item_id, category, severity, status, cluster_id, CAST(signals AS BLOB), policy_hash, "
            "first_flagged, last_flagged FROM findings WHERE policy_hash = ? AND active = 1",
            (policy_hash,),
        ).fetchall()
        other = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT policy_hash FROM findings WHERE policy_hash != ? AND active = 1", (policy_hash,)
            )
        ]
    if other:
        notes.append(
            f"{len(other)} other polic{'y has' if len(other) == 1 else 'ies have'} active findings in this "
            "index; this report covers only the policy named above"
        )

    findings = finding_rows(rows, categories, _latest_decisions(conn), prev)
    if policy is None:
        for c in categories.values():
            c["no_view"] = True
    findings.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), f.category, f.cluster_id or "~", f.item_id))

    items = _items(conn, sorted({f.item_id for f in findings}))
    for f in findings:
        item = items[f.item_id]
        item.categories.append(f.category)
        present = [loc["uri"] for loc in item.locations if loc["present"]]
        f.uri = present[0] if present else (item.locations[0]["uri"] if item.locations else None)
    for item in items.values():
        # an item in any no_view category (or an unknown one) is no_view everywhere
        item.no_view = any(categories.get(c, {}).get("no_view", True) for c in item.categories)

    clusters = []
    wanted = {f.cluster_id for f in findings if f.cluster_id}
    if policy_hash is not None:
        for c in store.clusters(policy_hash=policy_hash).to_dicts():
            if c["cluster_id"] in wanted or c["flagged"]:
                clusters.append(_cluster_dict(c))

    policy_info: dict[str, Any] = {"policy_hash": policy_hash, "loaded": policy is not None}
    if policy is not None:
        policy_info.update(
            name=policy.name,
            version=policy.version,
            content_hash=policy.content_hash,
            path=str(policy.path) if policy.path else None,
        )
    elif run:
        policy_info.update(
            name=run["policy_name"], version=run["policy_version"], content_hash=policy_hash, path=run["policy_path"]
        )
    return ReportData(
        index_name=audit.index_dir.name,
        index_dir=str(audit.index_dir),
        findings=findings,
        items=items,
        clusters=clusters,
        categories=categories,
        policy=policy_info,
        model=model_identity(conn, run["model_key"] if run else None),
        flag_run=run,
        catalog_version=catalog_version,
        previous_report=prev,
        notes=notes,
        other_policies=other,
    )


def _latest_decisions(conn: sqlite3.Connection):
    """``audit.review.LatestDecisions`` of the decisions log (texts read leniently: a note
    that is not valid UTF-8 must not stop a report)."""
    from audit.review import Decision, LatestDecisions

    if not _table_exists(conn, "decisions"):
        return LatestDecisions([])
    rows = conn.execute(
        "SELECT decision_id, target_kind, target_id, decision, category, CAST(decided_by AS BLOB), decided_at, "
        "CAST(note AS BLOB), source FROM decisions ORDER BY decision_id"
    )
    return LatestDecisions(
        Decision(did, kind, target, decision, category, _text(by), at, _text(note), source)
        for did, kind, target, decision, category, by, at, note, source in rows
    )


def _items(conn: sqlite3.Connection, ids: list[str]) -> dict[str, Item]:
    items: dict[str, Item] = {}
    cols = ", ".join([f"CAST({c} AS BLOB)" for c in _ITEM_TEXT] + list(_ITEM_NUM))
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT item_id, {cols} FROM items WHERE item_id IN ({marks})", chunk):
            facts: dict[str, Any] = {c: _text(v) for c, v in zip(_ITEM_TEXT, row[1 : 1 + len(_ITEM_TEXT)])}
            facts.update(zip(_ITEM_NUM, row[1 + len(_ITEM_TEXT) :]))
            resources = _json(facts.pop("resources"), [])
            items[row[0]] = Item(
                item_id=row[0],
                facts=facts,
                resources=resources if isinstance(resources, list) else [resources],
                locations=[],
            )
        for item_id, uri, source, container, size, mtime_ns, present, missing_since, last_seen in conn.execute(
            "SELECT item_id, CAST(uri AS BLOB), CAST(source AS BLOB), CAST(container AS BLOB), size, mtime_ns, present, "
            f"missing_since, last_seen FROM locations WHERE item_id IN ({marks}) ORDER BY present DESC, uri",
            chunk,
        ):
            item = items.get(item_id)
            if item is None:  # a finding for an item the catalog no longer has: report what is known
                item = items[item_id] = Item(item_id=item_id, facts={}, resources=[], locations=[])
            item.locations.append(
                {
                    "uri": _text(uri),
                    "source": _text(source),
                    "container": _text(container),
                    "size": size,
                    "mtime_ns": mtime_ns,
                    "present": bool(present),
                    "missing_since": missing_since,
                    "last_seen": last_seen,
                }
            )
    for item_id in ids:
        items.setdefault(item_id, Item(item_id=item_id, facts={}, resources=[], locations=[]))
    return items


# ----------------------------------------------------------------------------- streamed reports

_FINDING_COLS = (
    "finding_id, item_id, category, severity, status, cluster_id, CAST(signals AS BLOB), policy_hash, "
    "first_flagged, last_flagged"
)
_REPORT_ORDER = (
    "CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 "
    "ELSE 9 END, category, coalesce(cluster_id, '~'), item_id"
)
BATCH_FINDINGS = 2_000


class FindingSource:
    """Every finding of one policy, read from the catalog in report order and in batches,
    with the items each batch needs; an item's original is checked once (``checks``) and
    the result reused by every later pass. Holds one read snapshot for the whole report."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        policy_hash: str | None,
        categories: dict,
        decisions: dict,
        prev: dict | None,
        batch: int = BATCH_FINDINGS,
    ):
        self.conn = conn
        self.policy_hash = policy_hash
        self.categories = categories
        self.decisions = decisions
        self.prev = prev
        self.batch = batch
        # item_id -> (present, verified, read_uri, read_error): small, one per item in a finding
        self.checks: dict[str, tuple] = {}
        self.thumbs: dict[str, Any] = {}  # the shown items' thumbnails

    def _rows(self, sql: str, params: tuple) -> Iterator[list[tuple]]:
        if self.policy_hash is None:
            return
        cur = self.conn.execute(sql, params)
        try:
            while rows := cur.fetchmany(self.batch):
                yield rows
        finally:
            cur.close()

    def batches(self, limit: int | None = None) -> Iterator[tuple[list[FindingRow], dict[str, Item]]]:
        sql = f"SELECT {_FINDING_COLS} FROM findings WHERE policy_hash = ? AND active = 1 ORDER BY {_REPORT_ORDER}" + (
            " LIMIT ?" if limit is not None else ""
        )
        params = (self.policy_hash,) + ((limit,) if limit is not None else ())
        for rows in self._rows(sql, params):
            findings = finding_rows(rows, self.categories, self.decisions, self.prev)
            items = self.items_of(sorted({f.item_id for f in findings}))
            for f in findings:
                f.uri = _uri_of(items[f.item_id])
            yield findings, items

    def finding_batches(self) -> Iterator[list[FindingRow]]:
        sql = f"SELECT {_FINDING_COLS} FROM findings WHERE policy_hash = ? AND active = 1 ORDER BY {_REPORT_ORDER}"
        for rows in self._rows(sql, (self.policy_hash,)):
            yield finding_rows(rows, self.categories, self.decisions, self.prev)

    def items_of(self, ids: list[str]) -> dict[str, Item]:
        """Items with their locations, every category they are flagged for (no_view from
        all of them) and the result of their check, where one was made."""
        items = _items(self.conn, ids)
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for item_id, category in self.conn.execute(
                f"SELECT item_id, CAST(category AS BLOB) FROM findings WHERE +policy_hash = ? AND active = 1 "
                f"AND item_id IN ({marks}) ORDER BY item_id, category",
                (self.policy_hash, *chunk),
            ):
                items[item_id].categories.append(_text(category) or "")
        for item in items.values():
            item.no_view = any(self.categories.get(c, {}).get("no_view", True) for c in item.categories)
            self.apply_check(item)
        return items

    def apply_check(self, item: Item) -> None:
        got = self.checks.get(item.item_id)
        if got is not None:
            item.checked = True
            item.present, item.verified, item.read_uri, item.read_error = got
            item.thumb = self.thumbs.get(item.item_id)

    def keep_check(self, item: Item) -> None:
        self.checks[item.item_id] = (item.present, item.verified, item.read_uri, item.read_error)
        if item.thumb is not None:
            self.thumbs[item.item_id] = item.thumb

    def item_batches(self) -> Iterator[list[Item]]:
        sql = "SELECT DISTINCT item_id FROM findings WHERE policy_hash = ? AND active = 1 ORDER BY item_id"
        for rows in self._rows(sql, (self.policy_hash,)):
            items = self.items_of([r[0] for r in rows])
            yield [items[r[0]] for r in rows]

    def cluster_rows(self) -> Iterator[dict[str, Any]]:
        sql = (
            f"SELECT cluster_id, policy_hash, kind, size, {members_sql(self.conn)}, medoids, top_terms, "
            "concept_scores, flagged_share, flagged, categories, run_id, review FROM clusters WHERE policy_hash = ? AND (flagged = 1 OR cluster_id IN "
            "(SELECT cluster_id FROM findings WHERE policy_hash = ? AND active = 1)) ORDER BY size DESC, cluster_id"
        )
        keys = (
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
            "review",
        )
        if self.policy_hash is None or not _table_exists(self.conn, "clusters"):
            return
        for rows in self._rows(sql, (self.policy_hash, self.policy_hash)):
            for row in rows:
                yield _cluster_dict(dict(zip(keys, row)))

    def count_items(self) -> int:
        if self.policy_hash is None:
            return 0
        return self.conn.execute(
            "SELECT count(DISTINCT item_id) FROM findings WHERE policy_hash = ? AND active = 1", (self.policy_hash,)
        ).fetchone()[0]

    def count_clusters(self) -> int:
        if self.policy_hash is None or not _table_exists(self.conn, "clusters"):
            return 0
        return self.conn.execute(
            "SELECT count(*) FROM clusters WHERE policy_hash = ? AND (flagged = 1 OR cluster_id IN "
            "(SELECT cluster_id FROM findings WHERE policy_hash = ? AND active = 1))",
            (self.policy_hash, self.policy_hash),
        ).fetchone()[0]


def _cluster_dict(c: dict[str, Any]) -> dict[str, Any]:
    for key, default in (
        ("members", []),
        ("medoids", []),
        ("top_terms", []),
        ("concept_scores", {}),
        ("categories", []),
        ("review", {}),
    ):
        c[key] = _json(c.get(key), default)
    if c.get("flagged") is not None:  # a frame's Boolean, or SQLite's 0/1: the report writes 0/1
        c["flagged"] = int(c["flagged"])
    return c


def _uri_of(item: Item) -> str | None:
    present = [loc["uri"] for loc in item.locations if loc["present"]]
    return present[0] if present else (item.locations[0]["uri"] if item.locations else None)


def finding_rows(rows, categories: dict, decisions: dict, prev: dict | None) -> list[FindingRow]:
    """FindingRows of findings table rows (``_FINDING_COLS``), their status from the latest
    decision; a category the policy does not know is added to ``categories`` as no_view."""
    out = []
    for fid, item_id, category, severity, status, cluster_id, signals, phash, first, last in rows:
        category = _text(category) or ""
        if category not in categories:
            categories[category] = {"severity": severity, "no_view": True, "description": "", "in_policy": False}
        d = decisions.for_finding(fid, item_id, category)
        decision = {"decision": d.decision, "note": d.note, "by": d.decided_by, "at": d.decided_at} if d else None
        sigs = _json(_text(signals), [])
        out.append(
            FindingRow(
                finding_id=fid,
                item_id=item_id,
                uri=None,
                category=category,
                severity=severity,
                status=DECISION_STATUS.get(decision["decision"], status) if decision else status,
                cluster_id=cluster_id,
                signals=sigs if isinstance(sigs, list) else [],
                policy_hash=phash,
                first_flagged=first,
                last_flagged=last,
                new_since_last_report=prev is None or (first or "") > (prev["started"] or ""),
                decision=decision,
            )
        )
    return out


def gather_stream(
    catalog, conn: sqlite3.Connection, *, policy_path: str | Path | None = None, shown: int
) -> ReportData:
    """A ``ReportData`` that reads its findings in batches from ``conn`` (which holds the
    report's read snapshot): ``findings``/``items`` are the first ``shown`` findings (what
    the HTML page shows) and their items, ``clusters`` theirs; every writer reads the rest
    through ``batches()``. Memory follows ``shown`` and the batch size, not the findings."""
    from audit.findings.store import FindingsStore

    FindingsStore(conn)
    catalog_version = catalog.version()
    policy, policy_hash, run, notes = resolve_policy(conn, policy_path)
    prev = previous_report(conn)
    categories: dict[str, dict[str, Any]] = {}
    if policy is not None:
        for c in policy.categories:
            categories[c.id] = {
                "severity": c.severity,
                "no_view": bool(c.no_view),
                "description": c.description,
                "in_policy": True,
            }
    other: list[str] = []
    if policy_hash is not None:
        for category, severity in conn.execute(
            "SELECT DISTINCT CAST(category AS BLOB), severity FROM findings WHERE policy_hash = ? AND active = 1",
            (policy_hash,),
        ):
            category = _text(category) or ""
            if category not in categories:
                categories[category] = {"severity": severity, "no_view": True, "description": "", "in_policy": False}
        other = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT policy_hash FROM findings WHERE policy_hash != ? AND active = 1", (policy_hash,)
            )
        ]
    if other:
        notes.append(
            f"{len(other)} other polic{'y has' if len(other) == 1 else 'ies have'} active findings in this "
            "index; this report covers only the policy named above"
        )
    if policy is None:
        for c in categories.values():
            c["no_view"] = True
    source = FindingSource(conn, policy_hash, categories, _latest_decisions(conn), prev)
    findings: list[FindingRow] = []
    items: dict[str, Item] = {}
    if shown > 0:
        for batch, batch_items in source.batches(limit=shown):
            findings += batch
            items.update(batch_items)
    wanted = {f.cluster_id for f in findings if f.cluster_id}
    clusters = []
    if wanted:
        ids = sorted(wanted)
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            keys = (
                "cluster_id",
                "policy_hash",
                "kind",
                "size",
                "medoids",
                "top_terms",
                "concept_scores",
                "flagged_share",
                "flagged",
                "categories",
                "run_id",
                "review",
            )
            # members are left out: the page shows a cluster's size and terms, never its member list
            for row in conn.execute(f"SELECT {', '.join(keys)} FROM clusters WHERE cluster_id IN ({marks})", chunk):
                clusters.append(_cluster_dict({**dict(zip(keys, row)), "members": None}))
    policy_info: dict[str, Any] = {"policy_hash": policy_hash, "loaded": policy is not None}
    if policy is not None:
        policy_info.update(
            name=policy.name,
            version=policy.version,
            content_hash=policy.content_hash,
            path=str(policy.path) if policy.path else None,
        )
    elif run:
        policy_info.update(
            name=run["policy_name"], version=run["policy_version"], content_hash=policy_hash, path=run["policy_path"]
        )
    return ReportData(
        index_name=catalog.index_dir.name,
        index_dir=str(catalog.index_dir),
        findings=findings,
        items=items,
        clusters=clusters,
        categories=categories,
        policy=policy_info,
        model=model_identity(conn, run["model_key"] if run else None),
        flag_run=run,
        catalog_version=catalog_version,
        previous_report=prev,
        notes=notes,
        other_policies=other,
        source=source,
    )
