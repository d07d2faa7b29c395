"""``audit index --index DIR [--model KEY] [--memory-budget 4GB]``"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.cli.output import emit_json, progress_bar, stderr


@app.command("index")
def index_command(
    index: Path = typer.Option(
        ...,
        "--index",
        "-i",
        envvar=options.INDEX_ENV,
        help="Index directory (made by `audit crawl`, embedded by `audit embed`).",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Only this model (its key, or its name when unambiguous). Default: every embedded model.",
    ),
    memory_budget: Optional[str] = typer.Option(
        None,
        "--memory-budget",
        help="Memory the index may use, e.g. 4GB, 512MB; picks the index type. Default: as last built, else 4GB.",
    ),
    index_type: Optional[str] = typer.Option(
        None,
        "--index-type",
        help="Force a type: flat, ivf[NLIST][,flat|sq8|pqM], hnsw[M]; 'auto' returns to the automatic choice.",
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Rebuild from the stored vectors instead of adding the new ones."
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Check the SHA-256 of the index files against their manifests first."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for another run holding the index instead of exiting with code 3."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Build or update the FAISS indexes (image and prompt vectors, per model).

    Small collections get exact (flat) search; larger ones an IVF index whose codes fit
    the memory budget, trained on a sample and tuned for recall@10 >= 0.97. New vectors
    are added in place; the index is rebuilt when it outgrows its training. Saves are
    atomic: a killed run leaves the previous index usable.
    """
    import audit

    options.index_type(index_type)  # before any work: an empty or unknown value is exit 2
    options.memory_budget(memory_budget)
    with progress_bar("index", quiet=quiet) as progress:
        summary = audit.open(index).index(
            model=model,
            memory_budget=memory_budget,
            index_type=index_type,
            rebuild=rebuild,
            verify=verify,
            wait=wait,
            progress=progress,
        )
    data = summary.to_dict()
    if json_out:
        emit_json({"command": "index", "index": str(index), **data})
    if not quiet:
        for r in data["indexes"]:
            if r["action"] == "empty":
                stderr.print(f"{r['model_key']} {r['space']}: no vectors (run `audit embed`)")
                continue
            recall = f" · recall@10 {r['tuned_recall']:.3f}" if r["tuned_recall"] is not None else ""
            params = "".join(f" · {k} {v}" for k, v in r["params"].items())
            budget = "" if r["fits_budget"] else " · [red]over the memory budget[/]"
            stderr.print(
                f"{r['model_key']} {r['space']}: [bold]{r['action']}[/] {r['index']} · {r['n']:,} vectors "
                f"(+{r['added']:,}){params}{recall}{budget} · {r['seconds']:.1f}s"
            )
        if not data["indexes"]:
            stderr.print("no embeddings yet: run `audit embed` first")
