"""Crawling into the catalog: facts, duplicates, incremental rescans, bad input, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import polars as pl
import pytest

import audit
from audit.catalog.lock import IndexLock
from audit.errors import ExitCode
from tests.cli_helper import audit_cli, audit_subprocess
from tests.toy_world import write_generation

DESIGN_COLUMNS = (
    "uri source size mtime_ns status error format width height frames md5 pdq pdq_quality generator prompt "
    "negative_prompt seed steps sampler scheduler cfg_scale model model_hash resources raw_metadata first_seen last_seen"
).split()


def crawl(index: Path, *sources, workers: int = 0):
    return audit.crawl([str(s) for s in sources], index, workers=workers)


def test_catalog_has_design_columns_and_true_facts(tmp_path, archive):
    summary = crawl(tmp_path / "idx", archive)
    assert summary.read == 12 and summary.errors == 0
    items = audit.open(tmp_path / "idx").items()
    assert isinstance(items, pl.DataFrame) and items.height == 12
    for col in ["item_id", *DESIGN_COLUMNS]:
        assert col in items.columns, col
    row = items.filter(pl.col("uri").str.ends_with("gen_0000.png")).row(0, named=True)
    path = archive / "sub0" / "gen_0000.png"
    data = path.read_bytes()
    assert row["uri"] == str(path.absolute())
    assert row["item_id"] == hashlib.sha256(data).hexdigest()
    assert row["md5"] == hashlib.md5(data).hexdigest()
    assert (row["format"], row["width"], row["height"], row["frames"]) == ("PNG", 64, 64, 1)
    assert len(row["pdq"]) == 64 and 0 <= row["pdq_quality"] <= 100
    assert row["prompt"] == "a photo of a red circle" and row["seed"] == "0" and row["steps"] == 20
    assert row["model"] == "toyModel_v1" and row["model_hash"] == "abc123def0"
    assert row["status"] == "ok" and row["size"] == len(data)
    assert items["first_seen"].dtype == pl.Datetime("us", "UTC")


def test_same_content_at_two_paths_is_one_item_with_two_locations(tmp_path, archive):
    shutil.copy(archive / "sub0" / "gen_0000.png", archive / "copy.png")
    summary = crawl(tmp_path / "idx", archive)
    items = audit.open(tmp_path / "idx").items()
    assert items.height == 13 and items["item_id"].n_unique() == 12
    assert summary.new_items == 12 and summary.new_locations == 13


def test_parallel_workers_give_the_same_catalog(tmp_path, archive):
    crawl(tmp_path / "a", archive, workers=0)
    crawl(tmp_path / "b", archive, workers=2)
    cols = ["uri", "item_id", "md5", "pdq", "prompt", "seed"]
    a = audit.open(tmp_path / "a").items().select(cols)
    b = audit.open(tmp_path / "b").items().select(cols)
    assert a.equals(b)


def test_rescan_reads_only_new_changed_moved(tmp_path, archive):
    idx = tmp_path / "idx"
    crawl(idx, archive)
    before = audit.open(idx).items()["last_seen"].max()
    again = crawl(idx, archive)
    assert (again.read, again.unchanged, again.new_items) == (0, 12, 0)
    after = audit.open(idx).items()
    assert after["last_seen"].min() > before  # unchanged files were seen again
    assert (after["first_seen"] <= before).all()

    # change one, add one, delete one, move one
    changed = archive / "sub1" / "gen_0001.png"
    write_generation(changed, "blue", "square", seed=999)
    os.utime(changed, ns=(1, 1_000_000_000))
    write_generation(archive / "new" / "fresh.png", "yellow", "triangle", seed=5000)
    (archive / "sub2" / "gen_0002.png").unlink()
    (archive / "moved").mkdir()
    (archive / "sub0" / "gen_0003.png").rename(archive / "moved" / "gen_0003.png")

    s = crawl(idx, archive)
    assert s.read == 3  # changed + new + moved-to
    assert (s.changed, s.missing, s.moved) == (1, 1, 1)
    assert s.new_items == 2
    a = audit.open(idx)
    present = a.items()
    assert present.height == 12
    everything = a.items(include_missing=True)
    gone = everything.filter(~pl.col("present"))
    assert sorted(Path(u).name for u in gone["uri"]) == ["gen_0002.png", "gen_0003.png"]
    assert gone["missing_since"].null_count() == 0
    row = present.filter(pl.col("uri").str.ends_with("gen_0001.png")).row(0, named=True)
    assert row["prompt"] == "a photo of a blue square" and row["seed"] == "999"

    # a file that comes back is present again, same first_seen for its content
    write_generation(archive / "sub2" / "gen_0002.png", "yellow", "triangle", seed=2, offset=2)
    s = crawl(idx, archive)
    assert s.read == 1
    assert a.items().height == 13


def _png_with_ihdr(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bad_files_become_error_rows_and_the_crawl_goes_on(tmp_path, archive):
    bad = archive / "bad"
    bad.mkdir()
    good = (archive / "sub0" / "gen_0000.png").read_bytes()
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.png").write_bytes(good[: len(good) // 2])
    (bad / "garbage.jpg").write_bytes(os.urandom(2048))
    (bad / "text.png").write_text("this is not an image\n")
    (bad / "bomb.png").write_bytes(_png_with_ihdr(100_000, 100_000))
    (bad / "absurd.png").write_bytes(_png_with_ihdr(1, 2**31 - 1))
    (bad / "zero.png").write_bytes(_png_with_ihdr(0, 0))
    s = crawl(tmp_path / "idx", archive, workers=2)
    assert s.errors == 6 and s.read == 19
    rows = {Path(r["uri"]).name: r for r in audit.open(tmp_path / "idx").items().iter_rows(named=True)}
    assert all(rows[f"gen_{i:04d}.png"]["status"] == "ok" for i in range(12))
    reasons = {name: rows[name]["error"] for name in rows if rows[name]["status"] == "error"}
    assert set(reasons) == {"empty.png", "garbage.jpg", "text.png", "bomb.png", "absurd.png", "zero.png"}
    assert "empty" in reasons["empty.png"]
    # a PNG cut in half shows its top half, as a browser would: hashed, the cut recorded
    cut = rows["truncated.png"]
    assert cut["status"] == "ok" and cut["pdq"] and cut["width"] == 64
    assert json.loads(cut["warnings"])[0].startswith("image data truncated: decoded partially")
    assert "not a recognised image" in reasons["text.png"]
    assert "too large" in reasons["bomb.png"] and "too large" in reasons["absurd.png"]
    for r in reasons.values():
        assert "\n" not in r and len(r) < 400
    # error rows still carry the content hash so the file is accounted for
    assert rows["garbage.jpg"]["item_id"] == hashlib.sha256((bad / "garbage.jpg").read_bytes()).hexdigest()
    # unchanged bad files are not re-read
    assert crawl(tmp_path / "idx", archive).read == 0


def test_second_crawl_on_a_locked_index_exits_3(tmp_path, archive):
    idx = tmp_path / "idx"
    crawl(idx, archive)
    with IndexLock(idx):
        # a second run is another process: this process's own lock does not stop its own crawl
        res = audit_subprocess("crawl", archive, "--index", idx, "--quiet")
    assert res.returncode == ExitCode.ENVIRONMENT
    assert "in use by another audit run" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_crawl_json_summary_and_errors(tmp_path, archive):
    idx = tmp_path / "idx"
    summary = audit_cli("crawl", archive, "--index", idx, "--json", "--quiet").json()
    assert summary["command"] == "crawl" and summary["read"] == 12 and summary["errors"] == 0
    missing = audit_cli("crawl", tmp_path / "nope", "--index", idx, expected=ExitCode.USAGE)
    assert missing.stderr.startswith("audit: error:")
    assert "Traceback" not in missing.stderr


def test_library_open_missing_index_is_an_input_error(tmp_path):
    from audit.errors import InputError

    with pytest.raises(InputError):
        audit.open(tmp_path / "none")
    assert "--index" in audit_cli("crawl", "--help").stdout


def test_unchanged_remote_objects_are_not_downloaded_again(tmp_path, archive, monkeypatch):
    import fsspec

    fs = fsspec.filesystem("memory")
    for p in sorted(archive.rglob("*.png"))[:4]:
        fs.pipe(f"/remote-test/{p.name}", p.read_bytes())
    idx = tmp_path / "idx"
    assert crawl(idx, "memory://remote-test").read == 4
    opened = []
    real_open = fs.open
    monkeypatch.setattr(fs, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    again = crawl(idx, "memory://remote-test")
    assert (again.read, again.unchanged, again.errors) == (0, 4, 0)
    assert opened == []
    fs.rm("/remote-test", recursive=True)


def test_non_utf8_file_names_are_catalogued_and_read_back(tmp_path, archive):
    from audit.ingest.reader import read_uri

    src = (archive / "sub0" / "gen_0000.png").read_bytes()
    odd = os.fsencode(str(archive)) + b"/caf\xe9_\xff.png"
    with open(odd, "wb") as fh:
        fh.write(src)
    crawl(tmp_path / "idx", archive)
    row = audit.open(tmp_path / "idx").items().filter(pl.col("uri").str.contains("caf%E9_%FF")).row(0, named=True)
    assert row["status"] == "ok" and read_uri(row["uri"]) == src


def test_trust_dir_mtime_skips_unchanged_directories_but_sees_adds_and_deletes(tmp_path, archive):
    idx = tmp_path / "idx"
    fast = lambda: audit.crawl([str(archive)], idx, workers=0, trust_dir_mtime=True)  # noqa: E731
    assert fast().read == 12
    again = fast()
    assert (again.read, again.unchanged, again.missing) == (0, 12, 0)
    write_generation(archive / "sub0" / "added.png", "green", "circle", seed=77)
    (archive / "sub1" / "gen_0001.png").unlink()
    s = fast()
    assert (s.read, s.missing, s.unchanged) == (1, 1, 11)
    # a file rewritten in place leaves its directory's mtime alone: the fast mode misses it,
    # an ordinary crawl (one stat per file) does not
    target = archive / "sub2" / "gen_0002.png"
    dir_mtime = (archive / "sub2").stat().st_mtime_ns
    write_generation(target, "blue", "square", seed=5, offset=3)
    os.utime(archive / "sub2", ns=(dir_mtime, dir_mtime))
    assert fast().read == 0
    assert audit.crawl([str(archive)], idx, workers=0).read == 1
    assert fast().read == 0 and audit.open(idx).items().height == 12
