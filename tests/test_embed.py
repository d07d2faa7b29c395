"""``audit embed``: incremental, resumable, skips recorded, one space per model, archives."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import audit
from audit.catalog.vectors import VectorStore, prompt_key
from audit.errors import ExitCode
from tests.cli_helper import audit_cli
from tests.embed_fixtures import random_toy_checkpoint, toy_scene_archive


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return random_toy_checkpoint(tmp_path_factory.mktemp("ckpt") / "toy.safetensors", seed=1)


@pytest.fixture(scope="module")
def ckpt_b(tmp_path_factory) -> Path:
    return random_toy_checkpoint(tmp_path_factory.mktemp("ckptb") / "toy-b.safetensors", seed=2)


def _crawled(tmp_path: Path, n: int, prompts_per: int = 4, seed: int = 0):
    src = tmp_path / "src"
    paths = toy_scene_archive(src, n, seed=seed, prompts_per=prompts_per)
    a = audit.open(tmp_path / "idx", create=True)
    a.crawl([str(src)], workers=0)
    return a, src, paths


def _embed(a, ckpt, **kw):
    kw.setdefault("workers", 0)
    return a.embed(model="toy-shapes", pretrained=None, checkpoint=str(ckpt), **kw)


def test_embeds_images_and_prompts_incrementally(tmp_path, ckpt):
    a, src, paths = _crawled(tmp_path, 20, prompts_per=4)
    s = _embed(a, ckpt, batch_size=8)
    prompts = {r[0] for r in a.catalog.query("SELECT prompt FROM items")} | {"blurry"}
    assert (s.images_embedded, s.images_skipped) == (20, 0)
    assert s.prompts_embedded == len(prompts) == 6  # 5 distinct prompts + the shared negative prompt
    vs = VectorStore(a.catalog.conn)
    assert vs.count(s.model_key, "image") == 20 and vs.count(s.model_key, "prompt") == 6
    assert vs.has(s.model_key, "prompt", [prompt_key(p) for p in prompts]) == {prompt_key(p) for p in prompts}
    assert vs.models()[0]["checkpoint_sha256"] == s.identity["checkpoint_sha256"]

    # stored vectors are what the embedder gives for the same files
    from PIL import Image

    from audit.embed.openclip import load_embedder

    emb = load_embedder("toy-shapes", None, checkpoint=ckpt, precision=s.precision["precision"])
    ids = [r[0] for r in a.catalog.query("SELECT item_id FROM locations WHERE uri=?", (str(paths[3]),))]
    _, stored = vs.get(s.model_key, "image", ids)
    fresh = emb.embed_images([Image.open(paths[3])])[0]
    # stored as fp16: each component within fp16 rounding, the direction within 1e-4 of cosine
    np.testing.assert_allclose(stored[0], fresh, atol=5e-4)
    assert float(stored[0] @ fresh) >= 0.9999

    again = _embed(a, ckpt)
    assert (again.images_embedded, again.prompts_embedded) == (0, 0)

    toy_scene_archive(src / "more", 5, seed=9, prompts_per=5)
    a.crawl([str(src)], workers=0)
    more = _embed(a, ckpt)
    assert more.images_embedded == 5 and more.prompts_embedded == 1
    assert more.image_vectors_total == 25
    runs = a.runs().filter(a.runs()["command"] == "embed")
    assert runs.height == 3 and set(runs["status"]) == {"ok"}


def test_unreadable_images_are_skipped_with_a_reason(tmp_path, ckpt):
    a, src, paths = _crawled(tmp_path, 8)
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # changed after the crawl
    paths[2].unlink()  # deleted after the crawl
    img = paths[3].read_bytes()
    s = _embed(a, ckpt)
    assert s.images_embedded == 6 and s.images_skipped == 2
    reasons = dict(
        a.catalog.query("SELECT l.uri, s.reason FROM embed_skips s JOIN locations l ON l.item_id = s.item_id")
    )
    assert "content changed since the crawl" in reasons[str(paths[1])]
    assert "not found" in reasons[str(paths[2])]
    assert _embed(a, ckpt).images_skipped == 0  # recorded, not retried every run
    assert _embed(a, ckpt, retry_skipped=True).images_skipped == 2
    assert paths[3].read_bytes() == img


def test_undecodable_content_is_a_skip_not_a_crash(tmp_path, ckpt):
    from audit.embed.executor import ShardTask, run_shard
    from audit.embed.openclip import load_embedder, remember
    import hashlib

    emb = load_embedder("toy-shapes", None, checkpoint=ckpt, precision="fp32")
    remember(emb)
    good = toy_scene_archive(tmp_path / "x", 2)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good[0].read_bytes()[:200])  # truncated PNG
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (good[0], bad, good[1])]
    r = run_shard(
        ShardTask(emb.spec, "image", tuple(ids), (str(good[0]), str(bad), str(good[1])), batch_size=1, decode_threads=2)
    )
    assert r.keys == [ids[0], ids[2]] and r.vectors.shape == (2, emb.dim)
    assert r.skips[0][0] == ids[1] and "undecodable image" in r.skips[0][1]


def test_switching_model_embeds_into_a_separate_space(tmp_path, ckpt, ckpt_b):
    a, _, _ = _crawled(tmp_path, 6)
    s1 = _embed(a, ckpt)
    s2 = _embed(a, ckpt_b)
    assert s1.model_key != s2.model_key
    assert s2.images_embedded == 6 and s2.prompts_embedded == s1.prompts_embedded
    vs = VectorStore(a.catalog.conn)
    assert {m["key"] for m in vs.models()} == {s1.model_key, s2.model_key}
    k1, v1 = next(vs.iter_all(s1.model_key, "image"))
    k2, v2 = next(vs.iter_all(s2.model_key, "image"))
    assert k1 == k2 and not np.allclose(v1, v2)


def test_archive_members_are_read_back(tmp_path, ckpt):
    imgs = toy_scene_archive(tmp_path / "loose", 6)
    with tarfile.open(tmp_path / "shard.tar.gz", "w:gz") as tf:
        for p in imgs[:3]:
            tf.add(p, arcname=f"./a/{p.name}")
    with zipfile.ZipFile(tmp_path / "shard.zip", "w") as zf:
        for p in imgs[3:]:
            zf.write(p, arcname=f"b/{p.name}")
    a = audit.open(tmp_path / "idx", create=True)
    a.crawl([str(tmp_path / "shard.tar.gz"), str(tmp_path / "shard.zip")], workers=0)
    uris = [r[0] for r in a.catalog.query("SELECT uri FROM locations WHERE present=1")]
    assert sum("!/" in u for u in uris) == 6
    s = _embed(a, ckpt)
    assert (s.images_embedded, s.images_skipped) == (6, 0), s.skip_examples


@pytest.mark.slow
def test_worker_processes_give_the_same_vectors(tmp_path, ckpt):
    a, _, _ = _crawled(tmp_path, 12)
    inline = _embed(a, ckpt, precision="fp32", workers=0)
    vs = VectorStore(a.catalog.conn)
    keys, v0 = next(vs.iter_all(inline.model_key, "image"))
    assert vs.delete(inline.model_key, "image") == 12
    assert vs.delete(inline.model_key, "prompt") == inline.prompts_embedded
    pooled = _embed(a, ckpt, precision="fp32", workers=2, batch_size=4)
    assert pooled.workers == 2 and pooled.images_embedded == 12 and pooled.prompts_embedded == inline.prompts_embedded
    keys2, v1 = next(vs.iter_all(inline.model_key, "image"))
    assert keys == keys2
    np.testing.assert_allclose(v0, v1, atol=5e-4)  # fp16 storage: one rounding step at most


@pytest.mark.slow
def test_sigkill_midway_then_rerun_embeds_only_the_missing(tmp_path, ckpt):
    n = 400
    _crawled(tmp_path, n, prompts_per=1)
    db = tmp_path / "idx" / "catalog.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "audit",
        "embed",
        "--index",
        str(tmp_path / "idx"),
        "--model",
        "toy-shapes",
        "--checkpoint",
        str(ckpt),
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--quiet",
        "--no-prompts",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with sqlite3.connect(db, timeout=5) as c:
                    done = c.execute("SELECT count(*) FROM vector_keys WHERE space='image'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 20:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and 20 <= done < n, (proc.returncode, done)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = c.execute("SELECT count(*) FROM vector_keys WHERE space='image'").fetchone()[0]
    assert before % 2 == 0 and before < n  # whole batches only

    r = audit_cli(
        "embed",
        "--index",
        tmp_path / "idx",
        "--model",
        "toy-shapes",
        "--checkpoint",
        ckpt,
        "--workers",
        "0",
        "--json",
        "--quiet",
    )
    out = json.loads(r.stdout)
    assert out["images_embedded"] == n - before and out["image_vectors_total"] == n
    assert out["images_skipped"] == 0


def test_cli_json_summary(tmp_path, ckpt):
    _crawled(tmp_path, 4)
    r = audit_cli(
        "embed", "--index", tmp_path / "idx", "--model", "toy-shapes", "--checkpoint", ckpt, "--workers", "0", "--json"
    )
    out = json.loads(r.stdout)
    assert out["command"] == "embed" and out["images_embedded"] == 4
    assert out["identity"]["checkpoint_sha256"] and out["precision"]["precision"] in ("bf16", "fp32")
    assert "images/s" in r.stderr


def test_cli_bad_checkpoint_is_a_usage_error(tmp_path):
    audit.open(tmp_path / "idx", create=True)
    r = audit_cli(
        "embed",
        "--index",
        tmp_path / "idx",
        "--model",
        "toy-shapes",
        "--checkpoint",
        tmp_path / "nope.safetensors",
        expected=ExitCode.USAGE,
    )
    assert "checkpoint not found" in r.stderr
    pickled = tmp_path / "evil.pkl"
    pickled.write_bytes(b"x")
    r = audit_cli(
        "embed", "--index", tmp_path / "idx", "--model", "toy-shapes", "--checkpoint", pickled, expected=ExitCode.USAGE
    )
    assert ".safetensors" in r.stderr


def test_weights_only_torch_checkpoint_loads_and_pickles_are_refused(tmp_path, ckpt):
    import torch
    from safetensors.torch import load_file

    from audit.embed.openclip import load_embedder
    from audit.errors import InputError

    pt = tmp_path / "toy.pt"
    torch.save(load_file(str(ckpt)), pt)
    emb = load_embedder("toy-shapes", None, checkpoint=pt, precision="fp32")
    ref = load_embedder("toy-shapes", None, checkpoint=ckpt, precision="fp32")
    np.testing.assert_allclose(emb.embed_texts(["a red star"]), ref.embed_texts(["a red star"]), atol=1e-6)
    assert emb.identity.checkpoint_sha256 != ref.identity.checkpoint_sha256  # identity = the file's bytes

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.bin"
    torch.save({"state_dict": Evil()}, bad)
    with pytest.raises(InputError, match="weights-only|cannot be read"):
        load_embedder("toy-shapes", None, checkpoint=bad, precision="fp32")
    assert not (tmp_path / "pwned").exists()


def test_split_member():
    from audit.ingest.reader import split_member

    assert split_member("/a/b.tar!/x/y.png") == ("/a/b.tar", "x/y.png")
    assert split_member("/a/odd!/dir/b.zip!/m!/n.png") == ("/a/odd!/dir/b.zip", "m!/n.png")
    assert split_member("/plain/file.png") == (None, "/plain/file.png")
    assert split_member("s3://bucket/x.tar.gz!/k.png") == ("s3://bucket/x.tar.gz", "k.png")


def _vectors_of(a, model_key: str, space: str) -> dict[str, np.ndarray]:
    vs = VectorStore(a.catalog.conn)
    return {k: v for keys, vecs in vs.iter_all(model_key, space) for k, v in zip(keys, vecs)}


def test_a_second_embed_examines_only_the_new_items(tmp_path, ckpt):
    """Discovery follows items.seq above the watermark: 10 new items cost 10 rows per
    space, not the archive; and the result equals an embed from scratch."""
    a, src, _ = _crawled(tmp_path, 30, prompts_per=3)
    first = _embed(a, ckpt)
    assert first.images_embedded == 30 and first.items_examined == 60  # 30 item rows per space
    toy_scene_archive(src / "more", 10, seed=5, prompts_per=2)  # the negative prompt is shared with the old items
    a.crawl([str(src)], workers=0)
    second = _embed(a, ckpt)
    assert second.images_embedded == 10 and second.items_examined == 20
    assert second.prompts_embedded == 5  # 5 new prompts; "blurry" was embedded already
    idle = _embed(a, ckpt)
    assert (idle.images_embedded, idle.prompts_embedded, idle.items_examined) == (0, 0, 0)

    fresh = audit.open(tmp_path / "fresh", create=True)
    fresh.crawl([str(src)], workers=0)
    _embed(fresh, ckpt)
    for space in ("image", "prompt"):
        inc, full = _vectors_of(a, first.model_key, space), _vectors_of(fresh, first.model_key, space)
        assert sorted(inc) == sorted(full) and len(inc) == (40 if space == "image" else 16)
        for k in inc:
            np.testing.assert_allclose(inc[k], full[k], atol=5e-4)


def test_an_item_whose_file_comes_back_is_embedded(tmp_path, ckpt):
    a, src, paths = _crawled(tmp_path, 6)
    away = tmp_path / "away.png"
    paths[2].rename(away)
    a.crawl([str(src)], workers=0)  # its location is now missing
    s = _embed(a, ckpt)
    assert s.images_embedded == 5
    away.rename(paths[2])
    a.crawl([str(src)], workers=0)
    back = _embed(a, ckpt)
    assert back.images_embedded == 1 and VectorStore(a.catalog.conn).count(s.model_key, "image") == 6
    assert a.catalog.query("SELECT count(*) FROM embed_absent").fetchone()[0] == 0
