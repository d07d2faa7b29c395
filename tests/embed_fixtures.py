"""Helpers for the embed tests: a random-weight toy-shapes checkpoint and small crawled archives."""

from __future__ import annotations

from pathlib import Path

TOY = "toy-shapes"


def random_toy_checkpoint(path: Path, seed: int = 1) -> Path:
    """A toy-shapes checkpoint with random weights (the architecture of the shipped model)."""
    from safetensors.torch import save_file

    from audit.embed.openclip import _create

    model = _create(TOY, {}, seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def toy_scene_archive(root: Path, n: int, px: int = 64, seed: int = 0, prompts_per: int = 1) -> list[Path]:
    """PNG toy scenes with A1111 metadata; every ``prompts_per`` images share one prompt."""
    import random

    from PIL import PngImagePlugin

    from audit.embed import toyworld

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    scenes = toyworld.random_scenes(seed, n)
    paths = []
    prompt = ""
    for i, scene in enumerate(scenes):
        if i % prompts_per == 0:
            prompt = (
                toyworld.captions(scene, rng)[0] if hasattr(toyworld, "captions") else f"a {scene.colour} {scene.shape}"
            )
        info = PngImagePlugin.PngInfo()
        info.add_text(
            "parameters",
            f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: {i}, Size: {px}x{px}",
        )
        p = root / f"img_{i:05d}.png"
        toyworld.draw(scene, px=px).save(p, pnginfo=info)
        paths.append(p)
    return paths
