"""Synthetic catalogs with stored vectors, for the index and search tests (no model needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import audit
from audit.catalog.vectors import ModelIdentity, VectorStore, prompt_key
from audit.timeutil import utc_now

MODEL = ModelIdentity("fake-clip", pretrained="synthetic")


def item_id(i: int) -> str:
    return hashlib.sha256(f"item-{i}".encode()).hexdigest()


def clustered(n: int, d: int = 32, clusters: int = 20, seed: int = 0, spread: float = 0.35):
    """Normalised points around ``clusters`` random centres, and the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    x = centres[labels] + spread * rng.normal(size=(n, d)) / np.sqrt(d) * 3
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centres.astype(np.float32), labels


def add_items(a, start: int, vectors: np.ndarray, *, prompts: list[str] | None = None, model=MODEL) -> list[str]:
    """Catalog items ``start..`` with one location each and store their image vectors."""
    now = utc_now()
    ids = [item_id(start + j) for j in range(len(vectors))]
    items = [
        dict(
            item_id=i,
            status="ok",
            prompt=(prompts[j] if prompts else f"prompt of item {start + j}"),
            first_seen=now,
            last_seen=now,
        )
        for j, i in enumerate(ids)
    ]
    locs = [
        dict(
            uri=f"/archive/img_{start + j:06d}.png",
            item_id=i,
            source="/archive",
            status="ok",
            present=1,
            first_seen=now,
            last_seen=now,
        )
        for j, i in enumerate(ids)
    ]
    a.catalog.record(items, locs)
    vs = VectorStore(a.catalog.conn)
    vs.register_model(model, vectors.shape[1])
    vs.put(model.key, "image", ids, vectors)
    return ids


def add_prompt_vectors(a, texts: list[str], vectors: np.ndarray, model=MODEL) -> None:
    vs = VectorStore(a.catalog.conn)
    vs.register_model(model, vectors.shape[1])
    vs.put(model.key, "prompt", [prompt_key(t) for t in texts], vectors)


def new_audit(tmp_path: Path, name: str = "idx"):
    return audit.open(tmp_path / name, create=True)
