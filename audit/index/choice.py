"""Which FAISS index to build for ``n`` vectors of dimension ``d`` within a memory budget.

The rules follow autofaiss: exact search while it is cheap, then an inverted file (IVF)
whose code size is the largest that fits the budget::

    n < flat_below (50,000)            Flat      exact inner product, 4·d bytes/vector
    otherwise, first that fits:        IVF{nlist},Flat    4·d bytes/vector
                                       IVF{nlist},SQ8     d bytes/vector
                                       IVF{nlist},PQ{m}   m bytes/vector, m = d/2, d/4, ... 8

with ``nlist ≈ 4·sqrt(n)`` and a training sample of ~40 vectors per list. HNSW (or any
FAISS factory string) can be forced with ``index_type=``; it is never chosen by default
because it cannot be trained on a sample nor grown cheaply on two CPU cores.

Every estimate also counts what the index keeps beside the codes: the id → key mapping
(bytes per key) and the IVF ids (8 bytes per vector) plus the coarse centroids.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from audit.errors import UsageError

FLAT_BELOW = 50_000
TRAIN_PER_LIST = 40
MIN_NLIST = 16
KEY_BYTES = 64  # item ids and prompt keys are SHA-256 hex
DEFAULT_MEMORY_BUDGET = 4 * 1024**3


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # flat | ivf | hnsw | custom
    factory: str  # faiss.index_factory string
    codec: str  # Flat | SQ8 | PQ64 | HNSW32 | ...
    nlist: int  # inverted lists (0 when not IVF)
    train_n: int  # vectors to train on (0: no training)
    bytes_per_vector: float
    estimated_bytes: int
    fits_budget: bool
    reason: str

    @property
    def family(self) -> str:
        """What decides whether an index can grow in place: kind and codec, not nlist."""
        return f"{self.kind}:{self.codec}"

    def to_dict(self) -> dict:
        return {**asdict(self), "family": self.family}


def parse_size(text: str | int | float | None) -> int:
    """``"4GB"``, ``"512MiB"``, ``"1.5g"``, ``2e9`` → bytes (binary multiples for G/M/K)."""
    if text is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(i?b?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise UsageError(f"cannot read memory size {text!r} (expected e.g. 4GB, 512MB, 2e9)")
    value = float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower())
    if value <= 0:
        raise UsageError(f"memory size must be positive, got {text!r}")
    return int(value)


def nlist_for(n: int) -> int:
    """≈ 4·sqrt(n) lists, never more than n/TRAIN_PER_LIST (each list needs training points)."""
    return max(MIN_NLIST, min(int(4 * math.sqrt(max(n, 1))), max(n // TRAIN_PER_LIST, MIN_NLIST)))


def _pq_sizes(d: int) -> list[int]:
    sizes, m = [], d // 2
    while m >= 8:
        if d % m == 0:
            sizes.append(m)
        m //= 2
    return sizes


def choose_index(
    n: int,
    d: int,
    memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
    *,
    flat_below: int = FLAT_BELOW,
    index_type: str | None = None,
) -> IndexSpec:
    """The index for ``n`` vectors of dimension ``d`` that fits ``memory_budget`` bytes."""
    budget = parse_size(memory_budget)
    if index_type:
        return _forced(index_type, n, d, budget)
    if n < flat_below:
        per = 4 * d + KEY_BYTES
        est = int(n * per)
        return IndexSpec(
            "flat", "Flat", "Flat", 0, 0, per, est, est <= budget, f"{n:,} vectors < {flat_below:,}: exact search"
        )
    nlist = nlist_for(n)
    train_n = min(n, TRAIN_PER_LIST * nlist)
    fixed = nlist * d * 4 + train_n * d * 4  # centroids + the training sample held while building
    candidates = [("Flat", 4 * d), ("SQ8", d)] + [(f"PQ{m}", m) for m in _pq_sizes(d)]
    for codec, code in candidates:
        per = code + 8 + KEY_BYTES
        est = int(n * per + fixed)
        if est <= budget:
            return IndexSpec(
                "ivf",
                f"IVF{nlist},{codec}",
                codec,
                nlist,
                train_n,
                per,
                est,
                True,
                f"{n:,} vectors, {codec} codes fit {_fmt(budget)} (≈{_fmt(est)})",
            )
    codec, code = candidates[-1]
    per = code + 8 + KEY_BYTES
    est = int(n * per + fixed)
    return IndexSpec(
        "ivf",
        f"IVF{nlist},{codec}",
        codec,
        nlist,
        train_n,
        per,
        est,
        False,
        f"{n:,} vectors do not fit {_fmt(budget)} even as {codec} (≈{_fmt(est)}); using the smallest codes",
    )


def _forced(index_type: str, n: int, d: int, budget: int) -> IndexSpec:
    t = index_type.strip()
    low = t.lower()
    if low == "flat":
        per = 4 * d + KEY_BYTES
        est = int(n * per)
        return IndexSpec("flat", "Flat", "Flat", 0, 0, per, est, est <= budget, "forced: flat")
    m = re.fullmatch(r"hnsw(\d*)", low)
    if m:
        links = int(m.group(1) or 32)
        per = 4 * d + links * 2 * 4 * 1.1 + KEY_BYTES
        est = int(n * per)
        return IndexSpec(
            "hnsw", f"HNSW{links},Flat", f"HNSW{links}", 0, 0, per, est, est <= budget, f"forced: HNSW{links}"
        )
    m = re.fullmatch(r"ivf(?:(\d+))?,?(flat|sq8|pq(\d+))?", low)
    if m:
        nlist = int(m.group(1)) if m.group(1) else nlist_for(n)
        codec = (m.group(2) or "flat").upper().replace("FLAT", "Flat")
        code = 4 * d if codec == "Flat" else d if codec == "SQ8" else int(m.group(3))
        if codec.startswith("PQ") and d % code:
            raise UsageError(f"PQ{code} needs a dimension divisible by {code}; the vectors have {d}")
        per = code + 8 + KEY_BYTES
        train_n = min(n, TRAIN_PER_LIST * nlist)
        est = int(n * per + nlist * d * 4 + train_n * d * 4)
        return IndexSpec(
            "ivf", f"IVF{nlist},{codec}", codec, nlist, train_n, per, est, est <= budget, f"forced: IVF{nlist},{codec}"
        )
    raise UsageError(f"unknown index type {index_type!r} (use flat, hnsw[M], ivf[NLIST][,flat|sq8|pqM])")


def _fmt(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b} B"  # pragma: no cover
