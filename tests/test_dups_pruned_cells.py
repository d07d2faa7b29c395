"""The incremental near-duplicate search skips probed cells that cannot hold a near duplicate
(``audit.flag.dups.may_hold_duplicates``): the bound must never skip a cell that holds one,
and the edges must equal those of comparing every probed cell."""

from __future__ import annotations

import numpy as np

import audit
from audit.flag import clusters as cl, dups
from tests.synthetic_space import D, LookupEmbedder, unit
from tests.scale_archive import MODEL, open_scale_index as _open, synthetic, write_items


def _clustered(n: int, k: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(k, D)))
    x = unit(centres[rng.integers(0, k, n)] + spread * rng.normal(size=(n, D)))
    return centres, x


def test_the_bound_never_skips_a_cell_that_holds_a_near_duplicate():
    """Brute force: every (query, member) pair with cosine >= m whose member's cell is among
    the query's probes has that probe kept; tight and loose clusters, several thresholds."""
    for spread, min_cosine, seed in [(0.15, 0.98, 0), (0.4, 0.9, 1), (0.8, 0.95, 2), (0.25, 0.995, 3)]:
        centres, x = _clustered(3000, 40, spread, seed)
        rng = np.random.default_rng(seed + 10)
        # queries: perturbed copies of members (near duplicates by construction) and fresh points
        near = unit(x[rng.integers(0, len(x), 300)] + 0.01 * rng.normal(size=(300, D)))
        q = np.concatenate([near, unit(rng.normal(size=(100, D)))]).astype(np.float16).astype(np.float32)
        cell_of, _ = cl.assign(centres, x)
        probes = dups.nearest_cells(centres, q, 12)
        may = dups.may_hold_duplicates(centres, q, probes, min_cosine)
        close = (q @ x.T) >= min_cosine
        needed = 0
        for i, j in zip(*np.nonzero(close)):
            where = np.flatnonzero(probes[i] == cell_of[j])
            if len(where):
                needed += 1
                assert may[i, where[0]], (spread, min_cosine, i, j)
        assert needed > 100  # the check saw near duplicates in probed cells
        if spread <= 0.25:
            assert may.mean() < 0.5  # and the bound skips most probes of separated clusters


def test_pruned_search_gives_the_edges_of_every_probed_cell(tmp_path):
    """On a real index after an incremental run: the pruned search returns the same edges as
    comparing every probed cell, and compares fewer (query, cell) probes."""
    n, first = 5_000, 4_000
    data = synthetic(n, seed=5)
    a = _open(tmp_path / "idx", data, first)
    policy = a.index_dir / "policy.toml"
    opts = dict(dup_exact_max=1_000, dup_probes=8, dup_pdq_distance=0)
    a.flag(policy, embedder=LookupEmbedder(), **opts)
    write_items(a, data, first, n)
    s = a.flag(policy, embedder=LookupEmbedder(), **opts)
    assert s.mode == "incremental" and s.detectors["near_duplicates"]["probes_pruned"] > 0
    a.close()
    a = audit.open(tmp_path / "idx")
    conn = a.catalog.conn
    from audit.catalog.vectors import VectorStore

    vs = VectorStore(conn)
    scope, k = conn.execute("SELECT scope, k FROM flag_scopes").fetchone()
    centroids = cl.load_centroids(conn, scope, D)
    assert len(centroids) == k
    new_ids = data["ids"][first:n]
    got_keys, got = vs.get(MODEL.key, "image", new_ids)
    probes = cl.cell_probes(8, k, first)
    runs = {}
    for prune in (False, True):
        stats: dict = {}
        edges = dups.cosine_edges_probed(
            got_keys, got, conn, vs, scope, MODEL.key, D, centroids, 0.98, probes, prune=prune, stats=stats
        )
        runs[prune] = ({tuple(sorted(e)) for e in edges}, stats)
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) >= 3  # planted pairs among the new items
    assert runs[True][1]["probes_pruned"] > 0 and runs[False][1]["probes_pruned"] == 0
    assert runs[True][1]["probes"] == runs[False][1]["probes"]
