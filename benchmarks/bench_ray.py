"""``--executor ray`` against ``--executor local`` on this machine, and the driver's commit rate.

    python benchmarks/bench_ray.py                  # 2,000 images of 512 px, ViT-B-32 (random weights)
    python benchmarks/bench_ray.py --images 200     # smoke run

Same images, same model, whole processes (``python -m audit crawl|embed ... --json``, wall
time from spawn to exit: Ray's start and stop are included). Ray runs as a local instance
started by each command (``RAY_ADDRESS`` unset), with this machine's CPUs, as a 2-CPU
"cluster" here. Rate ratio = Ray's images/s over local's (1.0 = no overhead).

Also measured, for the cost model (``benchmarks/cost_model_ray.py``):
- per-core CPU stage rates: crawl (read + SHA-256/MD5 + decode + PDQ + metadata) from the
  local crawl, and embed's read + decode + preprocess to 224 px (what a GPU actor's
  decode tasks do) on one thread;
- the driver's commit rates: catalog rows/s (``Catalog.record``, 256 items + locations a
  transaction, as the crawler commits) and vectors/s (``VectorStore.put_batch`` of 512-d
  vectors, 256 a shard as on a GPU, and 32 as on CPU).

Images: toy-world scenes (benign coloured shapes) with A1111 metadata, made by this script.
Writes ``benchmarks/results/bench_ray.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def run_audit(*args: str, env: dict | None = None) -> tuple[dict, float]:
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "audit", *args, "--json", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        cwd=REPO,
    )
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"audit {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout), wall


def executor_runs(src: Path, work: Path, model: str, pretrained: str, executors: list[str]) -> dict:
    out = {}
    env = {k: v for k, v in os.environ.items()}
    env.pop("RAY_ADDRESS", None)
    for ex in executors:
        idx = work / f"idx-{ex}"
        crawl, crawl_wall = run_audit("crawl", str(src), "--index", str(idx), "--executor", ex)
        embed, embed_wall = run_audit(
            "embed", "--index", str(idx), "--model", model, "--pretrained", pretrained, "--executor", ex
        )
        n = embed["images_embedded"]
        out[ex] = {
            "crawl": {
                "read": crawl["read"],
                "process_wall_s": round(crawl_wall, 2),
                "crawl_s": crawl["duration_s"],
                "images_per_s": round(crawl["read"] / crawl_wall, 2),
            },
            "embed": {
                "images": n,
                "prompts": embed["prompts_embedded"],
                "process_wall_s": round(embed_wall, 2),
                "embed_s": embed["duration_s"],
                "images_per_s": round(n / embed_wall, 2),
                "workers": embed["workers"],
                "precision": embed["precision"].get("precision"),
            },
        }
        print(f"{ex:>5}: crawl {crawl['read']} in {crawl_wall:.1f}s · embed {n} in {embed_wall:.1f}s", flush=True)
    return out


def decode_rate_per_core(files: list[Path], n: int = 200) -> float:
    """Read + decode + preprocess to 224 px on one thread (a GPU pipeline's decode task)."""
    from audit.embed.base import ImageSpec
    from audit.embed.executor import decode_item

    spec = ImageSpec(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    t = time.perf_counter()
    for p in files[:n]:
        assert not isinstance(decode_item(str(p), None, spec, verify=False), str)
    return min(n, len(files)) / (time.perf_counter() - t)


def commit_rates(work: Path, rows: int = 20_000, dim: int = 512) -> dict:
    """The driver's commit rates into a fresh index: catalog rows and vectors."""
    import audit
    from audit.catalog.vectors import VectorStore
    from audit.crawler.worker import read_entry
    from audit.catalog.vectors import ModelIdentity
    from audit.ingest import open_source
    from audit.ingest.base import Entry

    idx = work / "idx-commit"
    a = audit.open(idx, create=True)
    src = open_source(str(work / "src"))
    first = next(e for e in src.entries(lambda *_: False) if isinstance(e, Entry))
    r = read_entry(first)
    out = {}
    t = time.perf_counter()
    for start in range(0, rows, 256):  # the crawler commits COMMIT_EVERY=256 locations a transaction
        items, locs = [], []
        for i in range(start, min(rows, start + 256)):
            item_id = f"{i:064x}"
            items.append(
                {
                    **r.item,
                    "item_id": item_id,
                    "first_seen": "2026-01-01T00:00:00Z",
                    "last_seen": "2026-01-01T00:00:00Z",
                }
            )
            locs.append(
                {
                    **r.location,
                    "uri": f"/bench/{i}.png",
                    "item_id": item_id,
                    "present": 1,
                    "first_seen": "2026-01-01T00:00:00Z",
                    "last_seen": "2026-01-01T00:00:00Z",
                    "missing_since": None,
                    "seen_run": 1,
                    "root": None,
                }
            )
        a.catalog.record(items, locs)
    out["catalog_rows_per_s"] = round(rows / (time.perf_counter() - t), 1)
    store = VectorStore(a.catalog.conn)
    rng = np.random.default_rng(0)
    for shard in (256, 32):
        ident = ModelIdentity(name=f"bench-{shard}", pretrained="none")
        key = store.register_model(ident, dim)
        n = rows if shard == 256 else rows // 4
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        t = time.perf_counter()
        for s in range(0, n, shard):
            store.put_batch(key, "image", [f"{i:064x}" for i in range(s, min(n, s + shard))], vecs[s : s + shard])
        out[f"vectors_per_s_shard_{shard}"] = round(n / (time.perf_counter() - t), 1)
    out["rows"] = rows
    out["dim"] = dim
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--px", type=int, default=512)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_ray.json")
    args = ap.parse_args()
    from bench_embed import make_images

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        files = make_images(work / "src", args.images, args.px, per_prompt=4)
        generate_s = time.perf_counter() - t
        load0 = os.getloadavg()
        runs = executor_runs(work / "src", work, args.model, args.pretrained, args.executors.split(","))
        result = {
            "machine": {
                "cpu_count": os.cpu_count(),
                "processor": platform.processor(),
                "python": platform.python_version(),
                "loadavg_start": load0,
                "loadavg_end": os.getloadavg(),
            },
            "args": {k: str(v) for k, v in vars(args).items()},
            "generate_s": round(generate_s, 1),
            "runs": runs,
        }
        try:
            import ray

            result["machine"]["ray"] = ray.__version__
        except ImportError:
            pass
        if "local" in runs and "ray" in runs:
            result["rate_ratio"] = {
                s: round(runs["ray"][s]["images_per_s"] / runs["local"][s]["images_per_s"], 3)
                for s in ("crawl", "embed")
            }
            both = lambda ex: runs[ex]["crawl"]["process_wall_s"] + runs[ex]["embed"]["process_wall_s"]  # noqa: E731
            result["rate_ratio"]["crawl_plus_embed"] = round(both("local") / both("ray"), 3)
        cores = os.cpu_count() or 1
        local = runs.get("local")
        result["per_core"] = {
            "crawl_images_per_s": round(local["crawl"]["read"] / local["crawl"]["crawl_s"] / cores, 2)
            if local
            else None,
            "decode_preprocess_images_per_s": round(decode_rate_per_core(files), 2),
            "cpu_embed_images_per_s": round(local["embed"]["images"] / local["embed"]["embed_s"] / cores, 2)
            if local
            else None,
        }
        result["driver_commit"] = commit_rates(work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("rate_ratio", "per_core", "driver_commit") if k in result}, indent=2))


if __name__ == "__main__":
    main()
