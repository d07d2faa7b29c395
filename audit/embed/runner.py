"""Drives ``audit embed``: finds what this model has not embedded yet, cuts it into
shards, runs them on an executor, and commits each shard's vectors and skips in one
transaction.

Incremental and resumable: the work list is "ok items without an image vector (or a
skip) for this model key" and "prompt texts without a prompt vector", read in bounded
pages (keyset pagination), so a rerun after a SIGKILL embeds exactly what is missing and
memory stays flat however large the catalog. Identical prompts are embedded once: the
key is the SHA-256 of the text, positive and negative prompts share the "prompt" space.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from audit.catalog.store import Catalog
from audit.catalog.vectors import VectorStore, prompt_key
from audit.embed.executor import Executor, ShardResult, ShardTask, run_shard
from audit.embed.openclip import EmbedderSpec

PAGE = 2048  # rows read from the catalog at a time
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
    workers: int = 0
    batch_size: int = 0
    images_embedded: int = 0
    images_skipped: int = 0
    prompts_embedded: int = 0  # unique prompt texts newly embedded
    prompt_refs: int = 0  # prompt/negative_prompt fields seen on items that needed a prompt vector
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
        spec: EmbedderSpec,
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
        self.summary = EmbedSummary(model_key=self.key, identity=spec.identity.to_dict(), dim=dim,
                                    device=spec.device, workers=executor.workers, batch_size=batch_size)  # fmt: skip
        self.store.register_model(spec.identity, dim)
        self._inflight: set[str] = set()
        self._shard_ids = iter(range(1 << 62))

    def run(self, *, images: bool = True, prompts: bool = True) -> EmbedSummary:
        started = time.monotonic()
        try:
            if prompts:
                self._run(self._prompt_tasks())
            if images:
                self.progress("total", self.pending_images())
                self._run(self._image_tasks())
        finally:
            s = self.summary
            s.duration_s = time.monotonic() - started
            s.images_per_s = s.images_embedded / s.duration_s if s.duration_s > 0 else 0.0
            s.image_vectors_total = self.store.count(self.key, "image")
            s.prompt_vectors_total = self.store.count(self.key, "prompt")
        return self.summary

    # --- counting
    def pending_images(self) -> int:
        return self.catalog.conn.execute(
            "SELECT count(*) FROM items i WHERE i.status='ok' "
            "AND EXISTS (SELECT 1 FROM locations l WHERE l.item_id=i.item_id AND l.present=1) "
            "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.model_key=? AND v.space='image' AND v.key=i.item_id) "
            "AND NOT EXISTS (SELECT 1 FROM embed_skips s WHERE s.model_key=? AND s.item_id=i.item_id)",
            (self.key, self.key),
        ).fetchone()[0]

    # --- work lists
    def _image_tasks(self) -> Iterator[ShardTask]:
        """Shards of ``batch_size`` items in uri order (archive members stay together)."""
        last = ""
        keys: list[str] = []
        uris: list[str] = []
        while True:
            rows = self.catalog.conn.execute(
                "SELECT l.uri, l.item_id FROM locations l JOIN items i ON i.item_id = l.item_id "
                "WHERE l.present=1 AND i.status='ok' AND l.uri > ? "
                "AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.model_key=? AND v.space='image' AND v.key=l.item_id) "
                "AND NOT EXISTS (SELECT 1 FROM embed_skips s WHERE s.model_key=? AND s.item_id=l.item_id) "
                "ORDER BY l.uri LIMIT ?",
                (last, self.key, self.key, PAGE),
            ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for uri, item_id in rows:
                if item_id in self._inflight:  # another location of an item already queued
                    continue
                self._inflight.add(item_id)
                keys.append(item_id)
                uris.append(uri)
                if len(keys) >= self.batch_size:
                    yield self._task("image", keys, uris)
                    keys, uris = [], []
        if keys:
            yield self._task("image", keys, uris)

    def _prompt_tasks(self) -> Iterator[ShardTask]:
        last = ""
        window: dict[str, str] = {}
        while True:
            rows = self.catalog.conn.execute(
                "SELECT item_id, prompt, negative_prompt FROM items WHERE status='ok' AND item_id > ? "
                "ORDER BY item_id LIMIT ?",
                (last, PAGE),
            ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            fresh: dict[str, str] = {}
            for _, prompt, negative in rows:
                for text in (prompt, negative):
                    if text and text.strip():
                        k = prompt_key(text)
                        if k not in self._inflight and k not in window:
                            fresh.setdefault(k, text)
            if fresh:
                have = self.store.has(self.key, "prompt", list(fresh))
                for k, text in fresh.items():
                    if k not in have:
                        window[k] = text
                        self.summary.prompt_refs += 1
            if len(window) >= PROMPT_WINDOW:
                yield from self._prompt_shards(window)
                window = {}
        if window:
            yield from self._prompt_shards(window)

    def _prompt_shards(self, window: dict[str, str]) -> Iterator[ShardTask]:
        # similar lengths together, so each text batch pads to little more than its own length
        ordered = sorted(window.items(), key=lambda kv: len(kv[1]))
        for i in range(0, len(ordered), PROMPT_SHARD):
            part = ordered[i : i + PROMPT_SHARD]
            self._inflight.update(k for k, _ in part)
            yield self._task("prompt", [k for k, _ in part], [t for _, t in part])

    def _task(self, kind: str, keys: list[str], payloads: list[str]) -> ShardTask:
        return ShardTask(self.spec, kind, tuple(keys), tuple(payloads), next(self._shard_ids),
                         batch_size=self.batch_size, decode_threads=self.decode_threads)  # fmt: skip

    # --- results
    def _run(self, tasks: Iterator[ShardTask]) -> None:
        for result in self.executor.map_unordered(run_shard, tasks):
            self._commit(result)

    def _commit(self, r: ShardResult) -> None:
        space = "image" if r.kind == "image" else "prompt"
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


def default_workers(device: str) -> int:
    """CPU: one worker per core, each with one torch thread (no cross-core sync in the
    model, decoding fills the gaps). CUDA: one process holds the GPU; decoding runs on
    threads inside it, one sub-batch ahead."""
    if str(device).startswith("cuda"):
        return 0
    return max(1, os.cpu_count() or 1)
