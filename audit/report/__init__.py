"""Evidence reports: index.html, findings.jsonl/.parquet/.csv, clusters.jsonl, manifest.json.

Public API::

    build_report(catalog, out=None, formats=("html", "jsonl", "parquet", "csv"), policy=None,
                 blur=True, grayscale=False, force=False) -> ReportSummary
    verify_report(report_dir) -> VerifyResult

(``Audit.report(...)`` and ``audit report`` call ``build_report`` with the index's ``Catalog``.)

Output folder: ``reports/<index name>/<UTC timestamp>/`` under the current directory by
default; a second report in the same second gets ``-2``. An ``--out`` folder that exists
and is not empty is refused (exit 2) unless ``force=True`` *and* it holds exactly one intact
earlier report of audit (it verifies; plain regular files only): then that report is
replaced. The report is written into a locked hidden staging folder beside the target and
renamed into place, so a killed run leaves no half report, and the next report there
removes what a killed run left (``audit.report.install`` says exactly what is deleted, and
why nothing else ever is). Folders are 0700, files 0600. Original images are never copied.
From a read-only index the report is written as usual and its manifest notes that the run
is not recorded in the catalog.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from audit.report.base import FORMATS, ReportWriter
from audit.report.manifest import MANIFEST, VerifyResult, verify_report

if TYPE_CHECKING:  # pragma: no cover
    from audit.catalog.store import Catalog

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
        return {
            "out_dir": self.out_dir,
            "report_id": self.report_id,
            "files": self.files,
            "counts": self.counts,
            "manifest_sha256": self.manifest_sha256,
            "policy": self.policy,
            "notes": self.notes,
            "started": self.started,
            "finished": self.finished,
        }


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


def resolve_out(
    out: str | os.PathLike | None, index_name: str, *, force: bool, now: datetime
) -> tuple[Path, list[str] | None]:
    """(target folder, names of the earlier report there that ``--force`` replaces, or None).

    What killed report runs left beside the target goes first (an earlier report that was
    being replaced when its run died is put back), so the target is judged as it really is."""
    from audit.errors import UsageError
    from audit.report.install import clean_leftovers, replaceable_report

    if out is None:
        base = Path.cwd() / "reports" / index_name
        clean_leftovers(base)
        target = base / _stamp(now)
        n = 2
        while os.path.lexists(target):
            target = base / f"{_stamp(now)}-{n}"
            n += 1
        return target, None
    target = Path(out).expanduser().absolute()
    clean_leftovers(target.parent)
    if not os.path.lexists(target):
        return target, None
    if not target.is_dir() or target.is_symlink():
        raise UsageError(f"--out {target}: exists and is not a folder")
    with os.scandir(target) as it:
        empty = next(it, None) is None
    if empty:
        return target, None
    if not force:
        raise UsageError(
            f"--out {target}: folder exists and is not empty (pass --force to replace an earlier "
            "report there, or leave --out out for a new timestamped folder)"
        )
    return target, replaceable_report(target)


def build_report(
    catalog: "Catalog",
    out: str | os.PathLike | None = None,
    formats: str | Sequence[str] | None = None,
    *,
    policy: str | os.PathLike | None = None,
    blur: bool = True,
    grayscale: bool = False,
    force: bool = False,
    html_limit: int | None = None,
    argv: Sequence[str] | None = None,
    progress=None,
) -> ReportSummary:
    from audit.report.html import MAX_HTML_FINDINGS
    from audit.timeutil import utc_now

    fmts = parse_formats(formats)
    started = utc_now()
    now = datetime.now(timezone.utc)
    target, replace = resolve_out(out, catalog.index_dir.name, force=force, now=now)
    limit = MAX_HTML_FINDINGS if html_limit is None else max(0, int(html_limit))
    with _snapshot(catalog) as conn:
        return _build(
            catalog,
            conn,
            target,
            replace,
            fmts,
            started,
            limit,
            policy=policy,
            blur=blur,
            grayscale=grayscale,
            force=force,
            argv=argv,
            progress=progress,
        )


@contextmanager
def _snapshot(catalog: "Catalog"):
    """A read-only connection to the catalog holding one read snapshot for the whole report
    (its findings are read in batches while it is written: a flag run committing meanwhile
    is seen whole or not at all), apart from the connection that records the run."""
    from audit.catalog.access import connect
    from audit.catalog.migrations import ensure_schema
    from audit.errors import raise_storage_error

    main = catalog.conn
    try:
        conn = connect(main.path, read_only=True, immutable=main.immutable)
    except Exception as exc:  # noqa: BLE001 - sqlite3.Error, OSError: named as storage problems
        raise_storage_error(exc, main.path)
    try:
        ensure_schema(conn)  # read-only: an older catalog's missing tables are shadowed on this connection too
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        yield conn
    finally:
        try:
            conn.execute("COMMIT")
        finally:
            conn.close()


def _build(
    catalog,
    conn,
    target: Path,
    replace,
    fmts,
    started: str,
    limit: int,
    *,
    policy,
    blur: bool,
    grayscale: bool,
    force: bool,
    argv,
    progress,
) -> ReportSummary:
    from audit import __version__
    from audit.catalog.runs import command_line, current_host, current_user, recorded_run
    from audit.report.data import gather_stream
    from audit.report.thumbs import check_stream

    data = gather_stream(catalog, conn, policy_path=policy, shown=limit if "html" in fmts else 0)
    if progress:
        progress("total", data.source.count_items())
    check_stream(data, blur=blur, grayscale=grayscale, thumbnails="html" in fmts, progress=progress)

    if catalog.read_only:
        data.notes.append(
            f"the index is read-only ({catalog.read_only_reason}): this report is not recorded in its "
            "catalog, so the next report cannot tell what is new since this one"
        )
    # a read-only index, or a catalog that cannot take the run record, still reports
    with recorded_run(catalog, "report", argv, best_effort=True) as run:
        meta = {
            "report_id": str(uuid.uuid4()),
            "tool": {"name": "audit", "version": __version__, "python": sys.version.split()[0]},
            "command_line": command_line(argv),
            "started": started,
            "generated_at": started,
            "user": current_user(),
            "host": current_host(),
            "cwd": os.getcwd(),
            "options": {
                "formats": list(fmts),
                "blur": blur,
                "grayscale": grayscale,
                "html_limit": limit,
                "policy": str(policy) if policy is not None else None,
                "force": force,
            },
        }
        files, manifest_sha, notes = _write_and_install(
            target, replace, data, meta, fmts, blur=blur, grayscale=grayscale, limit=limit
        )
        summary = ReportSummary(
            out_dir=str(target),
            report_id=meta["report_id"],
            files=sorted([p.name for p in files] + [MANIFEST]),
            counts=data.counts(),
            manifest_sha256=manifest_sha,
            policy=data.policy,
            notes=data.notes + notes,
            started=started,
            finished=meta["finished"],
        )
        # what the run row says: where the report went and what it holds (not the whole summary)
        run.summary = {
            "out": summary.out_dir,
            "report_id": summary.report_id,
            "manifest_sha256": summary.manifest_sha256,
            "findings": summary.findings,
        }
        return summary


def _write_and_install(
    target: Path,
    replace: list[str] | None,
    data,
    meta: dict[str, Any],
    fmts,
    *,
    blur: bool,
    grayscale: bool,
    limit: int,
) -> tuple[list[Path], str, list[str]]:
    """Write every format into a locked staging folder beside ``target`` and move it in:
    (files written, manifest SHA-256, notes)."""
    from audit.errors import raise_storage_error
    from audit.report.base import writers
    from audit.report.files import make_private_dir
    from audit.report.html import HtmlWriter
    from audit.report.install import install, make_staging
    from audit.report.manifest import write_manifest
    from audit.report.tabular import write_tabular
    from audit.timeutil import utc_now

    try:
        make_private_dir(target.parent)
        staging = make_staging(target.parent, target.name)
    except OSError as exc:
        raise_storage_error(exc)
    try:
        files: list[Path] = []
        registry = writers()
        # the tabular formats share one pass over the findings (read in batches)
        tabular = [registry[n] for n in fmts if n != "html" and hasattr(registry[n], "sink")]
        if tabular:
            files += write_tabular(data, staging.path, tabular)
        for name in fmts:
            if name == "html":
                files += HtmlWriter(blur=blur, grayscale=grayscale, limit=limit).write(data, staging.path, meta=meta)
            elif not hasattr(registry[name], "sink"):
                files += registry[name].write(data, staging.path)
        meta["finished"] = utc_now()
        _, manifest_sha = write_manifest(staging.path, data, meta, files)
        notes = install(staging, target, replace)
    except BaseException as exc:
        shutil.rmtree(staging.path, ignore_errors=True)
        if isinstance(exc, OSError):
            # a writer that streams through a library (pyarrow) may lose the file name:
            # then the report folder is what the message names
            raise_storage_error(exc, None if exc.filename else target)
        raise
    finally:
        staging.close()
    return [target / p.name for p in files], manifest_sha, notes
