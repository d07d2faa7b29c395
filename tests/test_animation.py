"""Animated images: sampled later frames get PDQs (crawl) and image vectors (embed); a
prohibited frame that is not frame 0 is found by hash lists and by CLIP concepts, and the
finding names the frame. A corrupt later frame costs the frames from there, never the item."""

from __future__ import annotations

import io
import itertools
import json
import random

import pytest
from PIL import Image

import audit
from audit.findings.store import signal_dicts
from audit.animation import (
    frame_pdq_json,
    later_frames,
    parse_frame_pdq,
    sample_indices,
)
from audit.hashing import pdq_of_image

N_FRAMES = 12
HIDDEN = 5  # a sampled index for 12 frames (0 2 3 5 6 8 9 11): the prohibited frame


def test_sample_indices_first_last_evenly_spaced_bounded():
    assert sample_indices(1) == [0] and sample_indices(0) == []
    assert sample_indices(3) == [0, 1, 2]
    assert sample_indices(N_FRAMES) == [0, 2, 3, 5, 6, 8, 9, 11]
    big = sample_indices(1000)
    assert len(big) == 8 and big[0] == 0 and big[-1] == 999
    gaps = [b - a for a, b in itertools.pairwise(big)]
    assert max(gaps) - min(gaps) <= 1
    assert sample_indices(1000, max_frames=3) == [0, 500, 999]


def _frames(px: int = 96) -> list[Image.Image]:
    """Blue circles, and one red triangle at ``HIDDEN``: a toy-world stand-in for a
    prohibited picture hidden in an animation."""
    from audit.embed import toyworld as tw

    rng = random.Random(7)
    out = []
    for i in range(N_FRAMES):
        colour, shape = ("red", "triangle") if i == HIDDEN else ("blue", "circle")
        scene = tw.random_scene(rng, colour=colour, shape=shape, background="white")
        out.append(tw.draw(scene, px=px))
    return out


def animation(fmt: str, frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    kw = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        kw["lossless"] = True
    frames[0].save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_later_frames_decode_as_shown(fmt):
    frames = _frames()
    data = animation(fmt, frames)
    got = dict(later_frames(data, N_FRAMES))
    assert sorted(got) == [i for i in sample_indices(N_FRAMES) if i > 0]
    import numpy as np

    def red_pixels(img):
        a = np.asarray(img.convert("RGB")).astype(int)
        return int(((a[..., 0] > 150) & (a[..., 2] < 100)).sum())

    # the red triangle is there on the frame it was drawn on, and not on its neighbours
    assert got[HIDDEN].mode == "RGB" and red_pixels(got[HIDDEN]) > 200
    assert red_pixels(got[3]) < 20 and red_pixels(got[6]) < 20


def _corrupt_later_frame(gif: bytes) -> bytes:
    """The image data of the 8th frame overwritten: frames before it stay decodable."""
    at = -1
    for _ in range(8):
        at = gif.find(b"\x2c", at + 1 + 10)  # image descriptors (approximate walk is enough here)
    return gif[: at + 12] + b"\xff" * 200 + gif[at + 212 :]


def test_crawl_hashes_later_frames_and_keeps_a_damaged_animation(tmp_path):
    frames = _frames()
    src = tmp_path / "src"
    src.mkdir()
    (src / "anim.gif").write_bytes(animation("GIF", frames))
    (src / "anim.png").write_bytes(animation("PNG", frames))
    (src / "anim.webp").write_bytes(animation("WEBP", frames))
    (src / "damaged.gif").write_bytes(_corrupt_later_frame(animation("GIF", frames)))
    frames[0].save(src / "still.png")
    audit.crawl([str(src)], tmp_path / "idx", workers=0)
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in audit.open(tmp_path / "idx").items().iter_rows(named=True)}
    for name in ("anim.gif", "anim.png", "anim.webp"):
        r = rows[name]
        assert r["status"] == "ok" and r["frames"] == N_FRAMES, name
        got = parse_frame_pdq(r["frame_pdq"])
        assert [f["frame"] for f in got] == [2, 3, 5, 6, 8, 9, 11], name
    assert rows["still.png"]["frame_pdq"] is None
    damaged = rows["damaged.gif"]
    assert damaged["status"] == "ok" and damaged["pdq"] == rows["anim.gif"]["pdq"]
    kept = [f["frame"] for f in parse_frame_pdq(damaged["frame_pdq"])]
    assert kept and kept == [2, 3, 5, 6, 8, 9, 11][: len(kept)] and len(kept) < 7
    assert any("frame" in w for w in json.loads(damaged["warnings"]))


def test_hash_list_finds_the_frame(tmp_path):
    frames = _frames()
    data = animation("GIF", frames)
    hidden_pdq = next(f for f in parse_frame_pdq(frame_pdq_json(data, N_FRAMES, [])) if f["frame"] == HIDDEN)["pdq"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "anim.gif").write_bytes(data)
    frames[HIDDEN].save(src / "hidden_alone.png")
    frames[0].save(src / "first_alone.png")
    (tmp_path / "bank.csv").write_text(f"hash_type,hash,label\npdq,{hidden_pdq},toy known frame\n")
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nname = "frames"\n[[category]]\nid = "known"\nseverity = "high"\n'
        '[[hashlist]]\nid = "bank"\npath = "bank.csv"\ncategory = "known"\npdq_max_distance = 31\n'
    )
    index = tmp_path / "idx"
    audit.crawl([str(src)], index, workers=0)
    with audit.open(index) as a:
        a.flag(str(policy))
        found = {r["uri"].rsplit("/", 1)[1]: signal_dicts(r["signals"]) for r in a.findings().iter_rows(named=True)}
    assert "first_alone.png" not in found
    anim = [s for s in found["anim.gif"] if s["name"] == "hash:bank"]
    assert anim and anim[0]["detail"]["frame"] == HIDDEN and anim[0]["score"] <= 31
    assert "frame" not in next(s for s in found["hidden_alone.png"] if s["name"] == "hash:bank")["detail"]


@pytest.mark.slow
def test_clip_concept_finds_the_frame_and_names_it(tmp_path):
    """Toy CLIP: frame 0 is a blue circle, frame 5 a red triangle: the concept fires on the
    animation through its best frame; stills of other shapes do not fire. (Toy CLIP cosines
    to "a red triangle": ~0.8 for red triangles, below 0.15 for the rest: threshold 0.5.)"""
    pytest.importorskip("open_clip")
    from audit.embed import toyworld as tw

    frames = _frames()
    src = tmp_path / "src"
    src.mkdir()
    (src / "anim.gif").write_bytes(animation("GIF", frames))
    rng = random.Random(3)
    for i in range(12):  # stills: the concept must not fire on these
        colour, shape = [("blue", "circle"), ("green", "square"), ("yellow", "star")][i % 3]
        tw.draw(tw.random_scene(rng, colour=colour, shape=shape), px=96).save(src / f"still_{i}.png")
    tw.draw(tw.random_scene(rng, colour="red", shape="triangle", background="white"), px=96).save(src / "red.png")
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nname = "frames"\n[[category]]\nid = "red-triangles"\nseverity = "high"\n'
        '[[concept]]\nid = "red-triangle"\ntexts = ["a red triangle"]\nimage_threshold = 0.5\n'
        '[[flag]]\ncategory = "red-triangles"\nall = ["concept:red-triangle/image"]\n'
    )
    index = tmp_path / "idx"
    with audit.open(index, create=True) as a:
        a.crawl([str(src)], workers=0)
        a.embed(model="toy-shapes", workers=0)
        a.flag(str(policy))
        found = {r["uri"].rsplit("/", 1)[1]: signal_dicts(r["signals"]) for r in a.findings().iter_rows(named=True)}
    assert "anim.gif" in found, sorted(found)
    sig = next(s for s in found["anim.gif"] if s["name"] == "concept:red-triangle/image")
    assert sig["detail"]["frame"] == HIDDEN
    assert "red.png" in found and "frame" not in found["red.png"][0]["detail"]
    assert not any(name.startswith("still_") for name in found)


def test_frame_pdq_matches_the_frame_drawn():
    frames = _frames()
    got = {f["frame"]: f["pdq"] for f in parse_frame_pdq(frame_pdq_json(animation("PNG", frames), N_FRAMES, []))}
    direct, _ = pdq_of_image(frames[HIDDEN])
    assert (int(got[HIDDEN], 16) ^ int(direct, 16)).bit_count() <= 8  # lossless: the same picture
