"""The streaming, incremental flag stage at N = 50,000 against an exact in-memory computation.

A synthetic archive is written through the project's own APIs (``Catalog.record``,
``VectorStore.put``): clustered unit vectors, planted concept hits near a concept vector,
planted near-duplicate pairs (cosine and PDQ), prompts with rule words concentrated in one
cluster. The reference recomputes everything at once, in memory: the detectors over every item
as one context, each item's nearest stored centroid, cluster flags (enough members
flagged directly) and "via cluster" candidates (members close to the category, ranked, capped), near-duplicate groups from exact all-pairs PDQ and cosine. The flag stage must
match it after a full run, after a full run on 45k plus an incremental run on 5k, and after a
run killed with SIGKILL midway (60k) and run again.
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
from pathlib import Path

import numpy as np
import pytest

import audit
from audit.catalog.vectors import VectorStore
from tests.paths import REPO
from tests.scale_archive import MODEL, open_scale_index as _open, synthetic, write_items
from tests.synthetic_space import LookupEmbedder

pytestmark = pytest.mark.slow

# ------------------------------------------------------------------------------ the reference


def reference(a, data: dict, n: int, opts=None, _memo: dict = {}) -> dict:  # noqa: B006 - a deliberate memo
    """Everything at once, in memory, with the centroids the run stored (what does not
    depend on the centroids is computed once per archive)."""
    from audit.cluster import connected_components, cosine_pairs, group_members, pdq_pairs
    from audit.flag.base import FlagContext
    from audit.flag.combine import combine, merge
    from audit.flag.runner import FlagOptions, default_detectors
    from audit.policy import load_policy
    from audit.policy.hashlists import pdq_hex_to_array

    opts = opts or FlagOptions()
    pol = load_policy(a.index_dir / "policy.toml")
    ids = data["ids"][:n]
    # the vectors as the store gives them back (fp16 shards), not as they were generated
    got_keys, got = VectorStore(a.catalog.conn).get(MODEL.key, "image", ids)
    order = {k: r for r, k in enumerate(got_keys)}
    x = got[[order[i] for i in ids]]
    ctx = FlagContext(
        policy=pol,
        item_ids=ids,
        prompts=data["prompts"][:n],
        negative_prompts=[None] * n,
        md5=[None] * n,
        pdq=data["pdq"][:n],
        pdq_quality=data["quality"][:n],
        image_vectors=x,
        has_image=np.ones(n, bool),
        prompt_vectors=np.zeros_like(x),
        has_prompt=np.zeros(n, bool),
        embedder_factory=LookupEmbedder,
    )
    dets = default_detectors()
    key = (id(data), n)
    if key not in _memo:
        _memo.clear()
        signals, sup_cat, sup_con = merge([d.detect(ctx) for d in dets])
        direct = {}
        for row, sigs in signals.items():
            for hit, chosen in combine(pol, sigs, sup_con.get(row, set()), sup_cat.get(row, set()))[0]:
                direct[(ids[row], hit.category)] = sorted((s.kind, s.name, round(s.score, 5)) for s in chosen)
        # near-duplicate groups: exact all-pairs PDQ (quality >= 50) and cosine
        valid = np.array([q >= 50 for q in data["quality"][:n]])
        pi, pj = pdq_pairs(pdq_hex_to_array(data["pdq"][:n]), opts.dup_pdq_distance, valid)
        ci, cj, _ = cosine_pairs(x, opts.dup_min_cosine, exact_below=10**9, normalized=True)
        labels = connected_components(n, np.concatenate([pi, ci]), np.concatenate([pj, cj]))
        _memo[key] = (direct, {frozenset(ids[m] for m in g) for g in group_members(labels)})
    else:
        dets[0].prepare(ctx)
    direct, groups = _memo[key]
    # clusters: every item's nearest stored centroid
    conn = a.catalog.conn
    cents = np.stack(
        [np.frombuffer(b, np.float32) for (b,) in conn.execute("SELECT vector FROM flag_centroids ORDER BY cluster")]
    )
    assign = np.argmax(x @ cents.T, axis=1)
    concept = dets[0].vectors.image["red-triangle"]
    threshold = dets[0].threshold("red-triangle", "image")
    cats = {c.id: c for c in pol.categories}
    ph = pol.content_hash
    via = {}

    def unit_mean(v):
        m = v.mean(axis=0) if len(v) else np.zeros(v.shape[1], np.float32)
        return m / np.linalg.norm(m) if np.linalg.norm(m) > 0 else m

    for k in np.unique(assign):
        members = np.flatnonzero(assign == k)
        members = members[np.argsort([ids[m] for m in members])]  # the store's order: by item id
        xm = x[members]
        for cat in cats:
            flagged = np.array([(ids[m], cat) in direct for m in members])
            # the cluster flag: member evidence only (count and share), never the centroid
            if not (
                flagged.sum() >= opts.cluster_min_flagged
                and flagged.mean() >= opts.cluster_share
                and len(members) >= opts.cluster_min_size
            ):
                continue
            to_f, to_u = xm @ unit_mean(xm[flagged]), xm @ unit_mean(xm[~flagged])
            if cat == "shapes":  # an image-concept category: within the margin below its threshold
                gap = xm @ concept - threshold
                close = gap >= -opts.cluster_margin
            else:  # no image concept: within the flagged members' own spread around their mean
                gap = to_f - to_u
                close = to_f >= float(to_f[flagged].min()) - 1e-6
            chosen = []
            for r, m in enumerate(members):
                mine = {c for c in cats if (ids[m], c) in direct}
                if cat in mine or any(cats[c].rank >= cats[cat].rank for c in mine):
                    continue
                if to_f[r] > to_u[r] and close[r]:
                    chosen.append((-float(gap[r]), ids[m]))
            for _, item_id in sorted(chosen)[: opts.cluster_candidates]:
                via[(item_id, cat)] = f"cluster:{ph[:12]}:semantic:{k}"
    return {"direct": direct, "via": via, "groups": groups, "assign": {ids[i]: int(assign[i]) for i in range(n)}}


def stored(a) -> dict:
    conn = a.catalog.conn
    direct, via = {}, {}
    for item_id, cat, sig_json in conn.execute("SELECT item_id, category, signals FROM findings WHERE active=1"):
        sigs = json.loads(sig_json)
        own = sorted(
            (s["kind"], s["name"], round(s["score"], 5)) for s in sigs if s["kind"] not in ("cluster", "seed_neighbor")
        )
        if own:
            direct[(item_id, cat)] = own
        for s in sigs:
            if s["kind"] == "cluster":
                via[(item_id, cat)] = s["name"]
    groups = {
        frozenset(json.loads(m)) for (m,) in conn.execute("SELECT members FROM clusters WHERE kind='near_duplicate'")
    }
    assign = dict(conn.execute("SELECT item_id, cluster FROM cluster_members").fetchall())
    return {"direct": direct, "via": via, "groups": groups, "assign": assign}


def assert_matches(got: dict, want: dict) -> None:
    assert got["direct"] == want["direct"]
    assert got["via"] == want["via"]
    assert got["groups"] == want["groups"]
    assert got["assign"] == want["assign"]  # each item's cluster is its nearest centroid


# ------------------------------------------------------------------------------ the tests


def test_incremental_and_full_runs_equal_the_exact_computation(tmp_path):
    """45k flagged in full, 5k more incrementally, then --full on the 50k: after each run the
    stored findings, groups and memberships equal the exact computation; the incremental
    result's findings and groups equal the full run's."""
    data = synthetic(50_000)
    a = _open(tmp_path / "idx", data, 45_000)
    policy = a.index_dir / "policy.toml"
    first = a.flag(policy, embedder=LookupEmbedder())
    assert first.mode == "full" and first.evaluated == 45_000 and first.reclustered
    write_items(a, data, 45_000, 50_000)
    s = a.flag(policy, embedder=LookupEmbedder())
    assert s.mode == "incremental" and s.evaluated == 5_000 and not s.reclustered
    got_inc = stored(a)
    # clusters trained on 45k: each item in its nearest centroid, flags as computed at once
    assert_matches(got_inc, reference(a, data, 50_000))
    row = a.catalog.conn.execute(
        "SELECT mode, reclustered, seq_done FROM flag_runs ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    assert row == ("incremental", 0, a.catalog.max_item_seq())
    assert a.flag(policy, embedder=LookupEmbedder()).mode == "unchanged"  # nothing new

    s = a.flag(policy, embedder=LookupEmbedder(), full=True)
    assert s.mode == "full" and s.why == "--full asked for it" and s.reclustered and s.evaluated == 50_000
    got_full = stored(a)
    assert_matches(got_full, reference(a, data, 50_000))
    assert got_inc["direct"] == got_full["direct"] and got_inc["groups"] == got_full["groups"]
    # the planted structure is there: concept hits, via-cluster candidates, PDQ pairs up to 15 bits
    assert sum(c == "shapes" for _, c in got_full["direct"]) >= 75
    assert got_full["via"] and len(got_full["groups"]) >= 300
    planted_pdq = [(data["ids"][i], data["ids"][i + 1]) for j, i in enumerate(range(13, 49_999, 300)) if j % 5 != 4]
    in_group = {i for g in got_full["groups"] for i in g}
    assert all(p in in_group and q in in_group for p, q in planted_pdq)


_CHILD = """
import sys
sys.path.insert(0, {repo!r})
import audit
from tests.synthetic_space import LookupEmbedder
a = audit.open({index!r})
a.flag({policy!r}, embedder=LookupEmbedder(), batch_size=5000)
"""


def test_sigkill_midway_then_rerun_gives_the_uninterrupted_result(tmp_path):
    n = 60_000
    data = synthetic(n, seed=1)
    a = _open(tmp_path / "killed", data, n)
    a.close()
    shutil.copytree(tmp_path / "killed", tmp_path / "clean")
    clean = audit.open(tmp_path / "clean")
    clean.flag(clean.index_dir / "policy.toml", embedder=LookupEmbedder(), batch_size=5000)
    want = stored(clean)

    index = tmp_path / "killed"
    code = _CHILD.format(repo=str(REPO), index=str(index), policy=str(index / "policy.toml"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = index / "catalog.sqlite"
    deadline = time.monotonic() + 120
    members = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as peek:
                members = peek.execute("SELECT count(*) FROM cluster_members").fetchone()[0]
        except sqlite3.Error:
            members = 0
        if members >= 15_000:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < members < n, "the kill came too late to interrupt anything"

    a = audit.open(index)
    assert a.catalog.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    s = a.flag(index / "policy.toml", embedder=LookupEmbedder(), batch_size=5000)
    assert s.mode == "full" and s.why == "the previous full run was interrupted" and s.evaluated == n
    got = stored(a)
    assert got == want
    statuses = dict(a.catalog.conn.execute("SELECT status, count(*) FROM findings WHERE active=1 GROUP BY 1"))
    assert statuses == dict(
        clean.catalog.conn.execute("SELECT status, count(*) FROM findings WHERE active=1 GROUP BY 1")
    )


def _cosine_pairs(groups, x_of, min_cosine):
    """The pairs with cosine >= min_cosine inside the stored groups."""
    out = set()
    for g in groups:
        g = sorted(g)
        for i, p in enumerate(g):
            for q in g[i + 1 :]:
                if float(x_of[p] @ x_of[q]) >= min_cosine:
                    out.add((p, q))
    return out


def test_cell_probed_near_duplicates_find_the_exact_pairs(tmp_path):
    """Above dup_exact_max vectors, cosine near-duplicates come from the clusters' cells
    (full: each cell with its nearest cells; incremental: each new item's nearest cells):
    every planted pair is found, and >= 98% of all pairs the exact pass finds."""
    from audit.cluster import cosine_pairs

    n, first = 24_000, 21_000
    data = synthetic(n, seed=3)
    a = _open(tmp_path / "idx", data, first)
    policy = a.index_dir / "policy.toml"
    opts = dict(dup_exact_max=1_000, dup_probes=8, dup_pdq_distance=0)
    s = a.flag(policy, embedder=LookupEmbedder(), **opts)
    from audit.cluster import choose_k

    k = a.catalog.conn.execute("SELECT count(*) FROM flag_centroids").fetchone()[0]
    probes = min(k, max(8, -(-8 * k // choose_k(first))))  # 8 cells of a sqrt(n/2) clustering, scaled to k
    assert s.mode == "full" and s.detectors["near_duplicates"]["cosine_search"] == f"cells (probes={probes})"
    write_items(a, data, first, n)
    s = a.flag(policy, embedder=LookupEmbedder(), **opts)
    assert s.mode == "incremental" and s.evaluated == n - first
    ids, x = data["ids"], data["x"]
    x_of = {ids[i]: x[i] for i in range(n)}
    groups = {
        frozenset(json.loads(m))
        for (m,) in a.catalog.conn.execute("SELECT members FROM clusters WHERE kind='near_duplicate'")
    }
    got = _cosine_pairs(groups, x_of, 0.98)
    ci, cj, _ = cosine_pairs(x, 0.98, exact_below=10**9, normalized=True)
    want = {tuple(sorted((ids[i], ids[j]))) for i, j in zip(ci.tolist(), cj.tolist())}
    assert want and len(got & want) >= 0.98 * len(want), (len(got & want), len(want))
    planted = {tuple(sorted((ids[i], ids[i + 1]))) for i in range(11, n - 1, 250)} & want  # noise may cut a few
    assert len(planted) >= 80 and planted <= got
