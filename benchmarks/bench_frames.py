"""Benchmark: crawl (and embed) rate of animated images and videos against still images.

    python benchmarks/bench_frames.py                  # 40 files of each kind, one worker
    python benchmarks/bench_frames.py --n 200 --embed  # more files; also embed (toy-shapes)

Files are written here: toy shapes at ``--px`` pixels, stills as PNG; animations as GIF,
APNG and animated WebP of ``--frames`` frames (8 of them sampled: frame 0 and 7 later ones
hashed); videos as mp4 (mpeg4) and webm (VP8) of ``--seconds`` seconds at 10 fps with a
key frame a second (first frame + up to 7 key frames + a vPDQ hash a second). Each kind
is crawled into its own index with ``workers=0`` (one process: the per-core rate), and
optionally embedded with the toy CLIP (frame vectors included). Prints a table and writes
``benchmarks/results/bench_frames.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import audit  # noqa: E402
from audit.embed import toyworld as tw  # noqa: E402


def _frames(rng: random.Random, n: int, px: int):
    return [tw.draw(tw.random_scene(rng), px=px) for _ in range(n)]


def write_kind(kind: str, folder: Path, n: int, px: int, frames: int, seconds: int) -> int:
    rng = random.Random(hash(kind) & 0xFFFF)
    folder.mkdir(parents=True)
    total = 0
    for i in range(n):
        if kind == "png-still":
            path = folder / f"{i:05d}.png"
            tw.draw(tw.random_scene(rng), px=px).save(path)
        elif kind in ("gif", "apng", "webp-anim"):
            imgs = _frames(rng, frames, px)
            fmt, ext = {"gif": ("GIF", "gif"), "apng": ("PNG", "png"), "webp-anim": ("WEBP", "webp")}[kind]
            path = folder / f"{i:05d}.{ext}"
            imgs[0].save(path, fmt, save_all=True, append_images=imgs[1:], duration=100, loop=0)
        else:
            path = folder / f"{i:05d}.{kind}"
            path.write_bytes(_video(kind, _frames(rng, seconds, px), px))
        total += path.stat().st_size
    return total


def _video(fmt: str, scenes, px: int) -> bytes:
    """``seconds`` scenes, each held for a second at 10 fps (a key frame a second)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream("mpeg4" if fmt == "mp4" else "libvpx", rate=10)
        stream.width = stream.height = px
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 10
        for img in scenes:
            frame = av.VideoFrame.from_image(img)
            for _ in range(10):
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--embed", action="store_true")
    ap.add_argument("--kinds", default="png-still,gif,apng,webp-anim,mp4,webm")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        for kind in args.kinds.split(","):
            folder = Path(tmp) / kind
            nbytes = write_kind(kind, folder, args.n, args.px, args.frames, args.seconds)
            with audit.open(Path(tmp) / f"idx-{kind}", create=True) as a:
                t = time.perf_counter()
                s = a.crawl([str(folder)], workers=0)
                crawl_s = time.perf_counter() - t
                row = {
                    "kind": kind,
                    "files": args.n,
                    "mb": round(nbytes / 1e6, 2),
                    "errors": s.errors,
                    "crawl_s": round(crawl_s, 2),
                    "crawl_files_per_s": round(args.n / crawl_s, 1),
                }
                if args.embed:
                    t = time.perf_counter()
                    e = a.embed(model="toy-shapes", workers=0)
                    embed_s = time.perf_counter() - t
                    frames = a.catalog.conn.execute(
                        "SELECT count(*) FROM vector_rows r JOIN vector_spaces s "
                        "ON r.vspace = s.vspace WHERE s.space = 'frame'"
                    ).fetchone()[0]
                    row.update(
                        embed_s=round(embed_s, 2),
                        embed_files_per_s=round(e.images_embedded / embed_s, 1),
                        frame_vectors=frames,
                    )
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
    }
    path = Path(__file__).resolve().parent / "results" / "bench_frames.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'kind':<10} {'files':>5} {'MB':>6} {'crawl files/s':>14} {'embed files/s':>14}")
    for r in rows:
        print(
            f"{r['kind']:<10} {r['files']:>5} {r['mb']:>6} {r['crawl_files_per_s']:>14} "
            f"{r.get('embed_files_per_s', '-'):>14}"
        )


if __name__ == "__main__":
    main()
