"""The synthetic embedding space of the flag-at-scale tests: D-dimensional unit vectors, a planted
concept direction, and a text embedder that maps the concept's texts onto it."""

from __future__ import annotations

import hashlib

import numpy as np

D = 32


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


CONCEPT = unit(np.random.default_rng(99).normal(size=D))


class LookupEmbedder:
    """Text vectors of the synthetic space: the concept's texts map to the planted concept
    direction, every other text to a fixed random direction of its own."""

    def embed_texts(self, texts):
        out = []
        for t in texts:
            if "red triangle" in t:
                out.append(CONCEPT)
            else:
                seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
                out.append(unit(np.random.default_rng(seed).normal(size=D)))
        return np.stack(out)
