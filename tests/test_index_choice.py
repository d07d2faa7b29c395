"""Which index type for how many vectors under which memory budget."""

from __future__ import annotations

import math

import pytest

from audit.errors import UsageError
from audit.index.choice import FLAT_BELOW, choose_index, nlist_for, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4GB", 4 * 1024**3),
        ("512MB", 512 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("64KiB", 65536),
        ("1000", 1000),
        (2_000_000, 2_000_000),
        (None, 4 * 1024**3),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "four gigs", "-1GB", "0"])
def test_parse_size_rejects(bad):
    with pytest.raises(UsageError):
        parse_size(bad)


def test_small_collections_get_exact_search():
    spec = choose_index(FLAT_BELOW - 1, 512)
    assert spec.kind == "flat" and spec.factory == "Flat" and spec.train_n == 0 and spec.fits_budget


def test_large_collections_get_ivf_flat_when_it_fits():
    spec = choose_index(200_000, 512, "4GB")
    assert spec.kind == "ivf" and spec.codec == "Flat"
    assert spec.nlist == int(4 * math.sqrt(200_000))
    assert spec.factory == f"IVF{spec.nlist},Flat"
    assert spec.nlist * 30 <= spec.train_n <= 200_000  # enough points per list, but a sample


def test_codes_shrink_with_the_budget():
    n, d = 1_000_000, 512
    flat = choose_index(n, d, "4GB")
    sq8 = choose_index(n, d, "1GB")
    pq = choose_index(n, d, "500MB")
    smallest = choose_index(n, d, "50MB")
    assert flat.codec == "Flat" and sq8.codec == "SQ8" and pq.codec.startswith("PQ")
    assert flat.bytes_per_vector > sq8.bytes_per_vector > pq.bytes_per_vector
    assert all(s.estimated_bytes <= parse_size(b) for s, b in ((flat, "4GB"), (sq8, "1GB"), (pq, "500MB")))
    assert d % int(pq.codec[2:]) == 0
    assert not smallest.fits_budget and smallest.codec == "PQ8"


def test_nlist_grows_like_sqrt_n_and_keeps_training_points():
    assert nlist_for(1_000_000) == 4000
    assert nlist_for(2000) == 50  # at most n/40 lists, so each has ~40 training points
    assert nlist_for(10) == 16


def test_flat_threshold_is_adjustable():
    assert choose_index(5000, 32, flat_below=1000).kind == "ivf"


@pytest.mark.parametrize(
    "forced, factory",
    [
        ("flat", "Flat"),
        ("hnsw", "HNSW32,Flat"),
        ("HNSW16", "HNSW16,Flat"),
        ("ivf,sq8", "IVF1788,SQ8"),
        ("ivf1024,pq64", "IVF1024,PQ64"),
        ("IVF512", "IVF512,Flat"),
    ],
)
def test_forced_types(forced, factory):
    assert choose_index(200_000, 512, index_type=forced).factory == factory


def test_forced_type_errors():
    with pytest.raises(UsageError):
        choose_index(1000, 512, index_type="lsh")
    with pytest.raises(UsageError):
        choose_index(1000, 100, index_type="ivf,pq64")  # 100 is not divisible by 64


def test_family_ignores_nlist():
    a, b = choose_index(100_000, 64), choose_index(300_000, 64)
    assert a.nlist != b.nlist and a.family == b.family == "ivf:Flat"
