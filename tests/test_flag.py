"""The flag stage without a model: prompt rules, hash lists, negative banks, combination
flags, incremental runs, policy changes, review statuses, the CLI. (The toy-world CLIP
acceptance tests live in test_flag_toyworld.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import audit
from audit.findings.store import signal_dicts
from audit.errors import ExitCode
from tests.cli_helper import audit_cli
from tests.toy_world import make_archive_dir, write_generation

POLICY = """
[policy]
name = "fast"
version = "{version}"

[[category]]
id = "triangles"
severity = "high"

[[category]]
id = "red-triangles"
severity = "critical"
no_view = true

[[category]]
id = "known-match"
severity = "critical"
no_view = true

[[rule]]
id = "triangle"
words = ["triangle"]

[[rule]]
id = "red"
words = ["red"]

[[flag]]
id = "triangle"
category = "triangles"
any = ["rule:triangle"]

[[flag]]
id = "red-and-triangle"
category = "red-triangles"
all = ["rule:triangle", "rule:red"]

[[hashlist]]
id = "known"
path = "known.csv"
category = "known-match"

[[negative_bank]]
id = "fp"
path = "fp.csv"
"""


def _items(a) -> dict[str, dict]:
    return {Path(r["uri"]).name: r for r in a.items().to_dicts()}


@pytest.fixture()
def flagged(tmp_path):
    """12 toy files (4 colours x 3 shapes), crawled; a policy whose hash list knows one blue
    square by md5 and whose negative bank clears one green triangle by sha256."""
    archive = tmp_path / "archive"
    make_archive_dir(archive)
    a = audit.open(tmp_path / "idx", create=True)
    a.crawl([archive], workers=0)
    items = _items(a)
    known = next(r for n, r in items.items() if "gen_0010" in n)  # a blue square
    fp = next(r for r in items.values() if r["prompt"] == "a photo of a green triangle")
    (tmp_path / "known.csv").write_text(f"hash_type,hash,label\nmd5,{known['md5']},known-one\n")
    (tmp_path / "fp.csv").write_text(f"hash_type,hash,label\nsha256,{fp['item_id']},cleared\n")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(version="1"))
    return a, archive, policy, known, fp


def test_rules_hashes_combination_and_negative_bank(flagged):
    a, _, policy, known, fp = flagged
    s = a.flag(policy)
    assert s.mode == "full" and s.items == 12 and s.evaluated == 12
    df = a.findings()
    by_item = {}
    for r in df.to_dicts():
        by_item.setdefault(r["item_id"], {})[r["category"]] = r
    prompts = {r["item_id"]: r["prompt"] for r in a.items().to_dicts()}
    for item_id, cats in by_item.items():
        for cat, r in cats.items():
            assert r["status"] == "new" and r["uri"]
            sigs = signal_dicts(r["signals"])
            if cat == "triangles":
                assert "triangle" in prompts[item_id]
                sig = sigs[0]
                assert sig["kind"] == "prompt_rule" and sig["detail"]["text"] == "triangle"
                assert sig["detail"]["matches"][0]["span"][1] - sig["detail"]["matches"][0]["span"][0] == 8
    triangles = {i for i, p in prompts.items() if "triangle" in p}
    assert {i for i, c in by_item.items() if "triangles" in c} == triangles - {fp["item_id"]}
    # the combination: both rules must hold
    red_tri = {i for i, c in by_item.items() if "red-triangles" in c}
    assert red_tri == {i for i, p in prompts.items() if "red triangle" in p}
    combo = signal_dicts(by_item[next(iter(red_tri))]["red-triangles"]["signals"])
    assert {s["name"] for s in combo} == {"rule:triangle", "rule:red", "flag:red-and-triangle"}
    assert by_item[known["item_id"]]["known-match"]["severity"] == "critical"
    hs = signal_dicts(by_item[known["item_id"]]["known-match"]["signals"])[0]
    assert hs["kind"] == "hash_match" and hs["detail"]["label"] == "known-one" and hs["detail"]["hash_type"] == "md5"
    assert fp["item_id"] not in by_item and s.suppressed >= 1
    runs = a.catalog.conn.execute("SELECT policy_hash, policy_name FROM flag_runs").fetchall()
    assert runs == [(df["policy_hash"][0], "fast")]


def test_incremental_policy_change_and_dismissal(flagged, tmp_path):
    a, archive, policy, _, _ = flagged
    a.flag(policy)
    first = a.findings()
    dismissed = first.filter(first["category"] == "triangles")["item_id"][0]
    a.review(dismissed, decision="dismiss", note="a drawing exercise", by="tester")
    for i in range(3):  # three new triangles
        write_generation(archive / "new" / f"new_{i}.png", "yellow", "triangle", seed=100 + i, offset=i + 1)
    a.crawl([archive], workers=0)
    s = a.flag(policy)
    assert s.mode == "incremental" and s.evaluated == 3 and s.items == 15
    df = a.findings()
    status = {(r["item_id"], r["category"]): r["status"] for r in df.to_dicts()}
    assert status[(dismissed, "triangles")] == "dismissed"
    new_items = {r["item_id"] for r in a.items().to_dicts() if "/new/" in r["uri"]}
    assert {k for k, v in status.items() if v == "new"} == {(i, "triangles") for i in new_items}
    assert all(v in ("known", "dismissed") for (i, c), v in status.items() if i not in new_items)
    assert len(df) == len(first) + 3
    # unchanged policy, nothing new: nothing evaluated, nothing lost, the same summary
    before = s
    events: list[tuple[str, int]] = []
    s = a.flag(policy, progress=lambda event, n: events.append((event, n)))
    assert s.mode == "unchanged" and s.evaluated == 0 and len(a.findings()) == len(df)
    for field in ("findings", "clusters", "flagged_clusters", "near_duplicate_groups", "by_category"):
        assert getattr(s, field) == getattr(before, field), field
    assert events[0] == ("total", 7) and sum(n for e, n in events if e == "done") == 7
    # a changed policy: every item again, under the new hash; the dismissal still holds
    policy.write_text(POLICY.format(version="2"))
    s = a.flag(policy)
    assert s.mode == "full" and s.evaluated == 15
    df2 = a.findings()
    assert df2["policy_hash"][0] != df["policy_hash"][0]
    st2 = {(r["item_id"], r["category"]): r["status"] for r in df2.to_dicts()}
    assert st2[(dismissed, "triangles")] == "dismissed"
    assert len(a.findings(all_policies=True)) == len(df) + len(df2)


def test_cli_flag_json_and_errors(flagged, tmp_path):
    a, _, policy, _, _ = flagged
    a.close()
    data = audit_cli("flag", "--index", tmp_path / "idx", "--policy", policy, "--json", "-q").json()
    assert data["command"] == "flag" and data["findings"] > 0 and data["policy"]["name"] == "fast"
    assert set(data["by_category"]) == {"triangles", "red-triangles", "known-match"}
    proc = audit_cli("flag", "--index", tmp_path / "nope", "--policy", policy, expected=ExitCode.USAGE)
    assert proc.stderr.count("\n") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text(POLICY.format(version="1").replace('any = ["rule:triangle"]', 'any = ["rule:nope"]'))
    proc = audit_cli("flag", "--index", tmp_path / "idx", "--policy", bad, expected=ExitCode.USAGE)
    assert "bad.toml" in proc.stderr


def test_default_policy_needs_embeddings_for_its_concepts(flagged, tmp_path):
    a, _, _, _, _ = flagged
    from audit.errors import IndexMissing

    with pytest.raises(IndexMissing, match="audit embed"):
        a.flag()  # the packaged default policy has CLIP concepts
