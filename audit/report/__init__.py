"""Evidence reports: index.html, findings.jsonl/.parquet/.csv, clusters.jsonl, manifest.json.

Public API::

    build_report(audit, out=None, formats=("html", "jsonl", "parquet", "csv"), policy=None,
                 blur=True, grayscale=False, force=False) -> ReportSummary
    verify_report(report_dir) -> VerifyResult

(``Audit.report(...)`` and ``audit report`` call ``build_report``.)

Output folder: ``reports/<index name>/<UTC timestamp>/`` under the current directory by
default; a second report in the same second gets ``-2``. An ``--out`` folder that exists
and is not empty is refused (exit 2) unless ``force=True`` *and* it holds an earlier report
(a ``manifest.json``): then that report's files are replaced. The report is written into a
hidden staging folder beside the target and renamed into place, so a killed run leaves no
half report. Folders are 0700, files 0600. Original images are never copied.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from audit.report.base import FORMATS, ReportWriter
from audit.report.manifest import MANIFEST, VerifyResult, verify_report

__all__ = ["FORMATS", "ReportSummary", "ReportWriter", "VerifyResult", "build_report", "verify_report", "parse_formats"]


@dataclass
class ReportSummary:
    out_dir: str
    report_id: str
    files: list[str]
    counts: dict[str, Any]
    manifest_sha256: str
    policy: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""

    @property
    def findings(self) -> int:
        return int(self.counts.get("findings", 0))

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "report_id": self.report_id, "files": self.files, "counts": self.counts,
                "manifest_sha256": self.manifest_sha256, "policy": self.policy, "notes": self.notes,
                "started": self.started, "finished": self.finished}  # fmt: skip


def parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    from audit.errors import UsageError

    if formats is None:
        return FORMATS
    words = formats.split(",") if isinstance(formats, str) else [w for f in formats for w in str(f).split(",")]
    out = []
    for w in (w.strip().lower() for w in words):
        if not w:
            continue
        if w == "all":
            out.extend(FORMATS)
        elif w not in FORMATS:
            raise UsageError(f"unknown report format {w!r} (choose from {', '.join(FORMATS)})")
        else:
            out.append(w)
    if not out:
        raise UsageError("no report format given")
    return tuple(dict.fromkeys(out))


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def resolve_out(out: str | os.PathLike | None, index_name: str, *, force: bool, now: datetime) -> tuple[Path, list[Path]]:
    """(target folder, files of an earlier report to replace there)."""
    from audit.errors import UsageError

    if out is None:
        base = Path.cwd() / "reports" / index_name
        target = base / _stamp(now)
        n = 2
        while target.exists():
            target = base / f"{_stamp(now)}-{n}"
            n += 1
        return target, []
    target = Path(out).expanduser().absolute()
    if not target.exists():
        return target, []
    if not target.is_dir():
        raise UsageError(f"--out {target}: exists and is not a folder")
    entries = list(target.iterdir())
    if not entries:
        return target, []
    if not force:
        raise UsageError(f"--out {target}: folder exists and is not empty (pass --force to replace an earlier "
                         "report there, or leave --out out for a new timestamped folder)")  # fmt: skip
    if not (target / MANIFEST).is_file():
        raise UsageError(f"--out {target}: not empty and holds no earlier report (manifest.json); refusing to write there")
    import json

    try:
        listed = set(json.loads((target / MANIFEST).read_text("utf-8")).get("files", {}))
    except (OSError, ValueError, AttributeError):
        raise UsageError(f"--out {target}: its manifest.json is unreadable; refusing to replace it") from None
    listed.add(MANIFEST)
    strangers = [e.name for e in entries if e.name not in listed]
    if strangers:
        raise UsageError(f"--out {target}: holds files that are not part of the earlier report ({strangers[0]}); refusing")
    return target, [target / name for name in sorted(listed) if (target / name).exists()]


def build_report(audit, out: str | os.PathLike | None = None, formats: str | Sequence[str] | None = None, *,
                 policy: str | os.PathLike | None = None, blur: bool = True, grayscale: bool = False,
                 force: bool = False, html_limit: int | None = None, argv: Sequence[str] | None = None,
                 progress=None) -> ReportSummary:  # fmt: skip
    from audit import __version__
    from audit.api import _user
    from audit.report.base import writers
    from audit.report.data import gather
    from audit.report.files import make_private_dir
    from audit.report.html import MAX_HTML_FINDINGS, HtmlWriter
    from audit.report.manifest import write_manifest
    from audit.report.thumbs import check_and_thumbnail
    from audit.timeutil import utc_now

    fmts = parse_formats(formats)
    started = utc_now()
    now = datetime.now(timezone.utc)
    target, replace = resolve_out(out, audit.index_dir.name, force=force, now=now)

    data = gather(audit, policy_path=policy)
    if progress:
        progress("total", len(data.items))
    limit = MAX_HTML_FINDINGS if html_limit is None else max(0, int(html_limit))
    shown = {f.item_id for f in data.findings[:limit]}
    check_and_thumbnail(data, blur=blur, grayscale=grayscale, thumbnails="html" in fmts, thumb_items=shown,
                        progress=progress)  # fmt: skip

    run_id = _begin(audit, argv)
    status = "failed"
    summary: ReportSummary | None = None
    try:
        meta = {
            "report_id": str(uuid.uuid4()),
            "tool": {"name": "audit", "version": __version__, "python": sys.version.split()[0]},
            "command_line": list(argv if argv is not None else sys.argv),
            "started": started, "generated_at": started, "user": _user(), "host": socket.gethostname(),
            "cwd": os.getcwd(),
            "options": {"formats": list(fmts), "blur": blur, "grayscale": grayscale, "html_limit": limit,
                        "policy": str(policy) if policy is not None else None, "force": force},
        }  # fmt: skip
        make_private_dir(target.parent)
        staging = target.parent / f".{target.name}.partial-{secrets.token_hex(4)}"
        make_private_dir(staging)
        try:
            files: list[Path] = []
            registry = writers()
            for name in fmts:
                writer = HtmlWriter(blur=blur, grayscale=grayscale, limit=limit) if name == "html" else registry[name]
                if name == "html":
                    files += writer.write(data, staging, meta=meta)
                else:
                    files += writer.write(data, staging)
            meta["finished"] = utc_now()
            _, manifest_sha = write_manifest(staging, data, meta, files)
            _install(staging, target, replace)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        summary = ReportSummary(
            out_dir=str(target), report_id=meta["report_id"], files=sorted([p.name for p in files] + [MANIFEST]),
            counts=data.counts(), manifest_sha256=manifest_sha, policy=data.policy, notes=data.notes,
            started=started, finished=meta["finished"],
        )  # fmt: skip
        status = "ok"
        return summary
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        _finish(audit, run_id, status, summary)


def _install(staging: Path, target: Path, replace: list[Path]) -> None:
    if not target.exists():
        os.rename(staging, target)  # atomic: the report appears whole or not at all
        return
    for p in replace:
        p.unlink()
    for p in staging.iterdir():
        os.rename(p, target / p.name)
    staging.rmdir()
    os.chmod(target, 0o700)


def _begin(audit, argv) -> int | None:
    import sqlite3

    try:
        return audit._begin_run("report", argv)
    except sqlite3.Error:  # a read-only catalog (an evidence copy) still reports
        return None


def _finish(audit, run_id: int | None, status: str, summary: ReportSummary | None) -> None:
    import sqlite3

    from audit.timeutil import utc_now

    if run_id is None:
        return
    payload = {"out": summary.out_dir, "report_id": summary.report_id, "manifest_sha256": summary.manifest_sha256,
               "findings": summary.findings} if summary else {}  # fmt: skip
    try:
        audit.catalog.finish_run(run_id, status=status, summary=payload, now=utc_now())
    except sqlite3.Error:
        pass
