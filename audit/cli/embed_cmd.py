"""``audit embed --index DIR [--model NAME] [--pretrained TAG] [--checkpoint PATH] [--device cpu|cuda|auto] [--batch-size N]``"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED
from audit.cli.output import emit_json, pretrained_tag, progress_bar, stderr


@app.command("embed")
def embed_command(
    ctx: typer.Context,
    index: Path = typer.Option(
        ..., "--index", "-i", envvar=options.INDEX_ENV, help="Index directory (made by `audit crawl`)."
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="open_clip model name, or toy-shapes (the shipped toy-world CLIP)."
    ),
    pretrained: str = typer.Option(
        DEFAULT_PRETRAINED,
        "--pretrained",
        help="open_clip pretrained tag (downloaded once into the Hugging Face cache; HF_HUB_OFFLINE and HF_HOME are honoured); 'none' for random weights (benchmarks only).",
    ),
    checkpoint: Optional[Path] = typer.Option(
        None,
        "--checkpoint",
        help="Local weights: .safetensors, or a weights-only .pt/.bin (never unpickled). Identity: its SHA-256.",
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, cuda[:N], or auto: CUDA when this machine can use it, else the CPU."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 on CPUs with native bf16 after a check against fp32; elsewhere int8 where it passes its check and was measured faster than fp32 here, else fp32; fp16 autocast on CUDA), fp32, bf16, fp16, int8 (ONNX Runtime, CPU, its own vector space; extra [int8]).",
    ),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b", min=1, help="Images per batch and per commit (default 32 on CPU, 256 on CUDA)."
    ),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        min=0,
        help="Processes running the model, each with its own copy (default: one per core on CPU, this process being one of them; 0 on CUDA; 0 = in this process only).",
    ),
    executor: str = typer.Option("local", "--executor", help=options.EXECUTOR_HELP),
    no_images: bool = typer.Option(False, "--no-images", help="Embed prompts only."),
    no_prompts: bool = typer.Option(False, "--no-prompts", help="Embed images only."),
    retry_skipped: bool = typer.Option(
        False, "--retry-skipped", help="Try again the images recorded as skipped for this model."
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for another run holding the index instead of exiting with code 3."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    import_dir: Optional[Path] = typer.Option(
        None,
        "--import",
        help="Import precomputed vectors instead of embedding: a clip-retrieval output folder (img_emb/img_emb_N.npy, text_emb/text_emb_N.npy, metadata/metadata_N.parquet with image_path), filed under the --model/--pretrained (or --checkpoint) identity, which must be stated.",
    ),
    path_prefix: str = typer.Option(
        "",
        "--path-prefix",
        help="With --import: put before each image_path to make the catalogued uri (e.g. '/data/shards/').",
    ),
    base: Optional[Path] = typer.Option(
        None, "--base", help="With --import: folder a relative image_path is also resolved against."
    ),
) -> None:
    """Embed images and prompts (positive and negative) of catalogued items with CLIP.

    Incremental: only items without a vector for this model identity (name + pretrained
    tag, or checkpoint SHA-256); another model embeds into its own space. Commits every
    batch, so a killed run loses at most the batches in flight. Images that cannot be read
    or decoded are recorded as skipped with the reason. Identical prompts are embedded once.
    Exit code 3 when the model weights are not available.
    """
    import audit

    if import_dir is not None:
        _import(ctx, index, import_dir, model, pretrained, checkpoint, path_prefix, base, wait, quiet, json_out)
        return
    executor = options.executor(executor)
    precision = options.precision(precision)
    device = options.device(device, probe=executor != "ray")
    tag = pretrained_tag(pretrained)
    with progress_bar("embed", quiet=quiet) as progress:
        summary = audit.open(index).embed(
            model=model,
            pretrained=tag,
            checkpoint=str(checkpoint) if checkpoint else None,
            device=device,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            images=not no_images,
            prompts=not no_prompts,
            retry_skipped=retry_skipped,
            wait=wait,
            progress=progress,
            executor=executor,
        )
    data = summary.to_dict()
    if json_out:
        emit_json({"command": "embed", "index": str(index), **data})
    if not quiet:
        p = data["precision"]
        check = (
            f" (vs fp32: cosine ≥ {min(p['min_cosine_image'], p['min_cosine_text']):.4f})"
            if "min_cosine_image" in p
            else ""
        )
        stderr.print(
            f"[bold]{data['model_key']}[/] {p.get('precision', '?')}{check} on {data['device']} · "
            f"{data['images_embedded']:,} images · {data['prompts_embedded']:,} new prompts · "
            f"[{'yellow' if data['images_skipped'] else 'green'}]{data['images_skipped']:,} skipped[/] "
            f"in {data['duration_s']:.1f}s ({data['images_per_s']:.1f} images/s)"
        )
        for reason, n in list(data["skip_reasons"].items())[:8]:
            stderr.print(f"  {n:>6,} × {reason}")


def _import(
    ctx: typer.Context,
    index: Path,
    folder: Path,
    model: str,
    pretrained: str,
    checkpoint: Optional[Path],
    path_prefix: str,
    base: Optional[Path],
    wait: bool,
    quiet: bool,
    json_out: bool,
) -> None:
    """``audit embed --import DIR``: vectors someone else computed, under a stated identity."""
    import audit
    from audit.errors import UsageError

    # typer ships its own copy of click: compare the source by name
    if getattr(ctx.get_parameter_source("model"), "name", "DEFAULT") == "DEFAULT":
        raise UsageError(
            "--import needs the model that made the vectors: --model NAME with --pretrained TAG or --checkpoint PATH"
        )
    tag = None if checkpoint else pretrained_tag(pretrained)
    with progress_bar("import", quiet=quiet) as progress:
        summary = audit.open(index).import_embeddings(
            folder,
            model=model,
            pretrained=tag,
            checkpoint=str(checkpoint) if checkpoint else None,
            path_prefix=path_prefix,
            base=base,
            wait=wait,
            progress=progress,
        )
    data = summary.to_dict()
    if json_out:
        emit_json({"command": "embed-import", "index": str(index), **data})
    if not quiet:
        stderr.print(
            f"[bold]{data['model_key']}[/] imported · {data['image_vectors']:,} image vectors · "
            f"{data['prompt_vectors']:,} prompt vectors · {data['already_present']:,} already present · "
            f"{data['unmatched']:,} rows matched no catalogued item · "
            f"{data['parts'] - data['parts_done_before']} of {data['parts']} parts read in {data['duration_s']:.1f}s"
        )
        for problem in data["problems"][:8]:
            stderr.print(f"  [yellow]{problem}[/]")
