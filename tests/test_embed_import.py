"""Bring-your-own embeddings: clip-retrieval output (img_emb/, text_emb/, metadata/) imported
for catalogued items under a stated identity, matched by image_path (or webdataset key),
resumable, bad parts recorded; then indexed and searched like vectors audit computed."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

import audit
from audit.catalog.vectors import VectorStore, prompt_key
from audit.errors import ExitCode
from tests.cli_helper import audit_cli

DIM = 24
MODEL, TAG = "ViT-L-14", "openai"
KEY = f"{MODEL}/{TAG}"


def png(i: int) -> bytes:
    img = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(img).rectangle((4, 4, 28, 28), fill=("red", "green", "blue", "yellow", "purple", "orange")[i % 6])
    img.putpixel((0, 0), (i, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def catalogue(tmp: Path, n: int = 8) -> tuple[Path, Path]:
    """n PNGs with caption sidecars in a folder, crawled; returns (folder, index)."""
    folder = tmp / "imgs"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:03d}.png").write_bytes(png(i))
        (folder / f"{i:03d}.txt").write_text(f"caption {i}")
    index = tmp / "idx"
    audit.crawl([str(folder)], index, workers=0)
    return folder, index


def write_part(
    out: Path, n: int, paths: list[str], captions: list[str] | None, img: np.ndarray, text: np.ndarray | None = None
) -> None:
    for sub in ("img_emb", "text_emb", "metadata"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    np.save(out / "img_emb" / f"img_emb_{n}.npy", img)
    if text is not None:
        np.save(out / "text_emb" / f"text_emb_{n}.npy", text)
    cols = {"image_path": paths}
    if captions is not None:
        cols["caption"] = captions
    pq.write_table(pa.table(cols), out / "metadata" / f"metadata_{n}.parquet")


def unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    v = rng.standard_normal((rows, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def item_of(index: Path, name: str) -> str:
    items = audit.open(index).items()
    return items.filter(items["uri"].str.ends_with("/" + name))["item_id"][0]


def test_import_matches_paths_stores_vectors_and_resumes(tmp_path: Path) -> None:
    folder, index = catalogue(tmp_path)
    rng = np.random.default_rng(0)
    out = tmp_path / "emb"
    img0, txt0 = unit(rng, 4), unit(rng, 4)
    # part 0: absolute paths (clip-retrieval writes what it read); one path not catalogued
    paths0 = [
        str(folder / "000.png"),
        str(folder / "001.png"),
        str(tmp_path / "elsewhere.png"),
        str(folder / "003.png"),
    ]
    write_part(out, 0, paths0, ["caption 0", "not the prompt", "caption x", "caption 3"], img0.astype(np.float16), txt0)
    # part 1: relative paths, resolved with base; a zero row and a NaN row are bad rows
    img1 = unit(rng, 4)
    img1[2] = 0.0
    img1[3, 0] = np.nan
    write_part(out, 1, ["004.png", "005.png", "006.png", "007.png"], None, img1)
    # part 2: the .npy and the metadata disagree -> recorded, skipped, never a crash
    write_part(out, 2, ["002.png"], None, unit(rng, 3))
    # part 3: metadata missing
    (out / "img_emb").joinpath("img_emb_3.npy").write_bytes(b"")
    np.save(out / "img_emb" / "img_emb_3.npy", unit(rng, 2))

    a = audit.open(index)
    s = a.import_embeddings(out, model=MODEL, pretrained=TAG, base=folder)
    assert s.model_key == KEY and s.parts == 4
    assert s.image_vectors == 5 and s.unmatched == 1 and s.bad_rows == 2
    assert s.prompt_vectors == 2 and s.captions_unmatched == 1  # "caption 0", "caption 3" are catalogued prompts
    assert any("img_emb_2.npy has 3 rows, metadata_2.parquet 1" in p for p in s.problems)
    assert any("metadata_3.parquet missing" in p for p in s.problems)

    vs = VectorStore(audit.open(index).catalog.conn)
    ids = [item_of(index, n) for n in ("000.png", "001.png", "003.png", "004.png", "005.png")]
    keys, got = vs.get(KEY, "image", ids)
    expected = {ids[0]: img0[0], ids[1]: img0[1], ids[2]: img0[3], ids[3]: img1[0], ids[4]: img1[1]}
    for k, v in zip(keys, got):
        assert float(v @ expected[k]) > 0.999  # fp16 on disk: cosine, not equality
    assert vs.has(KEY, "image", [item_of(index, "006.png"), item_of(index, "007.png")]) == set()
    pk, pv = vs.get(KEY, "prompt", [prompt_key("caption 0"), prompt_key("caption 3")])
    assert len(pk) == 2 and float(pv[pk.index(prompt_key("caption 3"))] @ txt0[3]) > 0.999

    # rerun: the imported parts are not read again, the bad ones are reported again
    again = audit.open(index).import_embeddings(out, model=MODEL, pretrained=TAG, base=folder)
    assert again.parts_done_before == 2 and again.image_vectors == 0 and again.rows == 0
    assert len(again.problems) == 2

    # the imported space is indexed and searched like one audit computed
    a = audit.open(index)
    a.index(model=KEY)
    hits = a.search(item=ids[0], model=KEY, k=3)
    assert hits["item_id"][0] == ids[0]


def test_import_interrupted_part_resumes_without_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import audit.embed.imported as imported

    folder, index = catalogue(tmp_path, 6)
    out = tmp_path / "emb"
    write_part(out, 0, [str(folder / f"{i:03d}.png") for i in range(6)], None, unit(np.random.default_rng(1), 6))
    calls = {"n": 0}
    real = VectorStore.put_batch

    def dying(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after the first committed batch
        return real(self, *args, **kw)

    monkeypatch.setattr(VectorStore, "put_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        audit.open(index).import_embeddings(out, model=MODEL, pretrained=TAG, batch=2)
    monkeypatch.setattr(VectorStore, "put_batch", real)
    vs = VectorStore(audit.open(index).catalog.conn)
    assert vs.count(KEY, "image") == 2
    s = audit.open(index).import_embeddings(out, model=MODEL, pretrained=TAG, batch=2)
    assert s.already_present == 2 and s.image_vectors == 4 and s.parts_done_before == 0
    assert VectorStore(audit.open(index).catalog.conn).count(KEY, "image") == 6
    assert imported.BATCH > 2


def test_import_by_webdataset_key_and_dimension_check(tmp_path: Path) -> None:
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tf:
        for i in range(3):
            for ext, data in (("jpg", png(i)), ("json", json.dumps({"caption": f"c{i}"}).encode())):
                info = tarfile.TarInfo(f"00000{i:04d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    index = tmp_path / "idx"
    audit.crawl([str(shard)], index, workers=0)
    out = tmp_path / "emb"
    write_part(out, 0, [f"00000{i:04d}" for i in range(3)], None, unit(np.random.default_rng(2), 3))
    s = audit.open(index).import_embeddings(out, model=MODEL, pretrained=TAG)
    assert s.image_vectors == 3 and s.unmatched == 0
    # another import of a different dimension under the same identity: refused for that part
    out2 = tmp_path / "emb2"
    write_part(out2, 0, [f"00000{i:04d}" for i in range(3)], None, np.ones((3, DIM + 8), np.float32))
    s2 = audit.open(index).import_embeddings(out2, model=MODEL, pretrained=TAG)
    assert s2.image_vectors == 0 and any("32 dimensions" in p and f"has {DIM}" in p for p in s2.problems)


def test_cli_embed_import(tmp_path: Path) -> None:
    folder, index = catalogue(tmp_path, 2)
    out = tmp_path / "emb"
    write_part(out, 0, [str(folder / "000.png"), str(folder / "001.png")], None, unit(np.random.default_rng(3), 2))
    res = audit_cli("embed", "--index", index, "--import", out, "--model", MODEL, "--pretrained", TAG, "--json", "-q")
    data = json.loads(res.stdout)
    assert data["command"] == "embed-import" and data["image_vectors"] == 2 and data["model_key"] == KEY
    unstated = audit_cli("embed", "--index", index, "--import", out, expected=ExitCode.USAGE)
    assert "--model" in unstated.stderr and "Traceback" not in unstated.stderr
    missing = audit_cli(
        "embed", "--index", index, "--import", tmp_path / "nope", "--model", MODEL, expected=ExitCode.USAGE
    )
    assert "not a directory" in missing.stderr
