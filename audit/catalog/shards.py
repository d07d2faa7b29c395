"""Vector shard files: raw little-endian fp16 rows, written once, never changed.

A shard is ``<index>/vectors/<model-slug>/<space>/<shard-id>.f16``: ``rows × dim`` values
of ``<f2`` with no header, so ``numpy.memmap`` reads it as it lies on disk. It is written
to a temporary name beside it, fsynced, renamed into place and the folder fsynced; only
then does the catalog commit the row that names it (with its size and SHA-256). A file
that no committed row names is left over from a crash: ``orphans`` finds such files (only
names of the shard and temporary patterns, only in vector folders), for the writer to
delete while it holds the catalog's write lock.

fp16 and not fp32: CLIP vectors are unit vectors whose components lie far inside fp16's
range; rounding each component to 11 significant bits keeps the cosine to the fp32 vector
above 0.9999 (measured in ``tests/test_vector_store.py``), at half the bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from audit.safeio import fsync_dir
from audit.errors import raise_storage_error

VECTORS_DIR = "vectors"
DTYPE = np.dtype("<f2")
SHARD_SUFFIX = ".f16"
SHARD_NAME = re.compile(r"^\d{8,}\.f16$")
TMP_NAME = re.compile(r"^\.\d{8,}\.f16\.tmp-[0-9a-f]+$")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
WRITE_CHUNK = 1 << 16  # rows per write (and per hash update) while streaming a shard out


def model_slug(model_key: str) -> str:
    """A folder name for a model key: readable, and unique through a short hash of the key."""
    readable = _SLUG_UNSAFE.sub("_", model_key).strip("._")[:60] or "model"
    return f"{readable}-{hashlib.sha256(model_key.encode()).hexdigest()[:8]}"


def shard_relpath(model_key: str, space: str, shard_id: int) -> str:
    """Path of a shard relative to the index folder (what the catalog records)."""
    return f"{VECTORS_DIR}/{model_slug(model_key)}/{space}/{shard_id:08d}{SHARD_SUFFIX}"


def write_shard(path: Path, chunks: Iterable[np.ndarray]) -> tuple[int, str]:
    """Write fp16 row blocks to ``path`` atomically and durably; (bytes, sha256).

    Temporary file → write → fsync → rename → fsync folder: after a crash the file is
    either absent or whole (an uncommitted whole file is an orphan for the next writer)."""
    folder = path.parent
    tmp = folder / f".{path.name}.tmp-{secrets.token_hex(4)}"
    digest = hashlib.sha256()
    size = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            for block in chunks:
                data = np.ascontiguousarray(block, dtype=DTYPE).tobytes()
                digest.update(data)
                f.write(data)
                size += len(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(folder)
    except BaseException as exc:
        for p in (tmp,):
            try:
                os.unlink(p)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise_storage_error(exc, path)
        raise
    return size, digest.hexdigest()


def to_fp16(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).astype(DTYPE)


def open_shard(path: Path, rows: int, dim: int) -> np.ndarray:
    """A read-only memory map of a shard's ``rows × dim`` fp16 values."""
    if rows == 0:
        return np.zeros((0, dim), dtype=DTYPE)
    return np.memmap(path, dtype=DTYPE, mode="r", shape=(rows, dim))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def orphans(index_dir: Path, referenced: set[str]) -> Iterator[Path]:
    """Shard and temporary files under ``<index>/vectors/*/*/`` that ``referenced``
    (paths relative to the index folder) does not name. Nothing else is ever listed."""
    root = index_dir / VECTORS_DIR
    try:
        models = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return
    for model in models:
        if not model.is_dir(follow_symlinks=False):
            continue
        for space in os.scandir(model.path):
            if not space.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(space.path):
                if not entry.is_file(follow_symlinks=False):
                    continue
                rel = f"{VECTORS_DIR}/{model.name}/{space.name}/{entry.name}"
                if TMP_NAME.match(entry.name) or (SHARD_NAME.match(entry.name) and rel not in referenced):
                    yield Path(entry.path)
