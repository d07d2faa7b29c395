"""Acceptance: search a toy-world archive with the shipped toy-shapes CLIP, end to end.

The test draws an archive of benign coloured shapes (``audit.embed.toyworld``), then runs
the real commands in subprocesses: ``audit crawl``, ``audit embed --model toy-shapes``,
``audit index``, ``audit search``. ``--text "a red triangle"`` must return red triangles
(precision@10 >= 0.9) and ``--image`` with a resized, re-encoded copy of an archived image
must return that image first.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.cli_helper import audit_cli

pytestmark = pytest.mark.slow

RED_TRIANGLES = 14
OTHERS = 190


def _save(path: Path, img: Image.Image, prompt: str, seed: int) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
        f"Seed: {seed}, Size: {img.width}x{img.height}, Model: toyModel",
    )
    img.save(path, pnginfo=info)


@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    from audit.embed import toyworld as tw

    root = tmp_path_factory.mktemp("toyworld")
    archive, index = root / "archive", root / "index"
    archive.mkdir()
    rng = random.Random(2024)
    scenes = [tw.random_scene(rng, colour="red", shape="triangle") for _ in range(RED_TRIANGLES)]
    while len(scenes) < RED_TRIANGLES + OTHERS:
        s = tw.random_scene(rng)
        if (s.colour, s.shape) != ("red", "triangle"):
            scenes.append(s)
    rng.shuffle(scenes)
    for i, s in enumerate(scenes):
        # the prompt never names the shape: image search must find it from pixels alone
        _save(archive / f"{i:04d}_{s.colour}_{s.shape}.png", tw.draw(s, px=128), f"generation number {i}", i)
    for args in (
        ("crawl", archive, "--index", index, "-q"),
        ("embed", "--index", index, "--model", "toy-shapes", "--workers", "0", "-q"),
        ("index", "--index", index, "-q"),
    ):
        audit_cli(*args)
    return archive, index


def _search(index: Path, *query: str, k: int = 10) -> list[dict]:
    return audit_cli("search", "--index", index, *query, "-k", k, "--json").json()["results"]


def test_text_query_finds_red_triangles(toy_index):
    _, index = toy_index
    results = _search(index, "--text", "a red triangle")
    assert len(results) == 10
    hits = [Path(r["uri"]).stem.endswith("_red_triangle") for r in results]
    print(f"precision@10 for 'a red triangle': {sum(hits) / 10:.2f}; scores {[round(r['score'], 3) for r in results]}")
    assert sum(hits) / 10 >= 0.9, [Path(r["uri"]).name for r in results]
    assert [r["rank"] for r in results] == list(range(1, 11))


def test_image_query_with_a_resized_reencoded_copy_finds_the_original(toy_index, tmp_path):
    archive, index = toy_index
    originals = sorted(archive.glob("*.png"))
    for original in (originals[3], originals[77], originals[150]):
        copy = tmp_path / f"{original.stem}-copy.jpg"
        with Image.open(original) as im:
            im.convert("RGB").resize((97, 97), Image.BICUBIC).save(copy, quality=75)
        results = _search(index, "--image", str(copy), k=5)
        print(
            f"{copy.name}: top1 {Path(results[0]['uri']).name} score {results[0]['score']:.4f}, "
            f"next {results[1]['score']:.4f}"
        )
        assert Path(results[0]["uri"]).name == original.name
        assert results[0]["score"] > 0.9


def test_human_table_and_item_query(toy_index):
    archive, index = toy_index
    first = _search(index, "--text", "a red triangle", k=1)[0]
    proc = audit_cli("search", "--index", index, "--item", first["item_id"][:16], "-k", "3")
    assert Path(first["uri"]).name in proc.stdout
    assert "generation number" in proc.stdout
