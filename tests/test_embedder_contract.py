"""The contract every ``Embedder`` implementation runs (as python-threatexchange's kits).

Add an implementation by adding a factory to ``FACTORIES``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from audit.catalog.vectors import ModelIdentity
from audit.embed.base import Embedder, ImageSpec
from tests.embed_fixtures import random_toy_checkpoint


def _toy_random(tmp_path_factory):
    from audit.embed.openclip import load_embedder

    ckpt = random_toy_checkpoint(tmp_path_factory.mktemp("toyckpt") / "toy.safetensors")
    return load_embedder("toy-shapes", None, checkpoint=ckpt, precision="fp32")


def _toy_shipped(tmp_path_factory):
    from audit.embed import toy_model
    from audit.embed.openclip import load_embedder

    if not toy_model.TOY_CHECKPOINT.is_file():
        pytest.skip("the toy-shapes checkpoint has not been trained/shipped yet")
    return load_embedder("toy-shapes")


def _vit_b32_random(tmp_path_factory):
    from audit.embed.openclip import load_embedder

    return load_embedder("ViT-B-32", None)


FACTORIES = {
    "toy-shapes-random": pytest.param(_toy_random),
    "toy-shapes-shipped": pytest.param(_toy_shipped),
    "ViT-B-32-random": pytest.param(_vit_b32_random, marks=pytest.mark.slow),
}


@pytest.fixture(scope="module", params=list(FACTORIES.values()), ids=list(FACTORIES))
def embedder(request, tmp_path_factory):
    return request.param(tmp_path_factory)


def _images(n: int, px: int = 96):
    import random

    from audit.embed import toyworld

    imgs = [toyworld.draw(s, px=px) for s in toyworld.random_scenes(7, n)]
    imgs.append(imgs[0].convert("RGBA"))  # other modes are converted
    imgs.append(imgs[1].convert("L"))
    imgs.append(imgs[2].resize((px * 2, px)))  # non-square
    random.Random(0).shuffle(imgs)
    return imgs


def _unit(v: np.ndarray) -> None:
    assert v.dtype == np.float32
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


def test_satisfies_protocol(embedder):
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder.identity, ModelIdentity)
    assert isinstance(embedder.dim, int) and embedder.dim > 0
    assert isinstance(embedder.preprocess, ImageSpec)
    assert embedder.identity.key.startswith(embedder.identity.name + "/")


def test_images_are_unit_vectors_in_order(embedder):
    imgs = _images(5)
    v = embedder.embed_images(imgs)
    assert v.shape == (len(imgs), embedder.dim)
    _unit(v)
    one = embedder.embed_images([imgs[3]])
    np.testing.assert_allclose(one[0], v[3], atol=2e-2)  # batch composition does not matter (bf16 rounding aside)
    assert embedder.embed_images([]).shape == (0, embedder.dim)


def test_tensor_input_equals_pil_input(embedder):
    import torch

    imgs = _images(3)
    x = torch.stack([embedder.preprocess(im) for im in imgs])
    np.testing.assert_allclose(embedder.embed_images(x), embedder.embed_images(imgs), atol=1e-5)


def test_texts_are_unit_vectors_in_order(embedder):
    texts = ["a red circle", "a blue square on a black background", "a red circle", "", "x " * 200]
    v = embedder.embed_texts(texts)
    assert v.shape == (len(texts), embedder.dim)
    _unit(v)
    np.testing.assert_array_equal(v[0], v[2])  # identical texts, identical vectors
    alone = embedder.embed_texts(["a blue square on a black background"])
    np.testing.assert_allclose(alone[0], v[1], atol=2e-2)
    assert embedder.embed_texts([]).shape[0] == 0


def test_deterministic(embedder):
    imgs = _images(2)
    np.testing.assert_array_equal(embedder.embed_images(imgs), embedder.embed_images(imgs))
    np.testing.assert_array_equal(embedder.embed_texts(["a green star"]), embedder.embed_texts(["a green star"]))


def test_preprocess_is_picklable_and_matches_open_clip(embedder):
    import open_clip
    import torch

    spec = pickle.loads(pickle.dumps(embedder.preprocess))
    assert spec == embedder.preprocess
    reference = open_clip.image_transform(spec.image_size, is_train=False, mean=spec.mean, std=spec.std)
    for im in _images(3, px=131):
        ours = spec(im.convert("RGB"))
        assert ours.shape == (3, spec.image_size, spec.image_size)
        assert torch.equal(ours, reference(im.convert("RGB")))


def test_spec_rebuilds_the_same_embedder(embedder):
    spec = getattr(embedder, "spec", None)
    if spec is None:
        pytest.skip("implementation is not rebuildable from a spec")
    spec = pickle.loads(pickle.dumps(spec))
    again = spec.build(calibrate=False)
    assert again.identity == embedder.identity
    assert again.precision == embedder.precision
    imgs = _images(2)
    np.testing.assert_allclose(again.embed_images(imgs), embedder.embed_images(imgs), atol=1e-6)
