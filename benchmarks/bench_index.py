"""Recall@10 of the approximate FAISS index `audit index` chooses vs exact flat search.

Data: N (default 200,000) 512-d L2-normalised vectors from a mixture of gaussians shaped
like CLIP image embeddings: 2,000 clusters of Zipf-distributed sizes around centres that
share a common direction (pairwise centre cosine ~0.3, as CLIP vectors are anisotropic),
with per-cluster spread (cosine to the centre 0.65-0.9). Two query sets of Q (default
1,000) vectors each, never in the index:

- ``near``: fresh draws from the same mixture (new images of known kinds);
- ``far``: draws with 2.5x the spread (looser matches, like text queries that lie away
  from the image vectors).

The vectors go into a real index directory's vector store; the index is built by the same
``IndexBuilder`` that `audit index` runs (chosen type, trained on a sample, nprobe tuned on
its own tuning queries), saved, and loaded back as `audit search` loads it. Ground truth is
an exact ``IndexFlatIP`` search. Reported per variant: recall@10 (raw, and after the exact
re-scoring `audit search` applies to lossy codes), build time, batch and single-query
latency, index size on disk, the chooser's memory estimate and the process's peak RSS.

    python benchmarks/bench_index.py [--n 200000] [--queries 1000] [--variants auto,ivf,sq8]

Variants: ``auto`` (the type chosen for the default 4 GiB budget) and any ``--index-type``
value (``ivf,sq8``, ``ivf,pq64``, ``hnsw32``). Results: table on stdout, JSON in
benchmarks/results/index.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 10


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Mixture:
    def __init__(self, d: int, clusters: int, seed: int):
        rng = np.random.default_rng(seed)
        self.d = d
        common = normalise(rng.normal(size=(1, d)))
        self.centres = normalise(0.55 * common + normalise(rng.normal(size=(clusters, d))))
        w = 1.0 / np.arange(1, clusters + 1) ** 0.8  # Zipf-like cluster sizes
        self.weights = w / w.sum()
        # spread s: cos(x, centre) ≈ 1/sqrt(1+s²) → s in [0.48, 1.17] gives 0.65-0.9
        self.spread = rng.uniform(0.48, 1.17, clusters)

    def draw(self, n: int, rng: np.random.Generator, spread_scale: float = 1.0) -> np.ndarray:
        out = np.empty((n, self.d), np.float32)
        for i in range(0, n, 50_000):
            m = min(50_000, n - i)
            c = rng.choice(len(self.centres), m, p=self.weights)
            noise = rng.normal(size=(m, self.d)).astype(np.float32) / np.sqrt(self.d)
            out[i : i + m] = normalise(self.centres[c] + (self.spread[c] * spread_scale)[:, None] * noise)
        return out


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(g[g >= 0], t)) / K for g, t in zip(got, truth)]))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument(
        "--variants",
        default="auto,ivf,sq8",
        help="comma list: auto and/or --index-type values; ';' separates types containing commas",
    )
    ap.add_argument("--memory-budget", default="4GB")
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--keep", action="store_true", help="keep the temporary index directory")
    ap.add_argument("--out", type=Path, default=RESULTS / "index.json")
    args = ap.parse_args(argv)

    import faiss

    import audit
    from audit.catalog.vectors import ModelIdentity, VectorStore
    from audit.index.build import IndexBuilder
    from audit.index.files import load_index, model_dir

    variants = _variants(args.variants)
    rng = np.random.default_rng(7)
    mix = Mixture(args.dim, args.clusters, seed=11)
    t = time.perf_counter()
    X = mix.draw(args.n, rng)
    Qsets = {"near": mix.draw(args.queries, rng), "far": mix.draw(args.queries, rng, spread_scale=2.5)}
    gen_s = time.perf_counter() - t

    work = Path(tempfile.mkdtemp(prefix="bench_index_"))
    a = audit.open(work / "idx", create=True)
    vs = VectorStore(a.catalog.conn)
    ident = ModelIdentity("bench-512", "synthetic")
    vs.register_model(ident, args.dim)
    keys = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(args.n)]
    t = time.perf_counter()
    for i in range(0, args.n, 20_000):
        vs.put(ident.key, "image", keys[i : i + 20_000], X[i : i + 20_000])
    store_s = time.perf_counter() - t
    row_of = {k: i for i, k in enumerate(keys)}

    # exact ground truth (and the flat baseline's cost)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(X)
    truth, flat_batch = {}, {}
    for name, Q in Qsets.items():
        t = time.perf_counter()
        _, truth[name] = flat.search(Q, K)
        flat_batch[name] = time.perf_counter() - t
    flat_single = _single(flat, Qsets["near"][: args.single])
    del flat

    rows = [
        {
            "variant": "exact",
            "index": "Flat (IndexFlatIP)",
            "params": {},
            "recall_near": 1.0,
            "recall_far": 1.0,
            "rescored_near": 1.0,
            "rescored_far": 1.0,
            "build_s": 0.0,
            "batch_ms_per_query": round(1000 * flat_batch["near"] / args.queries, 3),
            "single_p50_ms": flat_single[0],
            "single_p95_ms": flat_single[1],
            "index_mb": round(args.n * args.dim * 4 / 2**20, 1),
            "estimated_mb": None,
            "tuned_recall": 1.0,
        }
    ]
    for variant in variants:
        builder = IndexBuilder(
            work / "idx",
            vs,
            memory_budget=args.memory_budget,
            rebuild=True,
            index_type=None if variant == "auto" else variant,
        )
        t = time.perf_counter()
        res = builder.update(ident.key, "image", args.dim)
        build_s = time.perf_counter() - t
        manifest, index, ikeys = load_index(work / "idx", ident.key, "image")
        ps = faiss.ParameterSpace()
        for p, v in manifest.params.items():
            ps.set_index_parameter(index, p, v)
        id_to_row = np.array([row_of[k.decode()] for k in ikeys], dtype=np.int64)
        row: dict = {
            "variant": variant,
            "index": res.index,
            "params": res.params,
            "build_s": round(build_s, 2),
            "tuned_recall": res.tuned_recall,
        }
        exact_codes = manifest.spec.get("codec") == "Flat" or manifest.spec.get("kind") in ("flat", "hnsw")
        for name, Q in Qsets.items():
            t = time.perf_counter()
            _, ids = index.search(Q, K)
            dt = time.perf_counter() - t
            got = np.where(ids >= 0, id_to_row[np.maximum(ids, 0)], -1)
            row[f"recall_{name}"] = round(recall(got, truth[name]), 4)
            if name == "near":
                row["batch_ms_per_query"] = round(1000 * dt / len(Q), 3)
            if exact_codes:
                row[f"rescored_{name}"] = row[f"recall_{name}"]
            else:  # what `audit search` returns: 4k candidates re-scored exactly
                _, I4 = index.search(Q, 4 * K)
                cand = np.where(I4 >= 0, id_to_row[np.maximum(I4, 0)], 0)
                s = np.einsum("qkd,qd->qk", X[cand], Q)
                s[I4 < 0] = -np.inf
                top = np.take_along_axis(cand, np.argsort(-s, axis=1)[:, :K], 1)
                row[f"rescored_{name}"] = round(recall(top, truth[name]), 4)
        p50, p95 = _single(index, Qsets["near"][: args.single])
        row.update(single_p50_ms=p50, single_p95_ms=p95)
        d = model_dir(work / "idx", ident.key)
        row["index_mb"] = round(
            ((d / manifest.index_file).stat().st_size + (d / manifest.keys_file).stat().st_size) / 2**20, 1
        )
        row["estimated_mb"] = round(manifest.spec["estimated_bytes"] / 2**20, 1)
        rows.append(row)
        print(
            f"  {variant}: {res.index} {res.params} built in {build_s:.1f}s, recall@10 near {row['recall_near']:.4f} "
            f"far {row['recall_far']:.4f}",
            file=sys.stderr,
            flush=True,
        )
        del index

    report = {
        "benchmark": "index_recall",
        "n": args.n,
        "dim": args.dim,
        "clusters": args.clusters,
        "queries": args.queries,
        "k": K,
        "memory_budget": args.memory_budget,
        "target_recall_at_10": 0.95,
        "data_generation_s": round(gen_s, 2),
        "store_insert_s": round(store_s, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "faiss_threads": faiss.omp_get_max_threads(),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _print_table(report)
    print(f"\nJSON: {args.out}")
    a.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    chosen = next((r for r in rows if r["variant"] == "auto"), None)
    return 0 if chosen is None or chosen["recall_near"] >= 0.95 else 1


def _variants(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(";")] if ";" in text else None
    if parts is None:  # "auto,ivf,sq8" → auto, "ivf,sq8"
        out, toks = [], [t.strip() for t in text.split(",") if t.strip()]
        i = 0
        while i < len(toks):
            if (
                toks[i].lower().startswith("ivf")
                and i + 1 < len(toks)
                and toks[i + 1].lower() in ("flat", "sq8")
                or (toks[i].lower().startswith("ivf") and i + 1 < len(toks) and toks[i + 1].lower().startswith("pq"))
            ):
                out.append(f"{toks[i]},{toks[i + 1]}")
                i += 2
            else:
                out.append(toks[i])
                i += 1
        return out
    return [p for p in parts if p]


def _single(index, Q: np.ndarray) -> tuple[float, float]:
    times = []
    for q in Q:
        t = time.perf_counter()
        index.search(q[None, :], K)
        times.append(1000 * (time.perf_counter() - t))
    return round(float(np.percentile(times, 50)), 3), round(float(np.percentile(times, 95)), 3)


def _print_table(r: dict) -> None:
    print(
        f"\nrecall@10 vs exact: {r['n']:,} x {r['dim']}-d vectors, {r['clusters']:,} clusters, "
        f"{r['queries']:,} queries per set, budget {r['memory_budget']}; peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    head = [
        "variant",
        "index",
        "params",
        "recall near",
        "recall far",
        "rescored near",
        "rescored far",
        "build s",
        "batch ms/q",
        "1-query p50 ms",
        "p95 ms",
        "index MB",
        "est. MB",
    ]
    lines = [head]
    for x in r["rows"]:
        lines.append(
            [
                x["variant"],
                x["index"],
                ",".join(f"{k}={v}" for k, v in x["params"].items()) or "-",
                f"{x['recall_near']:.4f}",
                f"{x['recall_far']:.4f}",
                f"{x['rescored_near']:.4f}",
                f"{x['rescored_far']:.4f}",
                f"{x['build_s']:.1f}",
                f"{x['batch_ms_per_query']:.3f}",
                f"{x['single_p50_ms']:.2f}",
                f"{x['single_p95_ms']:.2f}",
                f"{x['index_mb']:.0f}",
                "-" if x["estimated_mb"] is None else f"{x['estimated_mb']:.0f}",
            ]
        )
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    for j, row in enumerate(lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
