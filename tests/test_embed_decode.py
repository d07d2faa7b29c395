"""The embedder decodes JPEGs at a reduced DCT scale (``decode_item``: Pillow's draft mode,
never below the model's input size): the vectors must stay those of the full decode."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from audit.embed.executor import decode_item
from audit.imaging import decode_image


def _jpeg_scenes(n: int, px: int) -> list[bytes]:
    from PIL import Image, ImageFilter

    from audit.embed import toyworld

    rng = np.random.default_rng(3)
    out = []
    for scene in toyworld.random_scenes(11, n):
        a = np.asarray(toyworld.draw(scene, px=px), np.float32) + rng.normal(0, 10, (px, px, 3))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("model,px", [("toy-shapes", 512)])  # 512 -> 64: the 1/8 DCT scale, the largest step
def test_draft_decode_embeds_like_full_decode(tmp_path, model, px):
    from audit.embed.openclip import load_embedder

    emb = (
        load_embedder(model, None, precision="fp32")
        if model != "toy-shapes"
        else load_embedder(model, precision="fp32")
    )
    datas = _jpeg_scenes(6, px)
    paths = []
    for i, d in enumerate(datas):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(d)
        paths.append(p)
    drafted = np.stack(
        [decode_item(str(p), hashlib.sha256(d).hexdigest(), emb.preprocess) for p, d in zip(paths, datas)]
    )
    full = np.stack([emb.preprocess.pixels(decode_image(d).image) for d in datas])
    assert drafted.shape == full.shape
    assert not np.array_equal(drafted, full)  # the reduced decode did run
    cos = np.sum(emb.embed_pixels(drafted) * emb.embed_pixels(full), axis=1)
    assert cos.min() >= 0.999, cos


def test_draft_leaves_small_and_non_jpeg_images_alone(tmp_path):
    from PIL import Image

    from audit.embed.base import ImageSpec

    spec = ImageSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        p = tmp_path / f"x.{fmt.lower()}"
        p.write_bytes(buf.getvalue())
        got = decode_item(str(p), None, spec)
        # 300 px short side: a 1/2 scale would fall below 224, so the full decode is used
        assert np.array_equal(got, spec.pixels(decode_image(buf.getvalue()).image))


def test_hybrid_executor_returns_every_task_once():
    """CPU ``audit embed``: this process runs shards next to a pool; every task comes back
    exactly once, whichever side ran it."""
    from audit.embed.executor import HybridExecutor, LocalExecutor

    ex = HybridExecutor(LocalExecutor(1, threads=1))
    try:
        results = list(ex.map_unordered(abs, iter(range(-12, 12))))
    finally:
        ex.close()
    assert sorted(results) == sorted(abs(i) for i in range(-12, 12))
    assert ex.workers == 2


def test_hybrid_executor_embeds_here_while_the_pool_is_still_starting():
    """The pool starts on its own thread (its fork server imports torch first); shards are
    not held back meanwhile: this process runs them, and the pool joins in once it is up."""
    import threading

    from audit.embed.executor import HybridExecutor, LocalExecutor

    release = threading.Event()

    class SlowToStart(LocalExecutor):
        def _start(self) -> None:
            release.wait(60)
            super()._start()

    pool = SlowToStart(1, threads=1)
    assert not pool.started()
    ex = HybridExecutor(pool)
    try:
        results = list(ex.map_unordered(abs, iter(range(-12, 12))))
        assert not pool.started()  # every task ran in this process; none waited for the pool
    finally:
        release.set()
        ex.close()
    assert sorted(results) == sorted(abs(i) for i in range(-12, 12))


def test_a_pool_that_cannot_start_says_so_on_first_use():
    from audit.embed.executor import LocalExecutor

    class Broken(LocalExecutor):
        def _start(self) -> None:
            self._start_error = OSError("no processes left")

    pool = Broken(1)
    with pytest.raises(OSError, match="no processes left"):
        list(pool.map_unordered(abs, [1, 2]))
    pool.close()
