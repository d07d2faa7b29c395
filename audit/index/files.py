"""FAISS index files on disk, saved atomically with their id → key mapping.

Layout under ``<index dir>/faiss/<model key made filesystem-safe>/``::

    image.json                 manifest: the commit point (names the files below)
    image.000007.faiss         the FAISS index (ids 0..n-1, in the order added)
    image.000007.keys.npy      key of id i at row i (item_id for images, prompt key for prompts)
    prompt.json, prompt.000003.faiss, prompt.000003.keys.npy

A save writes a new *generation*: both data files go to temporary names, are fsynced and
renamed into place, then the manifest (with the vector count, sizes and SHA-256 of both
files) is written the same way; replacing the manifest is the single atomic switch. A
writer killed at any moment leaves the previous manifest naming the previous, untouched
files, so the old index stays loadable; leftovers of the dead writer are removed by the
next save. Loading checks the manifest against the files (count and sizes always, SHA-256
on request) and raises ``IndexCorrupt`` on any mismatch, which ``audit index`` answers by
rebuilding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import InputError

FORMAT_VERSION = 1
FAISS_DIR = "faiss"


class IndexCorrupt(InputError):
    """The manifest and the files it names disagree (disk damage or a foreign edit)."""


def safe_name(model_key: str) -> str:
    """A directory name for a model key: readable, filesystem-safe and collision-free."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key).strip("._")[:80] or "model"
    return f"{readable}-{hashlib.sha256(model_key.encode()).hexdigest()[:8]}"


def model_dir(index_dir: Path, model_key: str) -> Path:
    return Path(index_dir) / FAISS_DIR / safe_name(model_key)


@dataclass
class Manifest:
    model_key: str
    space: str
    dim: int
    n: int
    generation: int
    index_file: str
    keys_file: str
    index_size: int
    index_sha256: str
    keys_size: int
    keys_sha256: str
    spec: dict[str, Any]  # IndexSpec.to_dict() of the index as built
    params: dict[str, Any] = field(default_factory=dict)  # search parameters: nprobe / efSearch
    built_n: int = 0  # vectors when the index was last (re)built and trained
    tuned_recall: float | None = None  # recall@10 vs exact on the tuning queries at ``params``
    built: str = ""
    updated: str = ""
    faiss_version: str = ""
    format_version: int = FORMAT_VERSION
    metric: str = "inner_product"  # vectors are L2-normalised: inner product = cosine

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def manifest_path(index_dir: Path, model_key: str, space: str) -> Path:
    return model_dir(index_dir, model_key) / f"{space}.json"


def read_manifest(index_dir: Path, model_key: str, space: str) -> Manifest | None:
    path = manifest_path(index_dir, model_key, space)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"unreadable index manifest {path}: {exc}") from None
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(f"index {path} was written by a newer audit (format {data['format_version']})")
    try:
        return Manifest(**data)
    except TypeError as exc:
        raise IndexCorrupt(f"index manifest {path} is incomplete: {exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write) -> tuple[int, str]:
    """Write via ``write(fileobj)`` to a temp file beside ``path``, fsync, rename; (size, sha256)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        size, digest = file_digest(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return size, digest


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def encode_keys(keys: list[str] | np.ndarray) -> np.ndarray:
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        return keys
    return np.array([k.encode("utf-8") for k in keys], dtype="S") if len(keys) else np.zeros(0, dtype="S64")


def save_index(index_dir: Path, manifest: Manifest, index, keys: np.ndarray) -> Manifest:
    """Write ``index`` and ``keys`` as a new generation and switch the manifest to it."""
    import faiss

    keys = encode_keys(keys)
    if index.ntotal != len(keys):
        raise ValueError(f"index holds {index.ntotal} vectors but {len(keys)} keys were given")
    d = model_dir(index_dir, manifest.model_key)
    d.mkdir(parents=True, exist_ok=True)
    old = read_manifest(index_dir, manifest.model_key, manifest.space)
    gen = max(manifest.generation, (old.generation if old else 0)) + 1
    stem = f"{manifest.space}.{gen:06d}"
    index_file, keys_file = f"{stem}.faiss", f"{stem}.keys.npy"

    def write_index(f):
        # streamed to the file: serialize_index would hold one (or two) more copies of an
        # index of several GB in memory at once
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))

    index_size, index_sha = _write_durably(d / index_file, write_index)
    keys_size, keys_sha = _write_durably(d / keys_file, lambda f: np.save(f, keys, allow_pickle=False))
    _fsync_dir(d)
    manifest.generation = gen
    manifest.n = int(index.ntotal)
    manifest.index_file, manifest.keys_file = index_file, keys_file
    manifest.index_size, manifest.index_sha256 = index_size, index_sha
    manifest.keys_size, manifest.keys_sha256 = keys_size, keys_sha
    manifest.faiss_version = faiss.__version__
    body = json.dumps(manifest.to_dict(), indent=2, sort_keys=True).encode()
    _write_durably(d / f"{manifest.space}.json", lambda f: f.write(body))
    _fsync_dir(d)
    _remove_stale(d, manifest.space, keep={index_file, keys_file})
    return manifest


def _remove_stale(d: Path, space: str, keep: set[str]) -> None:
    """Older generations and temp files of dead writers. Readers that still hold the old
    manifest retry once (see ``load_index``)."""
    for p in d.iterdir():
        name = p.name
        ours = name.startswith(f"{space}.") or name.startswith(f".{space}.")
        if ours and name not in keep and name != f"{space}.json":
            try:
                p.unlink()
            except OSError:
                pass


def load_index(index_dir: Path, model_key: str, space: str, *, verify: bool = False, mmap: bool = False):
    """(manifest, faiss index, keys) or None when no index was built; ``IndexCorrupt`` on mismatch."""
    for attempt in range(3):
        manifest = read_manifest(index_dir, model_key, space)
        if manifest is None:
            return None
        try:
            return manifest, *_load_files(index_dir, manifest, verify=verify, mmap=mmap)
        except FileNotFoundError:
            # a writer replaced the generation between our reads of manifest and files
            if attempt == 2:
                raise IndexCorrupt(
                    f"index files named by {manifest_path(index_dir, model_key, space)} are missing"
                ) from None
    return None  # pragma: no cover


def _load_files(index_dir: Path, m: Manifest, *, verify: bool, mmap: bool):
    import faiss

    d = model_dir(index_dir, m.model_key)
    ipath, kpath = d / m.index_file, d / m.keys_file
    for path, size, digest in ((ipath, m.index_size, m.index_sha256), (kpath, m.keys_size, m.keys_sha256)):
        actual = path.stat().st_size
        if actual != size:
            raise IndexCorrupt(f"{path} has {actual} bytes, its manifest says {size}; rebuild with `audit index`")
        if verify and file_digest(path)[1] != digest:
            raise IndexCorrupt(f"{path} does not match the SHA-256 in its manifest; rebuild with `audit index`")
    try:
        index = faiss.read_index(str(ipath), faiss.IO_FLAG_MMAP if mmap else 0)
        keys = np.load(kpath, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError for damaged files
        if not ipath.exists() or not kpath.exists():
            raise FileNotFoundError(ipath) from None
        raise IndexCorrupt(f"cannot read index {ipath}: {exc}; rebuild with `audit index`") from None
    if index.ntotal != m.n or len(keys) != m.n or index.d != m.dim:
        raise IndexCorrupt(
            f"index {ipath} holds {index.ntotal} vectors and {len(keys)} keys, its manifest says {m.n}; "
            "rebuild with `audit index`"
        )
    return index, keys
