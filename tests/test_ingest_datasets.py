"""Public generation-dataset layouts, crawled end to end with files the tests write:
DiffusionDB parts (zip and folder, part JSON, root metadata.parquet), Civitai API exports,
JourneyDB-style JSONL, Hugging Face Parquet shards (SOURCE, folder, URL prefix), and the
bad variants of each (recorded, never a crash; pixels audited when metadata is bad)."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

import audit
from audit.errors import InputError
from audit.ingest import ContainerDone, ContainerUnchanged, Entry, open_source
from audit.ingest.reader import ReadError, read_uri

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def png(i: int, size: int = 32) -> bytes:
    img = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(img).ellipse((4, 4, size - 4, size - 4), fill=COLOURS[i % 6])
    img.putpixel((0, 0), (i % 256, i // 256 % 256, 7))  # every image distinct
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def never(uri: str, size: int, mtime_ns: int) -> bool:
    return False


def crawl(tmp: Path, *sources: str):
    index = tmp / "idx"
    summary = audit.crawl([str(s) for s in sources], index, workers=0)
    return summary, audit.open(index).items()


def by_name(items: pl.DataFrame) -> dict[str, dict]:
    return {row["uri"].rsplit("/", 1)[-1]: row for row in items.iter_rows(named=True)}


# --- DiffusionDB ---------------------------------------------------------------------------


def part_json(names: list[str], first: int) -> dict:
    return {
        n: {"p": f"a {COLOURS[(first + i) % 6]} circle", "se": 1000 + first + i, "c": 7.0, "st": 25, "sa": "k_lms"}
        for i, n in enumerate(names)
    }


def write_part_zip(path: Path, names: list[str], first: int, part_json_bytes: bytes | None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for i, n in enumerate(names):
            zf.writestr(n, png(first + i))
        if part_json_bytes is not None:
            zf.writestr(path.name.replace(".zip", ".json"), part_json_bytes)


def write_metadata_table(path: Path, parts: dict[int, list[str]]) -> None:
    rows = []
    for pid, names in parts.items():
        for i, n in enumerate(names):
            rows.append(
                {
                    "image_name": n,
                    "prompt": f"table prompt {pid}-{i}",
                    "part_id": pid,
                    "seed": 5000 + i,
                    "step": 30,
                    "cfg": 9.0,
                    "sampler": "k_euler",
                    "width": 32,
                    "height": 32,
                    "user_name": "u" + str(pid),
                    "timestamp": "2022-08-10 00:00:00+00:00",
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)


def diffusiondb(tmp: Path) -> Path:
    """2 zip parts (one with a broken part JSON, one without any), 1 folder part, 1 good zip."""
    root = tmp / "diffusiondb"
    images = root / "images"
    images.mkdir(parents=True)
    names = {pid: [f"{uuid.UUID(int=pid * 100 + i)}.png" for i in range(3)] for pid in (1, 2, 3, 4)}
    write_part_zip(images / "part-000001.zip", names[1], 0, json.dumps(part_json(names[1], 0)).encode())
    write_part_zip(images / "part-000002.zip", names[2], 3, b'{"not json": ')  # broken part JSON
    write_part_zip(images / "part-000003.zip", names[3], 6, None)  # no part JSON: the table speaks
    folder = images / "part-000004"
    folder.mkdir()
    for i, n in enumerate(names[4]):
        (folder / n).write_bytes(png(9 + i))
    (folder / "part-000004.json").write_text(json.dumps(part_json(names[4], 9)))
    write_metadata_table(root / "metadata.parquet", {2: names[2], 3: names[3][:2]})  # part 3's last image: nowhere
    return root


def test_diffusiondb_folder_attaches_every_prompt(tmp_path: Path) -> None:
    root = diffusiondb(tmp_path)
    summary, items = crawl(tmp_path, root)
    assert items.height == 12 and summary.errors == 0
    assert set(items["status"]) == {"ok"}  # pixels audited whatever the metadata said
    rows = by_name(items)
    z1 = [r for r in rows.values() if "part-000001.zip!/" in r["uri"]]
    assert sorted(r["prompt"] for r in z1) == ["a blue circle", "a green circle", "a red circle"]
    one = next(r for r in z1 if r["prompt"] == "a red circle")
    assert (one["seed"], one["steps"], one["cfg_scale"], one["sampler"]) == ("1000", 25, 7.0, "k_lms")
    # broken part JSON: prompts from metadata.parquet, the problem recorded on each image
    z2 = [r for r in rows.values() if "part-000002.zip!/" in r["uri"]]
    assert sorted(r["prompt"] for r in z2) == ["table prompt 2-0", "table prompt 2-1", "table prompt 2-2"]
    assert all("part-000002.json: not valid JSON" in r["metadata_errors"] for r in z2)
    assert {(r["steps"], r["cfg_scale"], r["sampler"]) for r in z2} == {(30, 9.0, "k_euler")}
    # no part JSON: the table, and an image it does not name is still audited
    z3 = sorted((r for r in rows.values() if "part-000003.zip!/" in r["uri"]), key=lambda r: r["uri"])
    assert [r["prompt"] for r in z3].count(None) == 1 and {"table prompt 3-0", "table prompt 3-1"} <= {
        r["prompt"] for r in z3
    }
    # a part folder with its JSON
    f4 = [r for r in rows.values() if "/part-000004/" in r["uri"]]
    assert {r["prompt"] for r in f4} == {"a yellow circle", "a purple circle", "a orange circle"}
    # rescan: parts are containers, nothing is read again
    again = audit.crawl([str(root)], tmp_path / "idx", workers=0)
    assert again.read == 0 and again.unchanged == 12


def test_diffusiondb_part_folder_with_broken_json_and_no_table(tmp_path: Path) -> None:
    folder = tmp_path / "part-000007"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(1))
    (folder / "part-000007.json").write_text("[[[")
    _, items = crawl(tmp_path, folder)
    [row] = items.iter_rows(named=True)
    assert row["status"] == "ok" and row["pdq"] and row["prompt"] is None
    assert "part-000007.json: not valid JSON" in row["metadata_errors"]


def test_broken_metadata_table_is_recorded_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    write_part_zip(root / "images" / "part-000001.zip", ["x.png"], 0, None)
    (root / "metadata.parquet").write_bytes(b"PAR1 not really parquet")
    _, items = crawl(tmp_path, root)
    [row] = items.iter_rows(named=True)
    assert (
        row["status"] == "ok" and "metadata table" in row["metadata_errors"] and "unreadable" in row["metadata_errors"]
    )


def test_part_json_as_a_source(tmp_path: Path) -> None:
    names = ["a.png", "b.png"]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(png(i))
    doc = tmp_path / "part-000001.json"
    doc.write_text(json.dumps(part_json(names, 0)))
    _, items = crawl(tmp_path, doc)
    assert {r["uri"].rsplit("/", 1)[-1]: r["prompt"] for r in items.iter_rows(named=True)} == {
        "a.png": "a red circle",
        "b.png": "a green circle",
    }


# --- Civitai API export ----------------------------------------------------------------------


def civitai_item(i: int, **meta) -> dict:
    return {
        "id": 1000 + i,
        "url": f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/{uuid.UUID(int=i)}/width=32/{uuid.UUID(int=i)}.jpeg",
        "width": 32,
        "height": 32,
        "nsfwLevel": 1,
        "username": f"user{i}",
        "baseModel": "SDXL 1.0",
        "meta": {
            "prompt": f"a {COLOURS[i]} square",
            "negativePrompt": "blurry",
            "seed": 42 + i,
            "steps": 20,
            "sampler": "Euler a",
            "cfgScale": 6.5,
            "Model": "toyModel_v1",
            "resources": [{"name": "toyModel_v1", "type": "model", "hash": "abcdef1234"}],
            "civitaiResources": [{"type": "checkpoint", "modelVersionId": 12345}],
            **meta,
        },
    }


def test_civitai_export_with_images_beside_it(tmp_path: Path) -> None:
    export = tmp_path / "export"
    (export / "images").mkdir(parents=True)
    items = [civitai_item(i) for i in range(4)]
    items[3]["meta"] = None  # an item without generation data: still audited
    (export / "1000.png").write_bytes(png(0))  # saved by id
    (export / "images" / f"{uuid.UUID(int=1)}.jpeg").write_bytes(png(1))  # by url basename (content PNG)
    (export / "1003.webp").write_bytes(png(3))
    # item 1002 was never downloaded: a recorded row, not a crash
    (export / "images.json").write_text(json.dumps({"items": items, "metadata": {"nextCursor": "x"}}))
    src = open_source(str(export / "images.json"))
    assert src.complete is False
    summary, cat = crawl(tmp_path, export / "images.json")
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in cat.iter_rows(named=True)}
    assert rows["1000.png"]["prompt"] == "a red square"
    first = rows["1000.png"]
    assert (first["negative_prompt"], first["seed"], first["steps"], first["cfg_scale"], first["sampler"]) == (
        "blurry",
        "42",
        20,
        6.5,
        "Euler a",
    )
    assert first["model"] == "toyModel_v1"
    assert rows[f"{uuid.UUID(int=1)}.jpeg"]["prompt"] == "a green square"
    assert rows["1003.webp"]["status"] == "ok" and rows["1003.webp"]["prompt"] is None
    missing = [r for r in cat.iter_rows(named=True) if r["status"] == "error"]
    assert len(missing) == 1 and missing[0]["uri"].endswith("images.json#row=3")
    assert "image not found beside the export" in missing[0]["error"] and "1002" in missing[0]["error"]
    assert summary.errors == 1


def test_json_source_is_a_manifest_never_an_image(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(0))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"path": "a.png", "prompt": "a red circle"}, "not an object", {"path": "gone.png"}]))
    listed = [e for e in open_source(str(rows)).entries(never) if isinstance(e, Entry)]
    assert [(e.uri.rsplit("/", 1)[-1], e.error) for e in listed] == [
        ("a.png", None),
        ("rows.json#row=2", "bad row: a JSON str, not an object"),
        ("gone.png", "file not found"),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text('{"items": [')
    with pytest.raises(InputError, match="not valid JSON"):
        open_source(str(bad))


# --- JourneyDB-style JSONL ---------------------------------------------------------------------


def test_journeydb_jsonl(tmp_path: Path) -> None:
    (tmp_path / "000").mkdir()
    for i in range(2):
        (tmp_path / "000" / f"{i:04d}.jpg").write_bytes(png(i))
    lines = [
        {"img_path": "./000/0000.jpg", "prompt": "a red circle --ar 1:1 --v 5", "Task2": {"Caption": "a red circle"}},
        {"img_path": "./000/0001.jpg", "prompt": "a green circle --v 5"},
        {"img_path": "./000/0002.jpg", "prompt": "never downloaded"},
    ]
    anno = tmp_path / "train_anno.jsonl"
    anno.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{broken\n")
    _, items = crawl(tmp_path, anno)
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in items.iter_rows(named=True)}
    assert rows["0000.jpg"]["prompt"].startswith("a red circle") and rows["0001.jpg"]["status"] == "ok"
    assert rows["0002.jpg"]["error"] == "file not found"
    assert rows["train_anno.jsonl#row=4"]["error"].startswith("bad row: invalid JSON")


# --- Hugging Face datasets Parquet shards --------------------------------------------------------


def hf_rows(first: int, n: int, broken: int | None = None) -> list[dict]:
    return [
        {
            "image": {"bytes": b"not an image at all" if i == broken else png(i), "path": f"{i:05d}.png"},
            "prompt": f"a {COLOURS[i % 6]} circle",
            "seed": 10 + i,
            "step": 50,
            "cfg": 7.0,
            "sampler": "k_lms",
        }
        for i in range(first, first + n)
    ]


def write_shard(path: Path, rows: list[dict], group: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group)


def test_parquet_shard_source_rows_are_items_and_reread(tmp_path: Path) -> None:
    shard = tmp_path / "train-00000-of-00001.parquet"
    write_shard(shard, hf_rows(0, 5, broken=3))
    summary, items = crawl(tmp_path, shard)
    rows = {r["uri"].rsplit("#", 1)[-1]: r for r in items.iter_rows(named=True)}
    assert rows["row=1"]["prompt"] == "a red circle" and rows["row=1"]["steps"] == 50 and rows["row=1"]["seed"] == "10"
    assert rows["row=4"]["status"] == "error" and rows["row=4"]["prompt"] == "a yellow circle"  # broken cell: recorded
    assert summary.errors == 1
    again = audit.crawl([str(shard)], tmp_path / "idx", workers=0)  # an unchanged shard is not read again
    assert again.read == 0 and again.unchanged == 5 and again.containers_skipped == 1
    for n in (1, 2, 5, 3):  # the embed stage reads rows again by uri, across row groups
        assert read_uri(f"{shard}#row={n}") == png(n - 1)
    with pytest.raises(ReadError, match="row 9 not in"):
        read_uri(f"{shard}#row=9")


def test_folder_of_parquet_shards_is_incremental(tmp_path: Path) -> None:
    data = tmp_path / "ds" / "data"
    write_shard(data / "train-00000-of-00002.parquet", hf_rows(0, 3))
    write_shard(data / "train-00001-of-00002.parquet", hf_rows(3, 3))
    pq.write_table(pa.Table.from_pylist([{"prompt": "a table, no images", "n": 1}]), data / "stats.parquet")
    (data / "broken.parquet").write_bytes(b"PAR1garbage")
    _, items = crawl(tmp_path, tmp_path / "ds")
    ok = items.filter(pl.col("status") == "ok")
    assert ok.height == 6 and sorted(ok["seed"]) == [str(10 + i) for i in range(6)]
    assert {u.rsplit("/", 1)[-1] for u in items.filter(pl.col("status") == "error")["uri"]} == {"broken.parquet"}
    again = audit.crawl([str(tmp_path / "ds")], tmp_path / "idx", workers=0)
    assert again.read == 0 and again.unchanged == 6 and again.missing == 0
    # a shard removed: its rows are missing, the other shard's are not
    (data / "train-00001-of-00002.parquet").unlink()
    third = audit.crawl([str(tmp_path / "ds")], tmp_path / "idx", workers=0)
    assert third.missing == 3


def test_parquet_shards_under_a_url_prefix(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    prefix = f"/hf-{uuid.uuid4().hex}"
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(hf_rows(0, 3)), buf, row_group_size=2)
    fs.pipe(f"{prefix}/data/train-0.parquet", buf.getvalue())
    listed = list(open_source(f"memory://{prefix}").entries(never))
    entries = [e for e in listed if isinstance(e, Entry)]
    uri = f"memory://{prefix}/data/train-0.parquet"
    assert [e.uri for e in entries] == [f"{uri}#row={n}" for n in (1, 2, 3)]
    assert [e.fields["prompt"] for e in entries] == ["a red circle", "a green circle", "a blue circle"]
    assert isinstance(listed[-1], ContainerDone) and listed[-1].uri == uri
    assert list(open_source(f"memory://{prefix}").entries(lambda *a: True)) == [
        ContainerUnchanged(uri, f"memory://{prefix}", members="#row=")
    ]
    assert read_uri(f"{uri}#row=3") == png(2)


def test_manifest_rows_naming_archive_members(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "shard.zip", "w") as zf:
        zf.writestr("0001.png", png(1))
    rows = [
        {"path": "shard.zip!/0001.png", "prompt": "a green circle"},
        {"path": "shard.zip!/0002.png", "prompt": "gone"},
        {"path": "nowhere.zip!/0001.png"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, items = crawl(tmp_path, tmp_path / "m.jsonl")
    got = {
        r["uri"].replace(str(tmp_path) + "/", ""): (r["status"], r["error"], r["prompt"])
        for r in items.iter_rows(named=True)
    }
    assert got == {
        "shard.zip!/0001.png": ("ok", None, "a green circle"),
        "shard.zip!/0002.png": ("error", "member not found in the archive", None),
        "nowhere.zip!/0001.png": ("error", "archive not found", None),
    }
    assert read_uri(f"{tmp_path}/shard.zip!/0001.png") == png(1)
