"""The image tower of ``--precision int8`` (``audit.embed.int8``: ONNX Runtime dynamic int8 of
MatMul/Gemm, per-channel weights) against fp32 and bf16, model only, in one process.

ViT-B-32 with random weights, 64 toy-world scenes at 224 px, the three precisions
interleaved (A B C A B C), ``torch.get_num_threads()`` threads each; plus the minimum
cosine of each to fp32. The towers are exported into ``$AUDIT_CACHE_DIR`` (first run only).

    python benchmarks/bench_int8_towers.py [--images 64] [--repeats 4]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    import torch

    from audit.embed import toyworld
    from audit.embed.openclip import load_embedder

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    imgs = [toyworld.draw(s, px=224) for s in toyworld.random_scenes(7, args.images)]
    t0 = time.time()
    embs = {p: load_embedder("ViT-B-32", pretrained=None, precision=p) for p in ("fp32", "bf16", "int8")}
    load_s = round(time.time() - t0, 1)
    px = np.stack([embs["fp32"].preprocess.pixels(i) for i in imgs])
    ref = embs["fp32"].embed_pixels(px)
    rates: dict[str, list[float]] = {p: [] for p in embs}
    for e in embs.values():
        e.embed_pixels(px[:8])
    for _ in range(args.repeats):
        for p, e in embs.items():
            t = time.perf_counter()
            e.embed_pixels(px)
            rates[p].append(round(len(px) / (time.perf_counter() - t), 2))
    med = {p: float(np.median(r)) for p, r in rates.items()}
    out = {
        "model": "ViT-B-32 random weights",
        "images": len(px),
        "threads": torch.get_num_threads(),
        "load_and_export_s": load_s,
        "img_per_s": rates,
        "median_img_per_s": med,
        "int8_vs_bf16": round(med["int8"] / med["bf16"], 3),
        "int8_vs_fp32": round(med["int8"] / med["fp32"], 3),
        "min_cosine_vs_fp32": {p: round(float(np.sum(ref * e.embed_pixels(px), 1).min()), 6) for p, e in embs.items()},
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "int8_check": embs["int8"].precision_report,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8_towers.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
