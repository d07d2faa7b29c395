"""``audit scan SOURCE... --index DIR [--policy FILE] [--report] [--fail-on SEVERITY] [--json]``"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED
from audit.cli.output import emit_json, pretrained_tag, progress_bar, stderr, warn_run_problems
from audit.errors import ExitCode


@app.command("scan")
def scan_command(
    sources: List[str] = typer.Argument(
        ..., help="What to crawl: folders, files, manifests, archives or fsspec URLs (as for `audit crawl`)."
    ),
    index: Path = typer.Option(
        ..., "--index", "-i", envvar=options.INDEX_ENV, help="Index directory (created if missing)."
    ),
    policy: Optional[Path] = typer.Option(
        None,
        "--policy",
        "-p",
        envvar=options.POLICY_ENV,
        help="Policy file (TOML); default: the packaged default policy.",
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="open_clip model name, or toy-shapes (the shipped toy-world CLIP)."
    ),
    pretrained: str = typer.Option(
        DEFAULT_PRETRAINED,
        "--pretrained",
        help="open_clip pretrained tag; 'none' for random weights (benchmarks only).",
    ),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Local weights (.safetensors, or weights-only .pt/.bin) for air-gapped sites."
    ),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="cpu, cuda, cuda:N, or auto (CUDA when usable here, else the CPU); checked before any work: exit 3 when CUDA is asked for and not usable here.",
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1, help="Images per embedding batch."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="Worker processes for crawling and embedding (default: one per core)."
    ),
    executor: str = typer.Option("local", "--executor", help=options.EXECUTOR_HELP),
    report: bool = typer.Option(False, "--report", help="Write an evidence report after flagging."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Report folder (default: reports/<index name>/<UTC timestamp>/ under the current directory).",
    ),
    fail_on: Optional[str] = typer.Option(
        None,
        "--fail-on",
        help="Exit 1 when a NEW finding (one no completed scan has reported yet) is at or above this severity: critical, high, medium or low.",
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for another run holding the index instead of exiting with code 3."
    ),
    trust_dir_mtime: bool = typer.Option(
        False,
        "--trust-dir-mtime",
        help="Skip the files of local directories whose mtime is unchanged since their last full listing: one stat per directory instead of per file (a file rewritten in place without a rename is then missed until a normal crawl).",
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Flag stage: recompute everything (every item evaluated, clusters retrained, near-duplicate groups rebuilt), not only what is new.",
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output (problems are still reported on stderr)."
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print a JSON summary on stdout: counts per stage, new findings, errors, durations, report path.",
    ),
) -> None:
    """Run every stage in order: crawl, embed, index, flag, and report with --report.

    Made for cron and systemd timers: incremental (a scan with nothing new does almost no
    work), one run per index at a time (a second exits with code 3, or waits with --wait),
    exit code 1 when new findings reach --fail-on, 130 when interrupted (SIGINT/SIGTERM;
    what was committed is kept and the next scan finishes the work). A finding is new until
    a completed scan has reported it: findings of a plain `audit flag`, or of a scan killed
    before its summary, are reported by the next scan (dismissed, confirmed or escalated
    ones are not new).
    """
    import audit
    from audit.scan import mark_reported, run_scan

    fail_on = options.fail_on(fail_on)  # every fixed-vocabulary option before any work
    executor = options.executor(executor)
    device = options.device(device, probe=executor != "ray")
    tag = pretrained_tag(pretrained)
    a = audit.open(index, create=True)
    summary = run_scan(
        a,
        sources,
        policy=policy,
        model=model,
        pretrained=tag,
        checkpoint=str(checkpoint) if checkpoint else None,
        device=device,
        batch_size=batch_size,
        workers=workers,
        report=report,
        out=out,
        fail_on=fail_on,
        wait=wait,
        progress=lambda stage: progress_bar(stage, quiet=quiet),
        trust_dir_mtime=trust_dir_mtime,
        mark=False,
        full=full,
        executor=executor,
    )
    data = summary.to_dict()
    if json_out:
        emit_json(data)
    crawl, embed, flag = data["stages"]["crawl"], data["stages"]["embed"], data["stages"]["flag"]
    if not quiet:
        stderr.print(
            f"crawl: {crawl['read']:,} read, {crawl['unchanged']:,} unchanged, {crawl['errors']:,} errors · "
            f"embed: {embed.get('images_embedded', 0):,} images, {embed.get('prompts_embedded', 0):,} prompts · "
            f"flag: {flag.get('findings', 0):,} findings, [bold]{len(summary.new_findings):,} new[/]"
        )
        for cat, n in sorted(summary.new_by_category.items()):
            candidates = summary.new_candidates_by_category.get(cat, 0)
            note = f" ({candidates:,} via cluster or neighbour only)" if candidates else ""
            stderr.print(f"  new: {n:>5,} × {cat}{note}")
        if summary.report:
            stderr.print(f"report: {summary.report}")
    # Skips and run problems are reported even with --quiet: a cron mail should say what was
    # not audited.
    for stage_name in ("crawl", "embed"):
        for reason, n in list(data["errors"][stage_name]["reasons"].items())[:10]:
            print(f"audit: {stage_name}: skipped {n} × {reason}", file=sys.stderr)
    warn_run_problems("flag", flag.get("errors", []))
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # Only now, with the summary delivered, are its findings no longer new: a kill before
    # this line makes the next scan report them again (twice, never never).
    mark_reported(a, summary)
    if summary.exit_code == ExitCode.FINDINGS:
        raise typer.Exit(int(ExitCode.FINDINGS))
