"""``audit review --index DIR (--import FILE | --item ID | --cluster ID) [--decision D] [--note T]``"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.cli.output import emit_json, stderr
from audit.errors import UsageError


@app.command("review")
def review_command(
    index: Path = typer.Option(..., "--index", "-i", envvar=options.INDEX_ENV, help="Index directory."),
    import_file: Optional[Path] = typer.Option(
        None, "--import", help="JSON list of {item_id|finding_id|cluster_id, decision, note, by?, at?, category?}."
    ),
    item: Optional[str] = typer.Option(None, "--item", help="Item to decide on (id, unique id prefix, or uri)."),
    cluster: Optional[str] = typer.Option(
        None, "--cluster", help="Cluster to decide on (every member gets the decision)."
    ),
    finding: Optional[str] = typer.Option(None, "--finding", help="Finding to decide on."),
    decision: Optional[str] = typer.Option(None, "--decision", "-d", help="confirm, dismiss or escalate."),
    note: Optional[str] = typer.Option(None, "--note", help="Why (kept in the log)."),
    by: Optional[str] = typer.Option(None, "--by", help="Reviewer name (default: the login name)."),
    category: Optional[str] = typer.Option(
        None, "--category", help="Category the decision is about (seeds neighbours in it)."
    ),
    export_bank: Optional[Path] = typer.Option(
        None, "--export-bank", help="Write confirmed items as a hash list CSV (hash_type,hash,label)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Record review decisions (append-only; the latest decision wins) and export confirmed items.

    Dismissed items stop being reported as new; confirmed items seed the next `audit flag`
    run (their nearest neighbours become findings) and can be exported as a hash list.
    """
    import audit

    decision = options.decision(decision)
    targets = [
        name
        for name, v in (("--import", import_file), ("--item", item), ("--cluster", cluster), ("--finding", finding))
        if v is not None
    ]
    if len(targets) > 1:
        raise UsageError(f"give one of --import, --item, --cluster, --finding (got {', '.join(targets)})")
    if not targets and export_bank is None:
        raise UsageError("give --import FILE, --item ID, --cluster ID or --finding ID (or --export-bank FILE)")
    if targets and targets[0] != "--import" and decision is None:
        from audit.vocabulary import DECISIONS

        raise UsageError(f"--decision {'|'.join(DECISIONS)} is required with " + targets[0])
    if import_file is not None and decision is not None:
        raise UsageError("--decision goes with --item/--cluster/--finding; an import file holds its own decisions")
    out: dict = {"command": "review", "index": str(index)}
    with audit.open(index) as a:
        if import_file is not None:
            ids = a.import_decisions(import_file, by=by)
            out["imported"] = len(ids)
            out["decision_ids"] = ids
            stderr.print(f"imported {len(ids)} decisions from {import_file}")
        elif targets:
            did = a.review(
                item, cluster=cluster, finding=finding, decision=decision, note=note, by=by, category=category
            )
            out["decision_id"] = did
            what = f"item {item}" if item else (f"cluster {cluster}" if cluster else f"finding {finding}")
            stderr.print(f"recorded {decision} on {what} (decision {did}); it applies from the next `audit flag`")
        if export_bank is not None:
            n = a.export_bank(export_bank)
            out["exported_rows"] = n
            out["bank"] = str(export_bank)
            stderr.print(f"wrote {n} hash rows of confirmed items to {export_bank}")
    if json_out:
        emit_json(out)
