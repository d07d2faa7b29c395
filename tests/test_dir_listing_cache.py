"""The per-directory listing cache (catalog table ``dir_listings``): stored as JSON, and a bad
entry (damaged bytes, an older release's marshal format, JSON of the wrong shape) means "list
the directory again", never an error or a wrong answer."""

from __future__ import annotations

import marshal
import sqlite3
from contextlib import closing

import pytest

import audit
from audit.catalog.store import decode_listing, encode_listing

BAD_ENTRIES = {
    "garbage": b"\x00\xff not a listing",
    "marshal": marshal.dumps({"gen_0000.png": (1, 2, 3)}),  # what releases before JSON wrote
    "wrong shape": b'{"gen_0000.png": [1, 2]}',
    "not an object": b"[1, 2, 3]",
    "truncated": b'{"gen_0000.png": [12, 34',
}


def test_listing_round_trips_and_rejects_what_it_did_not_write():
    listing = {"a.png": (10, 1_700_000_000_123_456_789, 7), "ü b.png": (0, 1, 2**40)}
    assert decode_listing(encode_listing(listing)) == listing
    for blob in [*BAD_ENTRIES.values(), "text", None, b'{"a.png": [1, true, 3]}']:
        assert decode_listing(blob) is None


def _listings(idx) -> dict[str, bytes]:
    with closing(sqlite3.connect(idx / "catalog.sqlite")) as conn:
        return dict(conn.execute("SELECT dir, listing FROM dir_listings"))


def _damage(idx, blob: bytes) -> None:
    with closing(sqlite3.connect(idx / "catalog.sqlite")) as conn, conn:
        conn.execute("UPDATE dir_listings SET listing = ?", (blob,))


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
@pytest.mark.parametrize("trust_dir_mtime", [False, True])
def test_a_bad_cache_entry_lists_the_directory_again(tmp_path, archive, kind, trust_dir_mtime):
    idx = tmp_path / "idx"

    def crawl():
        return audit.crawl([str(archive)], idx, workers=0, trust_dir_mtime=trust_dir_mtime)

    assert crawl().read == 12
    cached = _listings(idx)
    assert sum(bool(decode_listing(b)) for b in cached.values()) == 3  # sub0..sub2 (and the root: {})
    assert all(decode_listing(b) is not None for b in cached.values())
    _damage(idx, BAD_ENTRIES[kind])
    again = crawl()
    assert (again.read, again.unchanged, again.missing, again.errors) == (0, 12, 0, 0)
    # the listings were rebuilt from the catalog, and the next crawl trusts them again
    assert {d: decode_listing(b) for d, b in _listings(idx).items()} == {
        d: decode_listing(b) for d, b in cached.items()
    }
    (archive / "sub1" / "gen_0001.png").unlink()
    third = crawl()
    assert (third.read, third.unchanged, third.missing) == (0, 11, 1)


def test_a_rescan_settles_unchanged_files_from_the_listing_and_reads_the_changed_one(tmp_path):
    """The folder source compares its stats with the cached listing itself (``FilesUnchanged``):
    names that are not UTF-8 match too, a file rewritten with a new size or mtime is read."""
    import os

    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(src / f"{i}.png")
    odd = os.fsencode(str(src)) + b"/caf\xe9_\xff.png"
    Image.new("RGB", (8, 8), (0, 0, 200)).save(os.fsdecode(odd), format="PNG")
    first = audit.crawl([str(src)], tmp_path / "idx", workers=0)
    assert (first.read, first.unchanged) == (4, 0)
    again = audit.crawl([str(src)], tmp_path / "idx", workers=0)
    assert (again.listed, again.read, again.unchanged, again.missing) == (4, 0, 4, 0)
    Image.new("RGB", (9, 9), (1, 2, 3)).save(src / "1.png")
    st = os.stat(src / "1.png")
    os.utime(src / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = audit.crawl([str(src)], tmp_path / "idx", workers=0)
    assert (third.listed, third.read, third.unchanged, third.changed) == (4, 1, 3, 1)
