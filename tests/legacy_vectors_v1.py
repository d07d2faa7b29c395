"""FROZEN COPY of audit/catalog/vectors.py as released before issue 11 (float32 BLOB rows in
table `vectors`), used only by the tests to build indexes the way that release did.

Embedding vectors, stored in the catalog database beside the items they describe.

Each vector belongs to a *model identity* (open_clip name + pretrained tag, or the
SHA-256 of a checkpoint file) and a *space*: ``image`` vectors are keyed by item_id,
``prompt`` vectors (positive and negative prompts share one text space) by the SHA-256
of the prompt text, so identical prompts are embedded and stored once. Vectors of
different models are never mixed: every query names its model key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import numpy as np

from audit.timeutil import utc_now

DDL = """
CREATE TABLE IF NOT EXISTS models (
    model_key TEXT PRIMARY KEY, name TEXT NOT NULL, pretrained TEXT, checkpoint_sha256 TEXT,
    dim INTEGER NOT NULL, identity TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    model_key TEXT NOT NULL, space TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model_key, space, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS embed_skips (
    model_key TEXT NOT NULL, item_id TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (model_key, item_id)
) WITHOUT ROWID;
"""

SPACES = ("image", "prompt")


@dataclass(frozen=True)
class ModelIdentity:
    """What made a vector. Two identities with the same ``key`` produce comparable vectors."""

    name: str  # open_clip architecture, e.g. "ViT-B-32" or "toy-shapes"
    pretrained: str | None = None  # open_clip pretrained tag, e.g. "laion2b_s34b_b79k"
    checkpoint_sha256: str | None = None  # SHA-256 of a local weights file

    @property
    def key(self) -> str:
        weights = self.checkpoint_sha256 or self.pretrained or "random"
        if self.checkpoint_sha256:
            weights = "sha256:" + self.checkpoint_sha256[:16]
        return f"{self.name}/{weights}"

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


def prompt_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class VectorStore:
    """Reads and writes vectors through the catalog's SQLite connection (one transaction per call)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(DDL)  # (that release's way of making them; the tests use it writable only)

    def _txn(self):
        from audit.catalog.store import transaction

        return transaction(self.conn)

    def register_model(self, identity: ModelIdentity, dim: int) -> str:
        with self._txn() as c:
            c.execute(
                "INSERT INTO models VALUES (?,?,?,?,?,?,?) ON CONFLICT(model_key) DO NOTHING",
                (
                    identity.key,
                    identity.name,
                    identity.pretrained,
                    identity.checkpoint_sha256,
                    dim,
                    json.dumps(identity.to_dict()),
                    utc_now(),
                ),
            )
        return identity.key

    def models(self) -> list[dict]:
        cur = self.conn.execute("SELECT identity, dim FROM models ORDER BY created")
        return [{**json.loads(identity), "dim": dim} for identity, dim in cur]

    def put(self, model_key: str, space: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store L2-normalised float32 vectors, one per key, atomically."""
        assert space in SPACES, space
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(model_key, space, k, vectors[i].tobytes()) for i, k in enumerate(keys)]
        with self._txn() as c:
            c.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?,?)", rows)

    def put_batch(
        self,
        model_key: str,
        space: str,
        keys: Sequence[str],
        vectors: np.ndarray,
        *,
        skips: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Vectors and skips (item_id, reason) of one embed shard in one transaction:
        a crash leaves either all of the shard or none of it."""
        assert space in SPACES, space
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = [(model_key, space, k, vectors[i].tobytes()) for i, k in enumerate(keys)]
        now = utc_now()
        with self._txn() as c:
            if rows:
                c.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?,?)", rows)
            if skips:
                c.executemany(
                    "INSERT OR REPLACE INTO embed_skips VALUES (?,?,?,?)",
                    [(model_key, item_id, reason, now) for item_id, reason in skips],
                )

    def skip(self, model_key: str, item_id: str, reason: str) -> None:
        with self._txn() as c:
            c.execute("INSERT OR REPLACE INTO embed_skips VALUES (?,?,?,?)", (model_key, item_id, reason, utc_now()))

    def has(self, model_key: str, space: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 2000):
            chunk = list(keys[i : i + 2000])
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT key FROM vectors WHERE model_key=? AND space=? AND key IN ({marks})",
                    (model_key, space, *chunk),
                )
            )
        return found

    def get(self, model_key: str, space: str, keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Vectors for those of ``keys`` that exist, in the order found."""
        out_keys, blobs = [], []
        for i in range(0, len(keys), 2000):
            chunk = list(keys[i : i + 2000])
            marks = ",".join("?" * len(chunk))
            for k, blob in self.conn.execute(
                f"SELECT key, vector FROM vectors WHERE model_key=? AND space=? AND key IN ({marks})",
                (model_key, space, *chunk),
            ):
                out_keys.append(k)
                blobs.append(blob)
        return out_keys, _stack(blobs)

    def iter_all(self, model_key: str, space: str, batch: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every vector of one model and space, in key order, in bounded batches."""
        cur = self.conn.execute(
            "SELECT key, vector FROM vectors WHERE model_key=? AND space=? ORDER BY key", (model_key, space)
        )
        while rows := cur.fetchmany(batch):
            yield [r[0] for r in rows], _stack([r[1] for r in rows])

    def count(self, model_key: str, space: str) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM vectors WHERE model_key=? AND space=?", (model_key, space)
        ).fetchone()[0]


def _stack(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
