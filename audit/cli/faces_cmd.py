"""``audit faces export-gallery FOLDER OUT``: a shareable descriptor file from reference photos."""

from __future__ import annotations

from pathlib import Path

import typer

from audit.cli.app import app
from audit.cli.output import emit_json, stderr
from audit.errors import InputError

faces_app = typer.Typer(
    help='Face-likeness galleries ([[faces]] in a policy; needs pip install ".[faces]").', no_args_is_help=True
)
app.add_typer(faces_app, name="faces")


@faces_app.command("export-gallery")
def export_gallery_command(
    folder: Path = typer.Argument(..., help="Gallery folder: one subfolder per person, holding reference photos."),
    out: Path = typer.Argument(
        ..., help="Descriptor file to write (.npz or .jsonl): labels and 128-d descriptors, no photos."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Describe every reference photo's largest face and write labels + descriptors, so a
    gallery can be shared without sharing photos. Photos without a face are listed."""
    from audit.faces.gallery import GalleryError, export_gallery

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (one subfolder per person)")
    if out.suffix.lower() not in (".npz", ".jsonl"):
        raise InputError(f"{out}: write a .npz or a .jsonl descriptor file")
    try:
        gallery = export_gallery(folder, out)
    except GalleryError as exc:
        raise InputError(str(exc)) from None
    summary = {
        "command": "faces export-gallery",
        "folder": str(folder),
        "out": str(out),
        "descriptors": len(gallery),
        "persons": len(set(gallery.labels)),
        "skipped": gallery.skipped,
    }
    if json_out:
        emit_json(summary)
    else:
        stderr.print(f"{len(gallery)} descriptors of {summary['persons']} persons written to {out}")
    for line in gallery.skipped:
        stderr.print(f"  skipped {line}")
