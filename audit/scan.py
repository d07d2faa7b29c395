"""``audit scan``: every stage in order, incrementally, for cron and systemd timers.

crawl -> embed -> index -> flag (-> report), all under one hold of the index lock, so a
second scan on the same index exits with code 3 at once (or waits with ``wait=True``).
Each stage only does the work that is new since the last run, so a scan with nothing new
costs little more than a rescan of the sources. Interrupted, every stage keeps what it
committed; the next scan finishes the rest.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from audit.catalog.lock import IndexLock
from audit.errors import ExitCode, UsageError
from audit.findings.store import SEVERITIES, is_review_candidate_json

# Opens a progress context for a stage: ``with bars("embed") as progress: ...``
ProgressFactory = Callable[[str], Any]


@dataclass
class ScanSummary:
    index: str
    stages: dict[str, dict] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    new_findings: list[dict] = field(default_factory=list)  # finding_id, item_id, uri, category, severity, candidate
    errors: dict[str, Any] = field(default_factory=dict)
    report: str | None = None
    fail_on: str | None = None
    exit_code: int = 0

    @property
    def new_by_category(self) -> dict[str, int]:
        return dict(Counter(f["category"] for f in self.new_findings))

    @property
    def new_by_severity(self) -> dict[str, int]:
        return dict(Counter(f["severity"] for f in self.new_findings))

    @property
    def new_candidates_by_category(self) -> dict[str, int]:
        """Of ``new_by_category``: findings resting only on their cluster or a confirmed neighbour."""
        return dict(Counter(f["category"] for f in self.new_findings if f["candidate"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "scan", "index": self.index, "exit_code": self.exit_code, "fail_on": self.fail_on,
            "new_findings": len(self.new_findings), "new_by_category": self.new_by_category,
            "new_by_severity": self.new_by_severity, "new_candidates_by_category": self.new_candidates_by_category,
            "errors": self.errors, "report": self.report,
            "durations": {k: round(v, 3) for k, v in self.durations.items()}, "stages": self.stages,
        }  # fmt: skip


def _nullcontext_progress(stage: str):
    from contextlib import nullcontext

    return nullcontext(None)


def severity_at_or_above(severity: str) -> tuple[str, ...]:
    if severity not in SEVERITIES:
        raise UsageError(f"--fail-on must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    return SEVERITIES[: SEVERITIES.index(severity) + 1]


def run_scan(
    audit_index,
    sources: Sequence[Any],
    *,
    policy=None,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    checkpoint=None,
    device: str = "cpu",
    batch_size: int | None = None,
    workers: int | None = None,
    report: bool = False,
    out=None,
    fail_on: str | None = None,
    wait: bool = False,
    progress: ProgressFactory | None = None,
    argv: Sequence[str] | None = None,
    trust_dir_mtime: bool = False,
) -> ScanSummary:
    """Run crawl, embed, index, flag and (optionally) report on ``audit_index``."""
    from audit.ingest import open_source
    from audit.policy import load_policy

    failing = severity_at_or_above(fail_on) if fail_on else ()
    opened = [s if hasattr(s, "entries") else open_source(str(s), trust_dir_mtime=trust_dir_mtime) for s in sources]
    loaded_policy = policy if hasattr(policy, "content_hash") else load_policy(policy)  # bad policy: exit 2 before work
    bars = progress or _nullcontext_progress
    summary = ScanSummary(index=str(audit_index.index_dir), fail_on=fail_on)

    def stage(name: str, fn):
        t0 = time.monotonic()
        with bars(name) as bar:
            result = fn(bar)
        summary.durations[name] = time.monotonic() - t0
        summary.stages[name] = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        return result

    with IndexLock(audit_index.index_dir, wait=wait):
        crawl = stage("crawl", lambda bar: audit_index.crawl(opened, workers=workers, progress=bar, argv=argv))
        embedded = stage(
            "embed",
            lambda bar: audit_index.embed(
                model=model, pretrained=pretrained, checkpoint=checkpoint, device=device, batch_size=batch_size,
                workers=workers, progress=bar, argv=argv,
            ),
        )  # fmt: skip
        stage("index", lambda bar: audit_index.index(model=embedded.model_key, progress=bar))
        flagged = stage(
            "flag", lambda bar: audit_index.flag(loaded_policy, model=embedded.model_key, checkpoint=checkpoint,
                                                 device=device, progress=bar, argv=argv)
        )  # fmt: skip
        import polars as pl

        findings = audit_index.findings()
        new = findings.filter((pl.col("run_id") == flagged.run_id) & (pl.col("status") == "new"))
        new = new.with_columns(
            pl.col("signals").map_elements(is_review_candidate_json, return_dtype=pl.Boolean).alias("candidate"))
        summary.new_findings = new.select("finding_id", "item_id", "uri", "category", "severity", "candidate").to_dicts()
        if report:
            rep = stage("report", lambda bar: audit_index.report(out, policy=loaded_policy.path, argv=argv, progress=bar))
            summary.report = rep.out_dir
    summary.errors = {
        "crawl": {"count": crawl.errors, "reasons": dict(crawl.error_reasons)},
        "embed": {"count": embedded.images_skipped, "reasons": dict(embedded.skip_reasons)},
    }
    if failing and any(f["severity"] in failing for f in summary.new_findings):
        summary.exit_code = int(ExitCode.FINDINGS)
    return summary
