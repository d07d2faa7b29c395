"""``Audit.embed``: load the model, hold the index lock, run the ``EmbedRunner``.

Works on the ``Catalog`` (its connection, index folder and run records), not on the
``Audit`` facade that calls it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from audit.catalog.lock import IndexLock
from audit.catalog.runs import recorded_run
from audit.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED
from audit.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from audit.catalog.store import Catalog
    from audit.embed.runner import EmbedSummary


@dataclass(frozen=True)
class EmbedOptions:
    """What ``audit embed`` embeds and how (``Audit.embed``'s keyword arguments)."""

    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED  # None (no checkpoint): random weights
    checkpoint: str | os.PathLike | None = None
    device: str = "cpu"
    precision: str = "auto"
    batch_size: int | None = None  # None: 256 on CUDA, 32 on CPU
    workers: int | None = None  # None: ``audit.embed.runner.default_workers``
    images: bool = True
    prompts: bool = True
    retry_skipped: bool = False
    executor: str = "local"  # one of ``audit.onray.EXECUTORS``


def run_embed(
    catalog: "Catalog",
    options: EmbedOptions | None = None,
    *,
    wait: bool = False,
    progress=None,
    argv: Sequence[str] | None = None,
    embedder=None,
) -> "EmbedSummary":
    from dataclasses import replace

    from audit.embed.device import check_device
    from audit.embed.executor import HybridExecutor, InlineExecutor, LocalExecutor
    from audit.embed.openclip import PRECISIONS, load_embedder
    from audit.embed.process_cache import remember
    from audit.embed.runner import EmbedRunner, default_workers

    opts = options or EmbedOptions()
    # the body reads them by name (``device`` is checked and ``executor`` reused below)
    model, pretrained, checkpoint, precision = opts.model, opts.pretrained, opts.checkpoint, opts.precision
    device, batch_size, workers, executor = opts.device, opts.batch_size, opts.workers, opts.executor
    images, prompts, retry_skipped = opts.images, opts.prompts, opts.retry_skipped
    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if workers is not None and workers < 0:
        raise UsageError("--workers must be 0 or more")
    from audit.onray import EXECUTORS

    if executor not in EXECUTORS:
        raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    on_ray = executor == "ray"
    if on_ray:
        from audit.onray.session import require_ray

        require_ray()  # one line naming the extra to install, before the index is touched
    # before anything, also when there is nothing to embed; on Ray the GPUs are on the
    # workers, so the driver checks only the spelling (the cluster's GPUs are checked later)
    device = check_device(device, probe=not on_ray)
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    # weights are resolved (and may fail with exit 3) before the index is touched
    identity = None
    if embedder is None and not retry_skipped:
        # A scan with nothing new must not pay for loading a model.
        from audit.embed.openclip import resolve_identity

        identity = resolve_identity(model, pretrained, checkpoint)
        with IndexLock(catalog.index_dir, wait=wait):
            idle = _nothing_pending(catalog, identity, images, prompts)
            if idle is not None:
                with recorded_run(catalog, "embed", argv) as run:
                    run.summary = idle
                return idle
    if on_ray:
        return _run_embed_on_ray(
            catalog, replace(opts, device=device), wait=wait, progress=progress, argv=argv, embedder=embedder
        )
    cores = os.cpu_count() or 1
    is_cuda = device.startswith("cuda")
    n_workers = default_workers(device) if workers is None else workers
    # CPU with N >= 1 model processes: this process is one of them (it loads and checks the
    # model anyway), the other N - 1 start first and build theirs meanwhile
    hybrid = not is_cuda and n_workers >= 1
    threads = max(1, cores // max(1, n_workers))
    pool = None
    torch_threads = None
    try:
        if hybrid and n_workers > 1:
            from audit.embed.openclip import planned_spec

            warm = (
                getattr(embedder, "spec", None)
                if embedder is not None
                else planned_spec(model, pretrained, checkpoint, device, precision, identity=identity)
            )
            pool = LocalExecutor(n_workers - 1, threads=threads, warm=replace(warm, threads=threads) if warm else None)
        # only now: importing torch takes seconds, which the pool's start (on its own thread,
        # in its own fork server) overlaps
        torch_threads = _set_torch_threads(threads) if hybrid else None
        emb = embedder or load_embedder(
            model, pretrained, checkpoint=checkpoint, device=device, precision=precision, identity=identity
        )
        if getattr(emb, "spec", None) is None:
            raise UsageError("embedder has no spec (build it with audit.embed.openclip.load_embedder)")
        device = emb.spec.device
        bs = batch_size or (256 if is_cuda else 32)
        with IndexLock(catalog.index_dir, wait=wait), recorded_run(catalog, "embed", argv) as run:
            executor = None
            try:
                if retry_skipped:
                    from audit.catalog.vectors import VectorStore
                    from audit.embed.pending import PendingWork

                    PendingWork(catalog.conn, VectorStore(catalog.conn), emb.identity.key).retry_skipped()
                remember(emb)  # shards that run here use the embedder just loaded
                if n_workers == 0 or (hybrid and pool is None):
                    executor = InlineExecutor()
                    spec = emb.spec
                    decode_threads = cores if is_cuda else 1
                elif hybrid:
                    spec = replace(emb.spec, threads=threads)
                    executor, pool = HybridExecutor(pool), None
                    decode_threads = 1
                else:  # CUDA with worker processes asked for: each holds its own model
                    threads = max(1, cores // n_workers)
                    spec = replace(emb.spec, threads=threads)
                    executor = LocalExecutor(n_workers, threads=threads)
                    decode_threads = 1
                    if embedder is None:  # the workers build their own; free this copy's (GPU) memory
                        emb.model = None
                        import gc

                        gc.collect()
                runner = EmbedRunner(
                    catalog,
                    spec,
                    executor,
                    dim=emb.dim,
                    batch_size=bs,
                    decode_threads=decode_threads,
                    progress=progress,
                )
                runner.summary.workers = max(1, n_workers) if hybrid else n_workers
                runner.summary.precision = dict(getattr(emb, "precision_report", {}) or {})
                run.summary = runner.summary  # recorded as far as it got, also when interrupted
                return runner.run(images=images, prompts=prompts)
            finally:
                if executor is not None:
                    executor.close()
    finally:
        if pool is not None:
            pool.close()
        if torch_threads is not None:
            _set_torch_threads(torch_threads)


def _set_torch_threads(n: int) -> int:
    """Set torch's intra-op threads in this process; returns the previous value (restored
    afterwards: a notebook's own torch work is not left on one thread)."""
    import torch

    was = torch.get_num_threads()
    if n != was:
        torch.set_num_threads(n)
    return was


def _run_embed_on_ray(
    catalog: "Catalog", opts: EmbedOptions, *, wait: bool, progress, argv, embedder
) -> "EmbedSummary":
    """``run_embed`` with ``executor="ray"``: the same runner and commits, shards on Ray Data.

    The driver builds the model once on its CPU, for the identity, dimension and
    preprocessing (and, for CPU workers, the same bf16-after-check rule as locally); GPU
    actors get the spec with ``device=cuda`` and fp16 autocast."""
    from dataclasses import replace

    from audit.embed.openclip import load_embedder, resolve_precision
    from audit.embed.runner import EmbedRunner
    from audit.onray.embed import RayEmbedExecutor
    from audit.onray.session import ray_session

    is_cuda = opts.device.startswith("cuda")
    if is_cuda:
        resolved = resolve_precision(opts.device, opts.precision)  # fp16 (autocast) unless asked otherwise
        emb = embedder or load_embedder(
            opts.model, opts.pretrained, checkpoint=opts.checkpoint, device="cpu", precision="fp32", calibrate=False
        )
        spec = replace(emb.spec, device="cuda", precision=resolved)  # the actor's own GPU
        report = {"precision": resolved, "requested": opts.precision, "where": "Ray GPU actors"}
    else:
        emb = embedder or load_embedder(
            opts.model, opts.pretrained, checkpoint=opts.checkpoint, device="cpu", precision=opts.precision
        )
        spec = replace(emb.spec, threads=1)
        report = dict(getattr(emb, "precision_report", {}) or {})
    if getattr(emb, "spec", None) is None:
        raise UsageError("embedder has no spec (build it with audit.embed.openclip.load_embedder)")
    image_spec, dim = emb.preprocess, emb.dim
    if embedder is None:  # the actors build their own
        emb.model = None
    bs = opts.batch_size or (256 if is_cuda else 32)
    with IndexLock(catalog.index_dir, wait=wait), recorded_run(catalog, "embed", argv) as run, ray_session() as ray:
        if opts.retry_skipped:
            from audit.catalog.vectors import VectorStore
            from audit.embed.pending import PendingWork

            PendingWork(catalog.conn, VectorStore(catalog.conn), spec.identity.key).retry_skipped()
        executor = RayEmbedExecutor(
            ray, device=spec.device, image_spec=image_spec, threads=1, actors=opts.workers or None
        )
        runner = EmbedRunner(catalog, spec, executor, dim=dim, batch_size=bs, decode_threads=1, progress=progress)
        runner.summary.precision = report
        runner.summary.executor = "ray"
        run.summary = runner.summary  # recorded as far as it got, also when interrupted
        return runner.run(images=opts.images, prompts=opts.prompts)


def _nothing_pending(catalog: "Catalog", identity, images: bool, prompts: bool) -> "EmbedSummary | None":
    """An empty summary when no image and no prompt lacks a vector of ``identity``;
    None when there is work (or the model was never used on this index)."""
    from audit.catalog.vectors import VectorStore
    from audit.embed.runner import EmbedSummary

    store = VectorStore(catalog.conn)
    known = {m["key"]: m for m in store.models()}
    if identity.key not in known:
        return None
    from audit.embed.pending import PendingWork

    key = identity.key
    pending = PendingWork(catalog.conn, store, key)
    if pending.any_pending(images, prompts):
        return None
    summary = EmbedSummary(model_key=key, identity=identity.to_dict(), dim=int(known[key]["dim"]))
    summary.items_examined = pending.examined
    summary.image_vectors_total = store.count(key, "image")
    summary.prompt_vectors_total = store.count(key, "prompt")
    return summary
