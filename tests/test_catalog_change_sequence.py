"""The items change sequence: every insert takes the next number; a re-read keeps its number
unless what the later stages read of it changed; a catalog made before the sequence is
numbered once when opened for writing, and a read-only open leaves it as it is."""

from __future__ import annotations

import sqlite3

import audit
from audit.timeutil import utc_now


def _item(item_id: str, **over) -> dict:
    now = utc_now()
    return {"item_id": item_id, "status": "ok", "prompt": f"p {item_id}", "first_seen": now, "last_seen": now, **over}


def _seqs(a) -> dict[str, int]:
    return dict(a.catalog.conn.execute("SELECT item_id, seq FROM items"))


def test_inserts_take_increasing_numbers_and_unchanged_rereads_keep_theirs(tmp_path):
    a = audit.open(tmp_path / "idx", create=True)
    a.catalog.record([_item("a"), _item("b")], [])
    a.catalog.record([_item("c")], [])
    first = _seqs(a)
    assert first["a"] < first["b"] < first["c"]
    a.catalog.record([_item("a"), _item("b", last_seen="later")], [])  # same content, new sighting
    assert _seqs(a) == first
    assert a.catalog.max_item_seq() == first["c"]


def test_a_changed_prompt_status_or_hash_moves_the_item_to_the_end(tmp_path):
    a = audit.open(tmp_path / "idx", create=True)
    a.catalog.record([_item("a"), _item("b", status="error"), _item("c"), _item("d")], [])
    before = _seqs(a)
    a.catalog.record([_item("a", prompt="a new reading")], [])
    a.catalog.record([_item("b", status="ok")], [])
    a.catalog.record([_item("c", pdq="ff" * 32)], [])
    after = _seqs(a)
    assert after["d"] == before["d"]
    assert before["d"] < after["a"] < after["b"] < after["c"] == a.catalog.max_item_seq()


def test_an_older_catalog_is_numbered_once_on_a_writable_open(tmp_path):
    a = audit.open(tmp_path / "idx", create=True)
    a.catalog.record([_item("a"), _item("b"), _item("c")], [])
    a.close()
    with sqlite3.connect(tmp_path / "idx" / "catalog.sqlite") as db:  # as an older release left it
        db.execute("DROP INDEX items_seq")
        db.execute("ALTER TABLE items DROP COLUMN seq")
        db.execute("PRAGMA user_version = 0")  # older releases left catalogs unversioned
    ro = audit.open(tmp_path / "idx", read_only=True)
    assert set(_seqs(ro).values()) == {None}  # read-only: the column is shadowed, nothing written
    ro.close()
    b = audit.open(tmp_path / "idx")
    seqs = _seqs(b)
    assert sorted(seqs.values()) == [1, 2, 3] and seqs["a"] < seqs["b"] < seqs["c"]
    b.catalog.record([_item("d")], [])
    assert _seqs(b)["d"] == 4
