"""Review decisions: an append-only log of what reviewers decided, and what follows from it.

A decision targets an item, a finding or a cluster and says ``confirm``, ``dismiss`` or
``escalate`` (with a note, who and when). Nothing is ever updated or deleted; the latest
decision on a target wins. A decision on a cluster is logged for the cluster *and* for each
of its members at that moment (source ``cluster:<id>``), because clusters are recomputed by
every flag run and their ids do not outlive it; with a category (the report's cluster review
unit), the members are those holding an active finding of that category in the cluster.
Which decision holds for a finding: ``LatestDecisions`` (one rule for the flag stage and the
report).

What decisions change (applied by the flag stage, ``audit.flag.runner``):

* finding status: ``confirmed`` / ``dismissed`` / ``escalated`` (else ``new``, then ``known``);
  a dismissed item is not reported as new again, under this policy or a changed one;
* seeds: items whose latest decision is ``confirm`` (directly or through a finding) are the
  only seeds of neighbour expansion; automatic flags never seed;
* ``export_bank``: confirmed items as a hash list (``hash_type,hash,label``; pdq, md5, sha256).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit.catalog.runs import current_user
from audit.errors import InputError, UsageError
from audit.findings.store import FindingsStore
from audit.vocabulary import DECISION_STATUS, DECISIONS

TARGET_KEYS = ("item_id", "finding_id", "cluster_id")
IMPORT_KEYS = frozenset({*TARGET_KEYS, "decision", "note", "by", "at", "category"})


@dataclass(frozen=True)
class Decision:
    decision_id: int
    target_kind: str
    target_id: str
    decision: str
    category: str | None
    decided_by: str
    decided_at: str
    note: str | None
    source: str | None

    @property
    def status(self) -> str:
        return DECISION_STATUS[self.decision]


def _timestamp(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: 'at' must be an ISO 8601 timestamp string")
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise InputError(f"{where}: 'at' is not an ISO 8601 timestamp: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------ targets


def resolve_item(conn: sqlite3.Connection, item: str) -> str:
    """An item id from an id, a unique prefix (≥ 4 hex digits) or a uri."""
    item = (item or "").strip()
    if not item:
        raise UsageError("--item is empty")
    row = conn.execute("SELECT item_id FROM items WHERE item_id = ?", (item.lower(),)).fetchone()
    if row:
        return row[0]
    if len(item) >= 4 and all(c in "0123456789abcdefABCDEF" for c in item):
        lo = item.lower()
        rows = conn.execute(
            "SELECT item_id FROM items WHERE item_id >= ? AND item_id < ? LIMIT 2", (lo, lo + "g")
        ).fetchall()
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            raise UsageError(f"item id prefix {item!r} is ambiguous; give more characters")
    row = conn.execute("SELECT item_id FROM locations WHERE uri = ? AND item_id IS NOT NULL", (item,)).fetchone()
    if row:
        return row[0]
    raise InputError(f"no item {item!r} in this index (give an item id, a unique prefix of one, or a uri)")


def cluster_members(conn: sqlite3.Connection, cluster_id: str) -> list[str]:
    from audit.findings.store import members_sql

    row = conn.execute(f"SELECT {members_sql(conn)} FROM clusters WHERE cluster_id = ?", (cluster_id,)).fetchone()
    if row is None:
        raise InputError(f"no cluster {cluster_id!r} in this index (see `audit flag --json` or Audit.clusters())")
    return list(json.loads(row[0] or "[]"))


def _reviewed_members(conn: sqlite3.Connection, cluster_id: str, category: str) -> list[str]:
    """Members a decision on a flagged cluster's review unit covers: those holding an active
    finding of ``category`` in the cluster (the fired members and the listed candidates, what
    the reviewer saw), not the members the report only counted."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT item_id FROM findings WHERE cluster_id = ? AND category = ? AND active = 1 ORDER BY item_id",
            (cluster_id, category),
        )
    ]


def finding_row(conn: sqlite3.Connection, finding_id: str) -> tuple[str, str]:
    row = conn.execute("SELECT item_id, category FROM findings WHERE finding_id = ?", (finding_id,)).fetchone()
    if row is None:
        raise InputError(f"no finding {finding_id!r} in this index")
    return row[0], row[1]


# ------------------------------------------------------------------------------ writing


@dataclass
class _Planned:
    target_kind: str
    target_id: str
    decision: str
    note: str | None
    category: str | None
    by: str
    at: str | None
    source: str
    members: list[str]


def _write(store: FindingsStore, planned: list[_Planned]) -> list[int]:
    from audit.timeutil import utc_now

    ids = []
    with store.transaction() as c:
        for p in planned:
            at = p.at or utc_now()
            rows = [(p.target_kind, p.target_id, p.source)]
            rows += [("item", m, f"cluster:{p.target_id}") for m in p.members]
            for kind, target, source in rows:
                cur = c.execute(
                    "INSERT INTO decisions (target_kind, target_id, decision, note, category, decided_by, "
                    "decided_at, source) VALUES (?,?,?,?,?,?,?,?)",
                    (kind, target, p.decision, p.note, p.category, p.by, at, source),
                )
                if kind == p.target_kind:
                    ids.append(int(cur.lastrowid))
    return ids


def _plan(
    conn,
    *,
    item=None,
    finding=None,
    cluster=None,
    decision: str,
    note=None,
    by=None,
    at=None,
    category=None,
    source="cli",
) -> _Planned:
    given = [k for k, v in (("item", item), ("finding", finding), ("cluster", cluster)) if v]
    if len(given) != 1:
        raise UsageError("give exactly one target: --item, --cluster (or a finding id)")
    if decision not in DECISIONS:
        raise UsageError(f"--decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    members: list[str] = []
    if item:
        kind, target = "item", resolve_item(conn, item)
    elif finding:
        kind, target = "finding", str(finding)
        _, fcat = finding_row(conn, target)
        category = category or fcat
    else:
        kind, target = "cluster", str(cluster)
        members = cluster_members(conn, target)
        if category:
            members = _reviewed_members(conn, target, category) or members
    return _Planned(kind, target, decision, note, category, by or current_user(), at, source, members)


def record(
    conn: sqlite3.Connection,
    *,
    item: str | None = None,
    finding: str | None = None,
    cluster: str | None = None,
    decision: str,
    note: str | None = None,
    by: str | None = None,
    category: str | None = None,
    source: str = "cli",
) -> int:
    """Append one decision; returns its id. A cluster decision also logs one per member."""
    store = FindingsStore(conn)
    planned = _plan(
        conn,
        item=item,
        finding=finding,
        cluster=cluster,
        decision=decision,
        note=note,
        by=by,
        category=category,
        source=source,
    )
    return _write(store, [planned])[0]


def import_decisions(conn: sqlite3.Connection, path: str | os.PathLike, *, by: str | None = None) -> list[int]:
    """Validate every entry of a JSON list of decisions, then append them all in one
    transaction (nothing is written when any entry is wrong). Entries:
    ``{item_id | finding_id | cluster_id, decision, note?, by?, at?, category?}``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read decisions: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file: {exc}") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of decisions, got {type(data).__name__}")
    source = "import:" + hashlib.sha256(raw).hexdigest()[:16]
    planned = []
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - IMPORT_KEYS)
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(IMPORT_KEYS))})")
        targets = [k for k in TARGET_KEYS if entry.get(k) not in (None, "")]
        check_item = None
        if set(targets) == {"finding_id", "item_id"}:  # the report page's format: item_id is a check
            targets, check_item = ["finding_id"], entry["item_id"]
        if len(targets) != 1:
            raise InputError(
                f"{where}: give exactly one of item_id, finding_id, cluster_id (or finding_id with its item_id)"
            )
        for key in (*TARGET_KEYS, "note", "by", "category"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise InputError(f"{where}: {key!r} must be a string")
        decision = entry.get("decision")
        if decision not in DECISIONS:
            raise InputError(f"{where}: 'decision' must be one of {', '.join(DECISIONS)}, got {decision!r}")
        at = _timestamp(entry["at"], where) if entry.get("at") is not None else None
        try:
            if check_item is not None:
                owner, _ = finding_row(conn, entry["finding_id"])
                if owner != str(check_item).strip().lower():
                    raise InputError(
                        f"item_id {str(check_item)[:16]}… is not the item of finding "
                        f"{entry['finding_id']} ({owner[:16]}…)"
                    )
            planned.append(
                _plan(
                    conn,
                    item=None if check_item else entry.get("item_id"),
                    finding=entry.get("finding_id"),
                    cluster=entry.get("cluster_id"),
                    decision=decision,
                    note=entry.get("note"),
                    by=entry.get("by") or by,
                    at=at,
                    category=entry.get("category"),
                    source=source,
                )
            )
        except (InputError, UsageError) as exc:
            raise InputError(f"{where}: {exc}") from None
    if not planned:
        return []
    return _write(FindingsStore(conn), planned)


# ------------------------------------------------------------------------------ reading


def all_decisions(conn: sqlite3.Connection) -> list[Decision]:
    FindingsStore(conn)  # tables exist
    cur = conn.execute(
        "SELECT decision_id, target_kind, target_id, decision, category, decided_by, decided_at, "
        "note, source FROM decisions ORDER BY decision_id"
    )
    return [Decision(*row) for row in cur]


class LatestDecisions:
    """The one rule for "the latest decision wins", used by the flag stage (finding statuses)
    and by the report (what each finding shows), so the two never disagree.

    The decisions that apply to a finding (item, category): those on the finding itself, those
    on its item with that category, and those on its item with no category (including the
    per-member decisions a cluster decision logs, with the cluster decision's category). Of
    these the latest (highest ``decision_id``) wins, whatever its target kind."""

    def __init__(self, decisions):
        self.items: dict[tuple[str, str | None], Decision] = {}
        self.findings: dict[str, Decision] = {}
        for d in sorted(decisions, key=lambda d: d.decision_id):
            if d.target_kind == "item":
                self.items[(d.target_id, d.category or None)] = d
            elif d.target_kind == "finding":
                self.findings[d.target_id] = d

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> "LatestDecisions":
        return cls(all_decisions(conn))

    def decided_items(self) -> set[str]:
        return {item_id for item_id, _ in self.items}

    def for_finding(self, finding_id: str, item_id: str, category: str | None) -> Decision | None:
        cands = [
            d
            for d in (
                self.findings.get(finding_id),
                self.items.get((item_id, category or None)),
                self.items.get((item_id, None)),
            )
            if d is not None
        ]
        return max(cands, key=lambda d: d.decision_id) if cands else None


def latest_by_target(conn: sqlite3.Connection) -> tuple[dict[str, Decision], dict[str, Decision]]:
    """(item_id -> latest item decision, finding_id -> latest finding decision)."""
    items: dict[str, Decision] = {}
    findings: dict[str, Decision] = {}
    for d in all_decisions(conn):
        if d.target_kind == "item":
            items[d.target_id] = d
        elif d.target_kind == "finding":
            findings[d.target_id] = d
    return items, findings


def confirmed_items(conn: sqlite3.Connection) -> dict[str, list[Decision]]:
    """item_id -> the confirm decisions that currently hold for it (item- or finding-level):
    the seeds of neighbour expansion and of ``export_bank``."""
    items, findings = latest_by_target(conn)
    out: dict[str, list[Decision]] = {}
    for item_id, d in items.items():
        if d.decision == "confirm":
            out.setdefault(item_id, []).append(d)
    if findings:
        owners = dict(conn.execute("SELECT finding_id, item_id FROM findings").fetchall())
        for fid, d in findings.items():
            item_id = owners.get(fid)
            if item_id is None or d.decision != "confirm":
                continue
            later = items.get(item_id)
            if later is not None and later.decision_id > d.decision_id and later.decision != "confirm":
                continue  # a later item-level decision overrides the finding's
            out.setdefault(item_id, []).append(d)
    return out


def export_bank(conn: sqlite3.Connection, path: str | os.PathLike) -> int:
    """Write confirmed items as a hash list CSV (``hash_type,hash,label``); returns rows written."""
    confirmed = confirmed_items(conn)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["hash_type", "hash", "label"])
    n = 0
    for item_id in sorted(confirmed):
        row = conn.execute("SELECT md5, pdq FROM items WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            continue
        md5, pdq = row
        cats = sorted({d.category for d in confirmed[item_id] if d.category})
        label = f"{'+'.join(cats) or 'confirmed'}:{item_id[:16]}"
        if pdq:
            w.writerow(["pdq", pdq, label])
            n += 1
        if md5:
            w.writerow(["md5", md5, label])
            n += 1
        w.writerow(["sha256", item_id, label])
        n += 1
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return n
