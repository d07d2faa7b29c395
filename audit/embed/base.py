"""The ``Embedder`` seam: images and texts in, L2-normalised float32 vectors out.

Tiny on purpose (an identity, a dimension, two methods and a preprocess): anything that
satisfies it can run behind ``audit embed`` and pass ``tests/test_embedder_contract.py``.

``ImageSpec`` is the preprocess every implementation exposes. It is a frozen dataclass of
plain numbers so that worker processes (or a cluster engine) can receive it by pickle and
decode + preprocess images without the model: ``spec.pixels(img)`` returns the resized and
centre-cropped RGB pixels as uint8 (4x less to ship between processes than float32), and
``spec.normalize(batch)`` turns a uint8 batch into the float tensor the model takes.
``spec(img)`` does both, like open_clip's own preprocess (and gives the same numbers for
the "shortest side" resize mode every CLIP uses; a test checks it).

What ``audit embed`` (``EmbedRunner`` and the executors in ``audit.embed.executor`` and
``audit.onray.embed``) needs is one step more than ``Embedder``, because its shards run in
other processes (a local pool, Ray actors) that cannot be handed a loaded model:

* ``EmbedderRecipe``: a picklable, hashable recipe (a frozen dataclass) that builds the same
  embedder in another process; shards carry it (``ShardTask.spec``) and each process builds
  it once (``audit.embed.process_cache.embedder_for``);
* ``ShardEmbedder``: an ``Embedder`` that also encodes the uint8 pixels ``preprocess.pixels``
  gave (decoding runs ahead on threads, apart from the model) and names its recipe (``spec``).

The runner and the local executors depend on these two protocols only.
``audit.embed.openclip`` (``EmbedderSpec``, ``OpenClipEmbedder``) is the one implementation
shipped; ``audit embed`` loads it (``load_embedder``) unless an embedder with a ``spec`` is
given. Two places stay open_clip's on purpose: the Ray path (``audit.embed.api``,
``audit.onray.embed``) chooses and rewrites the recipe's ``precision`` per node (fp16 autocast
on GPU actors, bf16 only where a node's CPU has it), an ``EmbedderSpec`` field; and the local
pool preloads the ``open_clip`` module in its fork server (start-up time only). An embedder
without a recipe (a test's lookup embedder, ``tests/synthetic_space.py``) serves search and
flagging through ``Embedder`` alone; ``audit embed`` refuses it (one line: no spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from audit.catalog.vectors import ModelIdentity
from audit.imaging import to_rgb

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL.Image.Resampling values


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes model input: open_clip's eval transform, as plain data."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # "shortest" (CLIP), "squash"; others: see OpenClipEmbedder

    def pixels(self, img: "Image.Image") -> np.ndarray:
        """HxWx3 uint8: shortest side resized to ``image_size`` (PIL, antialiased as torchvision
        does for PIL input), centre crop; converted to RGB first (palette/alpha/CMYK/16-bit)."""
        from PIL import Image

        img = to_rgb(img)
        s = self.image_size
        resample = _RESAMPLE.get(self.interpolation, Image.Resampling.BICUBIC)
        w, h = img.size
        if self.resize_mode == "squash":
            img = img.resize((s, s), resample)
        else:
            # torchvision Resize(int): short side -> s, long side -> int(s * long / short)
            if w <= h:
                nw, nh = s, int(s * h / w)
            else:
                nw, nh = int(s * w / h), s
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), resample)
            # torchvision CenterCrop: top = int(round((h - s) / 2)), left likewise
            top = int(round((nh - s) / 2.0))
            left = int(round((nw - s) / 2.0))
            if (nw, nh) != (s, s):
                img = img.crop((left, top, left + s, top + s))
        return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)

    def normalize(self, batch: np.ndarray, dtype: "torch.dtype | None" = None, device: Any = "cpu") -> "torch.Tensor":
        """NxHxWx3 uint8 -> NCHW float tensor, ``(x/255 - mean)/std`` (computed in float32)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = x.sub_(mean).div_(std)
        return x if dtype is None else x.to(dtype)

    def __call__(self, img: "Image.Image") -> "torch.Tensor":
        """PIL -> CHW float32 tensor, like open_clip's preprocess."""
        return self.normalize(self.pixels(img)[None])[0]


@runtime_checkable
class Embedder(Protocol):
    """Turns images and texts into comparable unit vectors of one model identity."""

    identity: ModelIdentity
    dim: int
    preprocess: ImageSpec

    def embed_images(self, batch: "torch.Tensor | Sequence[Image.Image]") -> np.ndarray:
        """(N, dim) float32, rows L2-normalised. ``batch``: preprocessed NCHW tensor or PIL images."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, rows L2-normalised, one per text in order."""
        ...


@runtime_checkable
class ShardEmbedder(Embedder, Protocol):
    """An ``Embedder`` that shard workers can build from its recipe and feed decoded pixels."""

    spec: "EmbedderRecipe | None"

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """NxHxWx3 uint8 from ``preprocess.pixels`` -> (N, dim) float32 unit rows."""
        ...


class EmbedderRecipe(Protocol):
    """How to build the same ``ShardEmbedder`` in another process: picklable and hashable
    (a frozen dataclass; ``threads`` is replaced by ``None`` for the per-process cache key)."""

    identity: ModelIdentity | None
    device: str
    threads: int | None  # torch intra-op threads in the process that builds it

    def build(self, *, calibrate: bool = True) -> ShardEmbedder: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length: float32, C-contiguous (as FAISS wants);
    zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)
