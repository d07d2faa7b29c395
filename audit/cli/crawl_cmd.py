"""``audit crawl SOURCE... --index DIR``"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.cli.output import emit_json, progress_bar, stderr

INDEX_HELP = "Index directory (created if missing)."


@app.command()
def crawl(
    sources: List[str] = typer.Argument(
        ...,
        help="Folders, files, manifests (.jsonl/.csv/.parquet), archives (.tar/.zip, webdataset shards) or fsspec URLs.",
    ),
    index: Path = typer.Option(..., "--index", "-i", envvar=options.INDEX_ENV, help=INDEX_HELP),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        min=0,
        help="Worker processes for decoding and hashing (default: one per core; 0 = in-process).",
    ),
    executor: str = typer.Option("local", "--executor", help=options.EXECUTOR_HELP),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for another run holding the index instead of exiting with code 3."
    ),
    trust_dir_mtime: bool = typer.Option(
        False,
        "--trust-dir-mtime",
        help="Skip the files of local directories whose mtime is unchanged since their last full listing: one stat per directory instead of per file (a file rewritten in place without a rename is then missed until a normal crawl).",
    ),
    reread: bool = typer.Option(
        False,
        "--reread",
        help="Also read again unchanged files whose catalog rows lack what this version reads (rows from before provenance, animation frames and video hashes) or that failed to decode.",
    ),
    reread_all: bool = typer.Option(
        False, "--reread-all", help="Read every file again, changed or not (e.g. after a metadata parser fix)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Catalog generations: hashes (SHA-256, MD5, PDQ), image facts, generation metadata, errors.

    Incremental: files whose path, size and mtime are unchanged are not read again;
    new, changed, moved and deleted files are recognised. Unreadable files become rows
    with status=error and a reason; the crawl goes on.
    """
    import audit
    from audit.ingest import open_source

    executor = options.executor(executor)

    opened = [open_source(s, trust_dir_mtime=trust_dir_mtime) for s in sources]  # a bad SOURCE fails before any work
    with progress_bar("crawl", quiet=quiet) as progress:
        summary = audit.open(index, create=True).crawl(
            opened,
            workers=workers,
            wait=wait,
            progress=progress,
            executor=executor,
            reread="all" if reread_all else "stale" if reread else None,
        )
    data = summary.to_dict()
    if json_out:
        emit_json({"command": "crawl", "index": str(index), **data})
    if not quiet:
        stderr.print(
            f"[bold]{data['listed']:,}[/] listed · {data['read']:,} read"
            + (f" ({data['reread']:,} re-read)" if reread or reread_all else "")
            + f" · {data['unchanged']:,} unchanged · "
            f"{data['new_items']:,} new items · {data['changed']:,} changed · {data['moved']:,} moved · "
            f"{data['missing']:,} missing · [{'red' if data['errors'] else 'green'}]{data['errors']:,} errors[/] "
            f"in {data['duration_s']:.1f}s"
        )
        for reason, n in list(data["error_reasons"].items())[:8]:
            stderr.print(f"  {n:>6,} × {reason}")
