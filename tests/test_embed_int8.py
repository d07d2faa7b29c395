"""``--precision int8``: ONNX Runtime dynamic int8 towers, checked against fp32 before use
(cosine >= 0.99 per item; the same top-10 neighbours for >= 95% of toy-world queries), cached
per weights identity, and a vector space of their own (key ``...+int8``)."""

from __future__ import annotations

import numpy as np
import pytest

from audit.embed import int8
from audit.embed import openclip
from audit.embed.openclip import load_embedder

pytestmark = pytest.mark.skipif(not int8.available(), reason="the int8 extra (onnx, onnxruntime) is not installed")
HAS_VNNI = int8.cpu_supports_vnni()  # read before the fixture below stands in for it
needs_vnni = pytest.mark.skipif(not HAS_VNNI, reason="int8 accuracy is measured on CPUs with VNNI (none here)")


@pytest.fixture(scope="module", autouse=True)
def int8_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("int8-cache")
    mp.setenv("AUDIT_CACHE_DIR", str(root))
    # the int8 machinery (export, cache, own space, CLI) is tested on any CPU; whether int8 is
    # accurate enough to use is measured only where it would be used (needs_vnni)
    mp.setattr(int8, "cpu_supports_vnni", lambda: True)
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def toy_pair():
    from audit.embed import toy_model

    if not toy_model.TOY_CHECKPOINT.is_file():
        pytest.skip("the toy-shapes checkpoint has not been shipped")
    return load_embedder("toy-shapes", precision="fp32"), load_embedder("toy-shapes", precision="int8")


def _scenes(seed, n, px=64):
    from audit.embed import toyworld

    return [toyworld.draw(s, px=px) for s in toyworld.random_scenes(seed, n)]


@needs_vnni
def test_int8_agrees_with_fp32_per_item_and_keeps_top10_neighbours(toy_pair):
    from audit.embed import toyworld

    fp32, q = toy_pair
    assert q.precision == "int8" and q.precision_report["min_cosine_image"] >= int8.INT8_MIN_COSINE
    imgs = _scenes(21, 300)
    a, b = fp32.embed_images(imgs), q.embed_images(imgs)
    assert np.sum(a * b, axis=1).min() >= int8.INT8_MIN_COSINE
    texts = toyworld.class_prompts()[:40]
    ta, tb = fp32.embed_texts(texts), q.embed_texts(texts)
    assert np.sum(ta * tb, axis=1).min() >= int8.INT8_MIN_COSINE
    # queries: 60 of the images (neighbours among the rest) and the 40 class prompts
    queries_a, queries_b = np.concatenate([a[:60], ta]), np.concatenate([b[:60], tb])
    top = lambda qv, db: np.argsort(-(qv @ db.T), axis=1)[:, :10]  # noqa: E731
    same = [set(x) == set(y) for x, y in zip(top(queries_a, a[60:]), top(queries_b, b[60:]))]
    assert np.mean(same) >= 0.95, np.mean(same)


def test_int8_is_its_own_space_and_is_cached_per_weights(toy_pair, int8_cache):
    fp32, q = toy_pair
    assert q.identity.key == fp32.identity.key + "+int8"
    assert q.identity.to_dict()["precision"] == "int8" and "precision" not in fp32.identity.to_dict()
    assert q.spec.precision == "int8" and q.spec.identity == q.identity
    folder = int8.towers_dir(fp32.identity.key)
    stamp = (folder / "image.int8.onnx").stat().st_mtime_ns
    again = q.spec.build(calibrate=False)  # what a worker process does: the cached towers, no export
    assert (folder / "image.int8.onnx").stat().st_mtime_ns == stamp and again.identity == q.identity
    imgs = _scenes(3, 4)
    assert np.allclose(again.embed_images(imgs), q.embed_images(imgs), atol=1e-5)


@pytest.mark.parametrize("bf16_native", [True, False])
def test_auto_never_picks_int8(monkeypatch, bf16_native):
    """int8 is a space of its own: auto choosing it by a timing flipped spaces between runs."""
    monkeypatch.setattr(openclip, "cpu_supports_bf16", lambda: bf16_native)
    emb = load_embedder("toy-shapes")  # precision="auto"
    assert emb.precision == ("bf16" if bf16_native else "fp32") and emb.identity.precision is None
    assert "int8_speedup_vs_fp32" not in emb.precision_report


def test_int8_request_without_vnni_falls_back_to_fp32_and_says_why(monkeypatch):
    monkeypatch.setattr(int8, "cpu_supports_vnni", lambda: False)
    emb = load_embedder("toy-shapes", precision="int8")
    assert emb.precision == "fp32" and emb.identity.precision is None
    assert "avx512_vnni" in emb.precision_report["fallback"]


def test_int8_is_refused_on_cuda():
    from audit.errors import UsageError

    with pytest.raises(UsageError, match="CPU path"):
        openclip.resolve_precision("cuda", "int8")


@pytest.mark.slow
@needs_vnni
def test_int8_vit_b32_random_weights_agree_with_fp32():
    fp32 = load_embedder("ViT-B-32", pretrained=None, precision="fp32")
    q = load_embedder("ViT-B-32", pretrained=None, precision="int8")
    assert q.precision == "int8", q.precision_report
    imgs = _scenes(5, 4, px=224)
    assert np.sum(fp32.embed_images(imgs) * q.embed_images(imgs), axis=1).min() >= int8.INT8_MIN_COSINE


def test_cli_embed_int8_then_text_search_in_its_own_space(tmp_path, toy_pair):
    """`audit embed --precision int8` stores vectors under the +int8 key; `audit search --text`
    embeds the query with the int8 text tower of that space."""
    import json

    from tests.cli_helper import audit_cli
    from tests.embed_fixtures import toy_scene_archive

    src, idx = tmp_path / "src", tmp_path / "idx"
    toy_scene_archive(src, 12)
    audit_cli("crawl", src, "--index", idx, "-q", "--workers", "0")
    out = json.loads(
        audit_cli(
            "embed", "--index", idx, "--model", "toy-shapes", "--precision", "int8", "--workers", "0", "--json", "-q"
        ).stdout
    )
    assert out["model_key"].endswith("+int8") and out["precision"]["precision"] == "int8"
    audit_cli("index", "--index", idx, "-q")
    hits = json.loads(audit_cli("search", "--index", idx, "--text", "a red circle", "-k", "3", "--json").stdout)
    assert len(hits["results"]) == 3
