"""Crawl rate of public-dataset layouts against a folder of the same images.

The same N generated 512-px PNGs (toy shapes with some texture), stored three ways:

1. a folder of files, a prompt in a ``.txt`` sidecar beside each (the baseline);
2. Hugging Face ``datasets`` Parquet shards (image struct ``{bytes, path}``, prompt column),
   ``--rows-per-shard`` rows each, row groups of 100 (what ``datasets`` writes for images);
3. DiffusionDB parts: ``images/part-NNNNNN.zip`` holding the images and ``part-NNNNNN.json``,
   plus a root ``metadata.parquet``.

Each is crawled into a fresh index in a fresh subprocess (first crawl: every item read,
hashed, decoded, PDQ, metadata), then crawled again (rescan: nothing changed). Reported:
items/s, wall time, peak RSS, and that every item got its prompt.

    python benchmarks/bench_datasets.py [--images 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "datasets"
RESULTS = HERE / "results"


def images(n: int, px: int):
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    colours = [(220, 30, 30), (30, 180, 60), (40, 70, 220), (235, 210, 40), (140, 50, 180), (245, 140, 20)]
    for i in range(n):
        img = Image.new("RGB", (px, px), rng.choice([(255, 255, 255), (0, 0, 0), (128, 128, 128)]))
        d = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.randrange(px // 2), rng.randrange(px // 2)
            d.ellipse(
                (x0, y0, x0 + rng.randrange(20, px // 2), y0 + rng.randrange(20, px // 2)), fill=rng.choice(colours)
            )
        buf = io.BytesIO()
        img.save(buf, "PNG")
        yield f"{i:08d}.png", buf.getvalue(), f"a shape number {i}, masterpiece"


def build(root: Path, n: int, px: int, rows_per_shard: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = root / f"built-{n}-{px}-{rows_per_shard}"
    layouts = {"folder": root / "folder", "parquet-shards": root / "hf", "diffusiondb-zip": root / "diffusiondb"}
    if marker.exists():
        return layouts
    shutil.rmtree(root, ignore_errors=True)
    for p in layouts.values():
        p.mkdir(parents=True)
    (layouts["parquet-shards"] / "data").mkdir()
    (layouts["diffusiondb-zip"] / "images").mkdir()
    rows, part, table = [], {}, []
    shard_no = part_no = 0

    def flush_shard():
        nonlocal rows, shard_no
        if rows:
            pq.write_table(
                pa.Table.from_pylist(rows),
                layouts["parquet-shards"] / "data" / f"train-{shard_no:05d}.parquet",
                row_group_size=100,
            )
            rows, shard_no = [], shard_no + 1

    def flush_part():
        nonlocal part, part_no
        if part:
            part_no += 1
            with zipfile.ZipFile(layouts["diffusiondb-zip"] / "images" / f"part-{part_no:06d}.zip", "w") as zf:
                for name, (data, _) in part.items():
                    zf.writestr(name, data)
                zf.writestr(
                    f"part-{part_no:06d}.json",
                    json.dumps({k: {"p": p, "se": 1, "c": 7.0, "st": 20, "sa": "k_lms"} for k, (_, p) in part.items()}),
                )
            part = {}

    for name, data, prompt in images(n, px):
        (layouts["folder"] / name).write_bytes(data)
        (layouts["folder"] / name.replace(".png", ".txt")).write_text(prompt)
        rows.append({"image": {"bytes": data, "path": name}, "prompt": prompt, "seed": 1, "step": 20})
        part[name] = (data, prompt)
        table.append({"image_name": name, "prompt": prompt, "part_id": part_no + 1, "seed": 1, "step": 20, "cfg": 7.0})
        if len(rows) >= rows_per_shard:
            flush_shard()
        if len(part) >= 1000:  # DiffusionDB parts hold 1000 images
            flush_part()
    flush_shard()
    flush_part()
    pq.write_table(pa.Table.from_pylist(table), layouts["diffusiondb-zip"] / "metadata.parquet")
    marker.touch()
    return layouts


CHILD = r"""
import json, resource, sys, time
import audit
src, index, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
s = audit.crawl([src], index, workers=workers)
first = time.perf_counter() - t
t = time.perf_counter()
r = audit.crawl([src], index, workers=workers)
rescan = time.perf_counter() - t
items = audit.open(index).items()
print(json.dumps({"read": s.read, "errors": s.errors, "first_s": first, "rescan_s": rescan, "rescan_read": r.read,
                  "with_prompt": int(items["prompt"].is_not_null().sum()), "rows": items.height,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                                 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def measure(src: Path, index: Path, workers: int) -> dict:
    shutil.rmtree(index, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(index), str(workers)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--px", type=int, default=512)
    ap.add_argument("--rows-per-shard", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    layouts = build(WORK, args.images, args.px, args.rows_per_shard)
    results = {
        "images": args.images,
        "px": args.px,
        "rows_per_shard": args.rows_per_shard,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "layouts": {},
    }
    for name, path in layouts.items():
        r = measure(path, WORK / f"idx-{name}", args.workers)
        r["items_per_s"] = round(r["read"] / r["first_s"], 1)
        r["bytes_on_disk_mb"] = round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)
        results["layouts"][name] = r
        print(
            f"{name:16s} {r['read']:>6} items  first {r['first_s']:6.1f}s ({r['items_per_s']:6.1f}/s)  "
            f"rescan {r['rescan_s']:5.2f}s  prompts {r['with_prompt']}/{r['rows']}  peak {r['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
        )
    base = results["layouts"]["folder"]["items_per_s"]
    for r in results["layouts"].values():
        r["rate_vs_folder"] = round(r["items_per_s"] / base, 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "datasets.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
