"""Near-duplicate groups and semantic clusters: the archive-wide structure the flag stage
uses (cluster flags, "via cluster" provenance) and reviewers browse.

Nothing here is O(n²) in Python; the costs, with n items, d dimensions, k clusters:

* ``kmeans``: FAISS k-means (spherical, cosine) on a sample of at most
  ``max_points_per_centroid`` · k points, ``niter`` iterations: O(niter · min(n, 256k) · k · d),
  then one assignment pass over all n: O(n · k · d). k defaults to ``choose_k(n)`` ≈ √(n/2).
* ``pdq_pairs``: exact multi-index hashing for radius ≤ 15. A 256-bit PDQ hash is cut into 16
  chunks of 16 bits; two hashes within 15 bits agree exactly on at least one chunk
  (pigeonhole), so the candidates are pairs sharing a chunk value: per chunk one sort,
  O(n log n), plus O(n²/2¹⁷) candidate pairs for uniform hashes; each candidate is verified
  by XOR + popcount. Larger radii use FAISS ``IndexBinaryFlat.range_search``: exhaustive,
  O(n²) popcounts in SIMD C++ — fine for tens of thousands of hashes, not millions.
* ``cosine_pairs``: exact FAISS range search (``IndexFlatIP``, O(n² · d)) below ``exact_below``
  vectors; above, the cells of the (k-means) centroids: each vector is assigned to its
  ``nprobe`` nearest centroids, O(n · k · d), and each cell compares its home vectors with every
  vector assigned to it as blocked BLAS matrix products, O(n · nprobe · (n/k) · d). A
  near-duplicate pair is missed only when neither vector's home cell is among the other's
  ``nprobe`` nearest cells (rare: near duplicates sit next to each other).
* ``connected_components``: scipy.sparse.csgraph over the verified pairs: O(n + pairs).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from audit.embed.base import l2_normalize

__all__ = [
    "choose_k",
    "kmeans",
    "pdq_pairs",
    "cosine_pairs",
    "connected_components",
    "near_duplicate_groups",
    "nearest_to_centroid",
    "top_terms",
    "KMeansResult",
]

PDQ_MIH_MAX_RADIUS = 15  # 16 chunks x 16 bits: exact for distances <= 15
_SMALL_RUN = 64  # buckets up to this size are paired by offsets; larger ones by a FAISS range search


def choose_k(n: int, *, min_k: int = 1, max_k: int = 4096) -> int:
    """k for ``n`` items: round(√(n/2)), at least 1 and at most ``max_k``, never above n."""
    if n <= 1:
        return max(0, n)
    k = int(round(math.sqrt(n / 2)))
    return int(max(min_k, min(max_k, k, n)))


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32, unit length
    assign: np.ndarray  # (n,) int64 cluster of each vector
    score: np.ndarray  # (n,) float32 cosine to its centroid
    k: int
    niter: int
    seconds: dict = field(default_factory=dict)


def kmeans(
    vectors: np.ndarray,
    k: int | None = None,
    *,
    niter: int = 20,
    seed: int = 1234,
    max_points_per_centroid: int = 256,
    normalized: bool = False,
) -> KMeansResult:
    """Spherical FAISS k-means on (unit) vectors; deterministic for a given seed and input order."""

    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32) if normalized else l2_normalize(vectors)
    n, d = x.shape
    k = choose_k(n) if k is None else int(max(1, min(k, n)))
    times = {}
    if n == 0:
        return KMeansResult(np.zeros((0, d), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), 0, 0)
    t = time.perf_counter()
    if k == 1:
        centroids = l2_normalize(x.mean(axis=0, keepdims=True))
    else:
        km = faiss.Kmeans(
            d,
            k,
            niter=niter,
            seed=seed,
            spherical=True,
            verbose=False,
            max_points_per_centroid=max_points_per_centroid,
            min_points_per_centroid=1,
        )
        km.train(x)
        centroids = l2_normalize(km.centroids)
    times["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    index = faiss.IndexFlatIP(d)
    index.add(centroids)
    score, assign = index.search(x, 1)
    times["assign_s"] = time.perf_counter() - t
    return KMeansResult(centroids, assign[:, 0].astype(np.int64), score[:, 0], k, niter, times)


# ------------------------------------------------------------------------------ pairs


def _popcount_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of two (m, 4) uint64 arrays."""
    x = a ^ b
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=1, dtype=np.int64)
    pop8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)  # pragma: no cover
    return pop8[x.view(np.uint8)].sum(axis=1)  # pragma: no cover


def _bucket_pairs(
    values: np.ndarray, ids: np.ndarray, words: np.ndarray, radius: int, out_i: list, out_j: list
) -> None:
    """Verified pairs among ``ids`` that share the same chunk ``values``."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    lengths = np.diff(np.r_[starts, len(v)])
    run_of = np.repeat(np.arange(len(starts)), lengths)
    sorted_ids = ids[order]
    small_max = int(min(lengths.max(initial=1), _SMALL_RUN))
    for off in range(1, small_max):
        a = np.arange(len(v) - off)
        same = (run_of[a] == run_of[a + off]) & (lengths[run_of[a]] <= _SMALL_RUN)
        if not same.any():
            continue
        ia, ib = sorted_ids[a[same]], sorted_ids[a[same] + off]
        dist = _popcount_rows(words[ia], words[ib])
        keep = dist <= radius
        out_i.append(ia[keep])
        out_j.append(ib[keep])
    for r in np.flatnonzero(lengths > _SMALL_RUN):
        members = sorted_ids[starts[r] : starts[r] + lengths[r]]
        i, j = _flat_binary_pairs(words[members].view(np.uint8).reshape(-1, 32), radius)
        out_i.append(members[i])
        out_j.append(members[j])


def _flat_binary_pairs(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexBinaryFlat(256)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    index.add(codes)
    lims, _dist, ids = index.range_search(codes, int(radius) + 1)  # strictly below the radius
    rows = np.repeat(np.arange(len(codes)), np.diff(lims).astype(np.int64))
    ids = ids.astype(np.int64)
    keep = rows < ids
    return rows[keep], ids[keep]


def pdq_pairs(
    hashes: np.ndarray, max_distance: int = 15, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of rows of an (n, 32) uint8 PDQ array within ``max_distance`` bits.

    ``valid``: rows to consider (e.g. PDQ quality ≥ 50); others never pair.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint8).reshape(-1, 32)
    rows = np.arange(len(hashes)) if valid is None else np.flatnonzero(valid)
    if len(rows) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if max_distance > PDQ_MIH_MAX_RADIUS:
        i, j = _flat_binary_pairs(hashes[rows], max_distance)
        return rows[i], rows[j]
    words = np.ascontiguousarray(hashes).view(np.uint64)  # (n, 4), all rows (ids index it)
    chunks = np.ascontiguousarray(hashes[rows]).view(np.uint16)  # (m, 16)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    for c in range(chunks.shape[1]):
        _bucket_pairs(chunks[:, c], rows, words, max_distance, out_i, out_j)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i = np.concatenate(out_i).astype(np.int64)
    j = np.concatenate(out_j).astype(np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key = np.unique(lo * len(hashes) + hi)
    return key // len(hashes), key % len(hashes)


def cosine_pairs(
    vectors: np.ndarray,
    min_cosine: float,
    *,
    exact_below: int = 20_000,
    centroids: np.ndarray | None = None,
    nprobe: int = 2,
    normalized: bool = False,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) with cosine ≥ ``min_cosine``, and their cosines.

    Exact (FAISS ``IndexFlatIP`` range search) below ``exact_below`` vectors. Above, cells of
    the given (k-means) ``centroids`` (computed when not given): every vector is assigned to
    its ``nprobe`` nearest centroids (the first is its home cell), and each cell compares its
    home vectors with every vector assigned to it, as blocked matrix products (BLAS), so a
    near-duplicate pair is found when one lies in the other's home cell or among its
    ``nprobe`` nearest cells. Cost O(n·k·d) + O(n·nprobe·(n/k)·d) for balanced cells.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32) if normalized else l2_normalize(vectors)
    n, d = x.shape if x.ndim == 2 else (0, 0)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if n < 2:
        return empty
    out_i, out_j, out_s = [], [], []
    if n < exact_below:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        radius = float(np.nextafter(np.float32(min_cosine), np.float32(-2)))  # faiss IP range: score > radius
        for start in range(0, n, 65536):
            q = x[start : start + 65536]
            lims, scores, ids = index.range_search(q, radius)
            rows = np.repeat(np.arange(start, start + len(q)), np.diff(lims).astype(np.int64))
            ids = ids.astype(np.int64)
            keep = (rows < ids) & (scores >= min_cosine)
            out_i.append(rows[keep])
            out_j.append(ids[keep])
            out_s.append(scores[keep])
        return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    if centroids is None:
        centroids = kmeans(x, choose_k(n), niter=10, normalized=True).centroids
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    k = len(centroids)
    probe = int(max(1, min(nprobe, k)))
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    _, cells = quantizer.search(x, probe)  # (n, probe), home cell first
    home = cells[:, 0]
    h_order = np.argsort(home, kind="stable")
    h_bounds = np.searchsorted(home[h_order], np.arange(k + 1))
    flat_cells = cells.reshape(-1)
    flat_rows = np.repeat(np.arange(n), probe)
    a_order = np.argsort(flat_cells, kind="stable")
    a_bounds = np.searchsorted(flat_cells[a_order], np.arange(k + 1))
    for c in range(k):
        home_rows = h_order[h_bounds[c] : h_bounds[c + 1]]
        if len(home_rows) == 0:
            continue
        cand = np.unique(flat_rows[a_order[a_bounds[c] : a_bounds[c + 1]]])  # every vector probing c (home ones too)
        xc = x[cand]
        for b in range(0, len(home_rows), block):
            rows = home_rows[b : b + block]
            sim = x[rows] @ xc.T
            r, col = np.nonzero(sim >= min_cosine)
            i, j = rows[r], cand[col]
            keep = i != j
            out_i.append(np.minimum(i[keep], j[keep]))
            out_j.append(np.maximum(i[keep], j[keep]))
            out_s.append(sim[r[keep], col[keep]])
    if not out_i:
        return empty
    i, j, sc = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    key, first = np.unique(i * n + j, return_index=True)
    return key // n, key % n, sc[first]


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` nodes given undirected edges (i, j)."""
    if n == 0:
        return np.zeros(0, np.int64)
    from scipy.sparse import coo_matrix  # a declared dependency; loaded only when clustering
    from scipy.sparse.csgraph import connected_components as cc

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = cc(graph, directed=False)
    return labels.astype(np.int64)


def near_duplicate_groups(
    n: int,
    *,
    pdq: np.ndarray | None = None,
    pdq_valid: np.ndarray | None = None,
    pdq_max_distance: int = 15,
    vectors: np.ndarray | None = None,
    min_cosine: float | None = 0.97,
    centroids: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Component label per item (items alone keep their own label) and edge counts per source."""
    edges_i, edges_j = [], []
    stats = {}
    if pdq is not None and len(pdq):
        i, j = pdq_pairs(pdq, pdq_max_distance, pdq_valid)
        edges_i.append(i)
        edges_j.append(j)
        stats["pdq_pairs"] = int(len(i))
    if vectors is not None and len(vectors) and min_cosine is not None:
        i, j, _ = cosine_pairs(vectors, min_cosine, centroids=centroids)
        edges_i.append(i)
        edges_j.append(j)
        stats["cosine_pairs"] = int(len(i))
    if edges_i:
        i, j = np.concatenate(edges_i), np.concatenate(edges_j)
    else:
        i = j = np.zeros(0, np.int64)
    return connected_components(n, i, j), stats


def nearest_to_centroid(vectors: np.ndarray, members: np.ndarray, centroid: np.ndarray, m: int = 3) -> np.ndarray:
    """Rows of the ``m`` members closest to ``centroid`` (exemplars of a cluster)."""
    if len(members) == 0:
        return members
    scores = vectors[members] @ centroid
    top = np.argsort(-scores, kind="stable")[:m]
    return members[top]


_WORD = re.compile(r"[a-z][a-z'-]{2,}")
STOP_WORDS = frozenset(
    "the and with for from that this are was were his her its their into onto over under "
    "very best high quality masterpiece detailed highly photo picture image drawing background "
    "an of on in a by at as is it to 4k 8k hd".split()
)


def top_terms(prompts: Iterable[str | None], n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` most frequent prompt words (counted once per prompt), stop words left out."""
    counts: Counter[str] = Counter()
    for p in prompts:
        if p:
            counts.update(set(w for w in _WORD.findall(p.lower()) if w not in STOP_WORDS))
    return [(w, c) for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def group_members(labels: np.ndarray) -> list[np.ndarray]:
    """Members of each label with at least two members, largest first."""
    if len(labels) == 0:
        return []
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
    ends = np.r_[starts[1:], len(sl)]
    groups = [order[s:e] for s, e in zip(starts, ends) if e - s >= 2]
    groups.sort(key=lambda g: (-len(g), int(g.min())))
    return groups


def sequence_or_empty(x: Sequence | None) -> Sequence:
    return x if x is not None else ()
