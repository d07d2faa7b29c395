"""`audit search` and ``Audit.search``/``neighbors`` on synthetic vectors (no model needed)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

import audit.index.search as search_mod
from audit.catalog.vectors import VectorStore
from audit.cli.app import main
from audit.errors import IndexMissing, InputError, UsageError, WeightsUnavailable
from tests.index_fixtures import MODEL, add_items, clustered, new_audit


class TinyEmbedder:
    """Stands in for a CLIP: an image is its 8x8 thumbnail; a colour word is that colour."""

    COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220)}

    def __init__(self, identity=MODEL):
        self.identity = identity

    def _vec(self, thumb: np.ndarray, rgb) -> np.ndarray:
        colour = np.tile((np.asarray(rgb, np.float32) / 255 - 0.5), 32)  # colour weighs most
        return np.concatenate([thumb * 0.5, colour])

    def embed_images(self, images):
        out = []
        for im in images:
            px = np.asarray(im.convert("RGB"), np.float32)
            fg = px[np.abs(px - px[0, 0]).sum(axis=2) > 60]
            rgb = fg.mean(axis=0) if len(fg) else px[0, 0]
            thumb = np.asarray(im.convert("RGB").resize((8, 8), Image.BILINEAR), np.float32).ravel() / 255 - 0.5
            out.append(self._vec(thumb, rgb))
        v = np.stack(out)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_texts(self, texts):
        out = []
        for t in texts:
            rgb = next((c for w, c in self.COLOURS.items() if w in t), (128, 128, 128))
            out.append(self._vec(np.zeros(192, np.float32), rgb))
        v = np.stack(out)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def draw(rng: random.Random, colour: str) -> Image.Image:
    img = Image.new("RGB", (96, 96), (240, 240, 240))
    d = ImageDraw.Draw(img)
    x, y, r = rng.randint(10, 50), rng.randint(10, 50), rng.randint(14, 40)
    d.ellipse((x, y, x + r, y + r), fill=TinyEmbedder.COLOURS[colour])
    return img


@pytest.fixture
def images_index(tmp_path, monkeypatch):
    """An index of 90 drawn images whose vectors come from ``TinyEmbedder``."""
    rng = random.Random(3)
    colours = ["red", "green", "blue"] * 30
    imgs = [draw(rng, c) for c in colours]
    a = new_audit(tmp_path)
    emb = TinyEmbedder()
    ids = add_items(a, 0, emb.embed_images(imgs).astype(np.float32), prompts=[f"a {c} disc" for c in colours])
    a.index()
    monkeypatch.setattr(search_mod, "load_embedder", lambda *a, **k: TinyEmbedder())
    return a, ids, imgs, colours


def test_search_by_item_returns_itself_first(images_index):
    a, ids, _, _ = images_index
    df = a.search(item=ids[10], k=5)
    assert df.columns == ["rank", "item_id", "score", "uri", "present", "prompt_excerpt", "match"]
    assert df["rank"].to_list() == [1, 2, 3, 4, 5]
    assert df["item_id"][0] == ids[10] and df["score"][0] == pytest.approx(1.0, abs=1e-5)
    assert df["uri"][0] == "/archive/img_000010.png" and df["present"][0]
    assert df["score"].to_list() == sorted(df["score"].to_list(), reverse=True)
    # a unique prefix and a uri name the same item
    assert a.search(item=ids[10][:12], k=1)["item_id"][0] == ids[10]
    assert a.search(item="/archive/img_000010.png", k=1)["item_id"][0] == ids[10]


def test_neighbors_leave_the_item_out(images_index):
    a, ids, _, colours = images_index
    df = a.neighbors(ids[0], k=5)
    assert len(df) == 5 and ids[0] not in df["item_id"].to_list()
    assert df["rank"].to_list() == [1, 2, 3, 4, 5]
    assert all(p == f"a {colours[0]} disc" for p in df["prompt_excerpt"])


def test_search_by_resized_reencoded_image_finds_the_original(images_index, tmp_path):
    a, ids, imgs, _ = images_index
    for n in (0, 41, 77):
        copy = tmp_path / f"copy{n}.jpg"
        imgs[n].resize((61, 61), Image.BICUBIC).save(copy, quality=70)
        df = a.search(image=copy, k=3)
        assert df["item_id"][0] == ids[n]
        assert df["score"][0] > df["score"][1]


def test_search_by_text(images_index):
    a, _, _, colours = images_index
    df = a.search(text="a red disc", k=10)
    assert all("red" in p for p in df["prompt_excerpt"])


def test_exactly_one_query(images_index):
    a, ids, _, _ = images_index
    with pytest.raises(UsageError):
        a.search(k=3)
    with pytest.raises(UsageError):
        a.search(text="red", item=ids[0])


def test_unknown_inputs_are_input_errors(images_index, tmp_path):
    a, _, _, _ = images_index
    with pytest.raises(InputError):
        a.search(item="f" * 64)
    with pytest.raises(InputError):
        a.search(image=tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError):
        a.search(image=bad)
    with pytest.raises(UsageError):
        a.search(item="x", model="no-such-model")


def test_wrong_weights_are_refused(images_index, monkeypatch):
    from audit.catalog.vectors import ModelIdentity

    a, _, _, _ = images_index
    other = ModelIdentity("fake-clip", checkpoint_sha256="ab" * 32)
    monkeypatch.setattr(search_mod, "load_embedder", lambda *x, **k: TinyEmbedder(other))
    with pytest.raises(WeightsUnavailable):
        a.search(text="red")


def test_missing_index_and_missing_embeddings(tmp_path):
    a = new_audit(tmp_path)
    with pytest.raises(IndexMissing, match="audit embed"):
        a.search(item="abcd")
    x, _, _ = clustered(10)
    ids = add_items(a, 0, x)
    with pytest.raises(IndexMissing, match="audit index"):
        a.search(item=ids[0])


def test_several_models_need_a_choice(tmp_path):
    from audit.catalog.vectors import ModelIdentity

    a = new_audit(tmp_path)
    x, _, _ = clustered(20)
    ids = add_items(a, 0, x)
    VectorStore(a.catalog.conn).register_model(ModelIdentity("other", "tag"), 32)
    VectorStore(a.catalog.conn).put("other/tag", "image", ids, x)
    a.index(model="other")  # only the named model
    assert a.search(item=ids[1], k=1)["item_id"][0] == ids[1]  # the one with an index is picked
    a.index()
    with pytest.raises(UsageError, match="several models"):
        a.search(item=ids[1])
    assert a.search(item=ids[1], k=1, model="fake-clip")["item_id"][0] == ids[1]


def test_missing_files_are_reported_as_not_present(images_index):
    a, ids, _, _ = images_index
    with a.catalog.transaction() as c:
        c.execute("UPDATE locations SET present=0, status='missing' WHERE item_id=?", (ids[5],))
    df = a.search(item=ids[5], k=1)
    assert df["uri"][0] == "/archive/img_000005.png" and df["present"][0] is False


# --- the command line (in-process, so the stand-in embedder is used)


def cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_table_and_json(images_index, capsys, tmp_path):
    a, ids, imgs, _ = images_index
    code, out, err = cli(capsys, "search", "--index", str(a.index_dir), "--item", ids[3], "-k", "4")
    assert code == 0 and "/archive/img_000003.png" in out and "1.0000" in out
    copy = tmp_path / "q.jpg"
    imgs[3].resize((50, 50)).save(copy, quality=60)
    code, out, _ = cli(capsys, "search", "--index", str(a.index_dir), "--image", str(copy), "--json")
    data = json.loads(out)
    assert code == 0 and data["results"][0]["item_id"] == ids[3] and len(data["results"]) == 10
    assert data["query"] == {"image": str(copy)}


@pytest.mark.parametrize("flags", [[], ["--text", "red", "--item", "abc"], ["--image", "a.png", "--text", "b"]])
def test_cli_needs_exactly_one_query(images_index, capsys, flags):
    a = images_index[0]
    code, out, err = cli(capsys, "search", "--index", str(a.index_dir), *flags)
    assert code == 2 and out == ""
    assert err.strip().startswith("audit: error: give exactly one of --text, --image, --item")
    assert len(err.strip().splitlines()) == 1


def test_cli_without_index_or_embeddings(tmp_path, capsys):
    code, _, err = cli(capsys, "search", "--index", str(tmp_path / "none"), "--text", "x")
    assert code == 2 and "audit crawl" in err
    a = new_audit(tmp_path)
    code, _, err = cli(capsys, "search", "--index", str(a.index_dir), "--text", "x")
    assert code == 2 and "audit embed" in err and "audit index" in err


def test_cli_escapes_control_characters(tmp_path, capsys):
    a = new_audit(tmp_path)
    x, _, _ = clustered(5)
    ids = add_items(a, 0, x, prompts=["evil \x1b[2J\x1b]0;title\x07 prompt \u202egnp.exe"] * 5)
    a.index()
    code, out, _ = cli(capsys, "search", "--index", str(a.index_dir), "--item", ids[0], "-k", "2")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b" in out


def test_cli_index_json(tmp_path, capsys):
    a = new_audit(tmp_path)
    x, _, _ = clustered(50)
    add_items(a, 0, x)
    code, out, _ = cli(capsys, "index", "--index", str(a.index_dir), "--json", "-q")
    data = json.loads(out)
    assert code == 0 and data["command"] == "index" and data["built"] == 1 and data["vectors"] == 50
    assert {r["space"]: r["action"] for r in data["indexes"]} == {"image": "built", "prompt": "empty"}
    code, out, _ = cli(capsys, "index", "--index", str(a.index_dir), "--json", "-q", "--memory-budget", "lots")
    assert code == 2
    runs = a.runs()
    assert "index" in runs["command"].to_list()


def test_cli_notes_vectors_not_indexed_yet(images_index, capsys):
    a, ids, _, _ = images_index
    rng = random.Random(9)
    add_items(a, 500, TinyEmbedder().embed_images([draw(rng, "red") for _ in range(4)]).astype(np.float32))
    code, out, err = cli(capsys, "search", "--index", str(a.index_dir), "--item", ids[0], "-k", "1")
    assert code == 0 and "4 image vectors are not in the index yet" in err
