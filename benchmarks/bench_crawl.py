"""Crawl throughput and rescan cost, side by side with the plain baselines.

1. First crawl of N generated 512-px PNG/JPEG images with A1111-style metadata vs a plain
   loop that only opens and decodes the same files (read, SHA-256, MD5, decode, PDQ on one process per core; target: crawl >= 0.85x its rate, whole processes).
2. Rescan of M unchanged files (`audit crawl` again, the CLI as cron runs it) vs a bare walk that stats every file
   (target: <= 3x its time, whole processes: start-up counted). Steps interleave (A B A B) with the load recorded.
Every measurement runs in a fresh process.

    python benchmarks/bench_crawl.py [--images 2000] [--rescan-files 100000] [--repeats 3] [--work DIR]
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
            d.ellipse(
                (x0, y0, x0 + rng.randrange(20, px // 2), y0 + rng.randrange(20, px // 2)), fill=rng.choice(colours)
            )
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


def _plain_one(path: str) -> tuple:
    """What the crawl computes for one file, the plain way: read, SHA-256, MD5, decode, PDQ."""
    import hashlib

    import numpy as np
    import pdqhash
    from PIL import Image
    from io import BytesIO

    with open(path, "rb") as fh:
        data = fh.read()
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    with Image.open(BytesIO(data)) as im:
        rgb = im.convert("RGB")
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(rgb), dtype=np.uint8))
    return sha, md5, rgb.size, np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)


def step_plain_loop(root: str) -> int:
    """The baseline for a first crawl: ``_plain_one`` over every file on one process per core."""
    import multiprocessing

    paths = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]
    with multiprocessing.get_context("forkserver").Pool(os.cpu_count() or 1) as pool:
        return sum(1 for _ in pool.imap_unordered(_plain_one, paths, chunksize=16))


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
    load = os.getloadavg()[0]
    if name == "crawl":  # the command itself, as cron runs it: its start-up is part of the cost
        root, index = args
        cmd = [sys.executable, "-m", "audit", "crawl", root, "--index", index, "--quiet", "--json"]
    else:
        cmd = [sys.executable, __file__, "--step", name, *args]
    t0 = time.perf_counter()
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)}
    )
    wall = time.perf_counter() - t0
    if name == "crawl":
        data = json.loads(out.stdout)
        info = {"step": "audit crawl", "files": data["listed"], "read": data["read"], "seconds": data["duration_s"]}
    else:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    info["wall_s_with_startup"] = round(wall, 3)
    info["rate_with_startup"] = round(info["files"] / wall, 1)
    info["loadavg_1m_before"] = round(load, 2)
    return info


def interleaved(pairs: list[tuple[str, tuple]], repeats: int) -> dict[str, list[dict]]:
    """Each step of ``pairs`` in turn, ``repeats`` times (A B A B ...): on a shared machine
    the load drifts, and neighbours in time see about the same load."""
    out: dict[str, list[dict]] = {name: [] for name, _ in pairs}
    for _ in range(repeats):
        for name, args in pairs:
            out[name].append(run_step(name, *args))
    return out


def ratios(a: list[dict], b: list[dict], key: str) -> dict:
    """a/b of ``key`` per repeat, and their median."""
    import statistics

    r = [round(x[key] / y[key], 3) for x, y in zip(a, b)]
    return {"per_repeat": r, "median": statistics.median(r)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--px", type=int, default=512)
    ap.add_argument("--rescan-files", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=WORK, help="where the generated files and indexes live")
    ap.add_argument("--step", nargs="+")
    args = ap.parse_args()

    if args.step:
        name, *rest = args.step
        if name.startswith("crawl"):
            import audit  # noqa: F401 - imports are start-up, not crawling: the walk pays none either
            import audit.api, audit.crawler.runner, audit.ingest  # noqa: E401,F401
        t0 = time.perf_counter()
        n = {
            "decode_loop": step_decode_loop,
            "plain_loop": step_plain_loop,
            "scandir": step_scandir,
            "scandir_stat": step_scandir_stat,
            "crawl": step_crawl,
            "crawl_trust_dir_mtime": step_crawl_trusting_dir_mtimes,
        }[name](*rest)
        dt = time.perf_counter() - t0
        rss = max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        )
        print(
            json.dumps(
                {
                    "step": name,
                    "files": n,
                    "seconds": round(dt, 3),
                    "rate": round(n / dt, 1),
                    "peak_rss_mib": round(rss / 1024, 1),
                }
            )
        )
        return

    work = args.work
    images = work / f"images_{args.images}_{args.px}"
    small = work / f"small_{args.rescan_files}"
    print(
        f"preparing {args.images} images of {args.px}px and {args.rescan_files} small files under {work} ...",
        file=sys.stderr,
    )
    make_images(images, args.images, args.px)
    make_small_files(small, args.rescan_files)

    idx1, idx2 = work / "idx_images", work / "idx_small"
    results: dict = {
        "cpus": os.cpu_count(),
        "images": args.images,
        "rescan_files": args.rescan_files,
        "repeats": args.repeats,
        "loadavg_start": os.getloadavg(),
    }
    # 1. first crawl vs the plain 2-process loop, whole processes, interleaved; every crawl
    # starts from an empty index
    crawls, loops = [], []
    for _ in range(args.repeats):
        shutil.rmtree(idx1, ignore_errors=True)
        crawls.append(run_step("crawl", str(images), str(idx1)))
        loops.append(run_step("plain_loop", str(images)))
    results["first_crawl"], results["plain_loop"] = crawls, loops
    results["crawl_vs_plain_loop_rate"] = ratios(crawls, loops, "rate_with_startup")

    # 2. rescan of unchanged files vs a bare walk that stats every file, whole processes
    shutil.rmtree(idx2, ignore_errors=True)
    run_step("crawl", str(small), str(idx2))  # first crawl of the small tree (not the measurement)
    run_step("crawl", str(small), str(idx2))  # the second crawl builds the directory listings
    run_step("scandir_stat", str(small))  # warm the dentry cache for both sides alike
    steps = interleaved([("crawl", (str(small), str(idx2))), ("scandir_stat", (str(small),))], args.repeats)
    results["rescan"], results["scandir_stat_walk"] = steps["crawl"], steps["scandir_stat"]
    results["rescan_vs_stat_walk_time"] = ratios(steps["crawl"], steps["scandir_stat"], "wall_s_with_startup")
    results["loadavg_end"] = os.getloadavg()

    print(f"{'step':<22}{'files':>9}{'wall s':>9}{'files/s':>10}{'load':>6}")
    for key in ("first_crawl", "plain_loop", "rescan", "scandir_stat_walk"):
        for r in results[key]:
            print(
                f"{key:<22}{r['files']:>9}{r['wall_s_with_startup']:>9.2f}{r['rate_with_startup']:>10.0f}{r['loadavg_1m_before']:>6.1f}"
            )
    print(f"first crawl / plain 2-process loop, rate   = {results['crawl_vs_plain_loop_rate']} (target >= 0.85)")
    print(f"rescan / walk that stats every file, time  = {results['rescan_vs_stat_walk_time']} (target <= 3)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crawl.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
