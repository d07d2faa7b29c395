"""Benchmark: one index at archive scale, every stage, time and peak memory per stage.

    python benchmarks/bench_scale.py --items 20000                   # quick
    python benchmarks/bench_scale.py --items 1000000 --out /data/b   # the issue's 1M / 3M / 10M runs
    python benchmarks/bench_scale.py --items 1000000 --out /data/b --reuse --stages flag,report

Builds a synthetic archive through the project's own store API (``audit.open(create=True)``,
``Catalog.record`` for items and locations with prompts and PDQ hashes,
``VectorStore.register_model``/``put_batch`` for image vectors; no SQL of its own):

- vectors: a mixture of ``--clusters`` (default max(1000, N/1000)) centres on the unit sphere,
  each item ``normalise(0.7 centre + 0.71 noise)``: members of one cluster sit at cosine
  ~0.5, far from near-duplicate territory; generated in chunks (bounded memory);
- planted concept hits (``--hits``, default N/1000, at least 20): vectors at cosine ~0.8 to
  a concept direction that random items (cosine ~0 +- 0.05) never reach; the policy's
  concept text embeds to exactly that direction through ``PlantedEmbedder`` (passed as
  ``embedder=`` to ``Audit.flag``, which takes any object with ``embed_texts``);
- planted near-duplicate pairs (``--dups``, default N/200, at least 20): the copy's vector at
  cosine ~0.995 to its original and its PDQ hash 4 bits away (random PDQ hashes are ~128
  bits apart).

Then each stage runs in a fresh subprocess, timed, with the peak RSS of that whole process
(``os.wait4``'s ``ru_maxrss``): ``flag`` (full), ``index`` (``python -m audit index``), ``incremental``
(1% new items and their vectors added, then ``flag`` again, incremental), ``search``
(``python -m audit search --item``), ``report`` (``python -m audit report``: every finding's
original is looked up; none exist here, so every item is reported missing). Reports the
recall of the planted hits (findings of the planted category) and of the planted pairs
(both in one near-duplicate group), prints a table and writes ``<out>/bench_scale.json``
(and ``benchmarks/results/bench_scale-<N>.json``).

``--keep`` leaves the built archive in ``--out``; ``--reuse`` uses the one there (built with
the same ``--items``/``--dim``/``--seed``) instead of building again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONCEPT_TEXT = "a planted benchmark concept"
MODEL_NAME = "bench-synthetic"
STAGES = ("build", "flag", "index", "incremental", "search", "report")
CHUNK = 20_000
NOW = "2024-01-01T00:00:00.000000Z"
# bytes on disk per item: the catalog rows with their indexes (items, locations, vector key
# rows, flag tables); the fp16 vector (dim * 2) and the FAISS index (up to a flat float32
# copy, dim * 4) come on top
CATALOG_BYTES_PER_ITEM = 2_000


def planted_direction(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng([seed, 7]).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class PlantedEmbedder:
    """A text embedder for the benchmark's policy: the concept text (also inside the prompt
    templates a policy ensembles it into) embeds to the planted direction, every other text (neutral captions used for calibration) to a fixed random
    unit vector of its own. Image embedding is never needed (the vectors are stored)."""

    def __init__(self, dim: int, seed: int):
        self.dim = dim
        self.seed = seed

    def embed_texts(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            if CONCEPT_TEXT in t:
                out[i] = planted_direction(self.dim, self.seed)
            else:
                h = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
                v = np.random.default_rng([self.seed, h]).standard_normal(self.dim)
                out[i] = v / np.linalg.norm(v)
        return out

    def embed_images(self, images):  # exemplars: none in the benchmark policy
        raise RuntimeError("the benchmark embedder embeds texts only")


POLICY = f"""
[policy]
name = "bench-scale"
version = "1"

[[category]]
id = "planted"
severity = "high"

[[concept]]
id = "planted"
texts = ["{CONCEPT_TEXT}"]
image_threshold = 0.5
prompt_threshold = 0.5

[[flag]]
id = "planted"
category = "planted"
any = ["concept:planted"]
"""


# ----------------------------------------------------------------------------- synthetic archive


def item_id(i: int) -> str:
    return hashlib.sha256(f"bench-item-{i}".encode()).hexdigest()


def plan(n: int, n_hits: int, n_dups: int, seed: int) -> dict:
    """Which item numbers are planted hits, and which (original, copy) pairs are duplicates."""
    rng = np.random.default_rng([seed, 1])
    chosen = rng.choice(n, size=n_hits + 2 * n_dups, replace=False)
    hits = sorted(int(x) for x in chosen[:n_hits])
    rest = chosen[n_hits:]
    pairs = sorted((int(min(a, b)), int(max(a, b))) for a, b in zip(rest[:n_dups], rest[n_dups:]))
    return {"hits": hits, "pairs": pairs}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def chunk_vectors(
    start: int, stop: int, *, dim: int, centres: np.ndarray, seed: int, hits: set[int], copies: dict[int, int]
) -> np.ndarray:
    """Vectors of items ``start..stop`` (reproducible per item, whatever the chunking)."""
    out = np.empty((stop - start, dim), np.float32)
    direction = planted_direction(dim, seed)
    for r, i in enumerate(range(start, stop)):
        src = copies.get(i, i)  # a duplicate's vector is its original's, slightly moved
        rng = np.random.default_rng([seed, 2, src])
        centre = centres[rng.integers(len(centres))]
        noise = rng.standard_normal(dim).astype(np.float32)
        v = 0.7 * centre + 0.71 * noise / np.linalg.norm(noise)
        if src in hits:
            v = 0.8 * direction + 0.6 * noise / np.linalg.norm(noise)
        v = v / np.linalg.norm(v)
        if src != i:
            jitter = np.random.default_rng([seed, 3, i]).standard_normal(dim).astype(np.float32)
            v = v + 0.1 * jitter / np.linalg.norm(jitter)
        out[r] = v
    return _unit(out)


def chunk_pdq(start: int, stop: int, *, seed: int, copies: dict[int, int]) -> list[str]:
    out = []
    for i in range(start, stop):
        src = copies.get(i, i)
        bits = np.random.default_rng([seed, 4, src]).integers(0, 2, 256, dtype=np.uint8)
        if src != i:
            flip = np.random.default_rng([seed, 5, i]).choice(256, 4, replace=False)
            bits[flip] ^= 1
        out.append(np.packbits(bits).tobytes().hex())
    return out


def add_items(
    index: Path, start: int, stop: int, *, dim: int, n_clusters: int, seed: int, hits: set[int], copies: dict[int, int]
) -> None:
    """Catalog items ``start..stop`` (one location each) and their image vectors, in chunks."""
    import audit
    from audit.catalog.vectors import ModelIdentity, VectorStore

    centres = _unit(np.random.default_rng([seed, 0]).standard_normal((n_clusters, dim)).astype(np.float32))
    a = audit.open(index, create=True)
    try:
        vs = VectorStore(a.catalog.conn)
        key = vs.register_model(ModelIdentity(MODEL_NAME, pretrained="synthetic"), dim)
        for lo in range(start, stop, CHUNK):
            hi = min(stop, lo + CHUNK)
            ids = [item_id(i) for i in range(lo, hi)]
            pdq = chunk_pdq(lo, hi, seed=seed, copies=copies)
            items = [
                {
                    "item_id": iid,
                    "size": 50_000 + i % 997,
                    "status": "ok",
                    "format": "PNG",
                    "width": 512,
                    "height": 512,
                    "md5": hashlib.md5(iid.encode()).hexdigest(),
                    "pdq": pdq[r],
                    "pdq_quality": 100,
                    "generator": "a1111",
                    "prompt": f"a generation of theme {i % 5000} variant {i % 7}",
                    "seed": str(i),
                    "steps": 20,
                    "model": "synthetic-model",
                    "first_seen": NOW,
                    "last_seen": NOW,
                }
                for r, (i, iid) in enumerate(zip(range(lo, hi), ids))
            ]
            locs = [
                {
                    "uri": f"/bench-archive/{i // 10_000:05d}/gen_{i:09d}.png",
                    "item_id": iid,
                    "source": "folder",
                    "size": 50_000 + i % 997,
                    "mtime_ns": 1,
                    "status": "ok",
                    "present": 1,
                    "first_seen": NOW,
                    "last_seen": NOW,
                }
                for i, iid in zip(range(lo, hi), ids)
            ]
            a.catalog.record(items, locs)
            vecs = chunk_vectors(lo, hi, dim=dim, centres=centres, seed=seed, hits=hits, copies=copies)
            vs.put_batch(key, "image", ids, vecs)
    finally:
        a.close()


# ----------------------------------------------------------------------------- stages


def run_stage(name: str, argv: list[str], *, timeout: float | None = None) -> dict:
    """Run ``argv`` in a fresh process: wall time, peak RSS of that process, its JSON output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    load_start = os.getloadavg()
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=str(REPO))
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    res = {
        "stage": name,
        "seconds": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit_code": p.returncode,
        # CPU seconds of the stage's process (user + system): comparable across machine loads
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        # the machine is shared: the 1-minute load average at the stage's start and end
        "loadavg_1m": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
    }
    res["output"] = _json_output(stdout)
    if p.returncode not in (0, 1):
        res["error"] = stderr[-3000:]
    return res


def _json_output(stdout: str):
    """A stage's JSON summary: the whole output (the CLI pretty-prints), else its last line."""
    text = stdout.strip()
    if not text:
        return None
    for candidate in (text, text.splitlines()[-1]):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return text[-2000:]


def _py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


FLAG_CODE = """
import json, sys
sys.path.insert(0, sys.argv[4])
from bench_scale import PlantedEmbedder
import audit
a = audit.open(sys.argv[1])
s = a.flag(sys.argv[2], embedder=PlantedEmbedder(int(sys.argv[3]), int(sys.argv[5])), full=sys.argv[6] == "full")
print(json.dumps(s.to_dict(), default=str))
"""

ADD_CODE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import bench_scale as b
cfg = json.loads(open(sys.argv[2]).read())
copies = {int(k): v for k, v in cfg["copies"].items()}
b.add_items(b.Path(cfg["index"]), cfg["items"], cfg["items"] + cfg["new_items"], dim=cfg["dim"],
            n_clusters=cfg["clusters"], seed=cfg["seed"], hits=set(cfg["hits"]), copies=copies)
print(json.dumps({"added": cfg["new_items"]}))
"""


def recall(index: Path, planted: dict, n_total: int) -> dict:
    """Recall of planted hits (findings of the planted category) and planted pairs (one
    near-duplicate group holds both). Reads today's layout: findings rows, and the
    ``members`` lists of near_duplicate rows in ``clusters`` (``group_of`` is the one place
    to adapt when groups move to a table of their own)."""
    import polars as pl

    import audit

    hits = [i for i in planted["hits"] if i < n_total]
    pairs = [(x, y) for x, y in planted["pairs"] if y < n_total]
    from audit.findings.store import is_review_candidate_json

    with audit.open(index, read_only=True) as a:
        rows = a.findings(category="planted", lazy=True).select("item_id", "signals").collect()
        # own evidence (a concept signal) apart from findings derived from a flagged cluster
        # or a confirmed neighbour, which the flag stage adds around planted hits by design
        own = [not is_review_candidate_json(sig) for sig in rows["signals"]]
        found = {i for i, o in zip(rows["item_id"], own) if o}
        derived = len(own) - sum(own)
        group_of = near_duplicate_groups(a)
        n_findings = a.findings(lazy=True).select(pl.len()).collect().item()
    hit_ids = {item_id(i) for i in hits}
    got_pairs = sum(
        1
        for x, y in pairs
        if group_of.get(item_id(x)) is not None and group_of.get(item_id(x)) == group_of.get(item_id(y))
    )
    false_hits = len(found - hit_ids)
    return {
        "planted_hits": len(hits),
        "hit_recall": round(len(found & hit_ids) / max(1, len(hits)), 4),
        "false_hit_findings": false_hits,
        "derived_findings": derived,
        "findings": n_findings,
        "planted_pairs": len(pairs),
        "near_duplicate_recall": round(got_pairs / max(1, len(pairs)), 4),
        "near_duplicate_groups": len(set(group_of.values())),
    }


def near_duplicate_groups(a) -> dict[str, str]:
    """item_id -> near-duplicate group id, from today's ``clusters`` rows (kind near_duplicate)."""
    out: dict[str, str] = {}
    lf = a.clusters(kind="near_duplicate", lazy=True).select("cluster_id", "members")
    for row in lf.collect().iter_rows():
        for m in json.loads(row[1]):
            out[m] = row[0]
    return out


# ----------------------------------------------------------------------------- main


def disk_needed(n: int, dim: int, per_item: int | None = None) -> int:
    """An fp16 vector in a shard, up to a flat FAISS copy, and the catalog rows per item."""
    return int(n * (per_item if per_item else dim * 2 + dim * 4 + CATALOG_BYTES_PER_ITEM) * 1.1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--items", type=int, required=True, help="items in the archive (before the incremental 1%%)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument(
        "--out", type=Path, default=None, help="folder for the index, policy, report (default: a temporary one)"
    )
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}")
    p.add_argument("--clusters", type=int, default=None, help="mixture components (default max(1000, N/1000))")
    p.add_argument("--hits", type=int, default=None, help="planted concept hits (default max(20, N/1000))")
    p.add_argument("--dups", type=int, default=None, help="planted near-duplicate pairs (default max(20, N/200))")
    p.add_argument("--new-share", type=float, default=0.01, help="share of new items in the incremental scan")
    p.add_argument(
        "--new-items",
        type=int,
        default=None,
        help="new items in the incremental scan (instead of --new-share; with --reuse it replaces the "
        "archive's count while its incremental items are not added yet)",
    )
    p.add_argument(
        "--tag", default="", help="suffix of the results file name (benchmarks/results/bench_scale-<N><tag>.json)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="leave the built archive in --out")
    p.add_argument("--reuse", action="store_true", help="use the archive already built in --out")
    p.add_argument("--no-disk-check", action="store_true")
    p.add_argument(
        "--disk-per-item",
        type=int,
        default=None,
        help="bytes on disk per item for the free-space check (default: dim*6 + 2000)",
    )
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage {bad[0]!r} (choose from {', '.join(STAGES)})")
    n, dim = args.items, args.dim
    n_new = args.new_items if args.new_items is not None else max(1, int(n * args.new_share))
    cfg_clusters = args.clusters or max(1000, n // 1000)
    n_hits = args.hits if args.hits is not None else max(20, n // 1000)
    n_dups = args.dups if args.dups is not None else max(20, n // 200)
    temp = args.out is None
    out = Path(tempfile.mkdtemp(prefix="bench-scale-")) if temp else args.out.expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    index, cfg_path = out / "index", out / "bench_archive.json"

    if args.reuse:
        if not cfg_path.exists():
            print(f"--reuse: no archive built in {out} (run once with --keep)", file=sys.stderr)
            return 2
        cfg = json.loads(cfg_path.read_text())
        if (cfg["items"], cfg["dim"], cfg["seed"]) != (n, dim, args.seed):
            print(
                f"--reuse: the archive in {out} has --items {cfg['items']} --dim {cfg['dim']} --seed {cfg['seed']}",
                file=sys.stderr,
            )
            return 2
        stages = [s for s in stages if s != "build"]
        cfg["index"] = str(index)  # the archive may have been copied or moved since it was built
        if args.new_items is not None and not (out / "incremental.done").exists():
            cfg["new_items"] = n_new  # planted items lie below the built plan's end; more are plain items
    else:
        if index.exists():
            print(f"{index} exists: pass --reuse to use it, or another --out", file=sys.stderr)
            return 2
        need, free = disk_needed(n + n_new, dim, args.disk_per_item), shutil.disk_usage(out).free
        if need > free and not args.no_disk_check:
            print(
                f"not enough disk in {out}: about {need / 2**30:.1f} GiB needed for {n:,} items of {dim}-d, "
                f"{free / 2**30:.1f} GiB free (--out elsewhere, or --no-disk-check)",
                file=sys.stderr,
            )
            return 3
        planted = plan(n + n_new, n_hits, n_dups, args.seed)
        copies = {y: x for x, y in planted["pairs"]}
        cfg = {
            "items": n,
            "dim": dim,
            "seed": args.seed,
            "clusters": cfg_clusters,
            "new_items": n_new,
            "index": str(index),
            "hits": planted["hits"],
            "pairs": planted["pairs"],
            "copies": {str(k): v for k, v in copies.items()},
        }
        if "build" not in stages:
            stages.insert(0, "build")
    (out / "policy.toml").write_text(POLICY)
    policy = str(out / "policy.toml")
    bench_dir = str(Path(__file__).resolve().parent)

    results: list[dict] = []
    meta = {
        "items": n,
        "dim": dim,
        "clusters": cfg["clusters"],
        "planted_hits": len(cfg["hits"]),
        "planted_pairs": len(cfg["pairs"]),
        "new_items": cfg["new_items"],
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "out": str(out),
    }
    print(
        f"bench_scale: {n:,} items x {dim}-d, {cfg['clusters']:,} clusters, {len(cfg['hits'])} planted hits, "
        f"{len(cfg['pairs'])} planted pairs -> {out}",
        file=sys.stderr,
    )
    incremental_done = (out / "incremental.done").exists()
    cfg_path.write_text(json.dumps(cfg))
    for stage in STAGES:
        if stage not in stages:
            continue
        print(f"  {stage} ...", file=sys.stderr, flush=True)
        if stage == "build":
            build_cfg = {**cfg, "new_items": 0}
            (out / "build.json").write_text(json.dumps({**build_cfg, "items": 0, "new_items": n}))
            r = run_stage("build", _py(ADD_CODE, bench_dir, str(out / "build.json")))
        elif stage == "flag":
            r = run_stage(
                "flag (full)", _py(FLAG_CODE, str(index), policy, str(dim), bench_dir, str(args.seed), "full")
            )
            r["recall"] = recall(index, cfg, n + (cfg["new_items"] if incremental_done else 0))
        elif stage == "index":
            r = run_stage("index", [sys.executable, "-m", "audit", "index", "--index", str(index), "--json"])
        elif stage == "incremental":
            if incremental_done:
                print(
                    "    (the 1% new items are already in this archive: flagging incrementally again)", file=sys.stderr
                )
                add = None
            else:
                add = run_stage("add 1% items", _py(ADD_CODE, bench_dir, str(cfg_path)))
                (out / "incremental.done").write_text("")
                incremental_done = True
                results.append(add)
            r = run_stage(
                "flag (incremental)",
                _py(FLAG_CODE, str(index), policy, str(dim), bench_dir, str(args.seed), "incremental"),
            )
            r["recall"] = recall(index, cfg, n + cfg["new_items"])
        elif stage == "search":
            r = run_stage(
                "search",
                [
                    sys.executable,
                    "-m",
                    "audit",
                    "search",
                    "--index",
                    str(index),
                    "--item",
                    item_id(cfg["hits"][0]),
                    "-k",
                    "10",
                    "--json",
                ],
            )
        else:
            shutil.rmtree(out / "report", ignore_errors=True)
            r = run_stage(
                "report",
                [
                    sys.executable,
                    "-m",
                    "audit",
                    "report",
                    "--index",
                    str(index),
                    "--out",
                    str(out / "report"),
                    "--json",
                ],
            )
            jsonl = out / "report" / "findings.jsonl"
            if jsonl.exists():
                with open(jsonl, "rb") as fh:
                    r["findings_jsonl_lines"] = sum(1 for _ in fh)
        results.append(r)
        if r.get("error"):
            print(f"    {stage} failed (exit {r['exit_code']}):\n{r['error']}", file=sys.stderr)
    _table(results)
    record = {
        "meta": meta,
        "stages": [
            {k: v for k, v in r.items() if k != "output"} | {"output": _short(r.get("output"))} for r in results
        ],
    }
    (out / "bench_scale.json").write_text(json.dumps(record, indent=2, default=str))
    res_dir = REPO / "benchmarks" / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / f"bench_scale-{n}{args.tag}.json").write_text(json.dumps(record, indent=2, default=str))
    if temp and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    elif not args.keep and not args.reuse:
        shutil.rmtree(index, ignore_errors=True)
        cfg_path.unlink(missing_ok=True)
    return 0 if all(not r.get("error") for r in results) else 1


def _short(output):
    """The summary figures of a stage's JSON output (not its whole listing)."""
    if not isinstance(output, dict):
        return output
    keep = (
        "mode",
        "items",
        "evaluated",
        "findings",
        "new_findings",
        "timings",
        "clusters",
        "near_duplicate_groups",
        "counts",
        "files",
        "built",
        "vectors",
        "added",
        "duration_s",
    )
    if (
        isinstance(output.get("results"), list) and output.get("command") == "search"
    ):  # search: the hits' ranks and scores only
        return {"hits": [{k: h.get(k) for k in ("rank", "score")} for h in output["results"]]}
    return {k: output[k] for k in keep if k in output} or {k: output[k] for k in list(output)[:8]}


def _table(results: list[dict]) -> None:
    print(f"{'stage':<22}{'seconds':>10}{'peak RSS MB':>14}{'load':>12}  notes")
    for r in results:
        notes = []
        if "recall" in r:
            rc = r["recall"]
            notes.append(
                f"hit recall {rc['hit_recall']} ({rc['planted_hits']} planted, {rc['false_hit_findings']} false, "
                f"{rc['derived_findings']} via cluster/neighbour), "
                f"near-dup recall {rc['near_duplicate_recall']} ({rc['planted_pairs']} pairs)"
            )
        if "findings_jsonl_lines" in r:
            notes.append(f"{r['findings_jsonl_lines']} findings in findings.jsonl")
        if r.get("error"):
            notes.append(f"FAILED exit {r['exit_code']}")
        load = "/".join(f"{x:.1f}" for x in r.get("loadavg_1m", ()))
        print(f"{r['stage']:<22}{r['seconds']:>10.1f}{r['peak_rss_mb']:>14.1f}{load:>12}  {'; '.join(notes)}")


if __name__ == "__main__":
    sys.exit(main())
