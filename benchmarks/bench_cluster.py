"""Benchmark: semantic clustering and near-duplicate grouping at archive scale.

    python benchmarks/bench_cluster.py                # 1,000,000 x 512-d vectors, 1,000,000 PDQ hashes
    python benchmarks/bench_cluster.py --n 100000     # smaller
    python benchmarks/bench_cluster.py --purity-only  # cluster purity on toy-world images only

Cluster size rule (what ``audit flag`` uses, ``audit.flag.clusters.size_k``): k = n /
``cluster_size`` (25), at most ``cluster_max_k`` (4096). Purity: toy-world images (24
colour-shape classes, 3 backgrounds, random size and position) embedded with the shipped
toy-shapes CLIP, clustered with the flag stage's k-means for several cluster sizes; purity =
share of items in their cluster's majority colour-shape class. Cost: the flag stage's path at
``--n`` vectors: k-means trained on a ``cluster_sample`` (200,000) sample, then every vector
joining its nearest centroid in batches of ``batch_size`` (20,000).

Data: random unit vectors (Gaussian, normalised) and random 256-bit hashes, with planted
near duplicates (``--planted`` pairs: vectors with noise at cosine ~0.99, hashes with up to 8
flipped bits) so the grouping has something to find; recall of the planted pairs is reported.
Each step runs the code ``audit flag`` runs (``audit.cluster``). Per step: wall time and peak
resident memory above the level before the step (sampled every 20 ms), plus the complexity.
Prints a table and writes ``benchmarks/results/bench_cluster.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import cluster  # noqa: E402


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    def __init__(self, interval: float = 0.02):
        self.interval = interval

    def __enter__(self):
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())


def toy_purity(n_items: int, sizes=(400, 160, 100, 50, 25, 10)) -> dict:
    """Purity of the flag stage's k-means on toy-world images for several cluster sizes."""
    from audit.embed import toyworld as tw
    from audit.embed.openclip import load_embedder
    from audit.flag import clusters as flag_clusters

    emb = load_embedder("toy-shapes")
    scenes = tw.random_scenes(11, n_items)
    t = time.perf_counter()
    x = np.concatenate(
        [emb.embed_images([tw.draw(s, 64) for s in scenes[i : i + 256]]) for i in range(0, n_items, 256)]
    )
    embed_s = time.perf_counter() - t
    labels = np.array([s.label for s in scenes])
    rows = []
    for size in sizes:
        k = flag_clusters.size_k(n_items, size, 4096)
        got, _ = flag_clusters.assign(flag_clusters.train(x, k, 1234), x)
        majority = sum(np.bincount(labels[got == c]).max() for c in np.unique(got))
        counts = np.bincount(got, minlength=k)
        rows.append(
            {
                "cluster_size": size,
                "k": k,
                "purity": round(float(majority / n_items), 4),
                "largest_cluster": int(counts.max()),
                "largest_share": round(float(counts.max() / n_items), 4),
            }
        )
        print(
            f"  purity: cluster_size {size:>4} k {k:>4}  purity {rows[-1]['purity']:.3f}  "
            f"largest {rows[-1]['largest_cluster']} ({rows[-1]['largest_share']:.1%})",
            flush=True,
        )
    return {"items": n_items, "classes": 24, "embed_s": round(embed_s, 1), "by_cluster_size": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--planted", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=None, help="clusters (default: choose_k(n) = round(sqrt(n/2)))")
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--min-cosine", type=float, default=0.98)
    ap.add_argument("--pdq-distance", type=int, default=15)
    ap.add_argument("--nprobe", type=int, default=2)
    ap.add_argument("--purity-items", type=int, default=4000)
    ap.add_argument("--purity-only", action="store_true")
    ap.add_argument(
        "--flag-path-only",
        action="store_true",
        help="purity and the flag stage's cluster path only (skip the near-duplicate steps)",
    )
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_cluster.json"))
    args = ap.parse_args()
    import faiss

    n, d = args.n, args.dim
    rng = np.random.default_rng(0)
    steps: list[dict] = []

    def record(name, m, complexity, **extra):
        row = {
            "step": name,
            "seconds": round(m.seconds, 2),
            "peak_rss_above_start_mb": round((m.peak - m.start) / 2**20, 1),
            "peak_rss_mb": round(m.peak / 2**20, 1),
            "complexity": complexity,
            **extra,
        }
        steps.append(row)
        print(
            f"  {name:<28} {row['seconds']:>8.2f} s  +{row['peak_rss_above_start_mb']:>8.1f} MB  {complexity}",
            flush=True,
        )

    print(f"bench_cluster: n={n:,} d={d} planted={args.planted:,} threads={faiss.omp_get_max_threads()}", flush=True)
    # ---------------------------------------------------------------- vectors
    with PeakRSS() as m:
        x = np.empty((n, d), dtype=np.float32)
        for s in range(0, n, 100_000):
            blk = rng.standard_normal((min(100_000, n - s), d), dtype=np.float32)
            x[s : s + len(blk)] = blk / np.linalg.norm(blk, axis=1, keepdims=True)
        perm = rng.permutation(n)[: 2 * args.planted]  # disjoint originals and copies
        a, b = perm[: args.planted], perm[args.planted :]
        noise = rng.standard_normal((len(a), d), dtype=np.float32) * (0.1 / np.sqrt(d))
        x[b] = x[a] + noise
        x[b] /= np.linalg.norm(x[b], axis=1, keepdims=True)
    record("generate vectors", m, "O(n·d)")

    purity = toy_purity(args.purity_items)
    if args.purity_only:
        print(json.dumps(purity, indent=2))
        return
    # ---------------------------------------------------------------- the flag stage's cluster path
    from audit.flag import clusters as flag_clusters
    from audit.flag.runner import FlagOptions

    opts = FlagOptions()
    k_rule = flag_clusters.size_k(n, opts.cluster_size, opts.cluster_max_k)
    sample = x[np.sort(rng.choice(n, min(n, opts.cluster_sample), replace=False))]
    with PeakRSS() as m:
        cents = flag_clusters.train(sample, k_rule, opts.kmeans_seed)
    record(
        "flag k-means train (size rule)",
        m,
        f"O(niter·sample·k·d) = 20·{len(sample):,}·{k_rule}·{d}",
        k=k_rule,
        sample=len(sample),
    )
    del sample
    with PeakRSS() as m:
        sizes = np.zeros(k_rule, np.int64)
        for s0 in range(0, n, opts.batch_size):
            got, _ = flag_clusters.assign(cents, x[s0 : s0 + opts.batch_size])
            sizes += np.bincount(got, minlength=k_rule)
    record(
        "flag assign (batches)",
        m,
        f"O(n·k·d) = {n:,}·{k_rule}·{d}",
        k=k_rule,
        batch=opts.batch_size,
        sizes={"min": int(sizes.min()), "max": int(sizes.max()), "mean": round(float(sizes.mean()), 1)},
    )

    if args.flag_path_only:
        return finish(args, n, d, steps, purity)
    k = args.k or cluster.choose_k(n)
    with PeakRSS() as m:
        km = cluster.kmeans(x, k, niter=args.niter, normalized=True)
    record(
        "k-means (train + assign)",
        m,
        f"train O(niter·min(n,256k)·k·d) = {args.niter}·{min(n, 256 * k):,}·{k}·{d}; assign O(n·k·d)",
        k=k,
        train_s=round(km.seconds["train_s"], 2),
        assign_s=round(km.seconds["assign_s"], 2),
        sizes={
            "min": int(np.bincount(km.assign, minlength=k).min()),
            "max": int(np.bincount(km.assign, minlength=k).max()),
        },
    )
    with PeakRSS() as m:
        _ = [
            cluster.nearest_to_centroid(x, np.flatnonzero(km.assign == c), km.centroids[c], 3)
            for c in range(min(k, 50))
        ]
    record("exemplars (50 clusters)", m, "O(cluster size·d) per cluster (+ O(n) member scan)")

    with PeakRSS() as m:
        i, j, s = cluster.cosine_pairs(x, args.min_cosine, centroids=km.centroids, nprobe=args.nprobe, normalized=True)
    found = set(zip(np.minimum(i, j).tolist(), np.maximum(i, j).tolist()))
    planted = set(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))
    rec = len(found & planted) / max(1, len(planted))
    record(
        "cosine near-dup pairs (cells)",
        m,
        f"O(n·k·d) assign + O(n·nprobe·(n/k)·d) blocked GEMM = {n:,}·{args.nprobe}·{n // max(k, 1):,}·{d}",
        pairs=len(i),
        planted_recall=round(rec, 4),
        min_cosine=args.min_cosine,
        nprobe=args.nprobe,
    )
    with PeakRSS() as m:
        labels = cluster.connected_components(n, i, j)
        groups = cluster.group_members(labels)
    record("components (cosine)", m, "O(n + pairs)", groups=len(groups))
    del x, km
    # ---------------------------------------------------------------- PDQ hashes
    with PeakRSS() as m:
        h = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        perm = rng.permutation(n)[: 2 * args.planted]
        ha, hb = perm[: args.planted], perm[args.planted :]
        h[hb] = h[ha]
        for r, nbits in zip(hb, rng.integers(0, 9, len(hb))):
            for bit in rng.choice(256, nbits, replace=False):
                h[r, bit // 8] ^= np.uint8(1 << (bit % 8))
    record("generate PDQ hashes", m, "O(n)")
    with PeakRSS() as m:
        pi, pj = cluster.pdq_pairs(h, args.pdq_distance)
    found = set(zip(pi.tolist(), pj.tolist()))
    planted = set(zip(np.minimum(ha, hb).tolist(), np.maximum(ha, hb).tolist()))
    rec = len(found & planted) / max(1, len(planted))
    record(
        f"PDQ pairs ≤{args.pdq_distance} bits (MIH)",
        m,
        "16 chunks × (sort O(n log n) + candidates O(n²/2^17) verified by popcount); exact for ≤15 bits",
        pairs=len(pi),
        planted_recall=round(rec, 4),
    )
    with PeakRSS() as m:
        labels = cluster.connected_components(n, pi, pj)
        groups = cluster.group_members(labels)
    record("components (PDQ)", m, "O(n + pairs)", groups=len(groups))

    finish(args, n, d, steps, purity)


def finish(args, n: int, d: int, steps: list, purity: dict) -> None:
    import faiss

    total = sum(r["seconds"] for r in steps if not r["step"].startswith("generate"))
    result = {
        "benchmark": "bench_cluster",
        "n": n,
        "dim": d,
        "planted_pairs": args.planted,
        "flag_path_only": args.flag_path_only,
        "machine": {
            "cpus": os.cpu_count(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
        },
        "steps": steps,
        "total_seconds_excluding_generation": round(total, 2),
        "purity": purity,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print()
    print(f"{'step':<30}{'time s':>9}{'peak +MB':>10}  complexity")
    for r in steps:
        print(f"{r['step']:<30}{r['seconds']:>9.2f}{r['peak_rss_above_start_mb']:>10.1f}  {r['complexity']}")
    print(f"total (excluding data generation): {total:.1f} s; written {out}")


if __name__ == "__main__":
    main()
