"""The items a flag run handles, in bounded batches, with their vectors.

Rows come from SQL in keyset order (``item_id > last``, never OFFSET); vectors through the
``VectorStore`` API (``get`` with the batch's keys), so memory follows the batch size, never
the archive. A deterministic sample (items whose id, a SHA-256, falls below a cutoff: the
same items every time for the same archive, spread evenly over it) feeds k-means training
and threshold calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

ITEM_COLS = ("item_id", "prompt", "negative_prompt", "md5", "pdq", "pdq_quality")
_PRESENT = "EXISTS (SELECT 1 FROM locations l WHERE l.item_id = i.item_id AND l.present = 1)"
_SELECT = f"SELECT {', '.join('i.' + c for c in ITEM_COLS)} FROM items i"


@dataclass
class ItemBatch:
    item_ids: list[str]
    prompts: list[str | None]
    negative_prompts: list[str | None]
    md5: list[str | None]
    pdq: list[str | None]
    pdq_quality: list[int | None]
    image: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    has_image: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    prompt_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    has_prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.item_ids)


def _batch(rows: Sequence[tuple]) -> ItemBatch:
    cols = list(zip(*rows)) if rows else [[] for _ in ITEM_COLS]
    return ItemBatch(*[list(c) for c in cols])


def count_items(conn) -> int:
    return int(conn.execute(f"SELECT count(*) FROM items i WHERE i.status = 'ok' AND {_PRESENT}").fetchone()[0])


def iter_all_items(conn, batch: int) -> Iterator[ItemBatch]:
    """Every readable, present item, in item_id order, ``batch`` at a time."""
    last = ""
    while True:
        rows = conn.execute(
            f"{_SELECT} WHERE i.item_id > ? AND i.status = 'ok' AND {_PRESENT} ORDER BY i.item_id LIMIT ?",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield _batch(rows)


def fetch_items(conn, item_ids: Sequence[str]) -> tuple[ItemBatch, list[str]]:
    """The readable, present items among ``item_ids`` (sorted), and the ids that are not
    (an item turned unreadable, or every location of it vanished)."""
    found: dict[str, tuple] = {}
    for start in range(0, len(item_ids), 900):
        chunk = list(item_ids[start : start + 900])
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"{_SELECT} WHERE i.item_id IN ({marks}) AND i.status = 'ok' AND {_PRESENT}", chunk):
            found[row[0]] = row
    keep = sorted(found)
    gone = sorted(set(item_ids) - set(found))
    return _batch([found[k] for k in keep]), gone


def align(keys: Sequence[str], got_keys: Sequence[str], got: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) rows of ``got`` placed at the positions of ``keys`` (zeros where missing), and the mask."""
    n = len(keys)
    mat = np.zeros((n, dim), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    if not len(got_keys):
        return mat, has
    pos = {k: i for i, k in enumerate(keys)}
    for j, k in enumerate(got_keys):
        i = pos.get(k)
        if i is not None:
            mat[i] = got[j]
            has[i] = True
    return mat, has


def load_vectors(vs, model_key: str, dim: int, batch: ItemBatch) -> ItemBatch:
    """Fill the batch's image and prompt vectors (``VectorStore.get``)."""
    from audit.catalog.vectors import prompt_key

    n = len(batch)
    if not model_key or dim <= 0:
        batch.image, batch.has_image = np.zeros((n, max(dim, 0)), np.float32), np.zeros(n, bool)
        batch.prompt_vectors, batch.has_prompt = batch.image, batch.has_image
        return batch
    got_keys, got = vs.get(model_key, "image", batch.item_ids)
    batch.image, batch.has_image = align(batch.item_ids, got_keys, got, dim)
    pkeys = [prompt_key(p) if p else None for p in batch.prompts]
    wanted = sorted({k for k in pkeys if k})
    gk, gv = vs.get(model_key, "prompt", wanted) if wanted else ([], np.zeros((0, dim), np.float32))
    lookup = {k: i for i, k in enumerate(gk)}
    pv = np.zeros((n, dim), np.float32)
    hp = np.zeros(n, bool)
    for row, k in enumerate(pkeys):
        j = lookup.get(k) if k else None
        if j is not None:
            pv[row] = gv[j]
            hp[row] = True
    batch.prompt_vectors, batch.has_prompt = pv, hp
    return batch


def sample_ids(conn, n_items: int, limit: int) -> tuple[list[str], float]:
    """At most ``limit`` present items, the same ones on every call for the same archive:
    those whose id (SHA-256 hex, uniform) falls below a cutoff, smallest first; and the share
    of the archive the cutoff covers (to scale counts up)."""
    if n_items <= 0:
        return [], 1.0
    share = min(1.0, 1.25 * limit / n_items)
    where, params = "", []
    if share < 1.0:
        where = " AND i.item_id < ?"
        params.append(f"{int(share * 16**8):08x}")
    rows = conn.execute(
        f"SELECT i.item_id FROM items i WHERE i.status = 'ok' AND {_PRESENT}{where} ORDER BY i.item_id LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [r[0] for r in rows], share


def sample_vectors(conn, vs, model_key: str, dim: int, n_items: int, limit: int) -> tuple[np.ndarray, float]:
    """The image vectors of ``sample_ids`` (in id order) and the share they stand for."""
    ids, share = sample_ids(conn, n_items, limit)
    if not ids or not model_key:
        return np.zeros((0, dim), np.float32), share
    parts = []
    for start in range(0, len(ids), 20_000):
        chunk = ids[start : start + 20_000]
        got_keys, got = vs.get(model_key, "image", chunk)
        mat, has = align(chunk, got_keys, got, dim)
        parts.append(mat[has])
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32), share


def iter_member_vectors(
    conn, vs, scope: int, model_key: str, dim: int, batch: int, after: str = ""
) -> Iterator[tuple[list[str], np.ndarray]]:
    """The image vectors of the scope's cluster members (every handled item with a vector),
    in item_id order from ``after`` on, ``batch`` at a time."""
    last = after
    while True:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT item_id FROM cluster_members WHERE scope = ? AND item_id > ? ORDER BY item_id LIMIT ?",
                (scope, last, batch),
            )
        ]
        if not ids:
            return
        last = ids[-1]
        got_keys, got = vs.get(model_key, "image", ids)
        mat, has = align(ids, got_keys, got, dim)
        keep = np.flatnonzero(has)
        yield [ids[i] for i in keep], mat[keep]


def in_chunks(values, n: int = 900):
    """``values`` in lists of ``n``: an ``IN (?, ...)`` list stays under SQLite's variable limit."""
    values = list(values)
    for start in range(0, len(values), n):
        yield values[start : start + n]
