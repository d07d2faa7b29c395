"""The cost of a scheduled scan with nothing new (issue: "takes seconds").

Scans the crawl benchmark's archive (N generated 512-px PNG/JPEG images with A1111
metadata, made by bench_crawl.py's generator) with the toy-shapes model and the toy
policy, then scans it again with nothing changed, each in a fresh process (as cron runs
it), and reports both wall times and the per-stage durations.

    python benchmarks/bench_scan.py [--images 5000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_crawl import RESULTS, WORK, make_images  # noqa: E402

POLICY = HERE.parent / "samples" / "policy" / "toy.toml"


def scan(archive: Path, index: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit",
            "scan",
            str(archive),
            "--index",
            str(index),
            "--model",
            "toy-shapes",
            "--policy",
            str(POLICY),
            "--quiet",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode not in (0, 1):
        raise SystemExit(out.stderr)
    data = json.loads(out.stdout)
    return {
        "wall_s": round(wall, 2),
        "durations": data["durations"],
        "read": data["stages"]["crawl"]["read"],
        "flag_mode": data["stages"]["flag"]["mode"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    archive = WORK / f"images_{args.images}_512"
    make_images(archive, args.images, 512)
    index = WORK / "idx_scan"
    shutil.rmtree(index, ignore_errors=True)
    first = scan(archive, index)
    second = scan(archive, index)
    print(f"first scan of {args.images} images:  {first['wall_s']:8.1f} s  {first['durations']}")
    print(
        f"no-change rescan:            {second['wall_s']:8.1f} s  {second['durations']} (flag: {second['flag_mode']})"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scan.json").write_text(
        json.dumps({"images": args.images, "first": first, "no_change": second}, indent=2)
    )


if __name__ == "__main__":
    main()
