"""``audit report --index DIR [--out DIR] [--format html,jsonl,parquet,csv]`` and ``audit report --verify DIR``"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.cli.output import emit_json, progress_bar, stderr
from audit.errors import ExitCode, UsageError


@app.command("report")
def report_command(
    index: Optional[Path] = typer.Option(
        None, "--index", "-i", envvar=options.INDEX_ENV, help="Index directory whose findings to report."
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Report folder. Default: reports/<index name>/<UTC timestamp>/ under the current directory.",
    ),
    formats: str = typer.Option(
        "html,jsonl,parquet,csv",
        "--format",
        "-f",
        help="Comma-separated: html, jsonl, parquet, csv (jsonl also writes clusters.jsonl).",
    ),
    policy: Optional[Path] = typer.Option(
        None,
        "--policy",
        "-p",
        envvar=options.POLICY_ENV,
        help="Report the findings of this policy file (default: the policy of the latest `audit flag`).",
    ),
    blur: bool = typer.Option(
        True,
        "--blur/--no-blur",
        help="--no-blur: a click reveals the clear thumbnail instead of a lightly blurred one. Thumbnails always start heavily blurred.",
    ),
    grayscale: bool = typer.Option(False, "--grayscale", help="Grayscale thumbnails."),
    html_limit: Optional[int] = typer.Option(
        None,
        "--html-limit",
        min=0,
        help="Findings shown on the page, most severe first (default 5000); the data files always hold all.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an earlier report in an existing --out folder."),
    verify: Optional[Path] = typer.Option(
        None,
        "--verify",
        help="Check the report folder DIR against its manifest.json and exit: 0 intact, 4 changed, 2 not a report.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Write an evidence report of the current findings.

    index.html: one self-contained page (no network, strict Content-Security-Policy) with the summary, then findings by category and cluster: signals, prompts, hashes, locations. Thumbnails are small, blurred in their pixels and revealed one at a time by a click; no_view categories get no image at all. Decisions made on the page download as JSON for `audit review --import`.

    findings.jsonl / .parquet / .csv and clusters.jsonl hold the same records; manifest.json is the chain of custody (hashes of every item and of every report file; check it with --verify).

    An existing non-empty --out folder is refused (exit 2) unless --force and it holds an earlier report.
    """

    formats = ",".join(options.report_formats(formats))
    if verify is not None:
        from audit.report import verify_report

        res = verify_report(verify)
        if json_out:
            emit_json({"command": "report", "verify": True, **res.to_dict()})
        print(("audit: " if not res.ok else "") + res.message, file=sys.stderr)
        if not res.ok:  # the report changed since it was made: not "findings", its own code
            raise typer.Exit(int(ExitCode.REPORT_CHANGED))
        return
    if index is None:
        raise UsageError("give --index DIR (or --verify REPORT_DIR)")
    import audit

    with progress_bar("report", quiet=quiet) as progress:
        summary = audit.open(index).report(
            out,
            formats,
            policy=policy,
            blur=blur,
            grayscale=grayscale,
            force=force,
            html_limit=html_limit,
            progress=progress,
        )
    data = summary.to_dict()
    if json_out:
        emit_json({"command": "report", "index": str(index), **data})
    if not quiet:
        c = summary.counts
        for note in summary.notes:
            stderr.print(f"[yellow]note:[/] {note}", markup=True)
        sev = ", ".join(f"{n} {s}" for s, n in c["by_severity"].items() if n)
        stderr.print(
            f"{c['findings']} findings on {c['items']} items ({sev or 'none'}); {c['new_since_last_report']} new since "
            f"the last report; {c['missing_items']} originals missing",
            markup=False,
        )
        stderr.print(f"report: {summary.out_dir}/index.html", markup=False, soft_wrap=True)
        stderr.print(f"manifest sha256: {summary.manifest_sha256}", markup=False, soft_wrap=True)
