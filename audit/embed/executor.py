"""Where shard work runs: the per-shard seam (as clip-retrieval's distributor).

A *shard* is a ``ShardTask``: a list of item ids (with the uris to read them from) or of
prompt keys (with their texts), plus the recipe (``audit.embed.base.EmbedderRecipe``; the
shipped one is open_clip's ``EmbedderSpec``) that says which model embeds
them. ``run_shard(task) -> ShardResult`` needs nothing else: no catalog, no lock, no
shared state, so the same function can run in this process (``InlineExecutor``), in a
local process pool (``LocalExecutor``), or on a cluster engine (Ray/Dask/Spark map over
tasks, results shipped back and committed by the driver). The driver alone writes to
the catalog, one transaction per shard, so a shard is also the unit of resumption.

Inside a shard, images are read and decoded on ``decode_threads`` threads one
sub-batch ahead of inference (Pillow releases the GIL while decoding and resizing), so
decoding overlaps the model also when one process holds it (``--device cuda``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

import numpy as np

from audit.animation import frame_key, later_frames
from audit.embed.base import EmbedderRecipe, ImageSpec
from audit.embed.process_cache import embedder_for
from audit.hashing import verify_item
from audit.imaging import DecodeError, decode_image

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ShardTask:
    spec: EmbedderRecipe
    kind: str  # "image" | "prompt"
    keys: tuple[str, ...]  # item ids (image) or prompt keys (prompt)
    payloads: tuple[str, ...]  # uris (image) or prompt texts (prompt)
    shard_id: int = 0
    batch_size: int = 32
    decode_threads: int = 1
    verify_sha256: bool = True  # image bytes must still hash to their item_id


@dataclass
class ShardResult:
    shard_id: int
    kind: str
    keys: list[str]
    vectors: np.ndarray  # (len(keys), dim) float32, L2-normalised
    skips: list[tuple[str, str]] = field(default_factory=list)  # (item_id, reason)
    timings: dict[str, float] = field(default_factory=dict)  # read_decode_s, encode_s, wall_s
    pid: int = 0
    # sampled later frames of animations (audit.animation): keys "<item_id>#<frame>", vectors
    frame_keys: list[str] = field(default_factory=list)
    frame_vectors: np.ndarray | None = None


def run_shard(task: ShardTask) -> ShardResult:
    """Embed one shard; never raises for one bad image (it becomes a skip)."""
    t0 = time.perf_counter()
    emb = embedder_for(task.spec)
    if task.kind == "prompt":
        t1 = time.perf_counter()
        vecs = emb.embed_texts(list(task.payloads))
        return ShardResult(
            task.shard_id,
            "prompt",
            list(task.keys),
            vecs,
            timings={"encode_s": time.perf_counter() - t1, "wall_s": time.perf_counter() - t0},
            pid=os.getpid(),
        )
    if task.kind != "image":
        raise ValueError(f"unknown shard kind {task.kind!r}")
    spec = emb.preprocess
    keys: list[str] = []
    skips: list[tuple[str, str]] = []
    parts: list[np.ndarray] = []
    frame_keys: list[str] = []
    frame_pixels: list[tuple[int, np.ndarray]] = []
    decode_s = encode_s = 0.0
    n = len(task.keys)
    bs = max(1, task.batch_size)
    chunks = [range(i, min(i + bs, n)) for i in range(0, n, bs)]
    with ThreadPoolExecutor(max_workers=max(1, task.decode_threads), thread_name_prefix="audit-decode") as pool:

        def submit(chunk: range) -> list[Future]:
            return [pool.submit(_timed_decode, task.payloads[i], task.keys[i], spec, task.verify_sha256) for i in chunk]

        ahead: deque[tuple[range, list[Future]]] = deque()
        if chunks:
            ahead.append((chunks[0], submit(chunks[0])))
        for ci in range(len(chunks)):
            chunk, futs = ahead.popleft()
            if ci + 1 < len(chunks):  # decode the next sub-batch while this one is encoded
                ahead.append((chunks[ci + 1], submit(chunks[ci + 1])))
            good_keys, pixels = [], []
            for i, fut in zip(chunk, futs):
                out, later, dt = fut.result()
                decode_s += dt
                if isinstance(out, str):
                    skips.append((task.keys[i], out))
                else:
                    good_keys.append(task.keys[i])
                    pixels.append(out)
                    frame_pixels += later
                    frame_keys += [frame_key(task.keys[i], index) for index, _ in later]
            if pixels:
                t1 = time.perf_counter()
                parts.append(emb.embed_pixels(np.stack(pixels)))
                encode_s += time.perf_counter() - t1
                keys += good_keys
    vecs = np.concatenate(parts) if parts else np.zeros((0, emb.dim), np.float32)
    frame_vecs = None
    if frame_pixels:
        t1 = time.perf_counter()
        frame_vecs = np.concatenate(
            [
                emb.embed_pixels(np.stack([p for _, p in frame_pixels[i : i + bs]]))
                for i in range(0, len(frame_pixels), bs)
            ]
        )
        encode_s += time.perf_counter() - t1
    return ShardResult(
        task.shard_id,
        "image",
        keys,
        vecs,
        skips,
        {"read_decode_s": decode_s, "encode_s": encode_s, "wall_s": time.perf_counter() - t0},
        os.getpid(),
        frame_keys,
        frame_vecs,
    )


def _timed_decode(uri: str, item_id: str, spec: ImageSpec, verify: bool) -> tuple[np.ndarray | str, list, float]:
    t = time.perf_counter()
    later: list[tuple[int, np.ndarray]] = []
    out = decode_item(uri, item_id, spec, verify=verify, frames=later)
    return out, later, time.perf_counter() - t


def decode_item(
    uri: str, item_id: str | None, spec: ImageSpec, *, verify: bool = True, frames: list | None = None
) -> np.ndarray | str:
    """Model-ready uint8 pixels of the image at ``uri``, or a one-line reason it cannot be used.

    Decodes exactly as the crawl did (``decode_image``: same pixel limit, metadata never in
    the way, truncated files as far as they go), so every item the crawl hashed is embedded.
    ``frames``: a list that receives (index, pixels) of an animation's sampled later frames
    (``audit.animation``; a later frame that fails ends them, never the item)."""
    from audit.ingest.reader import ReadError, read_uri

    try:
        data = read_uri(uri)
    except ReadError as exc:
        return str(exc)
    if verify and item_id and not verify_item(data, item_id):
        return "content changed since the crawl (SHA-256 differs); crawl again"
    try:
        # JPEG: let libjpeg scale down in the DCT (1/2, 1/4, 1/8) to no less than the model's
        # input on each side; the shortest-side resize then starts from about a quarter of the
        # pixels. Same picture within JPEG's own rounding (tests/test_embed_decode.py: cosine
        # to the full decode >= 0.999), at about half the decode + resize time.
        px = spec.image_size
        decoded = decode_image(data, draft=(px, px))
        pixels = spec.pixels(decoded.image)
        if frames is not None and decoded.frames > 1:  # animations: the sampled later frames too
            frames += [(index, spec.pixels(img)) for index, img in later_frames(data, decoded.frames)]
        return pixels
    except DecodeError as exc:
        return f"undecodable image: {exc}"
    except MemoryError:
        return "undecodable image: image too large to preprocess (out of memory)"


# --- executors


class Executor(Protocol):
    workers: int

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class InlineExecutor:
    """Runs shards one after another in this process (tests, debugging, one GPU)."""

    workers = 0

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        for t in tasks:
            yield fn(t)

    def close(self) -> None:
        pass


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def warm_worker(spec: EmbedderRecipe) -> int:
    """Build (and cache) the embedder for ``spec`` in this worker before its first shard."""
    embedder_for(spec)
    return os.getpid()


class LocalExecutor:
    """A local process pool; each worker builds the model once (``embedder_for``) and runs
    whole shards with ``threads`` torch threads. At most ``window`` shards are in flight,
    so memory stays bounded however many items there are.

    The pool starts on a background thread: starting the first worker waits for the fork
    server to import its preloads (torch, open_clip: seconds), and the caller has its own
    imports and model to load meanwhile. Measured before this (2-core CPU, 250 images):
    the constructor held the caller 6.8-8.4 s, a third of the whole process."""

    def __init__(
        self, workers: int, *, threads: int = 1, window: int | None = None, warm: EmbedderRecipe | None = None
    ):
        self.workers = max(1, workers)
        self.window = window or self.workers * 2
        self._threads = threads
        self._warm = warm
        self._pool: ProcessPoolExecutor | None = None
        self._start_error: BaseException | None = None
        self._warming: list[Future] = []
        self._starter = threading.Thread(target=self._start, name="audit-pool-start", daemon=True)
        self._starter.start()

    def _start(self) -> None:
        try:
            ctx = multiprocessing.get_context("forkserver")
            # preloaded once in the fork server so each worker starts without importing them
            # (open_clip: the shipped recipe's library; a module that is not installed is
            # skipped); forkserver_exit last, so that the server leaves without tearing them down
            ctx.set_forkserver_preload(["torch", "open_clip", "audit.embed.executor", "audit.embed.forkserver_exit"])
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_worker_init, initargs=(self._threads,)
            )
            # ``warm``: start the processes and build their models now, while the caller loads
            # (and checks) its own copy: start-up costs the slower of the two, not their sum
            if self._warm is not None:
                self._warming = [self._pool.submit(warm_worker, self._warm) for _ in range(self.workers)]
        except BaseException as exc:  # noqa: BLE001 - handed to the caller on first use
            self._start_error = exc

    def started(self) -> bool:
        """Whether the pool has started (or failed to): ``pool`` would not wait."""
        return not self._starter.is_alive()

    @property
    def pool(self) -> ProcessPoolExecutor:
        """The started pool (waits for the start; re-raises what stopped it)."""
        self._starter.join()
        if self._start_error is not None:
            raise self._start_error
        assert self._pool is not None
        return self._pool

    def top_up(self, fn: Callable[[T], R], it: Iterator[T], inflight: set[Future]) -> bool:
        """Submit tasks from ``it`` until ``window`` are in flight; True once ``it`` is spent."""
        while len(inflight) < self.window:
            try:
                task = next(it)
            except StopIteration:
                return True
            inflight.add(self.pool.submit(fn, task))
        return False

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        inflight: set[Future] = set()
        it = iter(tasks)
        exhausted = False
        while True:
            if not exhausted:
                exhausted = self.top_up(fn, it, inflight)
            if not inflight:
                return
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()

    def close(self) -> None:
        self._starter.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class HybridExecutor:
    """CPU: this process embeds shards too, next to a pool of ``pool.workers`` processes.

    The calling process has already loaded (and checked) a model; running shards on it
    saves one model build and one torch import at start-up, which on a small machine is
    most of what stands between a run and the model's own rate. Between its own shards it
    hands the pool's finished results on, so commits never wait for long."""

    def __init__(self, pool: LocalExecutor):
        self.pool = pool
        self.workers = pool.workers + 1

    def map_unordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        inflight: set[Future] = set()
        it = iter(tasks)
        exhausted = False
        while True:
            # a pool still starting is not waited for: this process embeds meanwhile
            if not exhausted and self.pool.started():
                exhausted = self.pool.top_up(fn, it, inflight)
            done = {f for f in inflight if f.done()}
            inflight -= done
            for fut in done:
                yield fut.result()
            if not exhausted:
                try:
                    task = next(it)
                except StopIteration:
                    exhausted = True
                else:
                    yield fn(task)
                    continue
            if not inflight:
                return
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()

    def close(self) -> None:
        self.pool.close()
