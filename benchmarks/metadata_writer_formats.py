"""Field accuracy on files built to the writers' own published formats (issue 15), for the
formats the visible corpora lack: ComfyUI subgraphs (API path ids, UI definitions, nested,
promoted widgets), EXIF inside PNG (eXIf, ImageMagick raw profile), TensorArt placeholders,
Easy Diffusion, Draw Things, Mochi Diffusion, Fooocus-MRE.

    PYTHONPATH=. python benchmarks/metadata_writer_formats.py

The files come from the builders in ``tests/`` (toy shapes, synthetic records); each case lists
the values its writer put there, and every listed field is one check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from audit.meta import extract  # noqa: E402
from audit.meta.scoring import values_equal  # noqa: E402


def cases():
    import test_meta_desktop_generators as d
    import test_meta_field_sources as f
    import test_meta_png_exif as x
    import test_meta_subgraphs as s
    from test_meta_containers import _chunk, jpeg_with_exif, png_with_chunks, tiff

    comfy = {
        "prompt": s.POSITIVE,
        "negative_prompt": s.NEGATIVE,
        "seed": "156680208700286",
        "steps": 24,
        "cfg_scale": 6.5,
        "sampler": "dpmpp_2m",
        "model": "toyShapes_v1.safetensors",
    }
    yield "comfyui API prompt, subgraph path ids", s.toy_png(prompt=json.dumps(s.api_prompt_with_paths())), comfy
    yield "comfyui workflow, promoted widget", s.toy_png(workflow=json.dumps(s.workflow_with_prompt_subgraph())), comfy
    civitai = {
        "prompt": x.PROMPT,
        "negative_prompt": "a purple circle",
        "seed": "3141592653",
        "steps": 25,
        "cfg_scale": 7,
        "sampler": "DPM++ 2M",
    }
    yield (
        "PNG eXIf UserComment UTF-16BE in II",
        x.toy_png_with_pillow_exif(x.comment_exif(b"UNICODE\x00" + x.INFOTEXT.encode("utf-16-be"), False)),
        civitai,
    )
    yield (
        "PNG eXIf UserComment UTF-16LE in MM",
        x.toy_png_with_pillow_exif(x.comment_exif(b"UNICODE\x00" + x.INFOTEXT.encode("utf-16-le"), True)),
        civitai,
    )
    import zlib

    raw = b"Raw profile type exif\x00\x00" + zlib.compress(
        x.raw_profile(b"Exif\x00\x00" + x.comment_exif(b"UNICODE\x00" + x.INFOTEXT.encode("utf-16-be"), False)).encode()
    )
    yield "PNG Raw profile type exif (ImageMagick)", png_with_chunks([_chunk(b"zTXt", raw)]), civitai
    yield (
        "TensorArt seed -1 + ComfyUI graph",
        f.tensorart_png(f.record()),
        {
            "prompt": "a blue circle on a black background",
            "seed": "987654321012",
            "steps": 28,
            "cfg_scale": 6.0,
            "sampler": "euler_ancestral",
            "model": "Toy Shapes v1",
            "model_hash": "AB12CD34",
        },
    )
    ed = {
        "prompt": d.PROMPT,
        "negative_prompt": "blurry",
        "seed": "3000000001",
        "steps": 30,
        "cfg_scale": 7.5,
        "sampler": "dpmpp_2m",
        "model": "toy-shapes-v1",
    }
    yield "Easy Diffusion PNG chunks", d.ed_png(d.ED_REQUEST), ed
    comment = b"UNICODE\x00" + json.dumps(d.ED_REQUEST).encode("utf-16-be")
    yield "Easy Diffusion JPEG UserComment", jpeg_with_exif(tiff([], False, exif_entries=[(0x9286, 7, comment)])), ed
    dt = {
        "prompt": d.PROMPT,
        "negative_prompt": "blurry",
        "seed": "2718281828",
        "steps": 20,
        "cfg_scale": 4.5,
        "sampler": "DPM++ 2M Karras",
        "model": "toy_shapes_v1_f16.ckpt",
    }
    yield "Draw Things PNG XMP", d.png_with_xmp(d.xmp_packet(None, json.dumps(d.DRAW_THINGS))), dt
    mochi = {
        "prompt": f"{d.PROMPT}; with a thin outline",
        "negative_prompt": "blurry",
        "seed": "4242",
        "steps": 12,
        "cfg_scale": 11.0,
        "model": "toy-shapes_split-einsum",
    }
    yield "Mochi Diffusion PNG XMP", d.png_with_xmp(d.xmp_packet(d.MOCHI, creator="Mochi Diffusion")), mochi
    yield "Mochi Diffusion JPEG IPTC", d.with_segment(d.toy_jpeg(), 0xED, d.app13([(2, 120, d.MOCHI.encode())])), mochi


def main() -> int:
    right = total = 0
    for name, data, expected in cases():
        best = extract(data).best
        ok = sum(values_equal(value, getattr(best, field)) for field, value in expected.items())
        right, total = right + ok, total + len(expected)
        print(f"{name:<42} {ok}/{len(expected)}")
    print(f"OVERALL {right}/{total} = {100 * right / total:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
