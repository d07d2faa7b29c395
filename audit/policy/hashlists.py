"""Hash lists (known items) and negative banks: parsing and matching.

A list is a CSV with columns ``hash_type`` (``pdq``, ``md5``, ``sha256``, ``resource`` or ``vpdq``), ``hash`` and
``label`` (optional). The header is optional and case-insensitive; a UTF-8 BOM, blank lines,
``#`` comment lines and extra columns are tolerated; hex is normalised (case, ``0x``, spaces).
A bad row is an ``InputError`` naming file and line.

PDQ matching follows Meta's HMA: a query hash matches a bank entry within ``max_distance``
bits (31 by default) when the query's PDQ quality is at least ``min_quality`` (50). It is an
exhaustive O(queries x bank) comparison, vectorised: faiss ``IndexBinaryFlat.range_search``
(SIMD popcount, ~2·10^8 pairs in 0.3 s on one core) for larger inputs, else numpy (hashes as
4 x uint64 words, XOR then popcount, in chunks that bound memory). md5 and sha256 entries are
exact-match sets.

``resource`` rows name a model file rather than an image: a hash a generator records for a
checkpoint, LoRA or embedding (A1111 ``Model hash`` / Civitai AutoV2: 10 hex digits,
``Lora hashes`` AutoV3: 12, a full SHA-256, the old 8-digit A1111 hash) or a Civitai AIR
(``urn:air:sd1:lora:civitai:12345@67890``); ``audit.policy.resources`` matches them against
the item's recorded resources.

``vpdq`` rows name a known video by its vPDQ features (a JSON list in the ``hash`` cell);
``audit.policy.vpdq`` parses and matches them (the reference matcher's percentages).

A negative bank is the same file format; a match against it means "known false positive:
suppress findings of this item" (``match_negative``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from audit.errors import InputError
from audit.policy.vpdq import VpdqVideo, parse_vpdq_cell

__all__ = [
    "HASH_LENGTHS",
    "HashBank",
    "PdqMatches",
    "load_hash_bank",
    "parse_hash_bank",
    "pdq_hex_to_array",
    "match_pdq",
    "match_exact",
    "match_negative",
]

HASH_LENGTHS = {"pdq": 64, "md5": 32, "sha256": 64}
_HEX = frozenset("0123456789abcdef")


@dataclass
class HashBank:
    path: str
    pdq: np.ndarray  # (n, 32) uint8, bytes of the 256-bit hashes in Meta's order
    pdq_hex: list[str]
    pdq_labels: list[str]
    pdq_lines: list[int]
    md5: dict[str, str] = field(default_factory=dict)  # hash -> label
    sha256: dict[str, str] = field(default_factory=dict)
    # model-file hashes and Civitai AIRs: (normalised value, label, line)
    resources: list[tuple[str, str, int]] = field(default_factory=list)
    vpdq: list[VpdqVideo] = field(default_factory=list)  # known videos (``audit.policy.vpdq``)

    def __len__(self) -> int:
        return len(self.pdq_hex) + len(self.md5) + len(self.sha256) + len(self.resources) + len(self.vpdq)


class PdqMatches(NamedTuple):
    rows: np.ndarray  # index into the query array
    bank_index: np.ndarray  # index into bank.pdq
    distance: np.ndarray  # Hamming distance in bits


def normalize_hex(value: str) -> str:
    text = "".join(value.split()).lower()
    if text.startswith("0x"):
        text = text[2:]
    return text


def parse_hash_bank(text: str, source: str) -> HashBank:
    """Parse the CSV ``text`` of a hash list; ``source`` names it in errors."""
    if text.startswith("\ufeff"):
        text = text[1:]
    pdq_hex: list[str] = []
    pdq_labels: list[str] = []
    pdq_lines: list[int] = []
    md5: dict[str, str] = {}
    sha: dict[str, str] = {}
    resources: list[tuple[str, str, int]] = []
    videos: list[VpdqVideo] = []
    columns: dict[str, int] | None = None
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if columns is None:
            lowered = [c.lower() for c in cells]
            if "hash_type" in lowered or "hash" in lowered:
                missing = [name for name in ("hash_type", "hash") if name not in lowered]
                if missing:
                    raise InputError(
                        f"{source}:{line}: header lacks column {missing[0]!r} (columns: hash_type, hash, label)"
                    )
                columns = {name: lowered.index(name) for name in ("hash_type", "hash", "label") if name in lowered}
                continue
            columns = {"hash_type": 0, "hash": 1, "label": 2}
        try:
            kind = cells[columns["hash_type"]].lower()
            value = normalize_hex(cells[columns["hash"]])
        except IndexError:
            raise InputError(
                f"{source}:{line}: expected columns hash_type, hash, label; got {len(cells)} column(s)"
            ) from None
        label_at = columns.get("label")
        label = cells[label_at] if label_at is not None and label_at < len(cells) else ""
        if kind == "resource":
            from audit.policy.resources import normalize_resource_hash

            normalised = normalize_resource_hash(cells[columns["hash"]])
            if normalised is None:
                raise InputError(
                    f"{source}:{line}: hash: a resource hash must be 8 to 64 hex digits "
                    f"or a Civitai AIR (urn:air:...:civitai:ID@VERSION), got "
                    f"{cells[columns['hash']]!r}"
                )
            resources.append((normalised, label, line))
            continue
        if kind == "vpdq":
            try:
                features = parse_vpdq_cell(cells[columns["hash"]])
            except ValueError as exc:
                raise InputError(f"{source}:{line}: hash: {exc}") from None
            videos.append(VpdqVideo(label, line, tuple(f[0] for f in features), tuple(f[1] for f in features)))
            continue
        if kind not in HASH_LENGTHS:
            raise InputError(f"{source}:{line}: hash_type {kind!r} is not one of pdq, md5, sha256, resource, vpdq")
        if len(value) != HASH_LENGTHS[kind] or not set(value) <= _HEX:
            raise InputError(
                f"{source}:{line}: hash: {kind} must be {HASH_LENGTHS[kind]} hex digits, got {cells[columns['hash']]!r}"
            )
        if kind == "pdq":
            pdq_hex.append(value)
            pdq_labels.append(label)
            pdq_lines.append(line)
        elif kind == "md5":
            md5.setdefault(value, label)
        else:
            sha.setdefault(value, label)
    array = pdq_hex_to_array(pdq_hex)
    return HashBank(source, array, pdq_hex, pdq_labels, pdq_lines, md5, sha, resources, videos)


def load_hash_bank(path: str | Path, *, display: str | None = None) -> HashBank:
    display = display or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{display}: cannot read hash list: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{display}: hash list is not UTF-8 ({exc.reason})") from None
    return parse_hash_bank(text, display)


def pdq_hex_to_array(hashes: Iterable[str | None]) -> np.ndarray:
    """(n, 32) uint8 array of PDQ hex strings; a missing or malformed hash becomes all-zero."""
    hashes = list(hashes)
    out = np.zeros((len(hashes), 32), dtype=np.uint8)
    for i, value in enumerate(hashes):
        if value and len(value) == 64:
            try:
                out[i] = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
            except ValueError:
                pass
    return out


def _valid_mask(hashes: Sequence[str | None]) -> np.ndarray:
    mask = np.zeros(len(hashes), dtype=bool)
    for i, value in enumerate(hashes):
        if value and len(value) == 64:
            mask[i] = set(value.lower()) <= _HEX
    return mask


if hasattr(np, "bitwise_count"):

    def _popcount64(words: np.ndarray) -> np.ndarray:
        return np.bitwise_count(words)
else:  # pragma: no cover - numpy < 2.0
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount64(words: np.ndarray) -> np.ndarray:
        return _POP8[words.view(np.uint8)].reshape(*words.shape, 8).sum(-1, dtype=np.uint8)


def _distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(queries).view(np.uint64)  # (m, 4)
    b = np.ascontiguousarray(bank).view(np.uint64)  # (n, 4)
    dist = _popcount64(q[:, 0:1] ^ b[None, :, 0]).astype(np.uint16)
    for word in range(1, 4):
        dist += _popcount64(q[:, word : word + 1] ^ b[None, :, word])
    return dist


def _faiss_range(queries: np.ndarray, bank: np.ndarray, max_distance: int):
    """faiss IndexBinaryFlat range search (SIMD popcount), or None without faiss."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        return None
    index = faiss.IndexBinaryFlat(256)
    index.add(np.ascontiguousarray(bank, dtype=np.uint8))
    # faiss returns distances strictly below the radius
    lims, dist, ids = index.range_search(np.ascontiguousarray(queries, dtype=np.uint8), int(max_distance) + 1)
    rows = np.repeat(np.arange(len(queries)), np.diff(lims).astype(np.int64))
    return rows, ids.astype(np.int64), dist.astype(np.int64)


def match_pdq(
    bank: HashBank | np.ndarray,
    pdq: Sequence[str | None] | np.ndarray,
    max_distance: int = 31,
    min_quality: int = 50,
    qualities: Sequence[int | None] | np.ndarray | None = None,
    *,
    chunk_cells: int = 1_000_000,
    use_faiss: bool = True,
) -> PdqMatches:
    """Every (query row, bank entry) pair within ``max_distance`` bits.

    ``pdq``: PDQ hex strings (``None`` or malformed: no hash, never matches) or an (m, 32)
    uint8 array. ``qualities``: the queries' PDQ quality; rows under ``min_quality`` are
    skipped (``None`` quality counts as unknown and is kept). Sorted by row, then distance.
    """
    bank_array = bank.pdq if isinstance(bank, HashBank) else np.asarray(bank, dtype=np.uint8)
    if isinstance(pdq, np.ndarray):
        queries = np.asarray(pdq, dtype=np.uint8).reshape(-1, 32)
        valid = np.ones(len(queries), dtype=bool)
    else:
        pdq = list(pdq)
        queries = pdq_hex_to_array(pdq)
        valid = _valid_mask(pdq)
    if qualities is not None:
        qual = np.array([-1 if q is None else q for q in qualities], dtype=np.int64)
        valid &= (qual < 0) | (qual >= min_quality)
    empty = PdqMatches(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(bank_array) == 0 or not valid.any():
        return empty
    rows_valid = np.flatnonzero(valid)
    found = None
    if use_faiss and len(rows_valid) * len(bank_array) > 100_000:
        found = _faiss_range(queries[rows_valid], bank_array, max_distance)
    if found is not None:
        r, bidx, dist = found
        rows = rows_valid[r].astype(np.int64)
    else:
        step = max(1, chunk_cells // max(1, len(bank_array)))
        out_r, out_b, out_d = [], [], []
        for i in range(0, len(rows_valid), step):
            chunk = rows_valid[i : i + step]
            d = _distances(queries[chunk], bank_array)
            r, b = np.nonzero(d <= max_distance)
            out_r.append(chunk[r])
            out_b.append(b)
            out_d.append(d[r, b].astype(np.int64))
        rows = np.concatenate(out_r).astype(np.int64)
        bidx = np.concatenate(out_b).astype(np.int64)
        dist = np.concatenate(out_d)
    order = np.lexsort((bidx, dist, rows))
    return PdqMatches(rows[order], bidx[order], dist[order])


def match_exact(
    bank: HashBank, md5: Sequence[str | None] | None = None, sha256: Sequence[str | None] | None = None
) -> list[tuple[int, str, str, str]]:
    """``[(row, hash_type, hash, label)]`` for exact md5/sha256 matches."""
    out = []
    for kind, values, table in (("md5", md5, bank.md5), ("sha256", sha256, bank.sha256)):
        if not values or not table:
            continue
        for row, value in enumerate(values):
            if value:
                value = normalize_hex(value)
                if value in table:
                    out.append((row, kind, value, table[value]))
    out.sort()
    return out


def match_negative(
    bank: HashBank,
    pdq: Sequence[str | None] | np.ndarray,
    max_distance: int = 31,
    *,
    md5: Sequence[str | None] | None = None,
    sha256: Sequence[str | None] | None = None,
) -> np.ndarray:
    """Boolean mask over the query rows: True where the item is a known false positive.

    Quality is not applied: a negative entry suppresses by closeness alone.
    """
    n = len(pdq)
    mask = np.zeros(n, dtype=bool)
    hits = match_pdq(bank, pdq, max_distance=max_distance, min_quality=0)
    mask[hits.rows] = True
    for row, _kind, _hash, _label in match_exact(bank, md5, sha256):
        mask[row] = True
    return mask
