"""Face descriptors per item and model, in the catalog (table ``face_descriptors``).

Like embeddings, descriptors are a cache of work done on the pixels: an item described once
under a model key (model name and the copy's ``max_side``) is never decoded again for faces,
whatever the policy. Rows are written in their own short transactions as batches finish,
so an interrupted run keeps what it described. An item that could not be read or decoded
gets a row with its one-line ``error`` and no faces (recorded, not retried on every run;
``audit flag --full`` does not retry it either: the bytes are the same).
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import numpy as np


def get(conn, model_key: str, item_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, str | None]]:
    """item_id -> (descriptors (k, 128), sizes (k,), error) for the items described already."""
    out = {}
    ids = list(item_ids)
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        marks = ",".join("?" * len(chunk))
        for item_id, faces, blob, sizes, error in conn.execute(
            f"SELECT item_id, faces, descriptors, sizes, error FROM face_descriptors "
            f"WHERE model_key=? AND item_id IN ({marks})",
            (model_key, *chunk),
        ):
            desc = (
                np.frombuffer(blob, dtype="<f4").reshape(-1, 128) if blob and faces else np.zeros((0, 128), np.float32)
            )
            out[item_id] = (desc, np.asarray(json.loads(sizes or "[]"), dtype=np.int32), error)
    return out


def put(conn, model_key: str, rows: Iterable[tuple[str, np.ndarray, np.ndarray, str | None]], now: str) -> None:
    """Store (item_id, descriptors, sizes, error) rows in one transaction."""
    data = [
        (
            item_id,
            model_key,
            int(len(sizes)),
            np.asarray(desc, dtype="<f4").tobytes() if len(sizes) else None,
            json.dumps([int(s) for s in sizes]),
            error,
            now,
        )
        for item_id, desc, sizes, error in rows
    ]
    if not data or getattr(conn, "read_only", False):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR REPLACE INTO face_descriptors VALUES (?,?,?,?,?,?,?)", data)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
