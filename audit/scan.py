"""``audit scan``: every stage in order, incrementally, for cron and systemd timers.

crawl -> embed -> index -> flag (-> report), all under one hold of the index lock, so a
second scan on the same index exits with code 3 at once (or waits with ``wait=True``).
Each stage only does the work that is new since the last run, so a scan with nothing new
costs little more than a rescan of the sources. Interrupted, every stage keeps what it
committed; the next scan finishes the rest.

"New findings" are those no completed scan has reported yet (``findings.reported_run`` is
NULL), whichever run made them: a plain ``audit flag``, or a scan killed before it could say
so. They are marked reported only after the summary was delivered (``mark_reported``: by
``run_scan`` itself when it returns, or by the CLI after printing), so a crash means "reported
twice", never "never reported". Findings a reviewer decided on are not new.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from audit.catalog.lock import IndexLock
from audit.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED
from audit.errors import ExitCode, UsageError
from audit.findings.store import is_review_candidate_json
from audit.vocabulary import SEVERITIES, severities_at_or_above

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
    flag_run_id: int | None = None  # the flag run whose findings this summary reports
    reported: bool = False  # whether new_findings were marked reported (mark_reported)

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
            "command": "scan",
            "index": self.index,
            "exit_code": self.exit_code,
            "fail_on": self.fail_on,
            "new_findings": len(self.new_findings),
            "new_by_category": self.new_by_category,
            "new_by_severity": self.new_by_severity,
            "new_candidates_by_category": self.new_candidates_by_category,
            "errors": self.errors,
            "report": self.report,
            "durations": {k: round(v, 3) for k, v in self.durations.items()},
            "stages": self.stages,
        }


def _nullcontext_progress(stage: str):
    from contextlib import nullcontext

    return nullcontext(None)


def severity_at_or_above(severity: str) -> tuple[str, ...]:
    if severity not in SEVERITIES:
        raise UsageError(f"--fail-on must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    return severities_at_or_above(severity)


def mark_reported(audit_index, summary: ScanSummary) -> int:
    """Record that ``summary``'s new findings were delivered (one transaction); the next scan
    does not report them again. Call it only once the summary reached its reader."""
    from audit.findings.store import FindingsStore

    if summary.reported or summary.flag_run_id is None:
        return 0
    marked = FindingsStore(audit_index.catalog.conn).mark_reported(
        [f["finding_id"] for f in summary.new_findings], summary.flag_run_id
    )
    summary.reported = True
    return marked


def run_scan(
    audit_index,
    sources: Sequence[Any],
    *,
    policy=None,
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
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
    mark: bool = True,
    full: bool = False,
    executor: str = "local",
) -> ScanSummary:
    """Run crawl, embed, index, flag and (optionally) report on ``audit_index``.

    ``mark``: mark the new findings reported before returning (the library's contract: the
    caller has the summary). The CLI passes False and calls ``mark_reported`` after printing.
    ``full``: the flag stage recomputes everything (clusters retrained, groups rebuilt)."""
    from audit.embed.device import check_device
    from audit.findings.store import FindingsStore
    from audit.ingest import open_source
    from audit.policy import load_policy

    from audit.onray import EXECUTORS

    if executor not in EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor == "ray":
        from audit.onray.session import require_ray

        require_ray()
    failing = severity_at_or_above(fail_on) if fail_on is not None else ()
    # on Ray the GPUs are on the workers: the driver flags (policy texts only) on its CPU
    device = check_device(device, probe=executor != "ray")
    flag_device = "cpu" if executor == "ray" else device
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

    from contextlib import ExitStack

    with IndexLock(audit_index.index_dir, wait=wait), ExitStack() as on_ray:
        if executor == "ray":  # one Ray connection (or local instance) for every stage
            from audit.onray.session import ray_session

            on_ray.enter_context(ray_session())
        crawl = stage(
            "crawl", lambda bar: audit_index.crawl(opened, workers=workers, progress=bar, argv=argv, executor=executor)
        )
        embedded = stage(
            "embed",
            lambda bar: audit_index.embed(
                model=model,
                pretrained=pretrained,
                checkpoint=checkpoint,
                device=device,
                batch_size=batch_size,
                workers=workers,
                progress=bar,
                argv=argv,
                executor=executor,
            ),
        )
        stage("index", lambda bar: audit_index.index(model=embedded.model_key, progress=bar))
        flagged = stage(
            "flag",
            lambda bar: audit_index.flag(
                loaded_policy,
                model=embedded.model_key,
                checkpoint=checkpoint,
                device=flag_device,
                full=full,
                progress=bar,
                argv=argv,
            ),
        )
        import polars as pl

        new = FindingsStore(audit_index.catalog.conn).unreported(flagged.policy["hash"])
        summary.flag_run_id = flagged.run_id
        new = new.with_columns(
            pl.col("signals").map_elements(is_review_candidate_json, return_dtype=pl.Boolean).alias("candidate")
        )
        summary.new_findings = new.select(
            "finding_id", "item_id", "uri", "category", "severity", "candidate"
        ).to_dicts()
        if report:
            rep = stage(
                "report", lambda bar: audit_index.report(out, policy=loaded_policy.path, argv=argv, progress=bar)
            )
            summary.report = rep.out_dir
    summary.errors = {
        "crawl": {"count": crawl.errors, "reasons": dict(crawl.error_reasons)},
        "embed": {"count": embedded.images_skipped, "reasons": dict(embedded.skip_reasons)},
        # problems of the flag run itself (a policy rule disabled after timeouts): message ->
        # prompt fields it could not check
        "flag": {
            "count": len(flagged.errors),
            "reasons": {e["message"]: e.get("not_checked", 0) + e.get("timeouts", 0) for e in flagged.errors},
        },
    }
    if failing and any(f["severity"] in failing for f in summary.new_findings):
        summary.exit_code = int(ExitCode.FINDINGS)
    if mark:
        mark_reported(audit_index, summary)
    return summary
