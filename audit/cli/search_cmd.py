"""``audit search --index DIR (--text T | --image PATH | --item ID) [-k N]``"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.cli.output import emit_json, stderr
from audit.errors import UsageError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str | None) -> str:
    """Control and bidi characters as visible escapes (a prompt must not drive the terminal)."""
    if text is None:
        return ""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@app.command("search")
def search_command(
    index: Path = typer.Option(..., "--index", "-i", envvar=options.INDEX_ENV, help="Index directory."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Find items that match this text."),
    image: Optional[Path] = typer.Option(None, "--image", help="Find items that look like this image file."),
    item: Optional[str] = typer.Option(
        None, "--item", help="Find items near this item (id, unique id prefix, or uri)."
    ),
    k: int = typer.Option(10, "-k", "--top", min=1, help="How many results."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model key or name (needed when several models are embedded)."
    ),
    space: str = typer.Option("image", "--space", help="Search image vectors (image) or prompt vectors (prompt)."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Local weights of the model, when the index was embedded from a checkpoint file."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto, for embedding the query."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Nearest items to a text, an image or an item, with cosine scores, a location and the prompt."""
    import audit

    given = [flag for flag, v in (("--text", text), ("--image", image), ("--item", item)) if v is not None]
    if len(given) != 1:
        raise UsageError(
            "give exactly one of --text, --image, --item" + (f" (got {', '.join(given)})" if given else "")
        )
    space = options.space(space)
    device = options.device(device)
    with audit.open(index) as a:
        df = a.search(
            text=text,
            image=image,
            item=item,
            k=k,
            model=model,
            space=space,
            checkpoint=str(checkpoint) if checkpoint else None,
            device=device,
        )
        pending = _not_indexed(a, model, space)
    if pending:
        stderr.print(f"note: {pending:,} {space} vectors are not in the index yet; run `audit index` to include them")
    query = {"text": text, "image": str(image) if image else None, "item": item}
    if json_out:
        emit_json(
            {
                "command": "search",
                "index": str(index),
                "query": {q: v for q, v in query.items() if v is not None},
                "space": space,
                "k": k,
                "results": df.to_dicts(),
            }
        )
        return
    _print_table(df)


def _not_indexed(a, model: str | None, space: str) -> int:
    from audit.index.files import read_manifest
    from audit.index.search import resolve_model

    s = a._searcher()
    key = resolve_model(s.vs, model, a.index_dir)["key"]
    m = read_manifest(a.index_dir, key, space)
    return max(0, s.vs.count(key, space) - (m.n if m else 0))


def _print_table(df) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if df.is_empty():
        stderr.print("no results")
        return
    table = Table(show_header=True, header_style="bold", show_lines=False)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("item", no_wrap=True)
    table.add_column("uri", overflow="fold")
    table.add_column("prompt", overflow="ellipsis", max_width=60)
    for r in df.iter_rows(named=True):
        uri = escape_control(r["uri"]) if r["uri"] else "(no location)"
        if r["uri"] and not r["present"]:
            uri += " (missing)"
        prompt = escape_control(r["prompt_excerpt"])
        if r["match"] == "negative_prompt":
            prompt = "[matched negative prompt] " + prompt
        table.add_row(str(r["rank"]), f"{r['score']:.4f}", r["item_id"][:12], Text(uri), Text(prompt))

    # piped into a file or grep: wide lines rather than uris folded at 80 columns
    Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 240).print(table)
