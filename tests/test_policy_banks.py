"""Hash lists and negative banks: parsing (tolerant, located errors) and PDQ matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.errors import InputError
from audit.policy import load_policy
from audit.policy.hashlists import (
    load_hash_bank,
    match_exact,
    match_negative,
    match_pdq,
    parse_hash_bank,
)

TOY = Path(__file__).resolve().parents[1] / "samples" / "policy" / "toy.toml"
RNG = np.random.default_rng(7)


def random_pdq() -> str:
    return RNG.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()


def flip(hex_hash: str, bits: int) -> str:
    value = int(hex_hash, 16)
    for bit in RNG.choice(256, size=bits, replace=False):
        value ^= 1 << int(bit)
    return f"{value:064x}"


def test_parse_tolerates_bom_case_blank_lines_and_extra_columns():
    pdq = "AB" * 32
    text = (
        "\ufeffHash_Type , HASH, Label, source\n\n"
        f"PDQ, 0x{pdq}, first, x\n"
        "# a comment\n"
        f"md5,{'F' * 32},second\n"
        f"sha256,{'0' * 64}\n"
    )
    bank = parse_hash_bank(text, "b.csv")
    assert bank.pdq_hex == ["ab" * 32]
    assert bank.pdq_labels == ["first"]
    assert bank.pdq_lines == [3]
    assert bank.pdq.shape == (1, 32) and bank.pdq.dtype == np.uint8
    assert bank.md5 == {"f" * 32: "second"}
    assert bank.sha256 == {"0" * 64: ""}
    assert len(bank) == 3


def test_parse_without_header():
    bank = parse_hash_bank(f"pdq,{'0' * 64},a\n", "b.csv")
    assert bank.pdq_hex == ["0" * 64]


@pytest.mark.parametrize(
    "row, message",
    [
        ("phash,abcd,x", "b.csv:2: hash_type 'phash' is not one of pdq, md5, sha256"),
        ("md5,abcd,x", "b.csv:2: hash: md5 must be 32 hex digits, got 'abcd'"),
        (f"sha256,{'g' * 64},x", "b.csv:2: hash: sha256 must be 64 hex digits"),
        ("pdq", "b.csv:2: expected columns hash_type, hash, label; got 1 column(s)"),
    ],
)
def test_bad_rows_name_file_and_line(row, message):
    with pytest.raises(InputError) as info:
        parse_hash_bank("hash_type,hash,label\n" + row + "\n", "b.csv")
    assert str(info.value).startswith(message)


def test_header_missing_column():
    with pytest.raises(InputError, match=r"b.csv:1: header lacks column 'hash_type'"):
        parse_hash_bank("hash,label\n", "b.csv")


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read hash list"):
        load_hash_bank(tmp_path / "none.csv")


def test_match_pdq_within_distance_and_quality():
    originals = [random_pdq() for _ in range(5)]
    bank = parse_hash_bank("".join(f"pdq,{h},item{i}\n" for i, h in enumerate(originals)), "b.csv")
    queries = [
        flip(originals[0], 10),
        flip(originals[1], 31),
        flip(originals[2], 32),
        random_pdq(),
        None,
        "not-a-hash",
        originals[3],
        originals[4],
    ]
    qualities = [90, 90, 90, 90, 90, 90, 90, 49]
    rows, idx, dist = match_pdq(bank, queries, max_distance=31, min_quality=50, qualities=qualities)
    assert list(zip(rows.tolist(), idx.tolist(), dist.tolist())) == [(0, 0, 10), (1, 1, 31), (6, 3, 0)]
    # without qualities every valid hash is considered
    rows, idx, _ = match_pdq(bank, queries)
    assert 7 in rows.tolist()


def test_match_pdq_chunking_and_array_input():
    bank_hashes = [random_pdq() for _ in range(50)]
    bank = parse_hash_bank("".join(f"pdq,{h},x\n" for h in bank_hashes), "b.csv")
    queries = [flip(h, 5) for h in bank_hashes] + [random_pdq() for _ in range(200)]
    a = match_pdq(bank, queries, chunk_cells=100)
    b = match_pdq(bank.pdq, bank.pdq.copy())
    assert a.rows.tolist()[:50] == list(range(50)) and a.bank_index.tolist()[:50] == list(range(50))
    assert (a.distance[:50] == 5).all()
    assert b.rows.tolist() == list(range(50)) and (b.distance == 0).all()


def test_match_pdq_empty_bank():
    bank = parse_hash_bank("md5," + "a" * 32 + ",x\n", "b.csv")
    assert len(match_pdq(bank, [random_pdq()]).rows) == 0


def test_match_exact():
    bank = parse_hash_bank(f"md5,{'a' * 32},m\nsha256,{'b' * 64},s\n", "b.csv")
    hits = match_exact(bank, md5=["A" * 32, None, "c" * 32], sha256=[None, "b" * 64, None])
    assert hits == [(0, "md5", "a" * 32, "m"), (1, "sha256", "b" * 64, "s")]


def test_negative_bank_suppresses_known_false_positive():
    policy = load_policy(TOY)
    negative = policy.negative_banks[0]
    fp = negative.bank.pdq_hex[0]
    queries = [flip(fp, 12), random_pdq(), fp]
    mask = match_negative(negative.bank, queries, negative.pdq_max_distance)
    assert mask.tolist() == [True, False, True]


def test_toy_bank_matches():
    policy = load_policy(TOY)
    hashlist = policy.hashlists[0]
    known = hashlist.bank.pdq_hex[1]
    rows, idx, dist = match_pdq(
        hashlist.bank, [flip(known, 20)], hashlist.pdq_max_distance, hashlist.pdq_min_quality, [80]
    )
    assert rows.tolist() == [0] and idx.tolist() == [1] and dist.tolist() == [20]
    assert hashlist.bank.pdq_labels[1] == "toy-known-2"


def test_faiss_and_numpy_paths_agree():
    bank = np.random.default_rng(1).integers(0, 256, (400, 32), dtype=np.uint8)
    queries = bank.copy()
    queries[::2, :4] ^= 0xFF  # 32 bits away: just outside the default distance
    queries[1::4, 0] ^= 0x0F  # 4 bits away
    a = match_pdq(bank, queries, use_faiss=True)
    b = match_pdq(bank, queries, use_faiss=False)
    for x, y in zip(a, b):
        assert x.tolist() == y.tolist()
    assert len(a.rows) == 200 and set(a.distance.tolist()) == {0, 4}
