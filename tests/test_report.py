"""audit report: outputs, fields, chain of custody, reviewer protection, bad input (no browser)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

import audit
from audit.errors import ExitCode, UsageError
from audit.report import parse_formats, verify_report
from audit.report.base import FINDING_FIELDS, SIGNAL_FIELDS, writers
from audit.report.data import gather
from audit.report.testing import HUGE_PROMPT, XSS_NAME, XSS_PROMPT, build_fixture, check_writer
from audit.report.thumbs import check_and_thumbnail

from tests.cli_helper import audit_cli


@pytest.fixture(scope="module")
def fixture_src(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("report-fixture"))


@pytest.fixture
def fx(fixture_src, tmp_path):
    """A private copy of the fixture (index, archive, policy) per test: tests write to the catalog."""
    src = fixture_src.index.parent
    dst = tmp_path / "fx"
    shutil.copytree(src, dst, symlinks=True)
    from audit.report.testing import Fixture

    f = fixture_src
    # catalog uris and the policy path point into the module's copy; the archive there is
    # unchanged by the tests, so only the index is private
    return Fixture(dst / "idx", f.archive, f.policy_path, f.policy_hash, f.items, f.run_id)


def _report(fx, out, **kw):
    with audit.open(fx.index) as a:
        return a.report(out, argv=["audit", "report", "--index", str(fx.index)], **kw)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _card(html: str, item_id: str) -> list[str]:
    return re.findall(rf'<article class="finding[^"]*"[^>]*data-item-id="{item_id}".*?</article>', html, re.S)


# ----------------------------------------------------------------------------- outputs


def test_default_folder_files_and_permissions(fx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = _report(fx, None)
    out = Path(s.out_dir)
    assert out.parent == tmp_path / "reports" / "idx" and re.fullmatch(r"\d{8}T\d{6}Z", out.name)
    assert sorted(p.name for p in out.iterdir()) == [
        "clusters.jsonl",
        "findings.csv",
        "findings.jsonl",
        "findings.parquet",
        "index.html",
        "manifest.json",
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    assert not list(out.parent.glob(".*partial*")), "no staging folder left behind"
    # originals are never copied: no PNG in any output, no original's bytes anywhere
    originals = [p.read_bytes() for p in fx.archive.rglob("*.png")]
    for p in out.iterdir():
        blob = p.read_bytes()
        assert b"\x89PNG" not in blob
        assert not any(o[8:200] in blob for o in originals)
    # a second report in the same second gets its own folder
    s2 = _report(fx, None)
    assert s2.out_dir != s.out_dir and Path(s2.out_dir).parent == out.parent


def test_findings_records_in_every_format(fx, tmp_path):
    s = _report(fx, tmp_path / "r")
    out = Path(s.out_dir)
    rows = _jsonl(out / "findings.jsonl")
    assert len(rows) == 9 == s.findings
    for r in rows:
        assert list(r)[: len(FINDING_FIELDS)] == list(FINDING_FIELDS)
        assert r["severity"] in ("critical", "high", "medium", "low")
        assert r["status"] in ("new", "known", "dismissed", "confirmed", "escalated")
        for sig in r["signals"]:
            assert list(sig) == list(SIGNAL_FIELDS) and isinstance(sig["detail"], dict)
        assert r["sha256"] == r["item_id"] and r["locations"]
    by_item = {r["item_id"]: r for r in rows}
    assert by_item[fx.items["green_square"]]["prompt"] == HUGE_PROMPT.strip()  # full text in JSONL
    assert by_item[fx.items["blue_triangle"]]["prompt"] == XSS_PROMPT
    assert any(
        s["detail"].get("label") == "toy square <b>label</b>" for s in by_item[fx.items["blue_square"]]["signals"]
    )
    red = [r for r in rows if r["item_id"] == fx.items["red_triangle"]]
    assert {r["category"] for r in red} == {"red-shapes", "triangles"} and all(r["no_view"] for r in red)
    assert all(r["cluster_id"] for r in red)

    import polars as pl

    pq = pl.read_parquet(out / "findings.parquet")
    assert pq["finding_id"].to_list() == [r["finding_id"] for r in rows]
    assert pq["prompt"].to_list() == [r["prompt"] for r in rows]
    sig0 = pq["signals"][0][0]
    assert (
        sig0["kind"] == rows[0]["signals"][0]["kind"] and json.loads(sig0["detail"]) == rows[0]["signals"][0]["detail"]
    )

    with open(out / "findings.csv", newline="", encoding="utf-8") as fh:
        cs = list(csv.DictReader(fh))
    assert [c["finding_id"] for c in cs] == [r["finding_id"] for r in rows]
    assert [json.loads(c["signals"]) for c in cs] == [r["signals"] for r in rows]
    assert [c["prompt"] for c in cs] == [r["prompt"] for r in rows]

    clusters = _jsonl(out / "clusters.jsonl")
    assert len(clusters) == 1 and clusters[0]["size"] == 3 and clusters[0]["kind"] == "semantic"


@pytest.mark.parametrize("name", sorted(writers()))  # every registered writer
def test_writer_contract(fx, tmp_path, name):
    with audit.open(fx.index) as a:
        data = gather(a)
    check_and_thumbnail(data)
    paths = check_writer(writers()[name], data, tmp_path / "full")
    assert paths
    with audit.open(fx.index) as a:
        a.catalog.conn.execute("UPDATE findings SET active = 0")
        empty = gather(a)
    check_writer(writers()[name], empty, tmp_path / "empty")


def test_formats_subset_and_bad_format(fx, tmp_path):
    s = _report(fx, tmp_path / "r", formats="jsonl")
    assert s.files == ["clusters.jsonl", "findings.jsonl", "manifest.json"]
    assert verify_report(s.out_dir).ok
    with pytest.raises(UsageError):
        parse_formats("html,pdf")
    assert parse_formats("all") == ("html", "jsonl", "parquet", "csv")


# ----------------------------------------------------------------------------- reviewer protection


def test_no_view_items_get_no_image_anywhere(fx, tmp_path):
    for blur in (True, False):
        s = _report(fx, tmp_path / f"r{blur}", blur=blur)
        html = (Path(s.out_dir) / "index.html").read_text("utf-8")
        for stem in ("red_triangle", "red_circle"):  # red_triangle is also in a viewable category
            cards = _card(html, fx.items[stem])
            assert cards
            for card in cards:
                assert "<img" not in card and "data:image" not in card and "data-reveal" not in card
                assert "no view" in card
        assert "url(" not in html
        # exactly one image per viewable, present item: blue/yellow triangle, green/blue square, named
        assert html.count("<img") == 5 and html.count("data-reveal=") == 5


def test_thumbnails_blurred_server_side(fx, tmp_path):
    from PIL import Image, ImageChops

    from audit.report.thumbs import make_thumb

    raw = (fx.archive / "yellow_triangle.png").read_bytes()
    clear = Image.open(io.BytesIO(make_thumb(raw, blur=False).reveal)).convert("RGB")
    t = make_thumb(raw)
    cover = Image.open(io.BytesIO(t.cover)).convert("RGB")
    reveal = Image.open(io.BytesIO(t.reveal)).convert("RGB")
    assert max(cover.size) <= 96 and t.cover != t.reveal

    def diff(a, b):
        return float(np.asarray(ImageChops.difference(a, b).convert("L"), dtype=np.float64).mean())

    assert diff(cover, clear) > 3 * diff(reveal, clear) > 0  # cover far from the picture, reveal close
    g = make_thumb(raw, grayscale=True)
    for blob in (g.cover, g.reveal):
        px = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).astype(int)
        assert (px.max(axis=2) - px.min(axis=2)).max() <= 3  # grey (JPEG may wobble a little)
    # the page embeds the cover in <img src> and the reveal only in data-reveal
    s = _report(fx, tmp_path / "r")
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    card = _card(html, fx.items["yellow_triangle"])[0]
    reveal_uri = re.search(r'data-reveal="([^"]+)"', card).group(1)
    src = re.search(r'<img[^>]* src="([^"]+)"', card).group(1)
    assert src != reveal_uri and src.startswith("data:image/jpeg;base64,")
    assert max(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size) <= 96


def test_archive_text_is_escaped(fx, tmp_path):
    s = _report(fx, tmp_path / "r")
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    assert "<script>window.__pwned" not in html and 'onerror="window' not in html
    assert XSS_NAME not in html
    assert "&lt;script&gt;window.__pwned" in html
    assert html.count("<script") == 1  # the page's own, with the nonce
    nonce = re.search(r"<script nonce=\"([^\"]+)\">", html).group(1)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in csp and "img-src data:" in csp and f"script-src 'nonce-{nonce}'" in csp
    assert "<b>label</b>" not in html and "toy square &lt;b&gt;label&lt;/b&gt;" in html
    assert not re.search(r"(?:src|href)=\"(?:https?:|//)", html), "no external reference"


# ----------------------------------------------------------------------------- chain of custody


def test_manifest_chain_of_custody(fx, tmp_path):
    s = _report(fx, tmp_path / "r")
    out = Path(s.out_dir)
    m = json.loads((out / "manifest.json").read_text("utf-8"))
    assert m["tool"]["name"] == "audit" and m["tool"]["version"] == audit.__version__
    assert m["policy"]["name"] == "toy-report" and m["policy"]["version"] == "2"
    assert m["policy"]["content_hash"] == fx.policy_hash
    assert m["model"]["model_key"] == "toy-shapes:test"
    assert m["index"]["catalog_version"] >= 1 and m["command_line"][:2] == ["audit", "report"]
    assert m["user"] and m["host"] and m["started"] <= m["finished"]
    assert {i["sha256"] for i in m["items"]} == set(fx.items.values()) - {fx.items["clean"]}
    for i in m["items"]:
        assert i["md5"] and i["pdq"] and i["size"] and i["locations"]
        assert all(loc["mtime_ns"] and loc["uri"] for loc in i["locations"])
    gone = next(i for i in m["items"] if i["sha256"] == fx.items["gone"])
    assert gone["present_at_report"] is False and gone["sha256_verified_at_report"] is None
    assert all(i["sha256_verified_at_report"] for i in m["items"] if i["sha256"] != fx.items["gone"])
    assert set(m["files"]) == set(s.files) - {"manifest.json"}
    assert verify_report(out).ok and verify_report(out).checked == 5


def test_verify_cli_detects_changes(fx, tmp_path):
    s = _report(fx, tmp_path / "r")
    out = Path(s.out_dir)
    r = audit_cli("report", "--verify", out)
    assert "intact" in r.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "findings.csv").write_text("finding_id\n", "utf-8")
    # a changed report has its own code, not FINDINGS (1), which --fail-on uses
    r = audit_cli("report", "--verify", copy, expected=ExitCode.REPORT_CHANGED)
    assert "findings.csv" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (copy / "findings.csv").unlink()
    shutil.copy(out / "findings.csv", copy / "findings.csv")
    assert verify_report(copy).ok
    (copy / "extra.txt").write_text("x")
    r = audit_cli("report", "--verify", copy, "--json", expected=ExitCode.REPORT_CHANGED)
    assert "extra.txt" in r.stderr and r.json()["ok"] is False
    (copy / "extra.txt").unlink()
    (copy / "index.html").unlink()
    assert "index.html: missing" in verify_report(copy).problems
    r = audit_cli("report", "--verify", tmp_path, expected=ExitCode.USAGE)
    assert "manifest.json" in r.stderr


# ----------------------------------------------------------------------------- bad input


def test_missing_original_still_reported(fx, tmp_path):
    s = _report(fx, tmp_path / "r")
    out = Path(s.out_dir)
    row = next(r for r in _jsonl(out / "findings.jsonl") if r["item_id"] == fx.items["gone"])
    assert row["missing"] is True and row["verified_at_report"] is None and row["prompt"]
    card = _card((out / "index.html").read_text("utf-8"), fx.items["gone"])[0]
    assert "<img" not in card and "missing" in card and fx.items["gone"] in card
    assert s.counts["missing_items"] == 1


def test_changed_original_is_not_thumbnailed(fx, tmp_path):
    with audit.open(fx.index) as a:
        data = gather(a)
    target = fx.items["yellow_triangle"]

    def reader(uri):
        raw = Path(uri).read_bytes()
        return raw + b"tampered" if uri.endswith("yellow_triangle.png") else raw

    check_and_thumbnail(data, reader=reader)
    item = data.items[target]
    assert item.verified is False and item.thumb is None and "differs" in item.read_error


def test_huge_prompt_truncated_for_display(fx, tmp_path):
    s = _report(fx, tmp_path / "r")
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    card = _card(html, fx.items["green_square"])[0]
    assert "more characters (full text in findings.jsonl)" in card
    assert len(card) < 12_000 and HUGE_PROMPT not in html


def test_non_utf8_text_in_catalog(fx, tmp_path):
    with audit.open(fx.index) as a:
        a.catalog.conn.execute(
            "UPDATE items SET prompt = CAST(X'61ff2062c3' AS TEXT), negative_prompt = "
            "CAST(X'fe00' AS TEXT) WHERE item_id = ?",
            (fx.items["blue_square"],),
        )
    s = _report(fx, tmp_path / "r")
    row = next(r for r in _jsonl(Path(s.out_dir) / "findings.jsonl") if r["item_id"] == fx.items["blue_square"])
    assert row["prompt"] == "a\ufffd b\ufffd"
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    assert "a\ufffd b\ufffd" in html and "\x00" not in html
    assert verify_report(s.out_dir).ok


def test_empty_findings_report_says_so(tmp_path):
    f = build_fixture(tmp_path / "e", with_findings=False, remove_missing=False)
    s = _report(f, tmp_path / "r")
    out = Path(s.out_dir)
    assert s.findings == 0 and (out / "findings.jsonl").read_text() == ""
    html = (out / "index.html").read_text("utf-8")
    assert "No findings: policy toy-report flagged nothing" in html and "<img" not in html
    with open(out / "findings.csv", encoding="utf-8") as fh:
        assert fh.read().startswith("finding_id,item_id,uri,category,severity,status,cluster_id,signals")
    assert verify_report(out).ok


def test_index_never_flagged(tmp_path, archive):
    idx = tmp_path / "idx"
    audit.crawl([str(archive)], idx, workers=1)
    s = _report(type("F", (), {"index": idx})(), tmp_path / "r")
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    assert s.findings == 0 and "`audit flag` has not run" in html


def test_existing_output_folder(fx, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = audit_cli("report", "--index", fx.index, "--out", out, expected=ExitCode.USAGE)
    assert "exists and is not empty" in r.stderr
    audit_cli("report", "--index", fx.index, "--out", out, "--force", expected=ExitCode.USAGE)
    assert (out / "notes.txt").read_text() == "mine"
    first = _report(fx, tmp_path / "r2")
    with pytest.raises(UsageError):
        _report(fx, first.out_dir)
    second = _report(fx, first.out_dir, force=True, formats="html,jsonl")
    assert second.report_id != first.report_id
    assert sorted(p.name for p in Path(second.out_dir).iterdir()) == sorted(second.files)
    assert verify_report(second.out_dir).ok


def test_policy_file_gone_withholds_every_image(fx, tmp_path):
    with audit.open(fx.index) as a:
        a.catalog.conn.execute("UPDATE flag_runs SET policy_path = ?", (str(tmp_path / "nope.toml"),))
    s = _report(fx, tmp_path / "r")
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    assert "<img" not in html and "images are withheld for every category" in html
    assert all(r["no_view"] for r in _jsonl(Path(s.out_dir) / "findings.jsonl"))
    # naming the policy file again restores its no_view settings
    s = _report(fx, tmp_path / "r2", policy=fx.policy_path)
    assert (Path(s.out_dir) / "index.html").read_text("utf-8").count("<img") == 5


def test_new_since_last_report_and_decisions(fx, tmp_path):
    from audit.findings.store import Finding, FindingsStore, Signal

    first = _report(fx, tmp_path / "r1")
    assert first.counts["new_since_last_report"] == 9
    second = _report(fx, tmp_path / "r2")
    assert second.counts["new_since_last_report"] == 0
    with audit.open(fx.index) as a:
        store = FindingsStore(a.catalog.conn)
        store.upsert_findings(
            [
                Finding(
                    fx.items["clean"],
                    "squares",
                    "medium",
                    fx.policy_hash,
                    [Signal("concept", "concept:x", 0.3, 0.2, 0.1)],
                )
            ],
            run_id=fx.run_id,
        )
        fid = _jsonl(Path(second.out_dir) / "findings.jsonl")[0]["finding_id"]
        store.record_decision(target_kind="finding", target_id=fid, decision="dismiss", decided_by="rev", note="ok")
    third = _report(fx, tmp_path / "r3")
    rows = _jsonl(Path(third.out_dir) / "findings.jsonl")
    assert third.counts["new_since_last_report"] == 1
    assert [r["item_id"] for r in rows if r["new_since_last_report"]] == [fx.items["clean"]]
    d = next(r for r in rows if r["finding_id"] == fid)
    assert d["status"] == "dismissed" and d["decision"]["by"] == "rev"
    m = json.loads((Path(third.out_dir) / "manifest.json").read_text())
    assert m["previous_report"]["out"] == second.out_dir


def test_cli_json_and_usage(fx, tmp_path):
    data = audit_cli("report", "--index", fx.index, "--out", tmp_path / "r", "--json", "--grayscale", "-q").json()
    assert data["command"] == "report" and data["counts"]["findings"] == 9 and len(data["manifest_sha256"]) == 64
    audit_cli("report", expected=ExitCode.USAGE)
    audit_cli("report", "--index", fx.index, "--out", tmp_path / "x", "--format", "pdf", expected=ExitCode.USAGE)
    audit_cli("report", "--index", tmp_path / "nowhere", expected=ExitCode.USAGE)
    h = audit_cli("report", "--help")
    assert "--verify" in h.stdout and "--no-blur" in h.stdout


def test_report_of_a_real_flag_run(tmp_path):
    """The flag stage's own output (prompt rules only: no embeddings needed) reports as expected."""
    f = build_fixture(tmp_path / "real", with_findings=False, remove_missing=False)
    with audit.open(f.index) as a:
        a.flag(f.policy_path, argv=["audit", "flag"])
        s = a.report(tmp_path / "r", argv=["audit", "report"])
    rows = _jsonl(Path(s.out_dir) / "findings.jsonl")
    assert {r["category"] for r in rows} == {"triangles"} and len(rows) == 4
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    assert html.count("<mark>triangle</mark>") == 4  # matched spans highlighted
    m = json.loads((Path(s.out_dir) / "manifest.json").read_text("utf-8"))
    assert m["flag_run"]["policy_name"] == "toy-report" and m["policy"]["content_hash"] == f.policy_hash


def test_html_limit_keeps_every_finding_in_the_data_files(fx, tmp_path):
    s = _report(fx, tmp_path / "r", html_limit=3)
    html = (Path(s.out_dir) / "index.html").read_text("utf-8")
    assert html.count("<article ") == 3 and "first 3 of 9 findings" in html
    assert len(_jsonl(Path(s.out_dir) / "findings.jsonl")) == 9
    shown = set(re.findall(r'<article [^>]*data-item-id="([0-9a-f]+)"', html))
    m = json.loads((Path(s.out_dir) / "manifest.json").read_text())
    assert len(m["items"]) == 8 and html.count("<img") <= len(shown)


def test_review_candidates_are_marked_in_every_output(fx, tmp_path):
    from audit.findings.store import Finding, FindingsStore, Signal, is_review_candidate

    cid = f"{fx.policy_hash[:12]}:semantic:0"
    via_cluster = Signal("cluster", f"cluster:{cid}", 0.3, 0.24, 0.06, {"cluster_id": cid, "reason": "centroid"})
    with audit.open(fx.index) as a:
        FindingsStore(a.catalog.conn).upsert_findings(
            [
                Finding(
                    fx.items["yellow_triangle"], "red-shapes", "critical", fx.policy_hash, [via_cluster], cluster_id=cid
                )
            ],
            run_id=fx.run_id,
        )
    out = Path(_report(fx, tmp_path / "r").out_dir)
    rows = _jsonl(out / "findings.jsonl")
    marked = [r for r in rows if r["review_candidate"]]
    assert [(r["item_id"], r["category"]) for r in marked] == [(fx.items["yellow_triangle"], "red-shapes")]
    assert all(r["review_candidate"] == is_review_candidate(r["signals"]) for r in rows)
    html = (out / "index.html").read_text("utf-8")
    cards = _card(html, fx.items["yellow_triangle"])
    assert sum("candidate · via cluster" in c for c in cards) == 1 and len(cards) == 2
    assert html.count("candidate · via") == 1
    assert re.search(r'<div class="v">1</div><div class="l">review candidates</div>', html)
