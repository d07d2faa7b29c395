"""``audit info --index DIR``: what an index holds (items, errors, models, policies, runs,
findings) and its size on disk."""

from __future__ import annotations

from pathlib import Path

import typer

from audit.cli import options
from audit.cli.app import app
from audit.cli.output import emit_json


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover - the loop always returns


@app.command("info")
def info_command(
    index: Path = typer.Option(..., "--index", "-i", envvar=options.INDEX_ENV, help="Index directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """What an index holds: items and errors, models and their vectors, policies and their findings, runs, decisions, and the size of its files on disk. Read-only."""
    from audit.catalog.info import index_info

    info = index_info(index)
    if json_out:
        emit_json({"command": "info", **info})
        return
    it, loc, f = info["items"], info["locations"], info["findings"]
    lines = [
        f"index:     {info['index']}",
        f"items:     {it['total']:,} ({it['errors']:,} errors) at {loc['present']:,} locations"
        f" ({loc['missing']:,} missing, {loc['errors']:,} unreadable)",
    ]
    for m in info["models"]:
        tag = m["pretrained"] or (m["checkpoint_sha256"] or "")[:12] or "-"
        vectors = ", ".join(f"{n:,} {space}" for space, n in sorted(m["vectors"].items())) or "no vectors"
        lines.append(f"model:     {m['name']} ({tag}, dim {m['dim']}): {vectors}")
    if not info["models"]:
        lines.append("model:     none (run `audit embed`)")
    for p in info["policies"]:
        lines.append(
            f"policy:    {p['name']} v{p['version']} ({p['policy_hash'][:12]}): {p.get('findings', 0):,} findings, "
            f"{p['flag_runs']} flag runs, last {p['last_flagged']}"
        )
    sev = ", ".join(f"{n:,} {s}" for s, n in f["by_severity"].items())
    lines.append(f"findings:  {f['active']:,}" + (f" ({sev})" if sev else "") + f"; {info['decisions']:,} decisions")
    latest = info["runs"]["latest"]
    lines.append(
        f"runs:      {info['runs']['total']:,}"
        + (
            f"; latest #{latest['run_id']} {latest['command']} {latest['status']} at {latest['started']}"
            if latest
            else ""
        )
    )
    lines.append(f"disk:      {_size(info['disk']['total_bytes'])}")
    for name, n in info["disk"]["files"].items():
        lines.append(f"  {name:<24} {_size(n):>12}")
    typer.echo("\n".join(lines))
