"""``audit flag --index DIR [--policy FILE] [--model KEY] [--full] [--json] [--quiet]``"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.cli.output import emit_json, progress_bar, stderr, warn_run_problems


@app.command("flag")
def flag_command(
    index: Path = typer.Option(
        ..., "--index", "-i", envvar=options.INDEX_ENV, help="Index directory (crawled, embedded and indexed)."
    ),
    policy: Optional[Path] = typer.Option(
        None,
        "--policy",
        "-p",
        envvar=options.POLICY_ENV,
        help="Policy file (TOML). Default: the policy shipped with audit.",
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model key or name whose vectors to use (needed when several are embedded)."
    ),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Local weights of the model, when the index was embedded from a checkpoint file."
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, cuda or cuda:N, for embedding the policy's concept texts."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Recompute everything: every item evaluated, clusters retrained, near-duplicate groups and seed neighbours rebuilt (default: only items new or changed since the last run of this policy and model).",
    ),
    clusters: Optional[int] = typer.Option(
        None,
        "--clusters",
        min=1,
        help="Number of semantic clusters (default: one per --cluster-size items, at most 4096).",
    ),
    cluster_size: int = typer.Option(
        25,
        "--cluster-size",
        min=1,
        help="Items per semantic cluster the number of clusters aims at (when --clusters is not given).",
    ),
    cluster_share: float = typer.Option(
        0.25,
        "--cluster-share",
        min=0.01,
        max=1.0,
        help="Flag a cluster only when at least this share of its members is flagged directly (and --cluster-min-flagged members).",
    ),
    cluster_min_flagged: int = typer.Option(
        3,
        "--cluster-min-flagged",
        min=1,
        help="Flag a cluster only when at least this many of its members are flagged directly.",
    ),
    cluster_margin: float = typer.Option(
        0.05,
        "--cluster-margin",
        min=0.0,
        help="A flagged cluster's member is a review candidate only within this margin below the concept threshold (and nearer to the flagged members than to the others).",
    ),
    cluster_candidates: int = typer.Option(
        10,
        "--cluster-candidates",
        min=0,
        help="At most this many review candidates per flagged cluster and category; the rest is counted on the cluster.",
    ),
    recluster_factor: float = typer.Option(
        2.0,
        "--recluster-factor",
        min=1.0,
        help="Retrain the clusters (a full run) once the archive's image vectors grew this many times since the last training.",
    ),
    learn: bool = typer.Option(
        True,
        "--learn/--no-learn",
        help="Use models learned from review decisions (per category, once it has at least 5 confirmed and 5 dismissed items) to decide the image part of its flags.",
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Wait for another run holding the index instead of exiting with code 3."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output (problems are still reported on stderr)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Signals, clusters and findings: match every item against a policy.

    Concepts (CLIP, image and prompt; thresholds calibrated for the model when the policy
    omits them), prompt rules and name lists, hash lists and negative banks, combination
    flags, semantic clusters and near-duplicate groups, neighbours of items reviewers
    confirmed. Incremental: only items new or changed since the last run of this policy and
    model (and items whose image vector arrived since); new items join the existing clusters
    and near-duplicate groups. A changed policy or model, clusters outgrown by
    --recluster-factor, an interrupted full run, or --full: everything is recomputed.
    """
    import audit

    device = options.device(device)
    with progress_bar("flag", quiet=quiet) as bar:
        summary = audit.open(index).flag(
            str(policy) if policy else None,
            model=model,
            checkpoint=str(checkpoint) if checkpoint else None,
            device=device,
            full=full,
            wait=wait,
            n_clusters=clusters,
            cluster_share=cluster_share,
            cluster_size=cluster_size,
            cluster_min_flagged=cluster_min_flagged,
            cluster_margin=cluster_margin,
            cluster_candidates=cluster_candidates,
            recluster_factor=recluster_factor,
            learn=learn,
            progress=bar,
        )
    data = summary.to_dict()
    if json_out:
        emit_json({"command": "flag", "index": str(index), **data})
    if not quiet:
        p = data["policy"]
        stderr.print(
            f"policy {p['name']} v{p['version']} ({p['hash'][:12]}) · model {data['model_key']} · "
            f"{data['mode']}: {data['evaluated']:,} of {data['items']:,} items evaluated"
        )
        for name, info in data["thresholds"].items():
            if "image" in info:
                stderr.print(
                    f"  {name}: image ≥ {info['image']['value']:.4f} ({info['image']['source']}), "
                    f"prompt ≥ {info['prompt']['value']:.4f} ({info['prompt']['source']})"
                )
            elif name.startswith("learned:") and isinstance(info, dict):
                dec, cvp, cvr = info.get("decisions") or {}, info.get("cv_precision"), info.get("cv_recall")
                stderr.print(
                    f"  {name}: model from {dec.get('confirmed', 0)} confirmed / {dec.get('dismissed', 0)} "
                    f"dismissed, cross-validated precision {'—' if cvp is None else f'{cvp:.2f}'}, "
                    f"recall {'—' if cvr is None else f'{cvr:.2f}'}"
                )
        stderr.print(
            f"[bold]{data['findings']:,} findings[/] ({data['new_findings']:,} new) · "
            f"{data['flagged_clusters']} of {data['clusters']} clusters flagged · "
            f"{data['near_duplicate_groups']} near-duplicate groups · {data['seeds']} seeds · "
            f"{data['suppressed']} suppressed · {data['duration_s']:.1f}s"
        )
        for cat, n in sorted(data["by_category"].items(), key=lambda kv: -kv[1]):
            stderr.print(f"  {cat}: {n:,}")
    warn_run_problems("flag", data["errors"])
