"""One built embedder per process, by recipe: what shard workers, Ray actors and the driver
call to get the model a shard names (``ShardTask.spec``) without building it twice.

Works for any ``audit.embed.base.EmbedderRecipe`` (a frozen, hashable dataclass with a
``threads`` field and ``build``); ``audit.embed.openclip.EmbedderSpec`` is the one the
project ships.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from audit.embed.base import EmbedderRecipe, ShardEmbedder

# cache of built embedders per process (worker processes, cluster tasks)
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def embedder_for(spec: "EmbedderRecipe") -> "ShardEmbedder":
    """The embedder for ``spec`` in this process, built once (no recalibration)."""
    key = replace(spec, threads=None)
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            if spec.threads:
                import torch

                torch.set_num_threads(spec.threads)
            _CACHE.clear()  # one model per process
            emb = _CACHE[key] = spec.build(calibrate=False)
        return emb


def remember(emb: "ShardEmbedder") -> None:
    """Let ``embedder_for(emb.spec)`` return an embedder already built in this process."""
    if emb.spec is not None:
        with _CACHE_LOCK:
            _CACHE.clear()
            _CACHE[replace(emb.spec, threads=None)] = emb
