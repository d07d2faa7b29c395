"""Building, growing, saving and reloading FAISS indexes from the vector store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from audit.catalog.vectors import VectorStore
from audit.index.build import recall_at
from audit.index.files import IndexCorrupt, load_index, manifest_path, model_dir, safe_name
from tests.index_fixtures import MODEL, add_items, clustered, item_id, new_audit

REPO = Path(__file__).resolve().parents[1]


def _results(summary, space="image"):
    return next(r for r in summary.results if r.space == space)


def test_small_index_is_exact_and_maps_ids_to_items(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(300)
    ids = add_items(a, 0, x)
    r = _results(a.index())
    assert (r.action, r.index, r.n, r.tuned_recall) == ("built", "Flat", 300, 1.0)
    manifest, index, keys = load_index(a.index_dir, MODEL.key, "image", verify=True)
    assert manifest.n == index.ntotal == len(keys) == 300
    _, found = index.search(x[:20], 1)
    assert [keys[i].decode() for i in found[:, 0]] == ids[:20]


def test_incremental_add_then_unchanged(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(3000, seed=1)
    add_items(a, 0, x[:2000])
    first = _results(a.index(flat_below=1000))
    assert first.action == "built" and first.index.startswith("IVF") and first.n == 2000
    gen1 = json.loads(manifest_path(a.index_dir, MODEL.key, "image").read_text())["generation"]

    ids_new = add_items(a, 2000, x[2000:])
    second = _results(a.index(flat_below=1000))
    assert (second.action, second.n, second.added) == ("updated", 3000, 1000)
    assert second.index == first.index and second.params == first.params  # grown in place, not retrained
    manifest, index, keys = load_index(a.index_dir, MODEL.key, "image")
    assert manifest.generation == gen1 + 1 and manifest.built_n == 2000
    # every new vector is found as its own nearest neighbour under its own item id
    df = a.search(item=ids_new[7], k=1)
    assert df["item_id"][0] == ids_new[7] and df["score"][0] == pytest.approx(1.0, abs=1e-5)
    assert _results(a.index(flat_below=1000)).action == "unchanged"
    # only the newest generation is kept on disk
    names = sorted(p.name for p in model_dir(a.index_dir, MODEL.key).iterdir() if p.name.startswith("image."))
    assert names == sorted(["image.json", manifest.index_file, manifest.keys_file])


def test_rebuilds_when_the_type_changes_or_it_outgrows_training(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(5000, seed=2)
    add_items(a, 0, x[:500])
    assert _results(a.index(flat_below=1000)).index == "Flat"
    add_items(a, 500, x[500:1200])
    grown = _results(a.index(flat_below=1000))  # crossed the flat threshold
    assert grown.action == "rebuilt" and grown.index.startswith("IVF") and "instead of Flat" in grown.reason
    add_items(a, 1200, x[1200:])
    again = _results(a.index(flat_below=1000))  # 5000 > 4 x 1200 trained on
    assert again.action == "rebuilt" and "since training" in again.reason and again.n == 5000


def test_budget_and_forced_type_stick_until_changed(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(2000, seed=3)
    add_items(a, 0, x)
    assert _results(a.index(flat_below=1000, index_type="ivf,sq8")).index.endswith("SQ8")
    assert _results(a.index(flat_below=1000)).action == "unchanged"  # cron rerun keeps the choice
    back = _results(a.index(flat_below=1000, index_type="auto"))
    assert back.action == "rebuilt" and back.index.endswith(",Flat")


def test_hnsw_can_be_forced_and_grows(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(1500, seed=4)
    add_items(a, 0, x[:1000])
    r = _results(a.index(index_type="hnsw16"))
    assert r.index == "HNSW16,Flat" and "efSearch" in r.params
    ids = add_items(a, 1000, x[1000:])
    assert _results(a.index()).action == "updated"
    assert a.search(item=ids[3], k=1)["item_id"][0] == ids[3]


def test_ivf_recall_matches_flat_on_clustered_vectors(tmp_path):
    """The tuned IVF index finds >= 95% of the exact top-10 for fresh queries near the data."""
    import faiss

    x, centres, _ = clustered(8000, d=48, clusters=40, seed=5)
    a = new_audit(tmp_path)
    add_items(a, 0, x)
    r = _results(a.index(flat_below=1000))
    assert r.index.startswith("IVF") and r.params["nprobe"] < int(r.index[3:].split(",")[0])
    rng = np.random.default_rng(99)
    q = centres[rng.integers(0, 40, 300)] + 1.0 * rng.normal(size=(300, 48)).astype(np.float32) / np.sqrt(48)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    flat = faiss.IndexFlatIP(48)
    flat.add(x)
    _, truth = flat.search(q, 10)
    manifest, index, keys = load_index(a.index_dir, MODEL.key, "image")
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", manifest.params["nprobe"])
    _, got = index.search(q, 10)
    row = {item_id(i): i for i in range(len(x))}
    got_rows = np.array([[row[keys[j].decode()] for j in g] for g in got])
    assert recall_at(got_rows, truth) >= 0.95
    assert manifest.tuned_recall >= 0.95


def test_prompt_index_and_prompt_space_search(tmp_path):
    from tests.index_fixtures import add_prompt_vectors

    a = new_audit(tmp_path)
    x, _, _ = clustered(60, seed=6)
    prompts = [f"prompt number {i % 6}" for i in range(60)]
    ids = add_items(a, 0, x, prompts=prompts)
    p, _, _ = clustered(6, seed=7)
    add_prompt_vectors(a, [f"prompt number {i}" for i in range(6)], p)
    s = a.index()
    assert _results(s, "prompt").n == 6
    df = a.search(item=ids[2], space="prompt", k=10)
    assert df["match"].to_list() == ["prompt"] * 10
    assert set(df["prompt_excerpt"]) == {"prompt number 2"}  # 10 items share that prompt
    assert df["score"][0] == pytest.approx(1.0, abs=1e-5)


def test_damaged_index_is_detected_and_rebuilt(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(200, seed=8)
    add_items(a, 0, x)
    a.index()
    m = json.loads(manifest_path(a.index_dir, MODEL.key, "image").read_text())
    path = model_dir(a.index_dir, MODEL.key) / m["index_file"]
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(IndexCorrupt):
        load_index(a.index_dir, MODEL.key, "image")
    r = _results(a.index())
    assert r.action == "rebuilt" and "damaged" in r.reason
    assert load_index(a.index_dir, MODEL.key, "image", verify=True)[0].n == 200


def test_silent_bit_flip_is_caught_by_verify(tmp_path):
    a = new_audit(tmp_path)
    x, _, _ = clustered(200, seed=9)
    add_items(a, 0, x)
    a.index()
    m = json.loads(manifest_path(a.index_dir, MODEL.key, "image").read_text())
    path = model_dir(a.index_dir, MODEL.key) / m["keys_file"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt):
        load_index(a.index_dir, MODEL.key, "image", verify=True)
    assert _results(a.index(verify=True)).action == "rebuilt"


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    import audit.index.files as files
    import audit
    from tests.index_fixtures import add_items, clustered

    kill_at = int(sys.argv[1])
    real_replace, calls = files.os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    files.os.replace = replace
    a = audit.open({index!r})
    x, _, _ = clustered(300, seed=10)
    add_items(a, 1000, x[200:])
    a.index()
    """
)


@pytest.mark.parametrize("kill_at", [1, 2, 3])  # after the .faiss, after the keys, before the manifest
def test_killed_writer_leaves_the_old_index_loadable(tmp_path, kill_at):
    a = new_audit(tmp_path)
    x, _, _ = clustered(300, seed=10)
    add_items(a, 0, x[:200])
    a.index()
    before = load_index(a.index_dir, MODEL.key, "image", verify=True)[0]
    script = tmp_path / "killer.py"
    script.write_text(_KILLER.format(repo=str(REPO), index=str(a.index_dir)))
    proc = subprocess.run([sys.executable, str(script), str(kill_at)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    after, index, keys = load_index(a.index_dir, MODEL.key, "image", verify=True)
    assert (after.generation, after.n, index.ntotal, len(keys)) == (before.generation, 200, 200, 200)
    leftovers = [p.name for p in model_dir(a.index_dir, MODEL.key).iterdir() if p.name.startswith(".")]
    # the next run picks up where the dead one stopped and clears its leftovers
    r = _results(a.index())
    assert (r.action, r.n) == ("updated", 300)
    assert not [p for p in model_dir(a.index_dir, MODEL.key).iterdir() if p.name.startswith(".")]
    assert leftovers  # the dead writer left temp files, now gone


def test_safe_names_are_distinct_and_portable():
    keys = ["ViT-B-32/laion2b_s34b_b79k", "toy-shapes/sha256:0123456789abcdef", "a/b", "a_b", "../../etc"]
    names = [safe_name(k) for k in keys]
    assert len(set(names)) == len(names)
    assert all(n and "/" not in n and not n.startswith(".") for n in names)


def test_empty_store_builds_nothing(tmp_path):
    a = new_audit(tmp_path)
    VectorStore(a.catalog.conn).register_model(MODEL, 32)
    s = a.index()
    assert [r.action for r in s.results] == ["empty", "empty"]
    assert not (a.index_dir / "faiss").exists() or not any((a.index_dir / "faiss").rglob("*.faiss"))


def test_reader_retries_when_a_writer_switches_generations(tmp_path, monkeypatch):
    import audit.index.files as files

    a = new_audit(tmp_path)
    x, _, _ = clustered(100, seed=11)
    add_items(a, 0, x[:60])
    a.index()
    real, calls = files._load_files, []

    def racing(index_dir, manifest, **kw):  # a writer commits a new generation mid-read
        if not calls:
            calls.append(manifest.generation)
            add_items(a, 60, x[60:])
            a.index()
        return real(index_dir, manifest, **kw)

    monkeypatch.setattr(files, "_load_files", racing)
    manifest, index, keys = load_index(a.index_dir, MODEL.key, "image")
    assert manifest.generation == calls[0] + 1 and index.ntotal == len(keys) == 100
