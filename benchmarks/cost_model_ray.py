"""Cost model: how long a scan of 100 million images takes on N GPU nodes of a Ray cluster.

    python benchmarks/cost_model_ray.py                              # from benchmarks/results/bench_ray.json
    python benchmarks/cost_model_ray.py --images 1e8 --cpus-per-node 16 --gpu-rate 1500

Every rate is either MEASURED on the build machine (``benchmarks/bench_ray.py``: CPU stage
rates per core, the driver's commit rates) or a PUBLISHED ANCHOR (GPU embedding: CLIP
ViT-B/32 at 1,500-2,500 images/s per GPU, clip-retrieval's figures; no GPU was available
here). The output says which is which.

Model. A node has one GPU and ``--cpus-per-node`` CPUs. The scan's stages run one after
the other, each as fast as its slowest part:

* crawl (read + SHA-256/MD5 + decode + PDQ + metadata): CPU tasks on every CPU of every
  node, ``crawl_per_core x cpus x N``, but never faster than the driver commits catalog
  rows (one writer);
* embed: decode + preprocess on the CPUs the GPU actor leaves (``cpus - 1`` per node),
  CLIP on the GPUs (``gpu_rate x N``), never faster than the driver commits vectors.

Hours = images / rate per stage, summed; node-hours = N x hours. Listing the sources and
the flag/index stages (on the driver, minutes per 100M with FAISS) are not modelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_ANCHOR = (1500.0, 2500.0)  # ViT-B/32 images/s per GPU (clip-retrieval); published, not measured here


def stage_table(images: float, nodes: int, cpus: int, m: dict, gpu_rate: float) -> dict:
    crawl_cpu = m["crawl_per_core"] * cpus * nodes
    crawl = min(crawl_cpu, m["catalog_rows_per_s"])
    decode = m["decode_per_core"] * max(1, cpus - 1) * nodes
    gpu = gpu_rate * nodes
    embed = min(decode, gpu, m["vectors_per_s"])
    bound_embed = min((decode, "CPU decode"), (gpu, "GPU"), (m["vectors_per_s"], "driver vector commits"))[1]
    bound_crawl = "CPU reads" if crawl_cpu <= m["catalog_rows_per_s"] else "driver catalog commits"
    hours = images / crawl / 3600 + images / embed / 3600
    return {
        "nodes": nodes,
        "crawl_images_per_s": round(crawl),
        "crawl_bound": bound_crawl,
        "embed_images_per_s": round(embed),
        "embed_bound": bound_embed,
        "crawl_h": round(images / crawl / 3600, 2),
        "embed_h": round(images / embed / 3600, 2),
        "hours": round(hours, 2),
        "node_hours": round(hours * nodes, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, default=REPO / "benchmarks" / "results" / "bench_ray.json")
    ap.add_argument("--images", type=float, default=1e8)
    ap.add_argument("--cpus-per-node", type=int, default=16)
    ap.add_argument("--gpu-rate", type=float, default=None, help="ViT-B/32 images/s per GPU (default: both anchors)")
    ap.add_argument("--nodes", default="1,2,4,8,16,32,64")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cost_model_ray.json")
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    measured = {
        "crawl_per_core": bench["per_core"]["crawl_images_per_s"],
        "decode_per_core": bench["per_core"]["decode_preprocess_images_per_s"],
        "catalog_rows_per_s": bench["driver_commit"]["catalog_rows_per_s"],
        "vectors_per_s": bench["driver_commit"]["vectors_per_s_shard_256"],
    }
    rates = [args.gpu_rate] if args.gpu_rate else list(GPU_ANCHOR)
    out = {
        "images": args.images,
        "cpus_per_node": args.cpus_per_node,
        "measured_here": {**measured, "source": str(args.bench.name), "machine": bench.get("machine")},
        "published": {"gpu_vit_b32_images_per_s": rates, "source": "clip-retrieval (ViT-B/32 inference figures)"},
        "tables": {},
    }
    print(f"{args.images:,.0f} images, nodes of 1 GPU + {args.cpus_per_node} CPUs")
    print("measured here: " + ", ".join(f"{k} {v:,.1f}" for k, v in measured.items()))
    for rate in rates:
        rows = [stage_table(args.images, int(n), args.cpus_per_node, measured, rate) for n in args.nodes.split(",")]
        out["tables"][str(int(rate))] = rows
        print(f"\nGPU rate {rate:,.0f} images/s (published anchor)")
        print(
            f"{'nodes':>5} {'crawl/s':>9} {'bound':>24} {'embed/s':>9} {'bound':>22} {'crawl h':>8} {'embed h':>8} {'hours':>7} {'node-h':>7}"
        )
        for r in rows:
            print(
                f"{r['nodes']:>5} {r['crawl_images_per_s']:>9,} {r['crawl_bound']:>24} {r['embed_images_per_s']:>9,} "
                f"{r['embed_bound']:>22} {r['crawl_h']:>8} {r['embed_h']:>8} {r['hours']:>7} {r['node_hours']:>7}"
            )
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
