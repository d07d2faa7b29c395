"""Large synthetic indexes built through the stores' own API (no raw SQL): many items,
findings and clusters, for the memory tests of frames and reports. No image files exist:
every item is reported as a missing original, which is what a report of an index whose
archive is offline shows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import audit
from audit.findings.store import Finding, FindingsStore, Signal

CATEGORIES = (("red-triangles", "critical"), ("triangles", "high"), ("squares", "medium"), ("circles", "low"))


@dataclass
class ScaleIndex:
    index: Path
    policy_hash: str
    other_policy_hash: str
    n_items: int
    n_findings: int  # under policy_hash
    cluster_ids: list[str]
    cluster_items: dict[str, list[str]]  # cluster id -> its member item ids


def item_id(i: int) -> str:
    return hashlib.sha256(f"synthetic-{i}".encode()).hexdigest()


def build_scale_index(
    index: Path,
    *,
    n_items: int,
    findings_per_item: int = 1,
    other_policy_findings: int = 0,
    n_clusters: int = 100,
    batch: int = 20_000,
) -> ScaleIndex:
    """``n_items`` items (one location each), ``findings_per_item`` findings per item under the
    current policy, the first ``other_policy_findings`` items also flagged under another
    policy, and ``n_clusters`` semantic clusters that partition the items (item i is in
    cluster i % n_clusters)."""
    now = "2024-01-01T00:00:00.000000Z"
    policy_hash = hashlib.sha256(b"scale-policy").hexdigest()
    other = hashlib.sha256(b"other-policy").hexdigest()
    cids = [f"{policy_hash[:12]}:semantic:{k}" for k in range(n_clusters)]
    members: dict[str, list[str]] = {c: [] for c in cids}
    a = audit.open(index, create=True)
    try:
        store = FindingsStore(a.catalog.conn)
        for start in range(0, n_items, batch):
            ids = range(start, min(n_items, start + batch))
            items, locs, findings = [], [], []
            for i in ids:
                iid = item_id(i)
                cid = cids[i % n_clusters]
                members[cid].append(iid)
                items.append(
                    {
                        "item_id": iid,
                        "size": 1000 + i,
                        "status": "ok",
                        "format": "PNG",
                        "width": 64,
                        "height": 64,
                        "md5": hashlib.md5(iid.encode()).hexdigest(),
                        "pdq": iid,
                        "pdq_quality": 100,
                        "generator": ("a1111", "comfyui")[i % 2],
                        "prompt": f"a photo of a red triangle number {i}",
                        "first_seen": now,
                        "last_seen": now,
                    }
                )
                locs.append(
                    {
                        "uri": f"/archive/{i // 1000:05d}/gen_{i:08d}.png",
                        "item_id": iid,
                        "source": "folder",
                        "size": 1000 + i,
                        "mtime_ns": 1,
                        "status": "ok",
                        "present": 1,
                        "first_seen": now,
                        "last_seen": now,
                    }
                )
                for k in range(findings_per_item):
                    cat, sev = CATEGORIES[(i + k) % len(CATEGORIES)]
                    sig = Signal(
                        "prompt_rule",
                        "rule:triangle",
                        1.0,
                        1.0,
                        0.0,
                        {"matches": [{"field": "prompt", "span": [14, 22], "text": "triangle"}]},
                    )
                    findings.append(Finding(iid, cat, sev, policy_hash, [sig], cluster_id=cid))
                if i < other_policy_findings:
                    findings.append(Finding(iid, "triangles", "high", other, [sig]))
            a.catalog.record(items, locs)
            store.upsert_findings(findings, run_id=1, now=now)
        rows = [
            {
                "cluster_id": c,
                "policy_hash": policy_hash,
                "kind": "semantic",
                "size": len(m),
                "members": m,
                "medoids": m[:3],
                "top_terms": [["triangle", len(m)]],
                "concept_scores": {},
                "flagged_share": 1.0,
                "flagged": 1,
                "categories": ["triangles"],
                "run_id": 1,
            }
            for c, m in members.items()
        ]
        with store.transaction() as c:
            store.replace_clusters_in(c, policy_hash, rows)
            store.record_flag_run_in(c, policy_hash=other, policy_name="other", policy_version="1", at=now)
            store.record_flag_run_in(c, policy_hash=policy_hash, policy_name="scale", policy_version="1", at=now)
    finally:
        a.close()
    return ScaleIndex(index, policy_hash, other, n_items, n_items * findings_per_item, cids, members)
