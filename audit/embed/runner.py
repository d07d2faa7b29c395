"""Drives ``audit embed``: finds what this model has not embedded yet, cuts it into
shards, runs them on an executor, and commits each shard's vectors and skips in one
transaction.

Incremental and resumable: the work list is "ok items above this model's watermark on
items.seq without an image vector (or a skip)" and "their prompt texts without a prompt
vector" (``audit.embed.pending``), read in bounded pages, so a run's discovery follows
the new items, a rerun after a SIGKILL embeds exactly what is missing, and memory stays
flat however large the catalog. Identical prompts are embedded once: the
key is the SHA-256 of the text, positive and negative prompts share the "prompt" space.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from audit.catalog.store import Catalog
from audit.catalog.vectors import FRAME_SPACE, VectorStore
from audit.embed.base import EmbedderRecipe
from audit.embed.executor import Executor, ShardResult, ShardTask, run_shard
from audit.embed.pending import PendingWork

WATERMARK_EVERY = 2.0  # seconds between watermark writes while a run goes on
PROMPT_SHARD = 512  # unique prompts per shard (sorted by length, then bucketed by the embedder)
PROMPT_WINDOW = 8192  # unique prompts gathered before sorting into shards

ProgressFn = Callable[[str, int], None]


@dataclass
class EmbedSummary:
    model_key: str = ""
    identity: dict = field(default_factory=dict)
    dim: int = 0
    precision: dict = field(default_factory=dict)
    device: str = "cpu"
    executor: str = "local"
    workers: int = 0
    batch_size: int = 0
    images_embedded: int = 0
    images_skipped: int = 0
    prompts_embedded: int = 0  # unique prompt texts newly embedded
    prompt_refs: int = 0  # prompt/negative_prompt fields seen on items that needed a prompt vector
    items_examined: int = 0  # catalog item rows read to find the work (follows the new items)
    skip_reasons: Counter = field(default_factory=Counter)
    skip_examples: list[dict[str, str]] = field(default_factory=list)
    image_vectors_total: int = 0
    prompt_vectors_total: int = 0
    read_decode_s: float = 0.0
    encode_s: float = 0.0
    duration_s: float = 0.0
    images_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skip_reasons"] = dict(self.skip_reasons.most_common())
        for k in ("read_decode_s", "encode_s", "duration_s", "images_per_s"):
            out[k] = round(out[k], 3)
        return out


class EmbedRunner:
    def __init__(
        self,
        catalog: Catalog,
        spec: EmbedderRecipe,
        executor: Executor,
        *,
        dim: int,
        batch_size: int = 32,
        decode_threads: int = 1,
        progress: ProgressFn | None = None,
    ):
        self.catalog = catalog
        self.store = VectorStore(catalog.conn)
        self.spec = spec
        self.key = spec.identity.key
        self.executor = executor
        self.batch_size = batch_size
        self.decode_threads = decode_threads
        self.progress = progress or (lambda event, n: None)
        self.summary = EmbedSummary(
            model_key=self.key,
            identity=spec.identity.to_dict(),
            dim=dim,
            device=spec.device,
            workers=executor.workers,
            batch_size=batch_size,
        )
        self.store.register_model(spec.identity, dim)
        self._inflight: set[str] = set()
        self._shard_ids = iter(range(1, 1 << 62))
        self.pending = PendingWork(catalog.conn, self.store, self.key)
        self._open: dict[int, tuple[str, int]] = {}  # shard id -> (kind, lowest item seq) of shards in flight
        self._examined: dict[str, int] = {}  # kind -> highest item seq whose page is all in flight or done
        self._advanced_at: dict[str, float] = {}

    def run(self, *, images: bool = True, prompts: bool = True) -> EmbedSummary:
        started = time.monotonic()
        try:
            if prompts:
                self._run(self._prompt_tasks(), "prompt")
            if images:
                self.progress("total", self.pending_images())
                self._run(self._image_tasks(), "image")
        finally:
            s = self.summary
            s.duration_s = time.monotonic() - started
            s.images_per_s = s.images_embedded / s.duration_s if s.duration_s > 0 else 0.0
            s.image_vectors_total = self.store.count(self.key, "image")
            s.prompt_vectors_total = self.store.count(self.key, "prompt")
            s.items_examined = self.pending.examined
        return self.summary

    # --- counting
    def pending_images(self) -> int:
        return self.pending.count_images()

    # --- work lists (see audit.embed.pending: they follow items.seq above a watermark)
    def _image_tasks(self) -> Iterator[ShardTask]:
        """Shards of ``batch_size`` items, each page's items in uri order (archive members
        stay together); a page's last, smaller shard goes out with the page, so the page's
        items are all in flight (or done) once it is handed out."""
        for todo, low, high in self.pending.image_pages():
            todo = sorted((uri, item_id) for item_id, uri in todo if item_id not in self._inflight)
            for i in range(0, len(todo), self.batch_size):
                part = todo[i : i + self.batch_size]
                self._inflight.update(item_id for _, item_id in part)
                yield self._task("image", [k for _, k in part], [u for u, _ in part], low=low)
            if high:
                self._examined["image"] = high
                self._advance("image")

    def _prompt_tasks(self) -> Iterator[ShardTask]:
        window: dict[str, str] = {}
        low = 0
        for fresh, page_low, high in self.pending.prompt_pages():
            low = low or page_low
            for k, text in fresh.items():
                if k not in self._inflight and k not in window:
                    window[k] = text
                    self.summary.prompt_refs += 1
            if len(window) >= PROMPT_WINDOW:
                yield from self._prompt_shards(window, low)
                window, low = {}, 0
                self._examined["prompt"] = high
                self._advance("prompt")
            elif not window:
                self._examined["prompt"] = high
                low = 0
        if window:
            yield from self._prompt_shards(window, low)
            self._examined["prompt"] = high
        self._advance("prompt")

    def _prompt_shards(self, window: dict[str, str], low: int) -> Iterator[ShardTask]:
        # similar lengths together, so each text batch pads to little more than its own length
        ordered = sorted(window.items(), key=lambda kv: len(kv[1]))
        for i in range(0, len(ordered), PROMPT_SHARD):
            part = ordered[i : i + PROMPT_SHARD]
            self._inflight.update(k for k, _ in part)
            yield self._task("prompt", [k for k, _ in part], [t for _, t in part], low=low)

    def _task(self, kind: str, keys: list[str], payloads: list[str], *, low: int) -> ShardTask:
        task = ShardTask(
            self.spec,
            kind,
            tuple(keys),
            tuple(payloads),
            next(self._shard_ids),
            batch_size=self.batch_size,
            decode_threads=self.decode_threads,
        )
        if low:  # items noted absent that came back (low 0) hold no watermark back
            self._open[task.shard_id] = (kind, low)
        return task

    def _advance(self, kind: str, *, force: bool = False) -> None:
        """Raise the watermark of ``kind`` to just below the oldest item still in flight
        (or to all that was examined): only committed work lies below it. Written at most
        every WATERMARK_EVERY seconds while running, and at the end."""
        open_low = [low for k, low in self._open.values() if k == kind]
        mark = min([self._examined.get(kind, 0)] + [low - 1 for low in open_low])
        now = time.monotonic()
        if mark > 0 and (force or now - self._advanced_at.get(kind, -WATERMARK_EVERY) >= WATERMARK_EVERY):
            self.pending.advance(kind, mark)
            self._advanced_at[kind] = now

    # --- results
    def _run(self, tasks: Iterator[ShardTask], kind: str) -> None:
        for result in self.executor.map_unordered(run_shard, tasks):
            self._commit(result)
        self._advance(kind, force=True)

    def _commit(self, r: ShardResult) -> None:
        space = "image" if r.kind == "image" else "prompt"
        if r.frame_keys:  # before the image vectors: an item with its image vector has its frames
            self.store.put_batch(self.key, FRAME_SPACE, r.frame_keys, r.frame_vectors)
        self.store.put_batch(self.key, space, r.keys, r.vectors, skips=r.skips)
        s = self.summary
        if r.kind == "image":
            s.images_embedded += len(r.keys)
            s.images_skipped += len(r.skips)
            for item_id, reason in r.skips:
                s.skip_reasons[reason.split(":")[0]] += 1
                if len(s.skip_examples) < 20:
                    s.skip_examples.append({"item_id": item_id, "reason": reason})
            self.progress("done", len(r.keys) + len(r.skips))
        else:
            s.prompts_embedded += len(r.keys)
        s.read_decode_s += r.timings.get("read_decode_s", 0.0)
        s.encode_s += r.timings.get("encode_s", 0.0)
        self._inflight.difference_update(r.keys)
        self._inflight.difference_update(k for k, _ in r.skips)
        if self._open.pop(r.shard_id, None) is None and r.kind == "image":
            self.pending.settle_absent(list(r.keys) + [k for k, _ in r.skips])
        self._advance("image" if r.kind == "image" else "prompt")


def default_workers(device: str) -> int:
    """CPU: one worker per core, each with one torch thread (no cross-core sync in the
    model, decoding fills the gaps). CUDA: one process holds the GPU; decoding runs on
    threads inside it, one sub-batch ahead."""
    if str(device).startswith("cuda"):
        return 0
    return max(1, os.cpu_count() or 1)
