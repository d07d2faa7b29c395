"""Crawl throughput and rescan cost, side by side with the plain baselines.

1. First crawl of N generated 512-px PNG/JPEG images with A1111-style metadata vs a plain
   loop that only opens and decodes the same files (target: crawl >= 0.7x the loop's rate).
2. Rescan of M unchanged files vs a bare ``os.scandir`` walk of the same tree
   (target: <= 3x the walk's time).
3. Peak memory (max RSS of the process and its children) of each.

Every measurement runs in a fresh subprocess so its peak RSS is its own.

    python benchmarks/bench_crawl.py [--images 5000] [--rescan-files 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
RESULTS = HERE / "results"


def make_images(root: Path, n: int, px: int) -> None:
    import random

    from PIL import Image, ImageDraw, PngImagePlugin

    if root.exists() and sum(1 for _ in root.rglob("*.*")) >= n:
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(0)
    colours = [(220, 30, 30), (30, 180, 60), (40, 70, 220), (235, 210, 40), (140, 50, 180), (245, 140, 20)]
    for i in range(n):
        img = Image.new("RGB", (px, px), rng.choice([(255, 255, 255), (0, 0, 0), (128, 128, 128)]))
        d = ImageDraw.Draw(img)
        for _ in range(3):  # some texture so PNG/JPEG sizes are realistic
            x0, y0 = rng.randrange(px // 2), rng.randrange(px // 2)
            d.ellipse((x0, y0, x0 + rng.randrange(20, px // 2), y0 + rng.randrange(20, px // 2)), fill=rng.choice(colours))
        text = (
            f"a photo of a shape number {i}, masterpiece\nNegative prompt: blurry\n"
            f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: {i}, Size: {px}x{px}, Model hash: abc123, Model: bench"
        )
        sub = root / f"d{i % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 2:
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", text)
            img.save(sub / f"{i:06d}.png", pnginfo=info, compress_level=6)
        else:
            exif = Image.Exif()
            exif[0x8769] = {0x9286: b"UNICODE\0" + text.encode("utf-16-be")}
            img.save(sub / f"{i:06d}.jpg", quality=90, exif=exif)


def make_small_files(root: Path, n: int) -> None:
    """Many tiny distinct PNGs: the rescan cost is about the count, not the size."""
    from io import BytesIO

    from PIL import Image, PngImagePlugin

    if root.exists() and sum(1 for _ in root.rglob("*.png")) >= n:
        return
    shutil.rmtree(root, ignore_errors=True)
    base = Image.new("RGB", (8, 8), (200, 30, 30))
    for i in range(n):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"a red square {i}\nSteps: 1, Seed: {i}")
        buf = BytesIO()
        base.save(buf, "PNG", pnginfo=info, compress_level=1)
        sub = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:07d}.png").write_bytes(buf.getvalue())


# --- the measured steps, each run as `bench_crawl.py --step NAME PATH [INDEX]`
def step_decode_loop(root: str) -> int:
    from PIL import Image

    n = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with Image.open(os.path.join(dirpath, f)) as im:
                im.load()
            n += 1
    return n


def step_scandir(root: str) -> int:
    n = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    n += 1
    return n


def step_scandir_stat(root: str) -> int:
    """The same walk with one stat per file: the least any change detection must do."""
    n = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    st = e.stat(follow_symlinks=False)
                    n += st.st_size >= 0
    return n


def step_crawl(root: str, index: str) -> int:
    import audit

    s = audit.crawl([root], index)
    return s.listed


def step_crawl_trusting_dir_mtimes(root: str, index: str) -> int:
    import audit

    s = audit.crawl([root], index, trust_dir_mtime=True)
    return s.listed


def run_step(name: str, *args: str) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--step", name, *args], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - t0
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info["wall_s_with_startup"] = round(wall, 3)
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--px", type=int, default=512)
    ap.add_argument("--rescan-files", type=int, default=100_000)
    ap.add_argument("--step", nargs="+")
    args = ap.parse_args()

    if args.step:
        name, *rest = args.step
        if name.startswith("crawl"):
            import audit  # noqa: F401 - imports are start-up, not crawling: the walk pays none either
            import audit.api, audit.crawler.runner, audit.ingest  # noqa: E401,F401
        t0 = time.perf_counter()
        n = {"decode_loop": step_decode_loop, "scandir": step_scandir, "scandir_stat": step_scandir_stat, "crawl": step_crawl,
         "crawl_trust_dir_mtime": step_crawl_trusting_dir_mtimes}[name](*rest)
        dt = time.perf_counter() - t0
        rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        print(json.dumps({"step": name, "files": n, "seconds": round(dt, 3), "rate": round(n / dt, 1), "peak_rss_mib": round(rss / 1024, 1)}))
        return

    images = WORK / f"images_{args.images}_{args.px}"
    small = WORK / f"small_{args.rescan_files}"
    print(f"preparing {args.images} images of {args.px}px and {args.rescan_files} small files under {WORK} ...", file=sys.stderr)
    make_images(images, args.images, args.px)
    make_small_files(small, args.rescan_files)

    idx1, idx2 = WORK / "idx_images", WORK / "idx_small"
    shutil.rmtree(idx1, ignore_errors=True)
    shutil.rmtree(idx2, ignore_errors=True)
    results = {"cpus": os.cpu_count()}
    results["decode_loop"] = run_step("decode_loop", str(images))
    results["first_crawl"] = run_step("crawl", str(images), str(idx1))
    results["crawl_vs_loop_rate"] = round(results["first_crawl"]["rate"] / results["decode_loop"]["rate"], 2)

    run_step("crawl", str(small), str(idx2))  # first crawl of the small tree (not the measurement)
    run_step("scandir", str(small))  # warm the dentry cache for both sides alike
    results["scandir_walk"] = run_step("scandir", str(small))
    results["scandir_stat_walk"] = run_step("scandir_stat", str(small))
    run_step("crawl", str(small), str(idx2))  # the second crawl builds the directory listings
    results["rescan"] = run_step("crawl", str(small), str(idx2))
    results["rescan_vs_walk_time"] = round(results["rescan"]["seconds"] / results["scandir_walk"]["seconds"], 2)
    run_step("crawl_trust_dir_mtime", str(small), str(idx2))  # records each directory's mtime
    results["rescan_trust_dir_mtime"] = run_step("crawl_trust_dir_mtime", str(small), str(idx2))
    results["rescan_trust_dir_mtime_vs_walk_time"] = round(
        results["rescan_trust_dir_mtime"]["seconds"] / results["scandir_walk"]["seconds"], 2
    )

    print(f"{'step':<28}{'files':>9}{'seconds':>10}{'files/s':>11}{'peak MiB':>10}")
    for key in ("decode_loop", "first_crawl", "scandir_walk", "scandir_stat_walk", "rescan", "rescan_trust_dir_mtime"):
        r = results[key]
        print(f"{key:<28}{r['files']:>9}{r['seconds']:>10.2f}{r['rate']:>11.0f}{r['peak_rss_mib']:>10.0f}")
    print(f"first crawl rate / decode-loop rate = {results['crawl_vs_loop_rate']} (target >= 0.7)")
    results["rescan_vs_stat_walk_time"] = round(results["rescan"]["seconds"] / results["scandir_stat_walk"]["seconds"], 2)
    print(f"rescan time / scandir walk time     = {results['rescan_vs_walk_time']} (target <= 3)")
    print(f"rescan time / walk+stat time        = {results['rescan_vs_stat_walk_time']}")
    print(f"--trust-dir-mtime rescan / walk     = {results['rescan_trust_dir_mtime_vs_walk_time']} (target <= 3)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crawl.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
