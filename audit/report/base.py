"""The ReportWriter protocol, the record every machine-readable writer emits, the registry.

A writer is two things: a ``name`` (the ``--format`` word) and ``write(data, out_dir)``
returning the paths it created inside ``out_dir`` (new, owner-only files; see
``files.write_private``). Writers get a ``ReportData`` and never read the catalog or the
original files. ``tests/test_report.py::test_writer_contract`` runs one contract test against every
registered writer (``tests/test_registry_coverage.py``: every writer is registered).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from audit.report.data import FindingRow, ReportData

# design.md's findings fields first, then the evidence a reader needs without the catalog
FINDING_FIELDS = ("finding_id", "item_id", "uri", "category", "severity", "status", "cluster_id", "signals")
EVIDENCE_FIELDS = (
    "policy_hash",
    "first_flagged",
    "last_flagged",
    "new_since_last_report",
    "review_candidate",
    "no_view",
    "missing",
    "verified_at_report",
    "sha256",
    "md5",
    "pdq",
    "size",
    "format",
    "width",
    "height",
    "generator",
    "model",
    "model_hash",
    "resources",
    "prompt",
    "negative_prompt",
    "seed",
    "locations",
    "decision",
    "provenance",
)
SIGNAL_FIELDS = ("kind", "name", "score", "threshold", "margin", "detail")


@runtime_checkable
class ReportWriter(Protocol):
    name: str

    def write(self, data: ReportData, out_dir: Path) -> list[Path]: ...


def signal_record(s: dict[str, Any]) -> dict[str, Any]:
    rec = {k: s.get(k) for k in SIGNAL_FIELDS}
    if not isinstance(rec["detail"], dict):
        rec["detail"] = {} if rec["detail"] is None else {"value": rec["detail"]}
    return rec


def finding_record(data: ReportData, f: FindingRow, item=None) -> dict[str, Any]:
    """One finding as findings.jsonl holds it (full prompts; never image bytes); ``item``:
    its ``Item`` (default: ``data.items[f.item_id]``)."""
    item = item if item is not None else data.items[f.item_id]
    facts = item.facts
    return {
        "finding_id": f.finding_id,
        "item_id": f.item_id,
        "uri": f.uri,
        "category": f.category,
        "severity": f.severity,
        "status": f.status,
        "cluster_id": f.cluster_id,
        "signals": [signal_record(s) for s in f.signals if isinstance(s, dict)],
        "policy_hash": f.policy_hash,
        "first_flagged": f.first_flagged,
        "last_flagged": f.last_flagged,
        "new_since_last_report": f.new_since_last_report,
        "review_candidate": f.review_candidate,
        "no_view": item.no_view,
        "missing": item.missing,
        "verified_at_report": item.verified,
        "sha256": f.item_id,
        "md5": facts.get("md5"),
        "pdq": facts.get("pdq"),
        "size": facts.get("size"),
        "format": facts.get("format"),
        "width": facts.get("width"),
        "height": facts.get("height"),
        "generator": facts.get("generator"),
        "model": facts.get("model"),
        "model_hash": facts.get("model_hash"),
        "resources": item.resources,
        "prompt": facts.get("prompt"),
        "negative_prompt": facts.get("negative_prompt"),
        "seed": facts.get("seed"),
        "locations": [
            {k: loc[k] for k in ("uri", "size", "mtime_ns", "present", "missing_since")} for loc in item.locations
        ],
        "decision": f.decision,
        "provenance": _provenance(facts.get("provenance")),
    }


def _provenance(text: Any) -> Any:
    """The catalog's provenance JSON as an object (C2PA manifest, IPTC source type)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return {"error": "provenance record unreadable"}


def cluster_record(c: dict[str, Any]) -> dict[str, Any]:
    return {
        k: c.get(k)
        for k in (
            "cluster_id",
            "kind",
            "size",
            "members",
            "medoids",
            "top_terms",
            "concept_scores",
            "flagged_share",
            "flagged",
            "categories",
            "policy_hash",
            "review",
        )
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str, allow_nan=False, separators=(",", ":"))


def writers() -> dict[str, ReportWriter]:
    from audit.report.html import HtmlWriter
    from audit.report.tabular import CsvWriter, JsonlWriter, ParquetWriter

    return {w.name: w for w in (HtmlWriter(), JsonlWriter(), ParquetWriter(), CsvWriter())}


FORMATS = ("html", "jsonl", "parquet", "csv")
