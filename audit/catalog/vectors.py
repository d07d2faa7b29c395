"""Embedding vectors: fp16 rows in append-only shard files, referenced from the catalog.

Each vector belongs to a *model identity* (open_clip name + pretrained tag, or the
SHA-256 of a checkpoint file) and a *space*: ``image`` vectors are keyed by item_id,
``prompt`` vectors (positive and negative prompts share one text space) by the SHA-256
of the prompt text, so identical prompts are embedded and stored once. Vectors of
different models are never mixed: every query names its model key.

Layout. One (model, space) pair is a *vector space* (``vector_spaces``, with its
dimension). Its vectors lie in shard files ``<index>/vectors/<model-slug>/<space>/
<shard-id>.f16`` (raw fp16 rows, see ``audit.catalog.shards``); the catalog keeps one
``vector_shards`` row per file (rows, live rows, bytes, SHA-256) and one ``vector_rows``
row per key: where its vector lies (shard, row) and its ``seq``, a number that only
grows, given when the vector is stored (again when it is replaced), so "the vectors
stored since seq S" is a range read. The catalog keeps rows, not vectors.

Writes. ``put_batch`` writes one shard file (temp → fsync → rename → fsync folder) while
it holds the catalog's write lock, then inserts the shard row, the key rows and the embed
skips in the same transaction: a crash leaves all of it or none of it (plus, at worst, a
shard file no committed row names: an orphan, deleted by the next writable open). A key
stored again points to its newest copy; the old copy is a dead row. After each write,
maintenance keeps the files few and the dead rows under ``DEAD_FRACTION``: small shards
are merged 16 at a time (embed writes one small shard per batch), and shards holding dead
rows are rewritten when the dead rows exceed 5% of the space, so the files hold at most
1.05 × live rows (the disk bound: ≤ 1.1 × N × d × 2 bytes). A rewrite writes the new
shards, switches the key rows to them in one transaction, then deletes the old files.

Reads return float32 L2-normalised arrays (fp16 → float32, normalised again). A shard is
memory-mapped on first use, after checking its size against the catalog; ``verify()``
re-reads every shard and checks its SHA-256. A reader whose shard was just merged away by
a writer looks its rows up again.

Indexes of the previous release kept every vector as a float32 BLOB in a ``vectors``
table. Such a table is migrated once, on the first writable open of the catalog
(``audit.catalog.migrations`` calls ``audit.catalog.vector_migration``), in key-ordered
batches; until it is gone (and always on a read-only index) reads consult both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections import OrderedDict, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from audit.catalog.migrations import LEGACY_VECTOR_TABLE, has_legacy_vectors
from audit.catalog.shards import (
    WRITE_CHUNK,
    file_sha256,
    open_shard,
    orphans,
    shard_relpath,
    to_fp16,
    write_shard,
)
from audit.errors import CatalogDamaged, UsageError
from audit.timeutil import utc_now

SPACES = ("image", "prompt")
# Sampled later frames of animations, keyed "<item_id>#<frame index>" (audit.animation):
# stored beside the image space, never indexed or searched on their own.
FRAME_SPACE = "frame"
LEGACY_TABLE = LEGACY_VECTOR_TABLE  # float32 BLOB rows of the previous release
DEAD_FRACTION = 0.05  # rewrite shards once dead rows exceed this share of a space's rows
MERGE_FANOUT = 16  # small shards of one size tier merged this many at a time
SHARD_BYTES = 64 << 20  # shards at least this large (or TARGET_ROWS_MAX rows) are never merged
TARGET_ROWS_MIN, TARGET_ROWS_MAX = 4096, 1 << 20
_IN = 2000  # keys per IN (...) query
_OPEN_MAPS = 256  # shard maps kept open per store
# Pages of the open shard maps a reader has touched count in its RSS (they stay mapped
# until the map is closed): a pass over every vector would show the whole vector file. Past
# this many resident file-backed bytes the maps' pages are released (MADV_DONTNEED: dropped
# from this process only; the page cache keeps them, so a later read is a minor fault).
_MAPPED_RESIDENT_MAX = 256 << 20


@dataclass(frozen=True)
class ModelIdentity:
    """What made a vector. Two identities with the same ``key`` produce comparable vectors."""

    name: str  # open_clip architecture, e.g. "ViT-B-32" or "toy-shapes"
    pretrained: str | None = None  # open_clip pretrained tag, e.g. "laion2b_s34b_b79k"
    checkpoint_sha256: str | None = None  # SHA-256 of a local weights file
    # None for float precisions (fp32/bf16/fp16 vectors are one space); "int8" vectors are
    # a space of their own (``audit.embed.int8``): key "NAME/WEIGHTS+int8"
    precision: str | None = None

    @property
    def key(self) -> str:
        weights = self.checkpoint_sha256 or self.pretrained or "random"
        if self.checkpoint_sha256:
            weights = "sha256:" + self.checkpoint_sha256[:16]
        return f"{self.name}/{weights}" + (f"+{self.precision}" if self.precision else "")

    def to_dict(self) -> dict:
        out = {**asdict(self), "key": self.key}
        if out["precision"] is None:
            del out["precision"]  # identities stored before int8 read the same
        return out


def prompt_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class VectorBlock(NamedTuple):
    """A batch of ``iter_blocks``: keys, their float32 vectors and their store seq numbers."""

    keys: list[str]
    vectors: np.ndarray
    seqs: np.ndarray


class VectorsDamaged(CatalogDamaged):
    """A shard file is missing, of the wrong size or fails its checksum."""


class _Moved(Exception):
    """A shard named by rows just read is gone: a writer merged it away meanwhile."""


class VectorStore:
    """Vectors of one index, through the catalog's SQLite connection (one transaction per call).

    Its tables are made when the catalog is opened (``audit.catalog.migrations``, which also
    moves a previous release's BLOB vectors into shards). On a writable catalog, opening
    deletes orphan shard files; on a read-only one nothing is written, ever."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.index_dir = _index_dir(conn)
        self.read_only = bool(getattr(conn, "read_only", False))
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._resident_floor = _file_resident_bytes()
        self._spaces: dict[tuple[str, str], tuple[int, int]] = {}
        # BLOB rows still to move (a read-only index, or a move under way): reads consult both
        self._legacy = _has_legacy(conn)
        if not self.read_only:
            self.remove_orphans()

    def _txn(self):
        from audit.catalog.store import transaction

        return transaction(self.conn)

    # ------------------------------------------------------------------ models
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

    # ------------------------------------------------------------------ writing
    def put(self, model_key: str, space: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store L2-normalised float32 vectors, one per key, atomically."""
        self.put_batch(model_key, space, keys, vectors)

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
        assert space in SPACES or space == FRAME_SPACE, space
        keys, vectors = _last_of_each(list(keys), vectors)
        now = utc_now()
        vs = None
        written: list[Path] = []
        try:
            with self._txn() as c:
                if keys:
                    vs, _ = self._space_for_write(c, model_key, space, vectors.shape[1])
                    self._append(c, vs, model_key, space, keys, [to_fp16(vectors)], now, written)
                if skips:
                    c.executemany(
                        "INSERT OR REPLACE INTO embed_skips VALUES (?,?,?,?)",
                        [(model_key, item_id, reason, now) for item_id, reason in skips],
                    )
        except BaseException:
            self._unlink_uncommitted(written)
            raise
        if vs is not None:
            self.maintain(model_key, space)

    def skip(self, model_key: str, item_id: str, reason: str) -> None:
        with self._txn() as c:
            c.execute("INSERT OR REPLACE INTO embed_skips VALUES (?,?,?,?)", (model_key, item_id, reason, utc_now()))

    def delete(self, model_key: str, space: str, keys: Sequence[str] | None = None) -> int:
        """Forget the vectors of ``keys`` (all of the space when None); embed finds them
        missing again (its watermark for the space is reset). Returns how many went."""
        gone = 0
        with self._txn() as c:
            found = self._space(model_key, space)
            if found is not None:
                vs = found[0]
                if keys is None:
                    gone = c.execute(
                        "SELECT coalesce(sum(live), 0) FROM vector_shards WHERE vspace=?", (vs,)
                    ).fetchone()[0]
                    c.execute("DELETE FROM vector_rows WHERE vspace=?", (vs,))
                    c.execute("UPDATE vector_shards SET live=0 WHERE vspace=?", (vs,))
                else:
                    gone = self._drop_rows(c, vs, list(keys))
            if self._legacy:
                if keys is None:
                    gone += c.execute(
                        f"DELETE FROM {LEGACY_TABLE} WHERE model_key=? AND space=?", (model_key, space)
                    ).rowcount
                else:
                    for chunk in _chunks(list(keys), _IN):
                        gone += c.execute(
                            f"DELETE FROM {LEGACY_TABLE} WHERE model_key=? AND space=? AND key IN ({_marks(chunk)})",
                            (model_key, space, *chunk),
                        ).rowcount
            c.execute("DELETE FROM embed_progress WHERE model_key=? AND space=?", (model_key, space))
        self.maintain(model_key, space)
        return int(gone)

    def _space_for_write(self, c, model_key: str, space: str, dim: int) -> tuple[int, int]:
        found = self._space(model_key, space)
        if found is None:
            c.execute(
                "INSERT OR IGNORE INTO vector_spaces (model_key, space, dim) VALUES (?,?,?)", (model_key, space, dim)
            )
            self._spaces.pop((model_key, space), None)
            found = self._space(model_key, space)
        assert found is not None
        if found[1] != dim:
            raise UsageError(f"vectors of {model_key} ({space}) have {found[1]} dimensions, not {dim}")
        return found

    def _append(
        self,
        c,
        vs: int,
        model_key: str,
        space: str,
        keys: list[str],
        blocks: Iterable[np.ndarray],
        now: str,
        written: list[Path],
    ) -> int:
        """Write one shard of ``keys`` (rows in that order) and point the keys at it."""
        dim = self._space(model_key, space)[1]
        sid = c.execute(
            "INSERT INTO vector_shards (vspace, file, rows, live, dim, dtype, bytes, sha256, created) "
            "VALUES (?, '', ?, ?, ?, '<f2', 0, '', ?)",
            (vs, len(keys), len(keys), dim, now),
        ).lastrowid
        rel = shard_relpath(model_key, space, sid)
        path = self.index_dir / rel
        written.append(path)
        size, sha = write_shard(path, blocks)
        if size != len(keys) * dim * 2:
            raise ValueError(f"shard of {len(keys)} keys got {size} bytes, not {len(keys) * dim * 2}")
        c.execute("UPDATE vector_shards SET file=?, bytes=?, sha256=? WHERE shard_id=?", (rel, size, sha, sid))
        self._drop_rows(c, vs, keys)
        c.executemany(
            "INSERT INTO vector_rows (vspace, key, shard_id, row) VALUES (?,?,?,?)",
            ((vs, k, sid, i) for i, k in enumerate(keys)),
        )
        if self._legacy:
            for chunk in _chunks(keys, _IN):
                c.execute(
                    f"DELETE FROM {LEGACY_TABLE} WHERE model_key=? AND space=? AND key IN ({_marks(chunk)})",
                    (model_key, space, *chunk),
                )
        return sid

    def _drop_rows(self, c, vs: int, keys: list[str]) -> int:
        """Delete the key rows of ``keys`` (their old copies become dead rows)."""
        gone = 0
        for chunk in _chunks(keys, _IN):
            marks = _marks(chunk)
            for sid, n in c.execute(
                f"SELECT shard_id, count(*) FROM vector_rows WHERE vspace=? AND key IN ({marks}) GROUP BY shard_id",
                (vs, *chunk),
            ).fetchall():
                c.execute("UPDATE vector_shards SET live = live - ? WHERE shard_id=?", (n, sid))
                gone += n
            if gone:
                c.execute(f"DELETE FROM vector_rows WHERE vspace=? AND key IN ({marks})", (vs, *chunk))
        return gone

    # ------------------------------------------------------------------ maintenance
    def _unlink_uncommitted(self, written: Sequence[Path]) -> None:
        """After a failed write: delete those of ``written`` that no committed shard row
        names. Not simply all of them: an exception (SIGTERM/SIGINT turned into one) can
        arrive just after COMMIT returned, when the rows naming them are already durable.
        Whatever cannot be decided here is left to ``remove_orphans`` on the next open."""
        if not written:
            return
        try:
            if self.conn.in_transaction:
                return
            referenced = set()
            for path in written:
                rel = Path(path).relative_to(self.index_dir).as_posix()
                if self.conn.execute("SELECT 1 FROM vector_shards WHERE file = ?", (rel,)).fetchone():
                    referenced.add(Path(path))
        except (sqlite3.Error, ValueError):
            return
        _unlink_all([p for p in written if Path(p) not in referenced])

    def maintain(self, model_key: str, space: str) -> int:
        """Merge small shards and rewrite those with dead rows, as the policy asks; returns
        how many rewrites were done. Each rewrite is one transaction."""
        found = self._space(model_key, space)
        if found is None or self.read_only:
            return 0
        done = 0
        for _ in range(64):  # a merge can fill the next tier; bounded all the same
            if not self._plan(found[0]):
                break
            gone: list[Path] = []
            written: list[Path] = []
            try:
                with self._txn() as c:
                    plan = self._plan(found[0])  # again, under the write lock
                    if not plan:
                        break
                    drop, rewrite = plan
                    gone = self._rewrite(c, found[0], model_key, space, drop, rewrite, written)
            except BaseException:
                self._unlink_uncommitted(written)
                raise
            self._forget_maps(gone)
            _unlink_all(gone)
            done += 1
        return done

    def _plan(self, vs: int) -> tuple[list[int], list[int]] | None:
        """(shards to drop, shards to rewrite) or None when the space is in shape."""
        shards = self.conn.execute(
            "SELECT shard_id, rows, live, dim FROM vector_shards WHERE vspace=? ORDER BY shard_id", (vs,)
        ).fetchall()
        if not shards:
            return None
        drop = [s for s, rows, live, _ in shards if live <= 0]
        total = sum(rows for _, rows, _, _ in shards)
        dead = sum(rows - live for _, rows, live, _ in shards)
        if dead > DEAD_FRACTION * total:
            # the shards with the largest share of dead rows first, until what stays dead is
            # half the threshold (so one rewrite buys room for many more replacements)
            remaining = dead - sum(rows for _, rows, live, _ in shards if live <= 0)
            victims = []
            for sid, rows, live, _ in sorted((s for s in shards if 0 < s[2] < s[1]), key=lambda s: s[2] / s[1]):
                if remaining <= DEAD_FRACTION / 2 * total:
                    break
                victims.append(sid)
                remaining -= rows - live
            return (drop, victims) if drop or victims else None
        target = _target_rows(shards[0][3])
        tiers: dict[int, list[int]] = defaultdict(list)
        for sid, rows, live, _ in shards:
            if live > 0 and rows < target:
                tiers[int(math.log(rows, MERGE_FANOUT) + 1e-9)].append(sid)
        for tier in sorted(tiers):
            if len(tiers[tier]) >= MERGE_FANOUT:
                return drop, tiers[tier][:MERGE_FANOUT]
        return (drop, []) if drop else None

    def _rewrite(
        self, c, vs: int, model_key: str, space: str, drop: list[int], victims: list[int], written: list[Path]
    ) -> list[Path]:
        """Copy the live rows of ``victims`` (in seq order) into new shards, point their key
        rows there, delete the victims' and ``drop``'s shard rows; the files to delete."""
        files = [
            self.index_dir / f
            for (f,) in c.execute(
                f"SELECT file FROM vector_shards WHERE shard_id IN ({_marks(drop + victims)})", drop + victims
            )
        ]
        if victims:
            marks = _marks(victims)
            live = np.array(
                c.execute(
                    f"SELECT seq, shard_id, row FROM vector_rows WHERE shard_id IN ({marks}) ORDER BY seq", victims
                ).fetchall(),
                dtype=np.int64,
            ).reshape(-1, 3)
            dim = self._space(model_key, space)[1]
            now = utc_now()
            step = max(_target_rows(dim), 1)
            for start in range(0, len(live), step):
                part = live[start : start + step]
                sid = c.execute(
                    "INSERT INTO vector_shards (vspace, file, rows, live, dim, dtype, bytes, sha256, created) "
                    "VALUES (?, '', ?, ?, ?, '<f2', 0, '', ?)",
                    (vs, len(part), len(part), dim, now),
                ).lastrowid
                rel = shard_relpath(model_key, space, sid)
                written.append(self.index_dir / rel)
                blocks = (
                    self._gather_fp16(part[i : i + WRITE_CHUNK, 1], part[i : i + WRITE_CHUNK, 2], dim)
                    for i in range(0, len(part), WRITE_CHUNK)
                )
                size, sha = write_shard(self.index_dir / rel, blocks)
                c.execute("UPDATE vector_shards SET file=?, bytes=?, sha256=? WHERE shard_id=?", (rel, size, sha, sid))
                c.executemany(
                    "UPDATE vector_rows SET shard_id=?, row=? WHERE seq=?",
                    ((sid, i, int(seq)) for i, seq in enumerate(part[:, 0])),
                )
        c.execute(f"DELETE FROM vector_shards WHERE shard_id IN ({_marks(drop + victims)})", drop + victims)
        return files

    def remove_orphans(self) -> int:
        """Delete shard files no committed row names (left by a crash); returns how many.
        Done only while holding the write lock, which every shard writer holds until its
        file is named; skipped (0) when another writer holds it now."""
        if self.read_only:
            return 0
        referenced = {f for (f,) in self.conn.execute("SELECT file FROM vector_shards")}
        if not any(True for _ in orphans(self.index_dir, referenced)):
            return 0
        self.conn.execute("PRAGMA busy_timeout=0")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return 0  # a writer is at work; the next open will see
        finally:
            self.conn.execute("PRAGMA busy_timeout=60000")
        try:
            referenced = {f for (f,) in self.conn.execute("SELECT file FROM vector_shards")}
            found = list(orphans(self.index_dir, referenced))
            _unlink_all(found)
        finally:
            self.conn.execute("COMMIT")
        return len(found)

    # ------------------------------------------------------------------ reading
    def has(self, model_key: str, space: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        s = self._space(model_key, space)
        for chunk in _chunks(list(keys), _IN):
            if s is not None:
                found.update(
                    r[0]
                    for r in self.conn.execute(
                        f"SELECT key FROM vector_rows WHERE vspace=? AND key IN ({_marks(chunk)})", (s[0], *chunk)
                    )
                )
            if self._legacy:
                found.update(
                    r[0]
                    for r in self.conn.execute(
                        f"SELECT key FROM {LEGACY_TABLE} WHERE model_key=? AND space=? AND key IN ({_marks(chunk)})",
                        (model_key, space, *chunk),
                    )
                )
        return found

    def get(self, model_key: str, space: str, keys: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Vectors for those of ``keys`` that exist, in the order found."""
        out_keys: list[str] = []
        parts: list[np.ndarray] = []
        s = self._space(model_key, space)
        for chunk in _chunks(list(keys), _IN):
            if s is not None:
                got, vecs = self._read(
                    lambda: self.conn.execute(
                        f"SELECT key, shard_id, row FROM vector_rows WHERE vspace=? AND key IN ({_marks(chunk)})",
                        (s[0], *chunk),
                    ).fetchall(),
                    s[1],
                )
                out_keys += got
                parts.append(vecs)
            if self._legacy:
                rows = self.conn.execute(
                    f"SELECT key, vector FROM {LEGACY_TABLE} WHERE model_key=? AND space=? AND key IN ({_marks(chunk)})",
                    (model_key, space, *chunk),
                ).fetchall()
                out_keys += [r[0] for r in rows]
                parts.append(_stack_legacy([r[1] for r in rows]))
        return out_keys, self._concat(parts, s)

    def get_selected(
        self, model_key: str, space: str, keys_sql: str, params: Sequence = ()
    ) -> tuple[list[str], np.ndarray]:
        """Vectors of the keys a query selects (``keys_sql``: a SELECT with one column named
        ``key``), joined inside SQLite: no list of keys goes through Python and back (a
        cell of the flag stage's near-duplicate search reads its members this way)."""
        s = self._space(model_key, space)
        if s is None or self._legacy:
            return self.get(model_key, space, [r[0] for r in self.conn.execute(keys_sql, tuple(params))])
        return self._read(
            lambda: self.conn.execute(
                f"SELECT r.key, r.shard_id, r.row FROM ({keys_sql}) q JOIN vector_rows r ON r.vspace = ? AND r.key = q.key",
                (*params, s[0]),
            ).fetchall(),
            s[1],
        )

    def iter_all(self, model_key: str, space: str, batch: int = 65536) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every vector of one model and space, in key order, in bounded batches.

        Key order is a random order (keys are SHA-256 digests): a prefix is a random
        sample. Each batch is its own snapshot (keyset pages), so a long read never pins
        the catalog. For reading everything fast, ``iter_blocks`` reads in storage order."""
        batch = max(int(batch), 1)
        s = self._space(model_key, space)
        new = self._key_pages(s, batch) if s is not None else iter(())
        if not self._legacy:
            yield from new
            return
        yield from _merge_sorted(new, self._legacy_pages(model_key, space, batch), batch)

    def _key_pages(self, s: tuple[int, int], batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
        last = ""
        while True:
            keys, vecs = self._read(
                lambda: self.conn.execute(
                    "SELECT key, shard_id, row FROM vector_rows WHERE vspace=? AND key > ? ORDER BY key LIMIT ?",
                    (s[0], last, batch),
                ).fetchall(),
                s[1],
            )
            if not keys:
                return
            last = keys[-1]
            yield keys, vecs

    def _legacy_pages(self, model_key: str, space: str, batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
        last = ""
        while True:
            rows = self.conn.execute(
                f"SELECT key, vector FROM {LEGACY_TABLE} WHERE model_key=? AND space=? AND key > ? ORDER BY key LIMIT ?",
                (model_key, space, last, batch),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[0] for r in rows], _normalise(_stack_legacy([r[1] for r in rows]))

    def iter_blocks(self, model_key: str, space: str, batch: int = 65536, *, after: int = 0) -> Iterator[VectorBlock]:
        """Every vector of one model and space stored after seq ``after``, in seq order
        (storage order: shards are read front to back), in bounded batches.

        ``max_seq`` of a space, kept by a reader, makes the next read incremental:
        ``iter_blocks(..., after=kept)`` yields only vectors stored (or replaced) since.
        Vectors still in a previous release's table (read-only index) come first, with
        seq 0, when ``after`` is 0."""
        batch = max(int(batch), 1)
        s = self._space(model_key, space)
        if self._legacy and after <= 0:
            for keys, vecs in self._legacy_pages(model_key, space, batch):
                yield VectorBlock(keys, vecs, np.zeros(len(keys), dtype=np.int64))
        if s is None:
            return
        last = int(after)
        while True:
            rows: list = []

            def page():
                rows[:] = self.conn.execute(
                    "SELECT key, shard_id, row, seq FROM vector_rows WHERE vspace=? AND seq > ? ORDER BY seq LIMIT ?",
                    (s[0], last, batch),
                ).fetchall()
                return [r[:3] for r in rows]

            keys, vecs = self._read(page, s[1])
            if not keys:
                return
            seqs = np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows))
            last = int(seqs[-1])
            yield VectorBlock(keys, vecs, seqs)

    def iter_keys(self, model_key: str, space: str, batch: int = 200_000) -> Iterator[list[str]]:
        """Every key of one model and space with a vector, in key order, in pages."""
        s = self._space(model_key, space)
        pages = []
        if s is not None:
            pages.append(
                _keyset(
                    self.conn,
                    "SELECT key FROM vector_rows WHERE vspace=? AND key > ? ORDER BY key LIMIT ?",
                    (s[0],),
                    batch,
                )
            )
        if self._legacy:
            pages.append(
                _keyset(
                    self.conn,
                    f"SELECT key FROM {LEGACY_TABLE} WHERE model_key=? AND space=? AND key > ? ORDER BY key LIMIT ?",
                    (model_key, space),
                    batch,
                )
            )
        if len(pages) == 1:
            yield from pages[0]
            return
        import heapq

        out: list[str] = []
        for k in heapq.merge(*((k for page in p for k in page) for p in pages)):
            out.append(k)
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out

    def max_seq(self, model_key: str, space: str) -> int:
        """The seq of the newest vector of the space (0 when none): a mark for ``iter_blocks``."""
        s = self._space(model_key, space)
        if s is None:
            return 0
        return int(
            self.conn.execute("SELECT coalesce(max(seq), 0) FROM vector_rows WHERE vspace=?", (s[0],)).fetchone()[0]
        )

    def count(self, model_key: str, space: str) -> int:
        s = self._space(model_key, space)
        n = 0
        if s is not None:
            n = self.conn.execute(
                "SELECT coalesce(sum(live), 0) FROM vector_shards WHERE vspace=?", (s[0],)
            ).fetchone()[0]
        if self._legacy:
            n += self.conn.execute(
                f"SELECT count(*) FROM {LEGACY_TABLE} WHERE model_key=? AND space=?", (model_key, space)
            ).fetchone()[0]
        return int(n)

    def dim(self, model_key: str, space: str) -> int | None:
        s = self._space(model_key, space)
        return s[1] if s else None

    def disk_bytes(self, model_key: str | None = None, space: str | None = None) -> dict[str, int]:
        """Bytes of the shard files (all, or of one model and space), and live/total rows."""
        where, params = "", ()
        if model_key is not None:
            s = self._space(model_key, space or "image")
            where, params = "WHERE vspace=?", (s[0] if s else -1,)
        b, rows, live, n = self.conn.execute(
            f"SELECT coalesce(sum(bytes),0), coalesce(sum(rows),0), coalesce(sum(live),0), count(*) FROM vector_shards {where}",
            params,
        ).fetchone()
        return {"bytes": int(b), "rows": int(rows), "live": int(live), "shards": int(n)}

    def verify(self, *, full: bool = True, repair: bool = False) -> dict:
        """Check every shard: present, of its recorded size, and (``full``) of its recorded
        SHA-256; the key rows of each shard match its live count. ``repair`` forgets the
        vectors of damaged shards (embed then computes them again). Returns a summary."""
        damaged: list[dict] = []
        shards = self.conn.execute(
            "SELECT sh.shard_id, sh.file, sh.bytes, sh.sha256, sh.live, s.model_key, s.space, "
            "(SELECT count(*) FROM vector_rows r WHERE r.shard_id = sh.shard_id) "
            "FROM vector_shards sh JOIN vector_spaces s ON s.vspace = sh.vspace ORDER BY sh.shard_id"
        ).fetchall()
        checked = 0
        for sid, rel, size, sha, live, model_key, space, referenced in shards:
            path = self.index_dir / rel
            why = None
            try:
                actual = os.stat(path).st_size
                if actual != size:
                    why = f"{actual} bytes, not {size}"
                elif full and file_sha256(path) != sha:
                    why = "checksum mismatch"
            except FileNotFoundError:
                why = "missing"
            if why is None and referenced != live:
                why = f"{referenced} key rows, live count {live}"
            checked += 1
            if why:
                damaged.append({"shard_id": sid, "file": rel, "model_key": model_key, "space": space, "problem": why})
        if repair and damaged and not self.read_only:
            with self._txn() as c:
                for d in damaged:
                    c.execute("DELETE FROM vector_rows WHERE shard_id=?", (d["shard_id"],))
                    c.execute("DELETE FROM vector_shards WHERE shard_id=?", (d["shard_id"],))
                    c.execute("DELETE FROM embed_progress WHERE model_key=? AND space=?", (d["model_key"], d["space"]))
            self._forget_maps([self.index_dir / d["file"] for d in damaged])
            _unlink_all([self.index_dir / d["file"] for d in damaged])
        return {"shards": checked, "damaged": damaged, "full": full, "repaired": bool(repair and damaged)}

    # ------------------------------------------------------------------ internals
    def _space(self, model_key: str, space: str) -> tuple[int, int] | None:
        """(vspace, dim) of a model and space, or None when it holds nothing yet."""
        hit = self._spaces.get((model_key, space))
        if hit is None:
            row = self.conn.execute(
                "SELECT vspace, dim FROM vector_spaces WHERE model_key=? AND space=?", (model_key, space)
            ).fetchone()
            if row is None:
                return None
            hit = self._spaces[(model_key, space)] = (int(row[0]), int(row[1]))
        return hit

    def _read(self, lookup, dim: int) -> tuple[list[str], np.ndarray]:
        """Run ``lookup`` (rows of key, shard_id, row) and gather their vectors; looked up
        again when a shard was merged away between the lookup and the read."""
        for attempt in range(5):
            rows = lookup()
            if not rows:
                return [], np.zeros((0, dim), np.float32)
            try:
                sids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
                pos = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
                return [r[0] for r in rows], _normalise(self._gather_fp16(sids, pos, dim).astype(np.float32))
            except _Moved as exc:
                self._forget_maps(None)
                last = exc
        raise VectorsDamaged(
            f"vector shard {last} is missing from {self.index_dir}: run `audit embed` to compute "
            "its vectors again (after `VectorStore.verify(repair=True)`)"
        )

    def _gather_fp16(self, sids: np.ndarray, pos: np.ndarray, dim: int) -> np.ndarray:
        out = np.empty((len(sids), dim), dtype=np.float16)
        if not len(sids):
            return out
        order = np.argsort(sids, kind="stable")
        bounds = np.flatnonzero(np.diff(sids[order])) + 1
        for group in np.split(order, bounds):
            m = self._map(int(sids[group[0]]))
            out[group] = m[pos[group]]
        # measured against the level after the last release (shared libraries count there too)
        if _file_resident_bytes() > self._resident_floor + _MAPPED_RESIDENT_MAX:
            self._release_pages()
            self._resident_floor = _file_resident_bytes()
        return out

    def _release_pages(self) -> None:
        """Drop the open maps' pages from this process (they stay open and readable)."""
        import mmap

        for m in self._maps.values():
            raw = getattr(m, "_mmap", None)
            if raw is None:
                continue
            try:
                raw.madvise(mmap.MADV_DONTNEED)
            except (AttributeError, OSError, ValueError):  # no madvise here (not Linux): pages stay
                return

    def _map(self, sid: int) -> np.ndarray:
        m = self._maps.get(sid)
        if m is not None:
            self._maps.move_to_end(sid)
            return m
        row = self.conn.execute("SELECT file, rows, dim, bytes FROM vector_shards WHERE shard_id=?", (sid,)).fetchone()
        if row is None:
            raise _Moved(sid)
        rel, rows, dim, size = row
        path = self.index_dir / rel
        try:
            actual = os.stat(path).st_size
        except FileNotFoundError:
            raise _Moved(rel) from None
        if actual != size or size != rows * dim * 2:
            raise VectorsDamaged(
                f"vector shard {path} has {actual} bytes, not {size}: the index's vectors are damaged; "
                "`VectorStore.verify(repair=True)` forgets them and `audit embed` computes them again"
            )
        m = open_shard(path, rows, dim)
        self._maps[sid] = m
        if len(self._maps) > _OPEN_MAPS:
            self._maps.popitem(last=False)
        return m

    def _forget_maps(self, paths: list[Path] | None) -> None:
        if paths is None:
            self._maps.clear()
            return
        names = {str(p) for p in paths}
        for sid, m in list(self._maps.items()):
            if getattr(m, "filename", None) in names:
                del self._maps[sid]

    def _concat(self, parts: list[np.ndarray], s) -> np.ndarray:
        parts = [p for p in parts if len(p)]
        if not parts:
            return np.zeros((0, s[1] if s else 0), dtype=np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------- helpers


def _file_resident_bytes() -> int:
    """Resident file-backed and shared bytes of this process (``/proc/self/statm``'s third
    field; 0 where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _index_dir(conn: sqlite3.Connection) -> Path:
    path = getattr(conn, "path", None) or conn.execute("PRAGMA database_list").fetchone()[2]
    return Path(path).parent


def _has_legacy(conn: sqlite3.Connection) -> bool:
    return has_legacy_vectors(conn)


def _target_rows(dim: int) -> int:
    return int(min(max(SHARD_BYTES // (2 * max(dim, 1)), TARGET_ROWS_MIN), TARGET_ROWS_MAX))


def _last_of_each(keys: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not keys:
        return keys, vectors
    if vectors.ndim != 2 or len(vectors) != len(keys):
        raise ValueError(f"{len(keys)} keys but vectors of shape {vectors.shape}")
    if len(set(keys)) == len(keys):
        return keys, vectors
    last = {k: i for i, k in enumerate(keys)}
    order = sorted(last.values())
    return [keys[i] for i in order], vectors[order]


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    if not len(v):
        return v
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    np.divide(v, norms, out=v, where=norms > 0)
    return v


def _stack_legacy(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1).copy()


def _merge_sorted(a: Iterator, b: Iterator, batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Two key-ordered page streams as one key-ordered page stream (legacy + shards)."""
    import heapq

    def rows(pages):
        for keys, vecs in pages:
            for k, v in zip(keys, vecs):
                yield k, v

    keys: list[str] = []
    vecs: list[np.ndarray] = []
    for k, v in heapq.merge(rows(a), rows(b), key=lambda kv: kv[0]):
        keys.append(k)
        vecs.append(v)
        if len(keys) >= batch:
            yield keys, np.stack(vecs)
            keys, vecs = [], []
    if keys:
        yield keys, np.stack(vecs)


def _keyset(conn, sql: str, params: tuple, batch: int) -> Iterator[list[str]]:
    last = ""
    while rows := conn.execute(sql, (*params, last, batch)).fetchall():
        last = rows[-1][0]
        yield [r[0] for r in rows]


def _unlink_all(paths: Iterable[Path]) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def _chunks(seq: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _marks(chunk: Sequence) -> str:
    return ",".join("?" * len(chunk))
