"""``--executor ray``: the same crawl, embed and scan on a local Ray cluster (2 CPUs).

One Ray instance per module (starting Ray takes seconds); drivers run in this process
(the library) or as subprocesses connected to it through ``RAY_ADDRESS`` (the CLI), as on
a cluster: the CLI runs in a process of its own because this one is already Ray's driver. Faults are real: a Ray worker process SIGKILLs itself once (``AUDIT_RAY_KILL_ONCE``),
a driver process is SIGKILLed midway.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

import audit
from audit.catalog.vectors import VectorStore
from audit.errors import ExitCode
from tests.cli_helper import audit_cli, audit_subprocess
from tests.paths import REPO
from tests.sample_subset import copy_sample_subset
from tests.toy_world import write_generation

ray = pytest.importorskip("ray")

SAMPLE = REPO / "samples" / "archive"
TOY_POLICY = REPO / "samples" / "policy" / "toy.toml"
VOLATILE = ("first_seen", "last_seen", "seq")  # when, and in which order, rows were committed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    # a new local instance even where /tmp/ray names a cluster left by another run
    ray.init(address="local", num_cpus=2, object_store_memory=300 << 20, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A quarter of the sample archive, every kind of file in it and its planted items: the
    claims here are Ray against local on the same files, and each run embeds them all."""
    return copy_sample_subset(tmp_path_factory.mktemp("sample") / "archive")


@pytest.fixture(scope="module")
def local_scan(tmp_path_factory, sample):
    """The sample scanned with the local executor: the reference."""
    idx = tmp_path_factory.mktemp("local") / "idx"
    a = audit.open(idx, create=True)
    a.scan([sample], model="toy-shapes", policy=TOY_POLICY)
    return idx


def catalog_rows(idx) -> pl.DataFrame:
    return audit.open(idx).items().drop(*VOLATILE).sort("uri")


def vectors(idx, space: str = "image") -> dict[str, np.ndarray]:
    a = audit.open(idx)
    store = VectorStore(a.catalog.conn)
    (model,) = store.models()
    out = {}
    for keys, vecs in store.iter_all(model["key"], space):
        out.update(zip(keys, vecs))
    return out


def assert_same_vectors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    keys = sorted(a)
    cos = np.sum(np.stack([a[k] for k in keys]) * np.stack([b[k] for k in keys]), axis=1)
    assert cos.min() >= 0.9999, cos.min()


def assert_consistent(idx) -> None:
    report = VectorStore(audit.open(idx).catalog.conn).verify()
    assert report["shards"] > 0 and not report["damaged"], report


def test_scan_on_ray_equals_local(cluster, local_scan, sample, tmp_path):
    idx = tmp_path / "idx"
    summary = audit.open(idx, create=True).scan([sample], model="toy-shapes", policy=TOY_POLICY, executor="ray")
    assert summary.stages["embed"]["executor"] == "ray"
    assert catalog_rows(idx).equals(catalog_rows(local_scan))
    assert_same_vectors(vectors(idx), vectors(local_scan))
    assert_same_vectors(vectors(idx, "prompt"), vectors(local_scan, "prompt"))
    findings = lambda i: audit.open(i).findings().select("item_id", "category", "severity").sort(pl.all())  # noqa: E731
    assert findings(idx).height > 0 and findings(idx).equals(findings(local_scan))
    # a second scan on Ray reads and embeds nothing (same incremental rules)
    again = audit.open(idx).scan([sample], model="toy-shapes", policy=TOY_POLICY, executor="ray")
    assert again.stages["crawl"]["read"] == 0 and again.stages["embed"]["images_embedded"] == 0


def test_gpu_pipeline_shape_on_cpu_gives_the_same_vectors(cluster, local_scan, sample, tmp_path):
    """The --device cuda pipeline (decode as CPU tasks, CLIP in an actor pool fed with
    pixels) run with CPU actors: everything of the CUDA path but num_gpus=1 and fp16."""
    from audit.embed.openclip import load_embedder
    from audit.embed.runner import EmbedRunner
    from audit.onray.embed import RayEmbedExecutor

    idx = tmp_path / "idx"
    audit.crawl([sample], idx, workers=0)
    emb = load_embedder("toy-shapes", device="cpu")  # as the local scan: bf16 after the check where the CPU has it
    half = len(vectors(local_scan)) // 2
    ex = RayEmbedExecutor(ray, device="cpu", image_spec=emb.preprocess, split_decode=True, wave_items=half)
    a = audit.open(idx)
    s = EmbedRunner(a.catalog, emb.spec, ex, dim=emb.dim, batch_size=16).run()
    assert ex.waves == 1 + 2  # prompts, then images in waves of about half: bounded driver memory
    assert s.images_embedded == len(vectors(local_scan))
    assert_same_vectors(vectors(idx), vectors(local_scan))


def test_a_killed_worker_loses_and_duplicates_nothing(cluster, local_scan, sample, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    monkeypatch.setenv("AUDIT_RAY_KILL_ONCE", str(tmp_path / "crawl-killed"))
    audit.crawl([sample], idx, executor="ray")
    assert (tmp_path / "crawl-killed").exists()  # a read task's worker did die
    assert catalog_rows(idx).equals(catalog_rows(local_scan))
    monkeypatch.setenv("AUDIT_RAY_KILL_ONCE", str(tmp_path / "embed-killed"))
    s = audit.open(idx).embed(model="toy-shapes", pretrained=None, batch_size=8, executor="ray")
    assert (tmp_path / "embed-killed").exists()  # an actor did die after its first shard
    ref = vectors(local_scan)
    assert s.images_embedded == len(ref) and s.image_vectors_total == len(ref)
    assert_same_vectors(vectors(idx), ref)
    assert_consistent(idx)


def _count_vectors(idx) -> int:
    try:
        con = sqlite3.connect(f"file:{idx / 'catalog.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM vector_rows").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_driver_sigkilled_midway_then_next_run_finishes(cluster, local_scan, sample, tmp_path):
    first = tmp_path / "first"
    res = audit_subprocess(
        "crawl", str(sample), "--index", str(first), "--executor", "ray", "--quiet", env={"RAY_ADDRESS": cluster}
    )
    assert res.returncode == ExitCode.OK, res.stderr[-2000:]
    shutil.copytree(first, tmp_path / "second")
    total = len(vectors(local_scan))
    for idx, finisher in ((first, "ray"), (tmp_path / "second", "local")):
        cmd = [
            sys.executable,
            "-m",
            "audit",
            "embed",
            "--index",
            str(idx),
            "--model",
            "toy-shapes",
            "--batch-size",
            "4",
            "--no-prompts",
            "--executor",
            "ray",
            "--quiet",
        ]
        proc = subprocess.Popen(
            cmd, env={**os.environ, "RAY_ADDRESS": cluster}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while _count_vectors(idx) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # killed midway, not after the end
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = _count_vectors(idx)
        assert 0 < done < total
        res = audit_subprocess(
            "embed",
            "--index",
            str(idx),
            "--model",
            "toy-shapes",
            "--no-prompts",
            "--json",
            "--quiet",
            "--executor",
            finisher,
            env={"RAY_ADDRESS": cluster},
        )
        assert res.returncode == ExitCode.OK, res.stderr[-2000:]
        out = json.loads(res.stdout)
        assert out["images_embedded"] == total - done and out["image_vectors_total"] == total
        assert_same_vectors(vectors(idx), vectors(local_scan))
        assert_consistent(idx)


def test_animation_frames_are_embedded_on_ray_as_locally(cluster, tmp_path):
    """Later frames of an animation get vectors in space ``frame`` (keys item_id#frame) on the
    Ray pipeline that does not run ``run_shard`` (decode tasks + CLIP actors: the CUDA shape,
    here on CPU actors) as the local executors do. (The CPU actor path runs ``run_shard``.)"""
    import io

    from audit.animation import frame_key
    from audit.catalog.vectors import FRAME_SPACE
    from audit.embed import toyworld as tw
    from audit.embed.executor import InlineExecutor
    from audit.embed.openclip import load_embedder
    from audit.embed.runner import EmbedRunner
    from audit.onray.embed import RayEmbedExecutor

    src = tmp_path / "src"
    write_generation(src / "still.png", "blue", "circle")
    frames = [
        tw.draw(tw.random_scene(__import__("random").Random(i), colour=c, shape="triangle"), px=96)
        for i, c in enumerate(["blue", "green", "red", "yellow"])
    ]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (src / "anim.gif").write_bytes(buf.getvalue())
    emb = load_embedder("toy-shapes", device="cpu")
    got = {}
    for name, make in (
        ("local", lambda: InlineExecutor()),
        ("ray-split", lambda: RayEmbedExecutor(ray, device="cpu", image_spec=emb.preprocess, split_decode=True)),
    ):
        idx = tmp_path / name
        audit.crawl([src], idx, workers=0)
        a = audit.open(idx)
        EmbedRunner(a.catalog, emb.spec, make(), dim=emb.dim, batch_size=2).run()
        got[name] = vectors(idx, FRAME_SPACE)
    gif_id = audit.open(tmp_path / "local").items().filter(pl.col("uri").str.ends_with("anim.gif"))["item_id"][0]
    assert sorted(got["local"]) == [frame_key(gif_id, i) for i in (1, 2, 3)]
    assert_same_vectors(got["ray-split"], got["local"])


def test_an_undecodable_file_is_the_same_skip_as_locally(cluster, tmp_path):
    src = tmp_path / "src"
    write_generation(src / "good.png", "red", "circle")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image at all" * 20)
    rows = {}
    for ex in ("local", "ray"):
        idx = tmp_path / ex
        audit.crawl([src], idx, executor=ex)
        a = audit.open(idx)
        s = a.embed(model="toy-shapes", executor=ex)
        items = a.items().drop(*VOLATILE).sort("uri")
        rows[ex] = (items, s.images_embedded, s.images_skipped, dict(s.skip_reasons))
    assert rows["ray"][0].equals(rows["local"][0])
    assert rows["ray"][0].filter(pl.col("status") == "error").height == 1
    assert rows["ray"][1:] == rows["local"][1:]


def test_sources_every_node_sees_pass_and_urls_are_not_checked(cluster, tmp_path):
    from audit.errors import InputError
    from audit.onray.nodes import check_paths, check_visible

    write_generation(tmp_path / "shared" / "a.png")
    assert check_visible(ray, [str(tmp_path / "shared"), str(tmp_path / "shared" / "a.png")]) == len(ray.nodes())
    assert check_visible(ray, ["s3://bucket/x.png", "memory://y/z.png"]) == 0
    with pytest.raises(InputError, match="not readable on the driver"):
        check_paths(ray, [str(tmp_path / "nowhere")])


def test_bad_executor_is_a_usage_error(tmp_path):
    res = audit_cli("crawl", SAMPLE, "--index", tmp_path / "i", "--executor", "dask", expected=ExitCode.USAGE)
    assert "--executor must be one of local, ray" in res.stderr


def test_a_node_that_cannot_see_a_source_stops_the_run_before_any_work(cluster, tmp_path):
    """A second Ray node in its own mount namespace, where an empty tmpfs hides the source
    folder: the same machine, but a node that does not see what the driver sees. Last in
    the module: the node is stopped afterwards."""
    from audit.errors import InputError
    from audit.onray.nodes import check_visible

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ray"):
        pytest.skip("needs root, unshare and the ray CLI to start a node in its own mount namespace")
    hidden = tmp_path / "hidden"
    write_generation(hidden / "a.png")
    before = sum(n["Alive"] for n in ray.nodes())
    script = (
        f"mount -t tmpfs none {hidden} && exec ray start --address={cluster} --num-cpus=0 --block --disable-usage-stats"
    )
    node = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(n["Alive"] for n in ray.nodes()) <= before:
            assert node.poll() is None and time.monotonic() < deadline, "the second node did not start"
            time.sleep(0.5)
        with pytest.raises(InputError, match=r"is not the same on Ray node .*listing 0 names"):
            check_visible(ray, [str(hidden)])
        with pytest.raises(InputError, match=r"a.png is not the same on Ray node .*missing there"):
            check_visible(ray, [str(hidden / "a.png")], what="image")
        res = audit_subprocess(
            "crawl", str(hidden), "--index", str(tmp_path / "idx"), "--executor", "ray", env={"RAY_ADDRESS": cluster}
        )
        lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        assert res.returncode == ExitCode.USAGE and "is not the same on Ray node" in lines[-1], res.stderr[-2000:]
        assert audit.open(tmp_path / "idx").items().height == 0  # nothing was read
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(timeout=60)
