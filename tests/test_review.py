"""Review decisions: append-only log, latest wins, cluster decisions, import validation
(all or nothing, errors naming the entry), hash-list export, the CLI."""

from __future__ import annotations

import csv
import json

import pytest

import audit
from audit.errors import ExitCode, InputError, UsageError
from audit.findings.store import FindingsStore
from tests.cli_helper import audit_cli
from tests.toy_world import make_archive_dir


@pytest.fixture()
def idx(tmp_path):
    archive = tmp_path / "archive"
    make_archive_dir(archive, n=6)
    a = audit.open(tmp_path / "idx", create=True)
    a.crawl([archive], workers=0)
    ids = sorted(a.items()["item_id"].to_list())
    store = FindingsStore(a.catalog.conn)
    with store.transaction() as c:
        store.replace_clusters_in(
            c,
            "p" * 64,
            [
                {
                    "cluster_id": "c1",
                    "policy_hash": "p" * 64,
                    "kind": "semantic",
                    "size": 2,
                    "members": ids[:2],
                    "flagged": 0,
                }
            ],
        )
    return a, ids, tmp_path


def test_append_only_latest_wins(idx):
    from audit.review import confirmed_items, latest_by_target

    a, ids, _ = idx
    a.review(ids[0], decision="confirm", note="n1", by="ann")
    a.review(ids[0][:10], decision="dismiss", by="bob")  # a unique prefix works
    a.review(ids[1], decision="escalate")
    log = a.decisions()
    assert log["decision"].to_list() == ["confirm", "dismiss", "escalate"]
    assert log["decided_by"].to_list()[:2] == ["ann", "bob"]
    items, _ = latest_by_target(a.catalog.conn)
    assert items[ids[0]].decision == "dismiss" and items[ids[1]].decision == "escalate"
    assert confirmed_items(a.catalog.conn) == {}
    a.review(ids[0], decision="confirm", category="red-triangles")
    assert list(confirmed_items(a.catalog.conn)) == [ids[0]]
    assert len(a.decisions()) == 4  # nothing rewritten


def test_cluster_decision_logs_members(idx):
    a, ids, _ = idx
    a.review(cluster="c1", decision="confirm", note="all of them")
    log = a.decisions().to_dicts()
    assert [(d["target_kind"], d["target_id"]) for d in log] == [("cluster", "c1"), ("item", ids[0]), ("item", ids[1])]
    assert log[1]["source"] == "cluster:c1"


def test_bad_targets_and_decisions(idx):
    a, ids, _ = idx
    with pytest.raises(InputError, match="no item"):
        a.review("ffff" * 16, decision="confirm")
    with pytest.raises(InputError, match="no cluster"):
        a.review(cluster="nope", decision="confirm")
    with pytest.raises(UsageError, match="decision"):
        a.review(ids[0], decision="maybe")
    assert a.decisions().is_empty()


def test_import_validates_every_entry_and_writes_nothing_on_error(idx):
    a, ids, tmp = idx
    good = [
        {"item_id": ids[0], "decision": "confirm", "note": "x", "by": "ann", "at": "2026-01-02T03:04:05Z"},
        {"cluster_id": "c1", "decision": "dismiss"},
    ]
    cases = [
        ({"decision": "confirm"}, "entry 2: give exactly one of item_id"),
        ({"item_id": ids[1], "cluster_id": "c1", "decision": "confirm"}, "entry 2: give exactly one"),
        ({"item_id": ids[1], "finding_id": "f", "decision": "confirm"}, "entry 2: no finding 'f'"),
        ({"item_id": ids[1], "decision": "approve"}, "entry 2: 'decision' must be one of"),
        ({"item_id": "0" * 64, "decision": "confirm"}, "entry 2: no item"),
        ({"item_id": ids[1], "decision": "confirm", "at": "yesterday"}, "entry 2: 'at' is not an ISO 8601"),
        ({"item_id": ids[1], "decision": "confirm", "colour": "red"}, "entry 2: unknown key 'colour'"),
        ({"item_id": ids[1], "decision": "confirm", "note": 5}, "entry 2: 'note' must be a string"),
        ("confirm", "entry 2: expected an object"),
    ]
    for bad, message in cases:
        f = tmp / "d.json"
        f.write_text(json.dumps(good + [bad]))
        with pytest.raises(InputError, match=message):
            a.import_decisions(f)
        assert a.decisions().is_empty()
        proc = audit_cli("review", "--index", tmp / "idx", "--import", f, expected=ExitCode.USAGE)
        assert proc.stderr.strip().count("\n") == 0 and "entry 2" in proc.stderr
    (tmp / "d.json").write_text("{not json")
    with pytest.raises(InputError, match="not a JSON file"):
        a.import_decisions(tmp / "d.json")
    (tmp / "d.json").write_text(json.dumps(good))
    ids_written = a.import_decisions(tmp / "d.json")
    assert len(ids_written) == 2
    log = a.decisions().to_dicts()
    assert log[0]["decided_by"] == "ann" and log[0]["decided_at"].year == 2026
    assert log[0]["source"].startswith("import:") and len(log) == 4  # cluster + its 2 members


def test_export_bank_of_confirmed_items(idx):
    a, ids, tmp = idx
    a.review(ids[2], decision="confirm", category="red-triangles", by="ann")
    a.review(ids[3], decision="confirm")
    a.review(ids[3], decision="dismiss")  # no longer confirmed
    out = tmp / "bank.csv"
    assert audit_cli("review", "--index", tmp / "idx", "--export-bank", out, "--json").json()["exported_rows"] == 3
    rows = list(csv.DictReader(out.open()))
    assert [r["hash_type"] for r in rows] == ["pdq", "md5", "sha256"]
    item = a.items().filter(a.items()["item_id"] == ids[2]).to_dicts()[0]
    assert [r["hash"] for r in rows] == [item["pdq"], item["md5"], ids[2]]
    assert rows[0]["label"].startswith("red-triangles:")
    from audit.policy.hashlists import load_hash_bank

    bank = load_hash_bank(out)  # the policy loader reads it back
    assert len(bank) == 3


def test_cli_review_item_and_usage_errors(idx):
    a, ids, tmp = idx
    a.close()
    proc = audit_cli(
        "review",
        "--index",
        tmp / "idx",
        "--item",
        ids[4],
        "--decision",
        "dismiss",
        "--note",
        "benign",
        "--by",
        "carol",
        "--json",
    )
    assert proc.json()["decision_id"] >= 1
    for args in (["--item", ids[4]], ["--item", ids[4], "--cluster", "c1", "--decision", "confirm"], []):
        audit_cli("review", "--index", tmp / "idx", *args, expected=ExitCode.USAGE)
    with audit.open(tmp / "idx") as b:
        log = b.decisions().to_dicts()
    assert [(d["target_id"], d["decision"], d["decided_by"], d["note"]) for d in log] == [
        (ids[4], "dismiss", "carol", "benign")
    ]


def test_import_accepts_the_report_page_format(idx):
    """audit/report/decisions_format.md: finding_id with its item_id as a check."""
    from audit.findings.store import Finding, Signal
    from audit.review import confirmed_items

    a, ids, tmp = idx
    store = FindingsStore(a.catalog.conn)
    f = Finding(ids[0], "red-triangles", "critical", "p" * 64, [Signal("prompt_rule", "rule:x", 1.0, 1.0, 0.0, {})])
    store.upsert_findings([f], run_id=1)
    entry = {
        "finding_id": f.finding_id,
        "item_id": ids[0],
        "decision": "confirm",
        "note": "",
        "by": "j.doe",
        "at": "2026-11-25T03:52:10.123Z",
    }
    (tmp / "page.json").write_text(json.dumps([entry]))
    assert len(a.import_decisions(tmp / "page.json")) == 1
    log = a.decisions().to_dicts()
    assert (log[0]["target_kind"], log[0]["target_id"], log[0]["category"]) == (
        "finding",
        f.finding_id,
        "red-triangles",
    )
    assert list(confirmed_items(a.catalog.conn)) == [ids[0]]
    (tmp / "page.json").write_text(json.dumps([{**entry, "item_id": ids[1]}]))
    with pytest.raises(InputError, match="entry 0: item_id .* is not the item of finding"):
        a.import_decisions(tmp / "page.json")
    assert len(a.decisions()) == 1
