"""audit.cluster: k choice, k-means, PDQ and cosine pairs against brute force, components."""

from __future__ import annotations

import numpy as np
import pytest

from audit import cluster


def _brute_pdq(h: np.ndarray, r: int) -> set[tuple[int, int]]:
    bits = np.unpackbits(h, axis=1).astype(np.int32)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    i, j = np.nonzero(np.triu(d <= r, 1))
    return set(zip(i.tolist(), j.tolist()))


def _flip(rng, h: np.ndarray, nbits: int) -> np.ndarray:
    out = h.copy()
    for bit in rng.choice(256, nbits, replace=False):
        out[bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


@pytest.mark.parametrize("n, k", [(0, 0), (1, 1), (2, 1), (300, 12), (1_000_000, 707), (10**9, 4096)])
def test_choose_k(n, k):
    assert cluster.choose_k(n) == k


@pytest.mark.parametrize("radius", [0, 6, 15, 20])
def test_pdq_pairs_match_brute_force(radius):
    rng = np.random.default_rng(radius)
    h = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    for t in range(60):  # near copies at 0..24 bits
        h[200 + t] = _flip(rng, h[t], int(rng.integers(0, 25)))
    h[300:380] = h[299]  # one large bucket (degenerate, identical hashes): the FAISS path
    i, j = cluster.pdq_pairs(h, radius)
    assert set(zip(i.tolist(), j.tolist())) == _brute_pdq(h, radius)
    assert np.all(i < j)


def test_pdq_pairs_respect_validity_mask():
    h = np.zeros((4, 32), dtype=np.uint8)
    valid = np.array([True, True, False, True])
    i, j = cluster.pdq_pairs(h, 15, valid)
    assert set(zip(i.tolist(), j.tolist())) == {(0, 1), (0, 3), (1, 3)}


@pytest.mark.parametrize("exact_below", [10**9, 10])
def test_cosine_pairs(exact_below):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    x[250:270] = x[:20] + 0.01 * rng.standard_normal((20, 32)).astype(np.float32)
    i, j, s = cluster.cosine_pairs(x, 0.98, exact_below=exact_below, nprobe=8)
    got = set(zip(i.tolist(), j.tolist()))
    assert {(t, 250 + t) for t in range(20)} <= got
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(s, np.sum(xn[i] * xn[j], axis=1), atol=1e-5)
    assert np.all(s >= 0.98)
    if exact_below > len(x):  # exact mode: exactly the brute-force pairs
        bi, bj = np.nonzero(np.triu(xn @ xn.T >= 0.98, 1))
        assert got == set(zip(bi.tolist(), bj.tolist()))


def test_connected_components_and_groups():
    labels = cluster.connected_components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels[0] == labels[1] == labels[2] and labels[4] == labels[5] and len(set(labels.tolist())) == 3
    groups = cluster.group_members(labels)
    assert [sorted(g.tolist()) for g in groups] == [[0, 1, 2], [4, 5]]


def test_near_duplicate_groups_union_both_sources():
    rng = np.random.default_rng(2)
    h = rng.integers(0, 256, (6, 32), dtype=np.uint8)
    h[1] = _flip(rng, h[0], 3)
    v = rng.standard_normal((6, 16)).astype(np.float32)
    v[3] = v[2]
    labels, stats = cluster.near_duplicate_groups(6, pdq=h, vectors=v, min_cosine=0.99)
    assert labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
    assert stats == {"pdq_pairs": 1, "cosine_pairs": 1}


def test_kmeans_is_deterministic_and_separates_blobs():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 16)).astype(np.float32) * 5
    x = np.concatenate([c + rng.standard_normal((50, 16)).astype(np.float32) * 0.1 for c in centres])
    a = cluster.kmeans(x, 4)
    b = cluster.kmeans(x, 4)
    assert np.array_equal(a.assign, b.assign)
    for blob in range(4):  # every blob lands in one cluster
        assert len(set(a.assign[blob * 50 : (blob + 1) * 50].tolist())) == 1
    assert np.allclose(np.linalg.norm(a.centroids, axis=1), 1, atol=1e-5)
    ex = cluster.nearest_to_centroid(
        x / np.linalg.norm(x, axis=1, keepdims=True), np.arange(50), a.centroids[a.assign[0]], 3
    )
    assert len(ex) == 3 and set(ex.tolist()) <= set(range(50))


def test_top_terms_counts_once_per_prompt_and_skips_stop_words():
    terms = cluster.top_terms(["a photo of a red triangle, red", "red star, masterpiece", None, "blue star"])
    assert terms[0] == ("red", 2) and ("star", 2) in terms
    assert all(t not in {"photo", "masterpiece", "a", "of"} for t, _ in terms)
