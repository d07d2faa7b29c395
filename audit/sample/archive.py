"""Writes the toy-world sample archive: benign coloured shapes only.

Layout under ``root``::

    a1111/      PNGs with an A1111 "parameters" text chunk (some with LoRA tags)
    comfyui/    PNGs with ComfyUI "prompt" + "workflow" graphs
    jpeg/       JPEGs with the infotext in EXIF UserComment (UTF-16)
    dupes/      resized / re-encoded copies of a few planted originals

and a second batch, written to ``later_root`` (default: ``<root>-later`` beside it), for
the "new files arrive" part of a scheduled scan.

"Planted" items are red triangles: the toy stand-in for prohibited content. Some carry an
innocent prompt (so only the image concept can find them); the truth is written to
``truth.json`` so tests can measure recall and precision.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

from audit.embed.toyworld import captions, draw, random_scene

PX = 64


@dataclass
class SampleManifest:
    root: str
    items: list[dict] = field(default_factory=list)

    def planted(self, batch: str = "first") -> list[dict]:
        return [i for i in self.items if i["planted"] and i["batch"] == batch]


def _infotext(prompt: str, negative: str, seed: int, model: str, extra: str = "") -> str:
    return (
        f"{prompt}\nNegative prompt: {negative}\n"
        f"Steps: 24, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: {seed}, Size: {PX}x{PX}, "
        f"Model hash: 5f1c2a9e01, Model: {model}, Version: v1.10.1{extra}"
    )


def _comfy_graph(prompt: str, negative: str, seed: int, model: str) -> tuple[str, str]:
    api = {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": 20,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": PX, "height": PX, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    workflow = {"last_node_id": 9, "nodes": [{"id": int(k), "type": v["class_type"]} for k, v in api.items()]}
    return json.dumps(api), json.dumps(workflow)


def _save_png(img: Image.Image, path: Path, texts: dict[str, str]) -> None:
    info = PngImagePlugin.PngInfo()
    for k, v in texts.items():
        info.add_text(k, v)
    img.save(path, pnginfo=info)


def _save_jpeg(img: Image.Image, path: Path, infotext: str) -> None:
    exif = Image.Exif()
    exif[0x8769] = {0x9286: b"UNICODE\0" + infotext.encode("utf-16-be")}
    img.save(path, quality=92, exif=exif)


def make_sample_archive(
    root: str | Path, *, later_root: str | Path | None = None, n: int = 300, n_later: int = 40, seed: int = 7
) -> SampleManifest:
    """Write the sample archive under ``root`` (deterministic for a given seed)."""
    root = Path(root)
    later = Path(later_root) if later_root is not None else root.with_name(root.name + "-later")
    later.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    manifest = SampleManifest(root=str(root))
    for sub in ("a1111", "comfyui", "jpeg", "dupes"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def one(i: int, batch: str, folder: str | None = None, planted: bool = False, honest_prompt: bool = True) -> dict:
        if planted:
            scene = random_scene(rng, colour="red", shape="triangle")
        else:
            scene = random_scene(rng)
            while scene.colour == "red" and scene.shape == "triangle":
                scene = random_scene(rng)
        img = draw(scene, PX)
        prompt = captions(scene, rng)[0] if honest_prompt else "a photo of a geometric shape, minimalist"
        negative = rng.choice(["blurry, lowres", "text, watermark", "jpeg artifacts", "lowres, bad quality"])
        model = rng.choice(["toyShapesXL_v2.safetensors", "shapeMix_v1.safetensors"])
        kind = folder or rng.choice(["a1111", "a1111", "comfyui", "jpeg"])
        gen_seed = rng.randrange(2**32)
        name = f"{batch}_{i:04d}"
        if kind == "a1111":
            extra = ""
            if rng.random() < 0.3:
                prompt += " <lora:flatColours_v3:0.7>"
                extra = ', Lora hashes: "flatColours_v3: 9a8b7c6d5e4f"'
            path = (later if batch == "later" else root / "a1111") / f"{name}.png"
            _save_png(img, path, {"parameters": _infotext(prompt, negative, gen_seed, model.rsplit(".", 1)[0], extra)})
        elif kind == "comfyui":
            api, wf = _comfy_graph(prompt, negative, gen_seed, model)
            path = (later if batch == "later" else root / "comfyui") / f"{name}.png"
            _save_png(img, path, {"prompt": api, "workflow": wf})
        else:
            path = (later if batch == "later" else root / "jpeg") / f"{name}.jpg"
            _save_jpeg(img, path, _infotext(prompt, negative, gen_seed, model.rsplit(".", 1)[0]))
        rec = {
            "path": str(path.relative_to(later if batch == "later" else root)),
            "batch": batch,
            "planted": planted,
            "colour": scene.colour,
            "shape": scene.shape,
            "background": scene.background,
            "prompt": prompt,
            "duplicate_of": None,
        }
        manifest.items.append(rec)
        return rec

    planted_every = 25  # 12 planted red triangles in 300
    originals = []
    for i in range(n):
        planted = i % planted_every == 3
        rec = one(i, "first", planted=planted, honest_prompt=not (planted and i % 2))
        if i % 60 == 10:
            originals.append(rec)
    for j, rec in enumerate(originals):  # near-duplicates: resized, re-encoded, slightly cropped
        src = Image.open(root / rec["path"]).convert("RGB")
        variants = {
            "resized": src.resize((PX * 2, PX * 2), Image.Resampling.BICUBIC),
            "reencoded": Image.open(io.BytesIO(_jpeg_bytes(src, 70))),
            "cropped": src.crop((2, 2, PX - 2, PX - 2)).resize((PX, PX)),
        }
        for how, img in variants.items():
            path = root / "dupes" / f"dupe_{j:02d}_{how}.png"
            _save_png(img, path, {"parameters": _infotext(rec["prompt"], "blurry", 1000 + j, "toyShapesXL_v2")})
            manifest.items.append({**rec, "path": str(path.relative_to(root)), "duplicate_of": rec["path"]})
    for i in range(n_later):
        one(i, "later", planted=i % 10 == 4, honest_prompt=True)
    (root / "truth.json").write_text(json.dumps(asdict(manifest)["items"], indent=1))
    return manifest


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
