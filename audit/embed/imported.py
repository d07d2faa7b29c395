"""Bring-your-own embeddings: vectors computed elsewhere (clip-retrieval ``inference``, run on
img2dataset / webdataset shards or a folder of files) stored for catalogued items under a
stated model identity, so 100M precomputed vectors are not computed again.

Input layout (clip-retrieval's ``NumpyWriter``), one *part* per number N:

    DIR/img_emb/img_emb_N.npy          (rows, dim) float16/float32, row i = metadata row i
    DIR/text_emb/text_emb_N.npy        optional, same rows, the caption's text vector
    DIR/metadata/metadata_N.parquet    image_path (and caption, url, ...) in the same order

Matching. A row belongs to the catalogued item whose location uri is ``path_prefix +
image_path`` (the default prefix is empty: clip-retrieval writes the paths it read, often
absolute); a relative ``image_path`` is also tried against ``base`` (a folder). For rows a
uri does not match, the webdataset key (``shard/000000123``: the member name without its
extensions) is looked up among catalogued archive members, through a temporary on-disk
table (memory stays bounded). Rows that match nothing are counted, never an error.

Text vectors are stored in the prompt space (keyed by the SHA-256 of the text, as ``audit
embed`` does) when the row's caption is the item's catalogued prompt or negative prompt;
other captions describe something the catalog does not hold and are counted.

Streaming and safety. Each ``.npy`` is memory-mapped (``np.load(mmap_mode="r")``) and read
``batch`` rows at a time with its metadata (``ParquetFile.iter_batches``): memory is one
batch whatever the part's size. Every batch is one ``VectorStore.put_batch`` (fp16 shard
written, then committed with its key rows in one transaction), so a kill loses at most the
batch in flight. A part is remembered as imported (``embedding_imports``: file, size, mtime)
only after its last batch, and a rerun skips parts imported before and, within a part, the
keys that already have a vector: imports resume. A part whose files disagree (row counts
of ``.npy`` and metadata, a dimension other than the model's, an unreadable file, a missing
metadata part) is recorded in the summary's ``problems`` and skipped; the others go on.
Vectors are L2-normalised on the way in; rows that are not finite or are all zero are
counted as bad and not stored.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from audit.catalog.vectors import ModelIdentity, VectorStore, prompt_key
from audit.errors import UsageError
from audit.timeutil import utc_now

BATCH = 16384  # rows per read and per commit: 16384 x 768 float32 = 48 MiB
_IN = 900
_PART = re.compile(r"^img_emb_(\d+)\.npy$")


@dataclass
class ImportSummary:
    model_key: str
    folder: str
    parts: int = 0
    parts_done_before: int = 0
    rows: int = 0
    image_vectors: int = 0
    prompt_vectors: int = 0
    already_present: int = 0
    unmatched: int = 0
    captions_unmatched: int = 0
    bad_rows: int = 0
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_parts(folder: Path) -> list[tuple[int, Path, Path, Path | None]]:
    """(N, img_emb_N.npy, metadata_N.parquet, text_emb_N.npy or None), by N."""
    img_dir = folder / "img_emb"
    if not img_dir.is_dir():
        raise UsageError(
            f"{folder}: no img_emb/ folder (expected clip-retrieval output: img_emb/, metadata/, text_emb/)"
        )
    parts = []
    for p in img_dir.iterdir():
        m = _PART.match(p.name)
        if m:
            n = int(m.group(1))
            text = folder / "text_emb" / f"text_emb_{n}.npy"
            parts.append((n, p, folder / "metadata" / f"metadata_{n}.parquet", text if text.is_file() else None))
    if not parts:
        raise UsageError(f"{folder}: no img_emb/img_emb_N.npy files")
    return sorted(parts)


def stated_identity(model: str, pretrained: str | None, checkpoint: str | os.PathLike | None) -> ModelIdentity:
    """The identity the vectors are filed under: what ``audit embed`` would give the same
    arguments (so its own embeddings and the imported ones share a space); the weights need
    not be on this machine."""
    from audit.embed.openclip import TOY_MODEL, resolve_identity

    if checkpoint is not None or (model == TOY_MODEL and not pretrained):
        return resolve_identity(model, pretrained, checkpoint)  # a file's identity is its SHA-256
    if pretrained and Path(pretrained).is_file():
        return resolve_identity(model, None, pretrained)
    # a pretrained tag names the weights; they need not be downloaded here (no hub lookup)
    return ModelIdentity(model, pretrained or None)


def import_embeddings(
    audit: Any,
    folder: str | os.PathLike,
    *,
    model: str,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    path_prefix: str = "",
    base: str | os.PathLike | None = None,
    batch: int = BATCH,
    wait: bool = False,
    progress: Any = None,
    argv: Any = None,
) -> ImportSummary:
    """Store precomputed image (and caption) vectors for catalogued items; see the module
    docstring. Returns an ``ImportSummary``."""
    from audit.catalog.lock import IndexLock

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--import {folder}: not a directory")
    parts = find_parts(folder)
    identity = stated_identity(model, pretrained, checkpoint)
    started = time.monotonic()
    with IndexLock(audit.index_dir, wait=wait), audit.recorded_run("embed-import", argv) as run:
        conn = audit.catalog.conn
        store = VectorStore(conn)
        summary = ImportSummary(identity.key, str(folder))
        run.summary = summary
        importer = _Importer(conn, store, identity, summary, path_prefix, Path(base) if base else None, batch, progress)
        if progress is not None:
            progress("total", sum(_rows_of(p[1]) for p in parts))
        for part in parts:
            importer.part(*part)
        importer.close()
        summary.duration_s = round(time.monotonic() - started, 3)
        return summary


class _Importer:
    def __init__(
        self,
        conn,
        store: VectorStore,
        identity: ModelIdentity,
        summary: ImportSummary,
        prefix: str,
        base: Path | None,
        batch: int,
        progress: Any,
    ) -> None:
        self.conn = conn
        self.store = store
        self.identity = identity
        self.key = identity.key
        self.summary = summary
        self.prefix = prefix
        self.base = base
        self.batch = max(1, int(batch))
        self.progress = progress
        self.registered = False
        self.keys_built = False

    # --- one part
    def part(self, n: int, img_path: Path, meta_path: Path, text_path: Path | None) -> None:
        s = self.summary
        s.parts += 1
        st = img_path.stat()
        done = self.conn.execute(
            "SELECT size, mtime_ns FROM embedding_imports WHERE model_key=? AND file=?", (self.key, str(img_path))
        ).fetchone()
        if done is not None and tuple(done) == (st.st_size, st.st_mtime_ns):
            s.parts_done_before += 1
            return
        opened = self._open(n, img_path, meta_path, text_path)
        if opened is None:
            return
        img, pf, text, column = opened
        if not self._dim_ok(img.shape[1], img_path):
            return
        imported = 0
        offset = 0
        columns = [column] + (["caption"] if text is not None and "caption" in pf.schema_arrow.names else [])
        try:
            for rb in pf.iter_batches(batch_size=self.batch, columns=columns):
                paths = rb.column(0).to_pylist()
                captions = rb.column(1).to_pylist() if len(columns) > 1 else None
                end = offset + len(paths)
                imported += self._batch(paths, captions, img[offset:end], None if text is None else text[offset:end])
                offset = end
                if self.progress is not None:
                    self.progress("done", len(paths))
        except Exception as exc:  # noqa: BLE001 - a damaged file stops this part, recorded; committed batches stay
            s.problems.append(f"part {n}: stopped at row {offset}: {type(exc).__name__}: {str(exc)[:200]}")
            return
        from audit.catalog.store import transaction

        with transaction(self.conn) as c:
            c.execute(
                "INSERT OR REPLACE INTO embedding_imports VALUES (?,?,?,?,?,?,?)",
                (self.key, str(img_path), st.st_size, st.st_mtime_ns, offset, imported, utc_now()),
            )

    def _open(self, n: int, img_path: Path, meta_path: Path, text_path: Path | None):
        import pyarrow.parquet as pq

        s = self.summary
        try:
            img = np.load(img_path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            s.problems.append(f"part {n}: {img_path.name} unreadable: {type(exc).__name__}: {str(exc)[:160]}")
            return None
        if img.ndim != 2 or not np.issubdtype(img.dtype, np.floating) or img.shape[1] == 0:
            s.problems.append(f"part {n}: {img_path.name} is {img.dtype} {img.shape}, not (rows, dim) floats: skipped")
            return None
        if not meta_path.is_file():
            s.problems.append(f"part {n}: {meta_path.name} missing: without image_path its rows match nothing; skipped")
            return None
        try:
            pf = pq.ParquetFile(meta_path)
        except Exception as exc:  # noqa: BLE001
            s.problems.append(f"part {n}: {meta_path.name} unreadable: {type(exc).__name__}: {str(exc)[:160]}")
            return None
        names = pf.schema_arrow.names
        column = next((c for c in ("image_path", "path", "uri", "key", "__key__") if c in names), None)
        if column is None:
            s.problems.append(
                f"part {n}: {meta_path.name} has no image_path column (columns: {', '.join(names[:12])}); skipped"
            )
            return None
        rows = pf.metadata.num_rows
        if rows != img.shape[0]:
            s.problems.append(
                f"part {n}: {img_path.name} has {img.shape[0]} rows, {meta_path.name} {rows}: "
                "rows cannot be paired; skipped"
            )
            return None
        text = None
        if text_path is not None:
            try:
                text = np.load(text_path, mmap_mode="r", allow_pickle=False)
                if text.ndim != 2 or text.shape[0] != rows or text.shape[1] != img.shape[1]:
                    s.problems.append(
                        f"part {n}: {text_path.name} is {text.shape}, not ({rows}, {img.shape[1]}): "
                        "text vectors skipped"
                    )
                    text = None
            except Exception as exc:  # noqa: BLE001
                s.problems.append(f"part {n}: {text_path.name} unreadable ({type(exc).__name__}): text vectors skipped")
                text = None
        return img, pf, text, column

    def _dim_ok(self, dim: int, path: Path) -> bool:
        known = next((m["dim"] for m in self.store.models() if m["key"] == self.key), None)
        if known is not None and known != dim:
            self.summary.problems.append(
                f"{path.name}: vectors of {dim} dimensions, but {self.key} has {known}: skipped"
            )
            return False
        if not self.registered:
            self.store.register_model(self.identity, dim)
            self.registered = True
        return True

    # --- one batch
    def _batch(self, paths: list[Any], captions: list[Any] | None, img: np.ndarray, text: np.ndarray | None) -> int:
        s = self.summary
        s.rows += len(paths)
        found = self._match(paths)
        rows = [i for i, p in enumerate(paths) if found.get(i)]
        s.unmatched += len(paths) - len(rows)
        if not rows:
            return 0
        vecs, good = _normalised(np.asarray(img[rows], dtype=np.float32))
        s.bad_rows += int((~good).sum())
        rows = [r for r, g in zip(rows, good) if g]
        vecs = vecs[good]
        ids = [found[r][0] for r in rows]
        have = self.store.has(self.key, "image", ids)
        keep = [j for j, item in enumerate(ids) if item not in have]
        s.already_present += len(ids) - len(keep)
        if keep:
            self.store.put_batch(self.key, "image", [ids[j] for j in keep], vecs[keep])
            s.image_vectors += len(keep)
        if text is not None and captions is not None:
            self._captions(rows, captions, found, text)
        return len(keep)

    def _captions(
        self, rows: list[int], captions: list[Any], found: dict[int, tuple[str, Any, Any]], text: np.ndarray
    ) -> None:
        s = self.summary
        keys: dict[str, int] = {}
        for r in rows:
            caption = captions[r]
            _, prompt, negative = found[r]
            if isinstance(caption, str) and caption and caption in (prompt, negative):
                keys.setdefault(prompt_key(caption), r)
            else:
                s.captions_unmatched += 1
        if not keys:
            return
        have = self.store.has(self.key, "prompt", list(keys))
        todo = [(k, r) for k, r in keys.items() if k not in have]
        if not todo:
            return
        vecs, good = _normalised(np.asarray(text[[r for _, r in todo]], dtype=np.float32))
        s.bad_rows += int((~good).sum())
        chosen = [k for (k, _), g in zip(todo, good) if g]
        if chosen:
            self.store.put_batch(self.key, "prompt", chosen, vecs[good])
            s.prompt_vectors += len(chosen)

    # --- image_path -> (item_id, prompt, negative_prompt)
    def _match(self, paths: list[Any]) -> dict[int, tuple[str, Any, Any]]:
        candidates: dict[str, list[int]] = {}
        for i, p in enumerate(paths):
            if not isinstance(p, str) or not p:
                continue
            for uri in self._uris(p):
                candidates.setdefault(uri, []).append(i)
        found: dict[int, tuple[str, Any, Any]] = {}
        self._lookup(
            "SELECT l.uri, l.item_id, i.prompt, i.negative_prompt FROM locations l "
            "JOIN items i ON i.item_id = l.item_id WHERE l.present = 1 AND l.uri",
            candidates,
            found,
        )
        missing = [i for i, p in enumerate(paths) if i not in found and isinstance(p, str) and p]
        if missing:
            self._by_key(paths, missing, found)
        return found

    def _uris(self, path: str) -> Iterator[str]:
        yield self.prefix + path
        if self.base is not None and not os.path.isabs(path) and "://" not in path:
            yield os.path.normpath(os.path.join(self.base, path))

    def _by_key(self, paths: list[Any], missing: list[int], found: dict[int, tuple[str, Any, Any]]) -> None:
        """Rows named by webdataset key: matched against catalogued archive members."""
        if not self.keys_built:
            self._build_keys()
        keys: dict[str, list[int]] = {}
        for i in missing:
            k = paths[i].strip("/")
            keys.setdefault(k, []).append(i)
            keys.setdefault(k.rsplit("/", 1)[-1], []).append(i)  # the key alone, without its shard folder
        self._lookup(
            "SELECT k.key, k.item_id, i.prompt, i.negative_prompt FROM temp.import_keys k "
            "JOIN items i ON i.item_id = k.item_id WHERE k.key",
            keys,
            found,
        )

    def _lookup(self, select: str, rows_of: dict[str, list[int]], found: dict[int, tuple[str, Any, Any]]) -> None:
        """``select`` (ending in the column to match, its ``IN (...)`` added here) for the
        names of ``rows_of``, in chunks SQLite takes; each row of a name gets the first item
        found for it."""
        names = list(rows_of)
        for lo in range(0, len(names), _IN):
            chunk = names[lo : lo + _IN]
            for name, item_id, prompt, negative in self.conn.execute(
                f"{select} IN ({','.join('?' * len(chunk))})", chunk
            ):
                for i in rows_of[name]:
                    found.setdefault(i, (item_id, prompt, negative))

    def _build_keys(self) -> None:
        from audit.ingest.archive import wds_key

        self.keys_built = True
        c = self.conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS import_keys (key TEXT NOT NULL, item_id TEXT NOT NULL)")
        c.execute("DELETE FROM temp.import_keys")
        cur = c.execute(
            "SELECT uri, item_id FROM locations WHERE present = 1 AND item_id IS NOT NULL AND instr(uri, '!/') > 0"
        )
        while rows := cur.fetchmany(50_000):
            batch = []
            for uri, item_id in rows:
                member = uri.rsplit("!/", 1)[1]
                key = wds_key(member)
                batch.append((key, item_id))
                short = key.rsplit("/", 1)[-1]
                if short != key:
                    batch.append((short, item_id))
            c.executemany("INSERT INTO temp.import_keys VALUES (?,?)", batch)
        c.execute("CREATE INDEX IF NOT EXISTS temp.import_keys_key ON import_keys(key)")

    def close(self) -> None:
        if self.keys_built:
            try:
                self.conn.execute("DROP TABLE IF EXISTS temp.import_keys")
            except Exception:  # noqa: BLE001 - a temp table goes with the connection anyway
                pass


def _normalised(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows divided by their L2 norm, mask of the rows that could be: finite, non-zero)."""
    finite = np.isfinite(v).all(axis=1)
    v = np.where(finite[:, None], v, 0.0).astype(np.float32, copy=False)
    norms = np.linalg.norm(v, axis=1)
    good = finite & (norms > 0)
    out = v / np.where(good, norms, 1.0)[:, None]
    return out, good


def _rows_of(path: Path) -> int:
    try:
        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    except Exception:  # noqa: BLE001 - reported when the part is read
        return 0
