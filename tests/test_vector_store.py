"""The vector store: fp16 shards referenced from the catalog, checksummed, compacted,
crash-safe, readable read-only, and migrated from the previous release's BLOB table."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import audit
from audit.catalog.vectors import ModelIdentity, VectorsDamaged, VectorStore

MODEL = ModelIdentity("unit", "synthetic")
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _keys(n: int, prefix: str = "") -> list[str]:
    import hashlib

    return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _store(tmp_path: Path, dim: int = 16) -> tuple["audit.Audit", VectorStore]:
    a = audit.open(tmp_path / "idx", create=True)
    vs = VectorStore(a.catalog.conn)
    vs.register_model(MODEL, dim)
    return a, vs


def _shard_files(index: Path) -> list[Path]:
    return sorted(p for p in (index / "vectors").rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- fp16


def _fp16_cosines(vectors: np.ndarray, tmp_path: Path) -> np.ndarray:
    """Cosine between what the store gives back and the float32 vectors put in."""
    a = audit.open(tmp_path / "idx", create=True)
    vs = VectorStore(a.catalog.conn)
    keys = _keys(len(vectors))
    vs.put("m/x", "image", keys, vectors)
    got, back = vs.get("m/x", "image", keys)
    order = {k: i for i, k in enumerate(keys)}
    a.close()
    assert back.dtype == np.float32 and np.allclose(np.linalg.norm(back, axis=1), 1, atol=1e-6)
    return _cos(back, vectors[[order[k] for k in got]])


def _model_outputs(emb) -> np.ndarray:
    from audit.embed import toyworld as tw

    images = [tw.draw(s, px=96) for s in tw.random_scenes(3, 48)]
    texts = [
        f"a {c} {s} on a plain background"
        for c in ("red", "green", "blue", "yellow")
        for s in ("circle", "square", "triangle")
    ]
    return np.concatenate([emb.embed_images(images), emb.embed_texts(texts)]).astype(np.float32)


@pytest.mark.slow
def test_fp16_keeps_the_direction_of_toy_model_vectors(tmp_path):
    from audit.embed.openclip import load_embedder
    from tests.embed_fixtures import random_toy_checkpoint

    emb = load_embedder(
        "toy-shapes", None, checkpoint=random_toy_checkpoint(tmp_path / "t.safetensors"), precision="fp32"
    )
    cos = _fp16_cosines(_model_outputs(emb), tmp_path)
    assert cos.min() >= 0.9999, (cos.min(), cos.mean())


@pytest.mark.slow
def test_fp16_keeps_the_direction_of_vit_b32_vectors(tmp_path):
    """Real open_clip ViT-B-32 outputs (random weights: no hub download)."""
    from audit.embed.openclip import load_embedder

    emb = load_embedder("ViT-B-32", None, precision="fp32")
    out = _model_outputs(emb)
    assert out.shape[1] == 512
    cos = _fp16_cosines(out, tmp_path)
    assert cos.min() >= 0.9999, (cos.min(), cos.mean())


# ----------------------------------------------------------------------------- the API


def test_round_trip_orders_and_replacement(tmp_path):
    a, vs = _store(tmp_path)
    keys, x = _keys(300), _unit(300, 16)
    for i in range(0, 300, 7):
        vs.put_batch(MODEL.key, "image", keys[i : i + 7], x[i : i + 7], skips=[(f"skip{i}", "undecodable image: x")])
    assert vs.count(MODEL.key, "image") == 300 and vs.count(MODEL.key, "prompt") == 0
    assert vs.has(MODEL.key, "image", keys[:5] + ["nope"]) == set(keys[:5])
    assert a.catalog.query("SELECT count(*) FROM embed_skips").fetchone()[0] == 43
    got, back = vs.get(MODEL.key, "image", keys[10:20] + ["nope"])
    assert set(got) == set(keys[10:20]) and back.shape == (10, 16) and back.dtype == np.float32
    assert _cos(back, x[[keys.index(k) for k in got]]).min() >= 0.9999
    assert vs.get(MODEL.key, "image", ["nope"])[1].shape == (0, 16)

    # iter_all: key order (a random order); iter_blocks: every vector once, seq order
    seen = [k for ks, _ in vs.iter_all(MODEL.key, "image", batch=64) for k in ks]
    assert seen == sorted(keys)
    blocks = list(vs.iter_blocks(MODEL.key, "image", batch=50))
    assert sorted(k for b in blocks for k in b.keys) == sorted(keys)
    seqs = np.concatenate([b.seqs for b in blocks])
    assert (np.diff(seqs) > 0).all() and seqs[-1] == vs.max_seq(MODEL.key, "image")

    # a key stored again points to its newest copy; "since" reads see only the new ones
    mark = vs.max_seq(MODEL.key, "image")
    vs.put(MODEL.key, "image", keys[:3], -x[:3])
    got, back = vs.get(MODEL.key, "image", keys[:3])
    assert _cos(back, -x[[keys.index(k) for k in got]]).min() >= 0.9999
    new = list(vs.iter_blocks(MODEL.key, "image", after=mark))
    assert sorted(k for b in new for k in b.keys) == sorted(keys[:3])
    assert vs.count(MODEL.key, "image") == 300

    from audit.errors import UsageError

    with pytest.raises(UsageError, match="16 dimensions, not 8"):
        vs.put(MODEL.key, "image", ["k"], _unit(1, 8))
    assert vs.verify()["damaged"] == []


@pytest.mark.slow
def test_tiny_batches_leave_few_files_and_dead_rows_stay_bounded(tmp_path):
    """embed commits one shard per batch: 1-vector puts must not become 1 file each,
    and replacing vectors must not grow the disk past 1.1 × N × d × 2 bytes."""
    d = 32
    a, vs = _store(tmp_path, d)
    keys, x = _keys(1200), _unit(1200, d)
    for i in range(1200):
        vs.put(MODEL.key, "image", keys[i : i + 1], x[i : i + 1])
    files = _shard_files(tmp_path / "idx")
    assert len(files) <= 4 * 15 + 2, len(files)  # at most 15 per size tier
    rng = np.random.default_rng(1)
    for _ in range(30):  # replace random vectors, a few at a time
        pick = sorted(set(rng.integers(0, 1200, 40).tolist()))
        vs.put(MODEL.key, "image", [keys[i] for i in pick], _unit(len(pick), d, seed=len(pick)))
        on_disk = sum(p.stat().st_size for p in _shard_files(tmp_path / "idx"))
        assert on_disk <= 1.1 * 1200 * d * 2, on_disk
    stats = vs.disk_bytes(MODEL.key, "image")
    assert stats["live"] == 1200 and stats["rows"] <= 1.05 * 1200
    assert vs.count(MODEL.key, "image") == 1200 and vs.verify()["damaged"] == []
    assert sum(len(k) for k, _ in vs.iter_all(MODEL.key, "image")) == 1200


def test_checksums_catch_damage_and_repair_forgets_the_damaged_shard(tmp_path):
    a, vs = _store(tmp_path)
    vs.put(MODEL.key, "image", _keys(40), _unit(40, 16))
    vs.put(MODEL.key, "image", _keys(40, "b"), _unit(40, 16, seed=2))
    shard = _shard_files(tmp_path / "idx")[0]
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x40
    shard.write_bytes(bytes(data))
    report = vs.verify()
    assert [d["file"].rsplit("/", 1)[1] for d in report["damaged"]] == [shard.name]
    assert report["damaged"][0]["problem"] == "checksum mismatch"
    assert vs.verify(full=False)["damaged"] == []  # the size check alone cannot see a flipped bit

    shard.write_bytes(bytes(data[:-2]))  # truncated: caught by the size check on first use
    fresh = VectorStore(a.catalog.conn)
    with pytest.raises(VectorsDamaged) as err:
        fresh.get(MODEL.key, "image", _keys(40))
    assert "\n" not in str(err.value) and shard.name in str(err.value)
    fixed = fresh.verify(repair=True)
    assert fixed["repaired"] and fresh.count(MODEL.key, "image") == 40 and not shard.exists()
    assert fresh.verify()["damaged"] == []


def test_orphans_are_removed_by_the_next_writable_open_only(tmp_path):
    a, vs = _store(tmp_path)
    vs.put(MODEL.key, "image", _keys(10), _unit(10, 16))
    folder = _shard_files(tmp_path / "idx")[0].parent
    stray = [folder / "00000999.f16", folder / ".00001000.f16.tmp-0a1b2c3d"]
    for p in stray:
        p.write_bytes(b"\0" * 32)
    keep = folder / "notes.txt"
    keep.write_text("not ours")
    a.close()
    with audit.open(tmp_path / "idx", read_only=True) as ro:
        VectorStore(ro.catalog.conn)
        assert all(p.exists() for p in stray)  # read-only: nothing written, nothing deleted
    with audit.open(tmp_path / "idx") as rw:
        VectorStore(rw.catalog.conn)
    assert not any(p.exists() for p in stray) and keep.exists()


def test_read_only_index_reads_vectors_and_writes_nothing(tmp_path):
    a, vs = _store(tmp_path)
    keys, x = _keys(50), _unit(50, 16)
    vs.put(MODEL.key, "image", keys, x)
    a.close()
    sqlite3.connect(tmp_path / "idx" / "catalog.sqlite").close()
    # (SQLite's own -wal/-shm of a mode=ro reader aside: see audit.catalog.access)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "idx").rglob("*") if not p.name.endswith(("-wal", "-shm"))}
    with audit.open(tmp_path / "idx", read_only=True) as ro:
        rs = VectorStore(ro.catalog.conn)
        got, back = rs.get(MODEL.key, "image", keys)
        assert len(got) == 50 and rs.count(MODEL.key, "image") == 50
        assert sum(len(k) for k, _ in rs.iter_all(MODEL.key, "image")) == 50
        assert rs.verify()["damaged"] == []
        from audit.errors import IndexReadOnly

        with pytest.raises(IndexReadOnly):
            rs.put(MODEL.key, "image", ["x"], _unit(1, 16))
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "idx").rglob("*") if not p.name.endswith(("-wal", "-shm"))}
    assert before == after


def test_catalog_key_rows_cost(tmp_path):
    """What one vector costs in the catalog (key rows and their indexes), for the README."""
    n = 20_000
    a, vs = _store(tmp_path, 8)
    empty = _sqlite_bytes(a.catalog.conn)
    keys = _keys(n)
    x = _unit(n, 8)
    for i in range(0, n, 32):  # as embed writes them: one batch at a time
        vs.put(MODEL.key, "image", keys[i : i + 32], x[i : i + 32])
    per_item = (_sqlite_bytes(a.catalog.conn) - empty) / n
    print(f"catalog bytes per vector key row: {per_item:.0f}")
    assert 100 < per_item < 400


def _sqlite_bytes(conn) -> int:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page, pages, free = (
        conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count")
    )
    return (pages - free) * page


# ----------------------------------------------------------------------------- migration


def _legacy_index(root: Path) -> tuple[Path, dict]:
    """An index as the previous release wrote it: catalog DDL with the BLOB ``vectors``
    table, vectors put through the previous release's own VectorStore (tests/legacy_vectors_v1.py)."""
    from audit.catalog.access import CATALOG_FILE, connect
    from audit.catalog.migrations import CATALOG_TABLES, FINDINGS_TABLES
    from tests import legacy_vectors_v1 as v1

    idx = root / "legacy"
    idx.mkdir()
    conn = connect(idx / CATALOG_FILE, create=True)  # that release's layout, unversioned (user_version 0)
    conn.executescript(CATALOG_TABLES + FINDINGS_TABLES + "INSERT INTO meta VALUES ('schema_version', '1');")
    old = v1.VectorStore(conn)
    truth = {}
    for name, space, n, d in (("m1", "image", 230, 16), ("m1", "prompt", 40, 16), ("m2", "image", 90, 24)):
        ident = v1.ModelIdentity(name, "tag")
        old.register_model(ident, d)
        keys, x = _keys(n, name + space), _unit(n, d, seed=n)
        for i in range(0, n, 25):
            old.put_batch(ident.key, space, keys[i : i + 25], x[i : i + 25])
        truth[(ident.key, space)] = dict(zip(keys, x))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "vectors" in tables and "vector_rows" not in tables
    conn.close()
    return idx, truth


def _check_vectors(vs: VectorStore, truth: dict) -> None:
    for (model_key, space), want in truth.items():
        assert vs.count(model_key, space) == len(want)
        seen = []
        for keys, vecs in vs.iter_all(model_key, space, batch=37):
            seen += keys
            assert _cos(vecs, np.stack([want[k] for k in keys])).min() >= 0.9999
        assert seen == sorted(want)
        got, vecs = vs.get(model_key, space, list(want)[:10])
        assert sorted(got) == sorted(list(want)[:10])


def test_read_only_legacy_index_reads_its_vectors(tmp_path):
    idx, truth = _legacy_index(tmp_path)
    with audit.open(idx, read_only=True) as ro:
        vs = VectorStore(ro.catalog.conn)
        _check_vectors(vs, truth)
    assert not (idx / "vectors").exists()
    with sqlite3.connect(idx / "catalog.sqlite") as c:
        assert c.execute("SELECT count(*) FROM vectors").fetchone()[0] == 360


@pytest.mark.slow
def test_migration_killed_midway_resumes_and_loses_nothing(tmp_path):
    idx, truth = _legacy_index(tmp_path)
    code = f"""
        import os, signal, sys
        import audit, audit.catalog.vectors, audit.catalog.vector_migration as mig
        mig.MIGRATE_BATCH = 40
        renames = 0
        def prof(frame, event, arg):
            global renames
            if event == "c_call" and getattr(arg, "__name__", "") == "rename":
                renames += 1
                if renames == 4:  # the 4th shard file is in place, its transaction not committed
                    os.kill(os.getpid(), signal.SIGKILL)
        sys.setprofile(prof)
        audit.open({str(idx)!r})  # the first writable open migrates (audit.catalog.migrations)
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    with sqlite3.connect(idx / "catalog.sqlite") as c:
        left = c.execute("SELECT count(*) FROM vectors").fetchone()[0]
        moved = c.execute("SELECT count(*) FROM vector_rows").fetchone()[0]
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert moved == 120 and left == 360 - 120  # three batches committed, each vector in one place
    assert len(_shard_files(idx)) == 4  # three committed shards and the orphan of the fourth

    with audit.open(idx, read_only=True) as ro:  # half-way: read-only readers see every vector
        _check_vectors(VectorStore(ro.catalog.conn), truth)
    with audit.open(idx) as a:
        vs = VectorStore(a.catalog.conn)
        tables = {t for (t,) in a.catalog.query("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "vectors" not in tables and not vs._legacy
        # a release that only knows the BLOB table now refuses the index as too new
        assert a.catalog.query("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
        _check_vectors(vs, truth)
        assert vs.verify()["damaged"] == []
        referenced = {f for (f,) in a.catalog.query("SELECT file FROM vector_shards")}
    assert {str(p.relative_to(idx)) for p in _shard_files(idx)} == referenced  # the orphan is gone


def test_an_interrupt_just_after_commit_keeps_the_committed_shard(tmp_path):
    """SIGTERM and SIGINT become exceptions that can surface right after COMMIT returned:
    the shard its rows already name must not be deleted as if the write had failed (a later
    scan would find a vector shard missing)."""
    from contextlib import contextmanager

    a, vs = _store(tmp_path)
    x = np.random.default_rng(5).normal(size=(8, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    plain = vs._txn

    @contextmanager
    def commit_then_interrupt():
        with plain() as c:
            yield c
        raise KeyboardInterrupt  # as a signal handler raising between COMMIT and the caller

    vs._txn = commit_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        vs.put_batch(MODEL.key, "image", [f"k{i}" for i in range(8)], x)
    vs._txn = plain
    fresh = VectorStore(a.catalog.conn)
    keys, got = fresh.get(MODEL.key, "image", [f"k{i}" for i in range(8)])
    assert len(keys) == 8 and np.allclose(got, x[[int(k[1:]) for k in keys]], atol=2e-3)
    assert fresh.verify(full=True)["damaged"] == []

    # and an interrupt before COMMIT still leaves no file behind
    @contextmanager
    def interrupt_before_commit():
        with plain() as c:
            yield c
            raise KeyboardInterrupt

    before = sorted(p.name for p in (tmp_path / "idx" / "vectors").rglob("*.f16"))
    vs._txn = interrupt_before_commit
    with pytest.raises(KeyboardInterrupt):
        vs.put_batch(MODEL.key, "image", ["other"], x[:1])
    vs._txn = plain
    assert sorted(p.name for p in (tmp_path / "idx" / "vectors").rglob("*.f16")) == before


def test_vectors_of_selected_keys_equal_get_and_pages_are_released(tmp_path, monkeypatch):
    """get_selected (keys chosen by a query, joined inside SQLite) gives what get gives; a
    reader past the resident-page budget drops the maps' pages and still reads the same."""
    from audit.catalog import vectors

    a, vs = _store(tmp_path, dim=32)
    key = vs.register_model(MODEL, 32)
    keys, x = _keys(3000), _unit(3000, 32)
    vs.put(key, "image", keys, x)
    conn = a.catalog.conn
    conn.execute("CREATE TEMP TABLE chosen (k TEXT)")
    chosen = keys[::3] + ["no-such-key"]
    conn.executemany("INSERT INTO chosen VALUES (?)", [(k,) for k in chosen])
    got_keys, got = vs.get_selected(key, "image", "SELECT k AS key FROM chosen", ())
    want_keys, want = vs.get(key, "image", chosen)
    order = {k: i for i, k in enumerate(want_keys)}
    assert sorted(got_keys) == sorted(want_keys) == sorted(keys[::3])
    assert np.array_equal(got, want[[order[k] for k in got_keys]])
    released = []
    monkeypatch.setattr(vectors, "_MAPPED_RESIDENT_MAX", 0)  # every read is past the budget
    release = VectorStore._release_pages
    monkeypatch.setattr(VectorStore, "_release_pages", lambda self: (released.append(len(self._maps)), release(self)))
    for _ in range(2):  # read, release, read the released pages again
        again_keys, again = vs.get(key, "image", chosen)
        assert again_keys == want_keys and np.array_equal(again, want)
    assert released
    a.close()
