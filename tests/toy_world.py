"""Small benign toy-world images (coloured shapes on white) with A1111-style generator metadata."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, PngImagePlugin

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}


def a1111_infotext(prompt: str, seed: int, negative: str = "blurry") -> str:
    return (
        f"{prompt}\nNegative prompt: {negative}\n"
        f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Size: 64x64, Model hash: abc123def0, Model: toyModel_v1"
    )


def shape_image(colour: str = "red", shape: str = "circle", size: int = 64, offset: int = 0) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    box = (8 + offset, 8 + offset, size - 8, size - 8)
    rgb = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "square":
        d.rectangle(box, fill=rgb)
    else:
        d.polygon([(size // 2, 8 + offset), (size - 8, size - 8), (8 + offset, size - 8)], fill=rgb)
    return img


def write_generation(
    path: Path, colour: str = "red", shape: str = "circle", seed: int = 1, size: int = 64, offset: int = 0
) -> Path:
    """A PNG (or JPEG, by suffix) of a toy shape with A1111-style metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = shape_image(colour, shape, size, offset)
    text = a1111_infotext(f"a photo of a {colour} {shape}", seed)
    if path.suffix.lower() == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        img.save(path, pnginfo=info)
    else:
        img.save(path, quality=90)
    return path


def make_archive_dir(root: Path, n: int = 12) -> list[Path]:
    colours = list(COLOURS)
    shapes = ["circle", "square", "triangle"]
    return [
        write_generation(root / f"sub{i % 3}" / f"gen_{i:04d}.png", colours[i % 4], shapes[i % 3], seed=i, offset=i % 5)
        for i in range(n)
    ]
