"""Build and update the FAISS index of one model and space from the vector store.

A full build streams the vectors once, in key order. Keys are SHA-256 digests (item ids,
prompt keys), so key order is a uniformly random order and the first ``train_n`` vectors
are a random training sample: no second pass is needed. While streaming, the exact top-10
of a few hundred tuning queries is kept, so the search parameter (``nprobe`` for IVF,
``efSearch`` for HNSW) is then tuned against true exact results: the smallest value that
reaches ``recall_target`` recall@10.

Tuning queries are stored vectors with noise added (near, looser and far) plus, when the
model has them, vectors of the *other* space (prompt vectors for the image index and the
other way round), which stand in for text queries: CLIP's text and image vectors lie in
different regions of the sphere, and IVF needs more probes for queries from afar.

An update adds the vectors the index lacks (ids continue from ``ntotal``). It rebuilds
instead when the index family chosen for the new size differs (flat → IVF at 50,000
vectors, or another code size under the memory budget), when an IVF index has grown
beyond ``growth`` × the size it was trained at, when vectors disappeared from the store,
or when the files on disk do not match their manifest.

Not done: removing vectors of items that are no longer present anywhere (their rows stay
in the catalog with ``present = 0``, and searches report them as not present).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from audit.catalog.vectors import SPACES, VectorStore
from audit.embed.base import l2_normalize
from audit.index.choice import DEFAULT_MEMORY_BUDGET, FLAT_BELOW, IndexSpec, choose_index, parse_size
from audit.index.files import IndexCorrupt, Manifest, encode_keys, load_index, read_manifest, save_index
from audit.timeutil import utc_now

K = 10
Progress = Callable[[str, int], None]


@dataclass
class SpaceResult:
    model_key: str
    space: str
    action: str  # built | rebuilt | updated | unchanged | empty
    n: int = 0
    added: int = 0
    index: str = ""  # FAISS factory string
    params: dict = field(default_factory=dict)
    tuned_recall: float | None = None
    estimated_bytes: int = 0
    fits_budget: bool = True
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IndexSummary:
    results: list[SpaceResult] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "indexes": [r.to_dict() for r in self.results],
            "built": sum(r.action in ("built", "rebuilt") for r in self.results),
            "updated": sum(r.action == "updated" for r in self.results),
            "unchanged": sum(r.action == "unchanged" for r in self.results),
            "vectors": sum(r.n for r in self.results),
            "added": sum(r.added for r in self.results),
            "duration_s": round(self.duration_s, 3),
        }


class IndexBuilder:
    def __init__(
        self,
        index_dir: Path,
        vectors: VectorStore,
        *,
        memory_budget: int | str | None = None,
        flat_below: int = FLAT_BELOW,
        index_type: str | None = None,
        rebuild: bool = False,
        verify: bool = False,
        growth: float = 4.0,
        recall_target: float = 0.97,
        tune_queries: int = 256,
        batch: int = 65536,
        kmeans_iterations: int = 10,
        seed: int = 1234,
        progress: Progress | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.vs = vectors
        # None: keep what the index was built with (else 4 GiB / automatic choice)
        self.budget_given = None if memory_budget is None else parse_size(memory_budget)
        self.budget = self.budget_given or DEFAULT_MEMORY_BUDGET
        self.flat_below = flat_below
        self.index_type_given = index_type
        self.index_type = index_type
        self.rebuild = rebuild
        self.verify = verify
        self.growth = growth
        self.recall_target = recall_target
        self.tune_queries = tune_queries
        self.batch = batch
        self.kmeans_iterations = kmeans_iterations
        self.seed = seed
        self.progress = progress or (lambda event, n: None)

    def choose(self, n: int, dim: int) -> IndexSpec:
        return choose_index(n, dim, self.budget, flat_below=self.flat_below, index_type=self.index_type)

    # --- entry point
    def update(self, model_key: str, space: str, dim: int) -> SpaceResult:
        assert space in SPACES, space
        t0 = time.perf_counter()
        n_store = self.vs.count(model_key, space)
        if n_store == 0:
            return SpaceResult(model_key, space, "empty", reason="no vectors (run `audit embed`)")
        reason = ""
        loaded = None
        self._settle(model_key, space)
        if not self.rebuild:
            try:
                loaded = load_index(self.index_dir, model_key, space, verify=self.verify)
            except IndexCorrupt as exc:
                reason = f"damaged index rebuilt: {exc}"
        else:
            reason = "rebuild requested"
        if loaded is not None:
            manifest, index, keys = loaded
            result = self._grow(model_key, space, dim, manifest, index, np.asarray(keys))
            if isinstance(result, SpaceResult):
                result.seconds = round(time.perf_counter() - t0, 3)
                return result
            reason = result  # why it must be rebuilt
        action = "rebuilt" if (loaded is not None or reason) else "built"
        result = self._build(model_key, space, dim, n_store)
        result.action = action
        if reason:
            result.reason = f"{reason}; {result.reason}"
        result.seconds = round(time.perf_counter() - t0, 3)
        return result

    def _settle(self, model_key: str, space: str) -> None:
        """Budget and index type for this index: as given, else as last built with."""
        try:
            previous = read_manifest(self.index_dir, model_key, space)
        except IndexCorrupt:
            previous = None
        spec = previous.spec if previous else {}
        self.budget = self.budget_given or spec.get("memory_budget") or DEFAULT_MEMORY_BUDGET
        given = self.index_type_given
        self.index_type = (None if given.lower() == "auto" else given) if given else spec.get("index_type")

    def _spec_record(self, spec: IndexSpec) -> dict:
        return {**spec.to_dict(), "memory_budget": self.budget, "index_type": self.index_type}

    # --- incremental
    def _grow(self, model_key, space, dim, manifest: Manifest, index, keys: np.ndarray) -> SpaceResult | str:
        store_keys = self._store_keys(model_key, space)
        present = np.isin(store_keys, keys)
        new_keys = store_keys[~present]
        gone = len(keys) - int(present.sum())
        if gone:
            return f"{gone:,} indexed vectors are no longer in the store"
        if manifest.dim != dim:
            return f"dimension changed ({manifest.dim} → {dim})"
        old_family = manifest.spec.get("family")
        total = manifest.n + len(new_keys)
        spec = self.choose(total, dim)
        if spec.family != old_family:
            return f"{total:,} vectors call for {spec.factory} instead of {manifest.spec.get('factory')}"
        if spec.kind == "ivf" and total > self.growth * max(manifest.built_n, 1):
            return f"grew from {manifest.built_n:,} to {total:,} vectors since training"
        if not len(new_keys):
            return SpaceResult(
                model_key,
                space,
                "unchanged",
                n=manifest.n,
                index=manifest.spec.get("factory", ""),
                params=manifest.params,
                tuned_recall=manifest.tuned_recall,
                estimated_bytes=manifest.spec.get("estimated_bytes", 0),
                fits_budget=manifest.spec.get("fits_budget", True),
                reason="up to date",
            )
        self.progress("listed", len(new_keys))
        added_keys = []
        for i in range(0, len(new_keys), self.batch):
            chunk = [k.decode() for k in new_keys[i : i + self.batch]]
            got, vecs = self.vs.get(model_key, space, chunk)
            if got:
                index.add(_as_matrix(vecs, dim))
                added_keys.extend(got)
            self.progress("done", len(chunk))
        all_keys = np.concatenate([encode_keys(keys), encode_keys(added_keys)])
        manifest.updated = utc_now()
        manifest.spec = {
            **manifest.spec,
            "estimated_bytes": int(total * spec.bytes_per_vector),
            "fits_budget": spec.fits_budget,
            "memory_budget": self.budget,
            "index_type": self.index_type,
        }
        manifest = save_index(self.index_dir, manifest, index, all_keys)
        return SpaceResult(
            model_key,
            space,
            "updated",
            n=manifest.n,
            added=len(added_keys),
            index=manifest.spec["factory"],
            params=manifest.params,
            tuned_recall=manifest.tuned_recall,
            estimated_bytes=manifest.spec["estimated_bytes"],
            fits_budget=spec.fits_budget,
            reason=f"added {len(added_keys):,} vectors",
        )

    def _store_keys(self, model_key: str, space: str) -> np.ndarray:
        parts = [encode_keys(keys) for keys in self.vs.iter_keys(model_key, space)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype="S64")

    # --- full build
    def _build(self, model_key: str, space: str, dim: int, n_store: int) -> SpaceResult:
        import faiss

        spec = self.choose(n_store, dim)
        index = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        if spec.kind == "ivf":
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.niter = self.kmeans_iterations
            ivf.cp.seed = self.seed
            ivf.cp.max_points_per_centroid = 256
        self.progress("listed", n_store)
        batches = self._batches(model_key, space, dim)
        head: list[tuple[list[str], np.ndarray]] = []
        have = 0
        need = max(spec.train_n, self.tune_queries)
        for keys, vecs in batches:
            head.append((keys, vecs))
            have += len(keys)
            if have >= need:
                break
        sample = np.concatenate([v for _, v in head]) if head else np.zeros((0, dim), np.float32)
        if spec.train_n:
            index.train(np.ascontiguousarray(sample[: spec.train_n]))
        queries = self._tuning_queries(sample, model_key, space, dim)
        truth = _RunningTopK(queries, K)
        all_keys: list[np.ndarray] = []

        def stream() -> Iterator[tuple[list[str], np.ndarray]]:
            yield from head
            yield from batches

        for keys, vecs in stream():
            truth.update(vecs, index.ntotal)
            index.add(vecs)
            all_keys.append(encode_keys(keys))
            self.progress("done", len(keys))
        params, recall = self._tune(index, spec, queries, truth.ids())
        now = utc_now()
        manifest = Manifest(
            model_key=model_key,
            space=space,
            dim=dim,
            n=int(index.ntotal),
            generation=0,
            index_file="",
            keys_file="",
            index_size=0,
            index_sha256="",
            keys_size=0,
            keys_sha256="",
            spec=self._spec_record(spec),
            params=params,
            built_n=int(index.ntotal),
            tuned_recall=recall,
            built=now,
            updated=now,
        )
        keys_arr = np.concatenate(all_keys) if all_keys else np.zeros(0, dtype="S64")
        manifest = save_index(self.index_dir, manifest, index, keys_arr)
        return SpaceResult(
            model_key,
            space,
            "built",
            n=manifest.n,
            added=manifest.n,
            index=spec.factory,
            params=params,
            tuned_recall=recall,
            estimated_bytes=spec.estimated_bytes,
            fits_budget=spec.fits_budget,
            reason=spec.reason,
        )

    def _batches(self, model_key: str, space: str, dim: int) -> Iterator[tuple[list[str], np.ndarray]]:
        for keys, vecs in self.vs.iter_all(model_key, space, batch=self.batch):
            yield keys, _as_matrix(vecs, dim)

    def _tuning_queries(self, sample: np.ndarray, model_key: str, space: str, dim: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        parts = []
        if len(sample):
            m = min(len(sample), self.tune_queries)
            base = sample[rng.choice(len(sample), m, replace=False)]
            # a third close to a stored vector (noise norm 0.5), a third looser (1.2: cosine ~0.65),
            # a third far (2.5: cosine ~0.4, where text queries of a CLIP land)
            scale = np.array([0.5, 1.2, 2.5])[np.arange(m) % 3][:, None] / np.sqrt(dim)
            parts.append(l2_normalize(base + scale * rng.normal(size=base.shape)))
        other = "prompt" if space == "image" else "image"
        for _, vecs in self.vs.iter_all(model_key, other, batch=max(self.tune_queries // 2, 1)):
            if vecs.shape[1] == dim:
                parts.append(l2_normalize(vecs))
            break
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, dim), np.float32)

    def _tune(self, index, spec: IndexSpec, queries: np.ndarray, truth: np.ndarray) -> tuple[dict, float | None]:
        import faiss

        if spec.kind == "flat" or not len(queries):
            return {}, 1.0 if spec.kind == "flat" else None
        if spec.kind == "ivf":
            name, values = "nprobe", _powers(1, spec.nlist) + [spec.nlist]
        elif spec.kind == "hnsw":
            name, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
        else:  # pragma: no cover - custom factories keep their defaults
            return {}, None
        ps = faiss.ParameterSpace()
        best = (values[0], -1.0)
        prev = -1.0
        for v in dict.fromkeys(values):
            ps.set_index_parameter(index, name, v)
            _, got = index.search(queries, K)
            r = recall_at(got, truth)
            if r > best[1] + 1e-9:
                best = (v, r)
            if r >= self.recall_target:
                best = (v, r)
                break
            if v >= 64 and r - prev < 0.001:  # converged below target (lossy codes): stop paying
                break
            prev = r
        ps.set_index_parameter(index, name, best[0])
        return {name: int(best[0])}, round(float(best[1]), 4)


class _RunningTopK:
    """Exact top-k inner products of ``queries`` over vectors seen batch by batch."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = queries
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.idx = np.full((len(queries), k), -1, dtype=np.int64)

    def update(self, vecs: np.ndarray, offset: int) -> None:
        if not len(self.q) or not len(vecs):
            return
        s = self.q @ vecs.T
        kk = min(self.k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([self.scores, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([self.idx, part + offset], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(cand_s, order, 1)
        self.idx = np.take_along_axis(cand_i, order, 1)

    def ids(self) -> np.ndarray:
        return self.idx


def recall_at(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true neighbours (ignoring -1 padding) found in ``got``."""
    hits, total = 0, 0
    for g, t in zip(got, truth):
        t = t[t >= 0]
        if not len(t):
            continue
        hits += len(np.intersect1d(g[g >= 0], t))
        total += len(t)
    return hits / total if total else 1.0


def _powers(lo: int, hi: int) -> list[int]:
    out, v = [], lo
    while v < hi:
        out.append(v)
        v *= 2
    return out


def _as_matrix(vecs: np.ndarray, dim: int) -> np.ndarray:
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[1] != dim:
        raise IndexCorrupt(f"stored vectors have shape {vecs.shape}, the model's dimension is {dim}")
    return vecs


def build_all(builder: IndexBuilder, models: Iterable[dict], spaces: Iterable[str] = SPACES) -> IndexSummary:
    t0 = time.perf_counter()
    summary = IndexSummary()
    for m in models:
        for space in spaces:
            summary.results.append(builder.update(m["key"], space, int(m["dim"])))
    summary.duration_s = time.perf_counter() - t0
    return summary
