"""The synthetic archive of the flag-at-scale tests: items with vectors of the synthetic space
(``tests.synthetic_space``), planted concept hits, planted cosine and PDQ near duplicates, and
prompts a word rule matches, written through the project's own store API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import audit
from audit.catalog.vectors import ModelIdentity, VectorStore
from audit.timeutil import utc_now
from tests.synthetic_space import CONCEPT, D, unit

MODEL = ModelIdentity("fake-clip", pretrained="synthetic")
RULE_LABEL = 3  # the true cluster whose prompts mostly say "triangle"

POLICY = """
[policy]
name = "scale"
version = "1"

[[category]]
id = "shapes"
severity = "high"

[[category]]
id = "words"
severity = "low"

[[concept]]
id = "red-triangle"
texts = ["a red triangle"]
image_threshold = 0.80
prompt_threshold = 0.99

[[rule]]
id = "triangle"
words = ["triangle"]

[[flag]]
id = "shapes"
category = "shapes"
any = ["concept:red-triangle"]

[[flag]]
id = "words"
category = "words"
any = ["rule:triangle"]
"""


def _flip_hex(h: str, bits, rng) -> str:
    b = bytearray(bytes.fromhex(h))
    for bit in rng.choice(256, bits, replace=False):
        b[bit // 8] ^= 1 << (bit % 8)
    return b.hex()


def synthetic(n: int, seed: int = 0) -> dict:
    """Items 0..n-1 (the first m of a larger archive are the same items: generated per item)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(60, D)))
    labels = rng.integers(0, 60, n)
    x = unit(centres[labels] + 0.35 * rng.normal(size=(n, D)) / np.sqrt(D) * 3)
    hits = np.arange(7, n, 500)  # planted concept hits (some just below the threshold)
    strength = np.where(np.arange(len(hits)) % 5 == 0, 0.55, 0.08)
    x[hits] = unit(CONCEPT + strength[:, None] * rng.normal(size=(len(hits), D)))
    pdq = [rng.bytes(32).hex() for _ in range(n)]
    quality = rng.choice([100, 100, 100, 30], n).tolist()
    dup_a = np.arange(11, n, 250)  # planted cosine near duplicates: a and a+1
    x[dup_a + 1] = unit(x[dup_a] + 0.03 * rng.normal(size=(len(dup_a), D)))
    for j, a in enumerate(range(13, n - 1, 300)):  # planted PDQ near duplicates: 3..15 bits, and 20 (not)
        bits = [3, 8, 12, 15, 20][j % 5]
        pdq[a + 1] = _flip_hex(pdq[a], bits, rng)
        quality[a] = quality[a + 1] = 100
    words = ["a photo of a circle", "a square on gray", "a star at night", "a triangle on white"]
    prompts = []
    for i in range(n):
        if labels[i] == RULE_LABEL and rng.random() < 0.7:
            prompts.append("a triangle on white")
        else:
            prompts.append(words[int(rng.integers(0, 3))])
    ids = [hashlib.sha256(f"scale-item-{i}".encode()).hexdigest() for i in range(n)]
    return {"ids": ids, "x": x, "pdq": pdq, "quality": quality, "prompts": prompts}


def write_items(a, data: dict, start: int, stop: int) -> None:
    now = utc_now()
    vs = VectorStore(a.catalog.conn)
    vs.register_model(MODEL, D)
    for s in range(start, stop, 10_000):
        e = min(stop, s + 10_000)
        items = [
            dict(
                item_id=data["ids"][i],
                status="ok",
                prompt=data["prompts"][i],
                pdq=data["pdq"][i],
                pdq_quality=data["quality"][i],
                first_seen=now,
                last_seen=now,
            )
            for i in range(s, e)
        ]
        locs = [
            dict(
                uri=f"/archive/img_{i:06d}.png",
                item_id=data["ids"][i],
                source="/archive",
                status="ok",
                present=1,
                first_seen=now,
                last_seen=now,
            )
            for i in range(s, e)
        ]
        a.catalog.record(items, locs)
        vs.put(MODEL.key, "image", data["ids"][s:e], data["x"][s:e])


def open_scale_index(path: Path, data: dict | None = None, n: int = 0):
    a = audit.open(path, create=True)
    (path / "policy.toml").write_text(POLICY)
    if data is not None:
        write_items(a, data, 0, n)
    return a
