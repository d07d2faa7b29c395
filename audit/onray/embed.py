"""``RayEmbedExecutor``: the embed shards as Ray Data pipelines.

The driver's ``EmbedRunner`` is unchanged: it hands out ``ShardTask``s and commits each
``ShardResult`` in one transaction, exactly as with the local process pool. This executor
takes the shards in *waves* (up to ``wave_items`` images, so the driver's memory stays
bounded however large the catalog), runs each wave as one Ray Data dataset and streams
the results back as shards finish (order not preserved, like ``map_unordered``):

* CPU (``--device cpu``): ``from_items(shards) -> map_batches(ShardWorker)`` on an actor
  pool, one actor per ``threads`` CPUs; each actor builds the model once and runs whole
  shards (read + decode + CLIP), as a local worker process does.
* GPU (``--device cuda``): read + decode + preprocess run as CPU tasks
  (``map_batches(decode_shard, num_cpus=1)``), CLIP in a pool of actors with
  ``num_gpus=1`` each (one per GPU in the cluster), fp16 autocast, batches of 256 images,
  fed with model-ready uint8 pixels through the object store. The decode stage is what
  keeps a GPU busy: ViT-B/32 wants ~2,000 decoded images a second.

Both embed what the local executors embed: an animation's or video's sampled later frames
(``audit.animation``) go back in the shard's result (vector space ``frame``, keys
``<item_id>#<frame>``), which the driver commits before the image vectors.

Ray retries (Ray Data's defaults): a task that loses its worker is re-run, an actor that
dies is restarted and its shard re-run (``max_restarts=-1``, ``max_task_retries=-1``). A re-run shard
commits the same keys again, which ``VectorStore.put_batch`` treats as a no-op replace, so
nothing is lost or duplicated.

``AUDIT_RAY_KILL_ONCE`` (tests only): a marker path; the first worker to run its second
shard while the marker does not exist creates it and SIGKILLs its own process.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from dataclasses import replace
from typing import Callable, Iterable, Iterator

import numpy as np

from audit.animation import frame_key
from audit.embed.executor import ShardResult, ShardTask, decode_item
from audit.errors import EnvironmentProblem

WAVE_ITEMS = 200_000  # images per dataset: ~40 MB of uris held by the driver
CHECK_URIS = 64  # uris of the first wave fingerprinted on every node before any work
RETRIES = 4
KILL_ONCE_ENV = "AUDIT_RAY_KILL_ONCE"


def _maybe_kill_self(calls: int) -> None:
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker and calls >= 1:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def _node_spec(spec):
    """The spec as this node runs it: bf16 chosen by the driver's check is kept only where
    this CPU has native bf16 (elsewhere it would be emulated, many times slower)."""
    if spec.precision == "bf16" and not str(spec.device).startswith("cuda"):
        from audit.embed.openclip import cpu_supports_bf16

        if not cpu_supports_bf16():
            return replace(spec, precision="fp32")
    return spec


class ShardWorker:
    """Ray Data actor (CPU): runs whole shards with ``fn`` (``run_shard``)."""

    def __init__(self, fn: Callable[[ShardTask], ShardResult], threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.fn = fn
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        out = []
        for blob in batch["task"]:
            _maybe_kill_self(self.calls)
            task: ShardTask = pickle.loads(blob)
            task = replace(task, spec=_node_spec(task.spec))
            out.append(pickle.dumps(self.fn(task), protocol=5))
            self.calls += 1
        return {"result": out}


def decode_shard(batch: dict, image_spec) -> dict:
    """Ray Data CPU task (GPU pipeline): read + decode + preprocess one shard's images to
    uint8 pixels; prompt shards pass through."""
    out = []
    for blob in batch["task"]:
        task: ShardTask = pickle.loads(blob)
        t0 = time.perf_counter()
        keys, pixels, skips = [], [], []
        frame_keys, frame_pixels = [], []
        if task.kind == "image":
            for key, uri in zip(task.keys, task.payloads):
                later: list[tuple[int, np.ndarray]] = []
                got = decode_item(uri, key, image_spec, verify=task.verify_sha256, frames=later)
                if isinstance(got, str):
                    skips.append((key, got))
                else:
                    keys.append(key)
                    pixels.append(got)
                    # animations and videos: their sampled later frames, as run_shard embeds them
                    frame_keys += [frame_key(key, index) for index, _ in later]
                    frame_pixels += [p for _, p in later]
        size = image_spec.image_size
        stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
        frames = (frame_keys, np.stack(frame_pixels)) if frame_pixels else ([], None)
        out.append(pickle.dumps((task, keys, stacked, skips, time.perf_counter() - t0, frames), protocol=5))
    return {"decoded": out}


class EncodeWorker:
    """Ray Data actor (GPU pipeline): CLIP on decoded pixels, one GPU per actor. Ray sets
    ``CUDA_VISIBLE_DEVICES`` to the actor's GPU, so ``cuda`` is that GPU."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        from audit.embed.process_cache import embedder_for

        out = []
        for blob in batch["decoded"]:
            _maybe_kill_self(self.calls)
            task, keys, pixels, skips, decode_s, (frame_keys, frame_pixels) = pickle.loads(blob)
            emb = embedder_for(_node_spec(task.spec))
            t1 = time.perf_counter()
            if task.kind == "prompt":
                vecs = emb.embed_texts(list(task.payloads))
                keys = list(task.keys)
            elif len(pixels):
                vecs = emb.embed_pixels(pixels)
            else:
                vecs = np.zeros((0, emb.dim), np.float32)
            frame_vecs = None
            if frame_pixels is not None:  # in the shard's batch size, as run_shard does
                bs = max(1, task.batch_size)
                frame_vecs = np.concatenate(
                    [emb.embed_pixels(frame_pixels[i : i + bs]) for i in range(0, len(frame_pixels), bs)]
                )
            timings = {"read_decode_s": decode_s, "encode_s": time.perf_counter() - t1}
            out.append(
                pickle.dumps(
                    ShardResult(
                        task.shard_id,
                        task.kind,
                        list(keys),
                        vecs,
                        list(skips),
                        timings,
                        os.getpid(),
                        list(frame_keys),
                        frame_vecs,
                    ),
                    protocol=5,
                )
            )
            self.calls += 1
        return {"result": out}


class RayEmbedExecutor:
    """The ``Executor`` protocol (``workers``, ``map_unordered``, ``close``) on Ray Data."""

    def __init__(
        self,
        ray,
        *,
        device: str,
        image_spec,
        threads: int = 1,
        actors: int | None = None,
        wave_items: int = WAVE_ITEMS,
        split_decode: bool | None = None,
    ):
        self.ray = ray
        self.cuda = str(device).startswith("cuda")
        self.image_spec = image_spec
        self.wave_items = max(1, wave_items)
        self.split_decode = self.cuda if split_decode is None else split_decode
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 1))
        if self.cuda:
            gpus = int(res.get("GPU", 0))
            if gpus < 1:
                raise EnvironmentProblem(
                    "--device cuda with --executor ray, but the Ray cluster has no GPU "
                    "(start GPU nodes with `ray start --num-gpus N`, or use --device cpu)"
                )
            if cpus <= gpus:  # each GPU actor holds a CPU; decoding needs the others
                raise EnvironmentProblem(
                    f"--device cuda with --executor ray needs more CPUs than GPUs for decoding "
                    f"(the cluster has {cpus} CPUs, {gpus} GPUs); ~8-16 CPUs per GPU keep ViT-B/32 busy"
                )
            self.threads = 1
            self.workers = actors or gpus
        elif self.split_decode:  # the GPU pipeline's shape on CPUs: half the CPUs decode
            self.threads = 1
            self.workers = actors or max(1, cpus // 2)
        else:
            self.threads = max(1, threads)
            self.workers = actors or max(1, cpus // self.threads)
        self._checked = False
        self.waves = 0

    def map_unordered(
        self, fn: Callable[[ShardTask], ShardResult], tasks: Iterable[ShardTask]
    ) -> Iterator[ShardResult]:
        it = iter(tasks)
        while True:
            wave = self._take_wave(it)
            if not wave:
                return
            if not self._checked:
                from audit.onray.nodes import check_visible

                uris = [u for t in wave if t.kind == "image" for u in t.payloads[:4]][:CHECK_URIS]
                check_visible(self.ray, uris, what="image")  # before any work, on every node
                self._checked = True
            self.waves += 1
            yield from self._run_wave(fn, wave)

    def _take_wave(self, it: Iterator[ShardTask]) -> list[ShardTask]:
        wave, n = [], 0
        for task in it:
            wave.append(task)
            n += len(task.keys)
            if n >= self.wave_items:
                break
        return wave

    def _run_wave(self, fn, wave: list[ShardTask]) -> Iterator[ShardResult]:
        ray = self.ray
        from ray.data import ActorPoolStrategy

        items = [{"task": pickle.dumps(t, protocol=5)} for t in wave]
        ds = ray.data.from_items(items, override_num_blocks=len(items))  # one shard per block
        size = max(1, min(self.workers, len(items)))
        # Retries are Ray Data's defaults: actors restart and re-run their shard without limit
        # (max_restarts=-1, max_task_retries=-1), tasks are retried on worker death.
        env = {"env_vars": {KILL_ONCE_ENV: os.environ[KILL_ONCE_ENV]}} if os.environ.get(KILL_ONCE_ENV) else None
        actor_args = {"runtime_env": env} if env else {}
        if self.split_decode:
            ds = ds.map_batches(
                decode_shard,
                batch_size=1,
                batch_format="numpy",
                fn_kwargs={"image_spec": self.image_spec},
                num_cpus=1,
                **actor_args,
            )
            ds = ds.map_batches(
                EncodeWorker,
                batch_size=1,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=size),
                fn_constructor_kwargs={"threads": self.threads},
                num_cpus=1,
                num_gpus=1 if self.cuda else 0,
                **actor_args,
            )
        else:
            ds = ds.map_batches(
                ShardWorker,
                batch_size=1,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=size),
                fn_constructor_kwargs={"fn": fn, "threads": self.threads},
                num_cpus=self.threads,
                **actor_args,
            )
        del items
        for row in ds.iter_rows():
            yield pickle.loads(row["result"])

    def close(self) -> None:
        pass
