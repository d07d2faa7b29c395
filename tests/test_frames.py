"""Lazy frames and SQL-side filters on a small index (the large-index memory tests are in
test_frames_scale.py)."""

from __future__ import annotations


import polars as pl
import pytest

import audit
from audit.findings.store import Finding, FindingsStore, Signal

from tests.scale_fixtures import build_scale_index, item_id


@pytest.fixture()
def small(tmp_path):
    return build_scale_index(tmp_path / "idx", n_items=3_000, n_clusters=10, batch=1_000)


def test_lazy_frame_reads_nothing_until_collected_and_keeps_its_schema(small):
    with audit.open(small.index) as a:
        lf = a.findings(lazy=True)
        assert isinstance(lf, pl.LazyFrame)
        assert lf.collect_schema() == a.findings().schema
        items = a.items(lazy=True, include_missing=True)
        assert items.collect_schema()["present"] == pl.Boolean
        assert items.collect_schema()["last_seen"] == pl.Datetime("us", "UTC")
        got = items.select("uri", "present").head(3).collect()
        assert got.columns == ["uri", "present"] and got["present"].to_list() == [True] * 3
        assert got["uri"].to_list() == a.items()["uri"].head(3).to_list()  # uri order, as eager


def test_an_abandoned_lazy_read_holds_no_statement_on_the_catalog(small):
    """Polars may stop pulling a lazy source without closing it: the catalog must stay
    writable on the same connection, and a checkpoint must get through."""
    with audit.open(small.index) as a:
        head = a.findings(lazy=True).filter(pl.col("category") == "circles").head(2).collect()
        assert head.height == 2
        store = FindingsStore(a.catalog.conn)
        store.upsert_findings(
            [Finding(item_id(0), "extra", "low", small.policy_hash, [Signal("prompt_rule", "rule:x", 1.0, 1.0, 0.0)])],
            run_id=2,
        )
        assert a.findings(category="extra").height == 1
        busy, _, _ = a.catalog.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0


def test_cluster_members_read_the_member_table_a_cluster_row_names(small):
    """A cluster row as older releases wrote it (the JSON member list) and one as the flag
    stage writes it now (a reference to its cluster_members rows) read the same way
    everywhere: cluster_members, findings(member_of=), clusters()' members, review."""

    from audit.findings.store import members_ref
    from audit.review import cluster_members as review_members

    cid = small.cluster_ids[2]
    with audit.open(small.index) as a:
        conn = a.catalog.conn
        assert a.cluster_members(cid)["item_id"].to_list() == sorted(small.cluster_items[cid])
        assert review_members(conn, cid) == a.clusters(cluster_id=cid)["members"][0].to_list()
        # the member rows and the JSON list disagree: the reference must be what is read
        keep = sorted(small.cluster_items[cid])[:5]
        conn.executemany("INSERT INTO cluster_members VALUES (7, ?, 3, 0.5)", [(i,) for i in reversed(keep)])
        conn.execute("INSERT INTO cluster_members VALUES (7, 'other-cluster-item', 4, 0.5)")
        conn.execute("UPDATE clusters SET members = ? WHERE cluster_id = ?", (members_ref(7, 3), cid))
        assert a.cluster_members(cid)["item_id"].to_list() == keep
        assert sorted(a.findings(member_of=cid)["item_id"].to_list()) == keep
        assert a.clusters(cluster_id=cid)["members"][0].to_list() == keep
        assert a.clusters(cluster_id=cid, lazy=True).collect()["members"][0].to_list() == keep
        assert review_members(conn, cid) == keep
    from audit.errors import InputError

    with audit.open(small.index) as a, pytest.raises(InputError):
        a.cluster_members("no-such-cluster")


def test_findings_indexes_answer_cluster_and_item_filters(small):
    with audit.open(small.index) as a:
        q = a._findings_store().findings_query(policy_hash=small.policy_hash, cluster_id="x")
        plan = " ".join(r[3] for r in a.catalog.conn.execute("EXPLAIN QUERY PLAN " + q.sql(), q.params))
        assert "findings_cluster" in plan
        q = a._findings_store().findings_query(policy_hash=small.policy_hash, item_id=["a", "b"])
        plan = " ".join(r[3] for r in a.catalog.conn.execute("EXPLAIN QUERY PLAN " + q.sql(), q.params))
        assert "findings_item" in plan


def test_nested_columns_are_polars_types_eager_and_lazy_alike(small):
    """signals a list of structs (detail as JSON text), members/categories lists of ids,
    flagged a boolean, resources a list of structs: the same schema eager and lazy."""
    import json

    from audit.frames import IDS_TYPE, RESOURCES_TYPE, SIGNALS_TYPE

    with audit.open(small.index) as a:
        a.catalog.conn.execute(
            "UPDATE items SET resources = ? WHERE item_id = ?",
            (json.dumps([{"kind": "lora", "name": "toy-lora", "hash": "ab12", "weight": 0.7}]), item_id(0)),
        )
        for eager, lazy in (
            (a.findings(), a.findings(lazy=True)),
            (a.clusters(), a.clusters(lazy=True)),
            (a.items(), a.items(lazy=True)),
            (a.cluster_members(small.cluster_ids[0]), a.cluster_members(small.cluster_ids[0], lazy=True)),
        ):
            assert lazy.collect_schema() == eager.schema
            assert lazy.collect().schema == eager.schema
        f = a.findings()
        assert f.schema["signals"] == SIGNALS_TYPE
        sig = f.explode("signals").select(
            pl.col("signals").struct.field("kind"), pl.col("signals").struct.field("detail")
        )
        assert sig.height == small.n_findings and set(sig["kind"]) == {"prompt_rule"}
        assert json.loads(sig["detail"][0]) == {"matches": [{"field": "prompt", "span": [14, 22], "text": "triangle"}]}
        # the lazy frame explodes and filters on a struct field the same way
        lazy_kinds = (
            a.findings(lazy=True)
            .explode("signals")
            .filter(pl.col("signals").struct.field("score") == 1.0)
            .select(pl.len())
            .collect()
            .item()
        )
        assert lazy_kinds == small.n_findings
        c = a.clusters()
        assert c.schema["members"] == IDS_TYPE and c.schema["categories"] == IDS_TYPE
        assert c.schema["flagged"] == pl.Boolean and c["flagged"].all()
        assert (
            c.filter(pl.col("cluster_id") == small.cluster_ids[1])["members"][0].to_list()
            == small.cluster_items[small.cluster_ids[1]]
        )  # as stored
        assert c.explode("categories")["categories"].unique().to_list() == ["triangles"]
        items = a.items(item_ids=[item_id(0), item_id(1)])
        assert items.schema["resources"] == RESOURCES_TYPE
        res = items.filter(pl.col("item_id") == item_id(0)).explode("resources")["resources"].struct.unnest()
        assert res.to_dicts() == [{"kind": "lora", "name": "toy-lora", "hash": "ab12", "weight": 0.7}]
        members = a.cluster_members(small.cluster_ids[0])
        assert members.schema["resources"] == RESOURCES_TYPE and members.schema["categories"] == IDS_TYPE


def test_an_empty_index_gives_empty_typed_columns(tmp_path):
    from audit.frames import IDS_TYPE, RESOURCES_TYPE, SIGNALS_TYPE

    with audit.open(tmp_path / "idx", create=True) as a:
        for f in (a.findings(), a.findings(lazy=True).collect()):
            assert f.height == 0 and f.schema["signals"] == SIGNALS_TYPE
            assert f.explode("signals").select(pl.col("signals").struct.field("kind")).height == 0
        for c in (a.clusters(), a.clusters(lazy=True).collect()):
            assert c.height == 0 and c.schema["members"] == IDS_TYPE and c.schema["flagged"] == pl.Boolean
        assert a.items().schema["resources"] == RESOURCES_TYPE


def test_a_stored_value_of_another_shape_reads_as_null_not_an_error(small):
    """A hand-edited or old row (resources as a bare string) must not fail the frame."""
    with audit.open(small.index) as a:
        a.catalog.conn.execute("UPDATE items SET resources = ? WHERE item_id = ?", ('"just a name"', item_id(3)))
        a.catalog.conn.execute("UPDATE items SET resources = ? WHERE item_id = ?", ("not json", item_id(4)))
        got = a.items(item_ids=[item_id(3), item_id(4), item_id(5)])
        assert got.height == 3 and got["resources"].null_count() == 3
