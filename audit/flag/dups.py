"""Near-duplicate groups that grow with the archive: edges of new items, a union-find table.

Two items are near duplicates when their PDQ hashes (both of quality ≥ 50) are within
``dup_pdq_distance`` bits, or their image vectors' cosine is ≥ ``dup_min_cosine``; groups are
the connected components (as ``audit.cluster.near_duplicate_groups``), among the items that
have an image vector.

* PDQ, incremental: each hash is cut into 8 bands of 32 bits, stored in ``pdq_bands``. Two
  hashes within d bits differ in at most ⌊d/8⌋ bits of some band (pigeonhole), so a new hash
  finds every candidate by looking up each band with up to ⌊d/8⌋ bits flipped (33 probes a
  band for d ≤ 15), then verifies by popcount: cost ~ new × 264 index lookups, not × N.
  A full run pairs all hashes at once in memory (``audit.cluster.pdq_pairs``, exact MIH).
* cosine: up to ``dup_exact_max`` vectors exact, block by block (FAISS range search of the
  query vectors in one block of the scope's vectors at a time), never all pairs in memory:
  ~ new × N products; above it an inverted-file search over the clusters' cells (below).
* ``dup_groups``: item → root (the smallest item id of its group); an edge joining groups
  moves the members of the other roots to the smallest root (cost: the groups joined).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

BANDS = 8
MIN_PDQ_QUALITY = 50


def item_number(item_id: str) -> int:
    """The first 60 bits of an item id (SHA-256 hex): how ``pdq_bands`` names items."""
    return int(item_id[:15], 16)


def pdq_words(pdq_hex: Sequence[str]) -> np.ndarray:
    """(n, 8) uint32 bands of 64-hex-digit PDQ hashes."""
    out = np.zeros((len(pdq_hex), BANDS), dtype=np.uint32)
    for r, h in enumerate(pdq_hex):
        out[r] = [int(h[8 * b : 8 * b + 8], 16) for b in range(BANDS)]
    return out


def eligible(pdq: Sequence[str | None], quality: Sequence[int | None]) -> np.ndarray:
    """Rows whose PDQ may group (quality ≥ 50, a non-zero 256-bit hash)."""
    return np.array(
        [
            bool(h) and len(h) == 64 and q is not None and q >= MIN_PDQ_QUALITY and set(h) != {"0"}
            for h, q in zip(pdq, quality)
        ],
        dtype=bool,
    )


def _probe_masks(max_distance: int) -> np.ndarray:
    flips = max_distance // BANDS
    if flips > 2:
        from audit.errors import UsageError

        raise UsageError("dup_pdq_distance above 23 bits is not supported by the banded PDQ lookup")
    masks = [0]
    if flips >= 1:
        masks += [1 << b for b in range(32)]
    if flips >= 2:
        masks += [(1 << a) | (1 << b) for a in range(32) for b in range(a + 1, 32)]
    return np.array(masks, dtype=np.uint64)


def band_keys(words: np.ndarray) -> np.ndarray:
    """(n, 8) int64 keys band << 32 | value."""
    return (np.arange(BANDS, dtype=np.int64) << 32)[None, :] | words.astype(np.int64)


def insert_bands(c, scope: int, item_ids: Sequence[str], words: np.ndarray) -> None:
    """A batch's bands in key order: each B-tree page of ``pdq_bands`` the batch lands on
    is visited once, not once per row (a random order dirties and re-reads pages the small
    page cache already let go, a cost that grows with the table, not the batch)."""
    keys = band_keys(words)
    rows = sorted((scope, int(k), item_number(i)) for i, row in zip(item_ids, keys) for k in row)
    c.executemany("INSERT OR IGNORE INTO pdq_bands VALUES (?,?,?)", rows)


def insert_bands_sorted(c, scope: int, item_ids: np.ndarray, codes: np.ndarray, chunk: int = 200_000) -> None:
    """A full run's bands, all at once, band by band in key order: appends to the table's
    B-tree instead of random inserts (which rewrite most of its pages each batch)."""
    if not len(item_ids):
        return
    words = np.ascontiguousarray(codes, dtype=np.uint8).view(">u4").reshape(len(codes), BANDS).astype(np.int64)
    numbers = np.array([int(i[:15], 16) for i in item_ids], dtype=np.int64)
    for band in range(BANDS):
        keys = (np.int64(band) << 32) | words[:, band]
        order = np.lexsort((numbers, keys))
        for start in range(0, len(order), chunk):
            at = order[start : start + chunk]
            c.executemany(
                "INSERT OR IGNORE INTO pdq_bands VALUES (?,?,?)",
                zip([scope] * len(at), keys[at].tolist(), numbers[at].tolist()),
            )


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = (a ^ b).astype(np.uint32)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
    return np.unpackbits(x.view(np.uint8), axis=-1).sum(axis=-1)  # pragma: no cover


def pdq_edges_lookup(
    conn, scope: int, item_ids: Sequence[str], words: np.ndarray, max_distance: int
) -> list[tuple[str, str]]:
    """Edges between the given (new) hashes and the scope's stored ones (``pdq_bands``, which
    may hold the new items' own bands too: pairs among them are found the same way),
    verified against the catalog's current hashes. Each query is verified only against the
    items its own probes found (never against every candidate of the batch), and its own
    band rows are left out before anything is fetched: ~ new × 264 index lookups."""
    if not len(item_ids):
        return []
    masks = _probe_masks(max_distance)
    probes = (words.astype(np.uint64)[:, :, None] ^ masks[None, None, :]).astype(np.int64)
    keys = ((np.arange(BANDS, dtype=np.int64) << 32)[None, :, None] | probes).reshape(-1)  # (m * 8 * P)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    owner = (order // (BANDS * len(masks))).astype(np.int64)  # the query of each sorted probe key
    uniq = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    own = np.array([item_number(i) for i in item_ids], dtype=np.int64)
    pair_q: list[np.ndarray] = []
    pair_num: list[np.ndarray] = []
    for start in range(0, len(uniq), 5000):
        chunk = uniq[start : start + 5000].tolist()
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT key, item FROM pdq_bands WHERE scope = ? AND key IN ({marks})", (scope, *chunk)
        ).fetchall()
        if not rows:
            continue
        rk = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ri = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        lo, hi = np.searchsorted(keys, rk, "left"), np.searchsorted(keys, rk, "right")
        n_each = hi - lo
        total = int(n_each.sum())
        if not total:
            continue
        firsts = np.cumsum(n_each) - n_each
        at = np.repeat(lo, n_each) + (np.arange(total) - np.repeat(firsts, n_each))
        q, num = owner[at], np.repeat(ri, n_each)
        keep = own[q] != num  # the query's own band rows
        pair_q.append(q[keep])
        pair_num.append(num[keep])
    if not pair_q:
        return []
    pairs = np.unique(np.stack([np.concatenate(pair_q), np.concatenate(pair_num)], axis=1), axis=0)
    if not len(pairs):
        return []
    cand_num, cand_ids, cand_pdq = [], [], []
    for num in np.unique(pairs[:, 1]).tolist():
        lo_id = f"{num:015x}"
        for item_id, pdq, quality in conn.execute(
            "SELECT i.item_id, i.pdq, i.pdq_quality FROM items i JOIN cluster_members m "
            "ON m.scope = ? AND m.item_id = i.item_id WHERE i.item_id >= ? AND i.item_id < ?",
            (scope, lo_id, lo_id + "g"),
        ):
            if eligible([pdq], [quality])[0]:
                cand_num.append(num)
                cand_ids.append(item_id)
                cand_pdq.append(pdq)
    if not cand_ids:
        return []
    cn = np.array(cand_num, dtype=np.int64)  # ascending (numbers visited in order)
    cw = pdq_words(cand_pdq)
    lo, hi = np.searchsorted(cn, pairs[:, 1], "left"), np.searchsorted(cn, pairs[:, 1], "right")
    n_each = hi - lo
    total = int(n_each.sum())
    firsts = np.cumsum(n_each) - n_each
    cand = np.repeat(lo, n_each) + (np.arange(total) - np.repeat(firsts, n_each))
    q = np.repeat(pairs[:, 0], n_each)
    close = _hamming(words[q], cw[cand]) <= max_distance
    return [
        (item_ids[a], cand_ids[b])
        for a, b in zip(q[close].tolist(), cand[close].tolist())
        if item_ids[a] != cand_ids[b]
    ]


def pdq_edges_within(item_ids: Sequence[str], pdq_hex: Sequence[str], max_distance: int) -> list[tuple[str, str]]:
    """Edges among one set of eligible hashes (exact multi-index hashing in memory)."""
    from audit.policy.hashlists import pdq_hex_to_array

    return pdq_edges_within_arrays(
        np.array([i.encode() for i in item_ids], dtype=bytes), pdq_hex_to_array(list(pdq_hex)), max_distance
    )


def pdq_edges_within_arrays(item_ids: np.ndarray, codes: np.ndarray, max_distance: int) -> list[tuple[str, str]]:
    """``pdq_edges_within`` of ids as a bytes array and hashes as (n, 32) uint8 (a full run
    keeps every hash this way: ~100 bytes an item, not two Python strings)."""
    from audit.cluster import pdq_pairs

    if len(item_ids) < 2:
        return []
    i, j = pdq_pairs(codes, max_distance)
    return [(item_ids[a].decode(), item_ids[b].decode()) for a, b in zip(i.tolist(), j.tolist())]


def _range_pairs(q: np.ndarray, x: np.ndarray, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """(query row, block row) with inner product ≥ ``min_cosine``: FAISS exact range search
    over the block (C++, no dense similarity matrix held)."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    radius = float(np.nextafter(np.float32(min_cosine), np.float32(-2)))  # FAISS keeps score > radius
    lims, scores, cols = index.range_search(np.ascontiguousarray(q, dtype=np.float32), radius)
    rows = np.repeat(np.arange(len(q)), np.diff(lims).astype(np.int64))
    keep = scores >= min_cosine
    return rows[keep], cols[keep].astype(np.int64)


def cosine_edges(
    q_ids: Sequence[str],
    q: np.ndarray,
    blocks: Iterable[tuple[list[str], np.ndarray]],
    min_cosine: float,
    *,
    skip: set[str] | None = None,
) -> list[tuple[str, str]]:
    """Edges (query, other) with cosine ≥ ``min_cosine`` between the query vectors and every
    block (ids in ``skip`` are left out of the blocks), one block at a time: exact."""
    out = []
    if not len(q_ids):
        return out
    for ids, x in blocks:
        if not len(ids):
            continue
        r, col = _range_pairs(q, x, min_cosine)
        out.extend(
            (q_ids[a], ids[b])
            for a, b in zip(r.tolist(), col.tolist())
            if q_ids[a] != ids[b] and not (skip and ids[b] in skip)
        )
    return out


def cosine_edges_within(ids: Sequence[str], x: np.ndarray, min_cosine: float) -> list[tuple[str, str]]:
    """Edges (i < j) among one block of vectors."""
    if len(ids) < 2:
        return []
    r, col = _range_pairs(x, x, min_cosine)
    keep = col > r  # each pair once, never an item with itself
    return [(ids[a], ids[b]) for a, b in zip(r[keep].tolist(), col[keep].tolist())]


def union(c, scope: int, edges: Iterable[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """Merge the groups the edges join (inside the caller's transaction). Returns the roots
    of the groups that changed and the roots that no longer name a group."""
    edges = list(edges)
    if not edges:
        return set(), set()
    nodes = sorted({x for e in edges for x in e})
    root_of: dict[str, str] = {}
    for start in range(0, len(nodes), 900):
        chunk = nodes[start : start + 900]
        marks = ",".join("?" * len(chunk))
        root_of.update(
            c.execute(
                f"SELECT item_id, root FROM dup_groups WHERE scope = ? AND item_id IN ({marks})", (scope, *chunk)
            ).fetchall()
        )
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(root_of.get(a, a)), find(root_of.get(b, b))
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)  # the smaller id stays the root
            parent[hi] = lo
    changed, gone = set(), set()
    for x in list(parent):
        r = find(x)
        if r != x:
            changed.add(r)
            gone.add(x)
            c.execute("UPDATE dup_groups SET root = ? WHERE scope = ? AND root = ?", (r, scope, x))
    for node in nodes:
        r = find(root_of.get(node, node))
        changed.add(r)
        c.execute(
            "INSERT INTO dup_groups VALUES (?,?,?) ON CONFLICT(scope, item_id) DO UPDATE SET root=excluded.root",
            (scope, node, r),
        )
    for r in list(changed):  # the root item is a member of its own group
        c.execute("INSERT OR IGNORE INTO dup_groups VALUES (?,?,?)", (scope, r, r))
    return changed - gone, gone - changed


# --- cosine near-duplicates at scale: the clusters' centroids as IVF cells
#
# Above ``FlagOptions.dup_exact_max`` vectors the exact pass (~N² products for a full run,
# ~new × N for an incremental one) gives way to an inverted-file search over the cells the
# flag stage already keeps: every item is a member of its nearest centroid's cluster
# (``cluster_members``), so the members of a cell are an IVF list with exact vectors. A
# query is compared (exactly, FAISS range search) with the members of its ``probes``
# nearest cells; a full run compares every cell with itself and with its ``probes - 1``
# nearest cells. Two vectors with cosine ≥ 0.98 are ≤ 0.2 apart, so their nearest centroids
# are the same or neighbours: probing a few cells finds nearly every such pair (the
# benchmark measures the recall of planted pairs), at ~N × probes × N/k products.


class _CellVectors:
    """Members' vectors of cells, fetched through the vector store, a few cells cached."""

    def __init__(self, conn, vs, scope: int, model_key: str, dim: int, keep: int = 32):
        self.conn, self.vs, self.scope, self.model_key, self.dim, self.keep = conn, vs, scope, model_key, dim, keep
        self._cache: dict[int, tuple[list[str], np.ndarray]] = {}

    def get(self, cell: int) -> tuple[list[str], np.ndarray]:
        hit = self._cache.pop(cell, None)
        if hit is None:
            # members joined with their vector rows inside SQLite (members without a vector
            # drop out), in the order SQLite finds them
            ids, mat = self.vs.get_selected(
                self.model_key,
                "image",
                "SELECT item_id AS key FROM cluster_members WHERE scope = ? AND cluster = ?",
                (self.scope, cell),
            )
            hit = (ids, np.ascontiguousarray(mat, dtype=np.float32).reshape(len(ids), self.dim))
        self._cache[cell] = hit  # most recently used last
        while len(self._cache) > self.keep:
            self._cache.pop(next(iter(self._cache)))
        return hit


def _unit(centroids: np.ndarray) -> np.ndarray:
    c = np.asarray(centroids, dtype=np.float32)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def nearest_cells(centroids: np.ndarray, x: np.ndarray, probes: int) -> np.ndarray:
    """(len(x), probes) indexes of the centroids nearest each row of ``x`` (cosine)."""
    import faiss

    c = _unit(centroids)
    probes = max(1, min(probes, len(c)))
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    _, nearest = index.search(np.ascontiguousarray(x, dtype=np.float32), probes)
    return nearest


def may_hold_duplicates(centroids: np.ndarray, q: np.ndarray, cells: np.ndarray, min_cosine: float) -> np.ndarray:
    """(len(q), cells.shape[1]) bool: whether cell ``cells[i, j]`` may hold a member with
    cosine ≥ ``min_cosine`` to query ``q[i]`` (unit vectors; members sit in the cell of their
    largest inner product with the centroids, ``clusters.assign``).

    Exact bound, no recall lost: a unit x with q·x ≥ m lies within ε = √(2(1 − m)) of q, so
    for every centroid c, |q·c − x·c| ≤ ε‖c‖. x in cell j means x·c_j ≥ x·c_i for every i,
    hence q·c_j + ε‖c_j‖ ≥ max_i (q·c_i − ε‖c_i‖): a cell below that cannot hold x. With the
    clusters' spread (members at cosine ~0.5..0.8 to their centroid) most probes fall below."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    norms = np.linalg.norm(c, axis=1)
    slack = 1e-4  # float32 rounding of the scores compared (range search, assignment)
    out = np.ones(cells.shape, dtype=bool)
    step = max(1, (1 << 24) // max(1, len(c)))  # rows of q per (rows x k) score block: ~64 MB
    for start in range(0, len(q), step):
        qs = np.ascontiguousarray(q[start : start + step], dtype=np.float32)
        # ‖q − x‖² = ‖q‖² + ‖x‖² − 2 q·x with the queries' own norms (fp16-rounded copies
        # may be a little off unit) and members' norms up to 1 + 1e-3
        q_norm2 = np.einsum("ij,ij->i", qs, qs)
        eps = np.sqrt(np.maximum(0.0, q_norm2 + (1 + 1e-3) ** 2 - 2.0 * (float(min_cosine) - slack)))[:, None]
        scores = qs @ c.T
        lower = (scores - eps * norms[None, :]).max(axis=1, keepdims=True)
        at = cells[start : start + step]
        upper = np.take_along_axis(scores, at, axis=1) + eps * norms[at]
        out[start : start + step] = upper >= lower - slack
    return out


def cosine_edges_probed(
    q_ids: Sequence[str],
    q: np.ndarray,
    conn,
    vs,
    scope: int,
    model_key: str,
    dim: int,
    centroids: np.ndarray,
    min_cosine: float,
    probes: int,
    *,
    prune: bool = True,
    stats: dict | None = None,
) -> list[tuple[str, str]]:
    """Edges (query, member) with cosine ≥ ``min_cosine`` between the query vectors and the
    members of each query's ``probes`` nearest cells. The queries are grouped by cell (one
    sort), so each cell is read once for all of them: an incremental run passes all its new
    items at once and reads each probed cell once per run. Probed cells that cannot hold a
    member that close (``may_hold_duplicates``) are not read: the same edges (``prune=False``
    compares every probed cell), at a cost that follows the new items' own cells, not
    ``probes`` cells each. ``stats`` (a dict) gains the probes, those pruned, the cells read."""
    if not len(q_ids) or not len(centroids):
        return []
    nearest = nearest_cells(centroids, q, probes)
    may = may_hold_duplicates(centroids, q, nearest, min_cosine) if prune else np.ones(nearest.shape, bool)
    cell_of = nearest[may]
    query_of = np.repeat(np.arange(len(q_ids)), nearest.shape[1]).reshape(nearest.shape)[may]
    if stats is not None:
        stats["probes"] = stats.get("probes", 0) + int(nearest.size)
        stats["probes_pruned"] = stats.get("probes_pruned", 0) + int(nearest.size - len(cell_of))
        stats["cells_read"] = stats.get("cells_read", 0) + len(np.unique(cell_of))
    order = np.argsort(cell_of, kind="stable")
    cell_of, query_of = cell_of[order], query_of[order]
    bounds = np.flatnonzero(np.diff(cell_of)) + 1
    cells = _CellVectors(conn, vs, scope, model_key, dim, keep=1)
    out = []
    for rows_at in np.split(np.arange(len(cell_of)), bounds):
        if not len(rows_at):
            continue
        rows = query_of[rows_at]  # the queries probing this cell (each once: a query's probes differ)
        ids, x = cells.get(int(cell_of[rows_at[0]]))
        if not ids:
            continue
        r, col = _range_pairs(q[rows], x, min_cosine)
        out.extend((q_ids[rows[a]], ids[b]) for a, b in zip(r.tolist(), col.tolist()) if q_ids[rows[a]] != ids[b])
    return out


def cosine_edges_by_cells(
    conn, vs, scope: int, model_key: str, dim: int, centroids: np.ndarray, min_cosine: float, probes: int
) -> list[tuple[str, str]]:
    """A full run's cosine edges: every cell with itself and with its nearest cells."""
    k = len(centroids)
    if not k:
        return []
    c = _unit(centroids)
    near = nearest_cells(c, c, probes)  # each cell first, then its neighbours
    pairs = sorted({(min(a, int(b)), max(a, int(b))) for a in range(k) for b in near[a] if int(b) != a})
    by_first: dict[int, list[int]] = {}
    for a, b in pairs:
        by_first.setdefault(a, []).append(b)
    cells = _CellVectors(conn, vs, scope, model_key, dim, keep=max(2 * probes, 16))
    out = []
    for a in range(k):
        ids_a, xa = cells.get(a)
        if not ids_a:
            continue
        out += cosine_edges_within(ids_a, xa, min_cosine)
        for b in by_first.get(a, ()):
            ids_b, xb = cells.get(b)
            if ids_b:
                out += cosine_edges(ids_a, xa, [(ids_b, xb)], min_cosine)
    return out
