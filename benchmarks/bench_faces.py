"""Face likeness cost: milliseconds per image at 512 px, and the share of images the CLIP
gate ("a photo of a person") spares on the bundled sample archive.

1. ``describe_faces`` (HOG detection with upsample 1, 5-point alignment, ResNet descriptor)
   on copies whose longest side is 512 px: the sample archive's images (toy scenes, no
   face: the detector's cost alone) and, when ../shared/corpora/faces is present, its
   portraits (one or two faces each: detection plus descriptors).
2. The sample archive crawled and embedded with toy-shapes into a temporary index, then
   flagged with a policy whose [[faces]] gallery is gated by a "person" concept: the flag
   run's ``faces`` detector reports how many items the gate skipped (never decoded for faces).

    python benchmarks/bench_faces.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
ARCHIVE = REPO / "samples" / "archive"
FACES = Path(os.environ.get("AUDIT_CORPORA", REPO.parent / "shared" / "corpora")) / "faces"
RESULTS = HERE / "results"


def _at_512(path: Path):
    from PIL import Image

    from audit.imaging import decode_file

    img = decode_file(path).rgb()
    scale = 512 / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)


def time_describe(paths: list[Path], repeat: int) -> dict:
    from audit.faces.describe import describe_faces
    from audit.faces.models import load_face_model

    model = load_face_model()
    images = [_at_512(p) for p in paths]
    describe_faces(model, images[0], max_side=512)  # warm-up
    per_image = []
    faces = 0
    for _ in range(repeat):
        for img in images:
            t = time.perf_counter()
            found = describe_faces(model, img, max_side=512)
            per_image.append((time.perf_counter() - t) * 1000)
            faces += len(found)
    return {
        "images": len(images),
        "repeat": repeat,
        "faces_per_pass": faces // repeat,
        "ms_mean": round(statistics.mean(per_image), 1),
        "ms_p50": round(statistics.median(per_image), 1),
        "ms_p95": round(sorted(per_image)[int(0.95 * (len(per_image) - 1))], 1),
    }


def gate_share(work: Path) -> dict:
    import numpy as np

    import audit
    from audit.faces.gallery import Gallery, write_descriptor_file

    index = work / "index"
    audit.crawl([str(ARCHIVE)], index)
    with audit.open(index) as a:
        a.embed(model="toy-shapes", pretrained=None)
    # a one-person gallery (a random descriptor): the benchmark measures cost, not matches
    write_descriptor_file(
        Gallery(["someone"], np.random.default_rng(0).normal(0, 0.1, (1, 128)).astype("float32")), work / "gallery.npz"
    )
    policy = work / "policy.toml"
    policy.write_text("""
[policy]
name = "bench-faces"
[[category]]
id = "real-person"
severity = "high"
[[concept]]
id = "person"
texts = ["a photo of a person", "a portrait of a person", "a human face"]
[[faces]]
id = "protected"
gallery = "gallery.npz"
gate = "person"
[[flag]]
category = "real-person"
all = ["face:protected"]
""")
    t = time.perf_counter()
    with audit.open(index) as a:
        summary = a.flag(str(policy), model="toy-shapes")
    seconds = time.perf_counter() - t
    stats = summary.detectors["faces"]
    evaluated = summary.evaluated
    return {
        "items": evaluated,
        "gated_out": stats["gated_out"],
        "described": stats["described"],
        "skip_share": round(stats["gated_out"] / evaluated, 4) if evaluated else None,
        "gate_threshold": summary.thresholds.get("person", {}).get("image"),
        "flag_seconds": round(seconds, 2),
        "ms_per_described": stats["ms_per_described"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    archive = sorted(p for p in ARCHIVE.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    result = {"machine_cpus": os.cpu_count(), "archive_at_512": time_describe(archive[:60], args.repeat)}
    portraits = sorted(p for p in FACES.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if portraits:
        result["portraits_at_512"] = time_describe(portraits, args.repeat)
    work = Path(tempfile.mkdtemp(prefix="bench-faces-"))
    try:
        result["gate_on_sample_archive"] = gate_share(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faces.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
