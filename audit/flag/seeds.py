"""Seed expansion: the nearest image neighbours of items a reviewer confirmed.

As in the LAION-5B audit, most hits are found next to confirmed ones; as on Civitai, only
human-confirmed items seed (``audit.review.confirmed_items``), so automatic flags never feed
the seed set. Each seed's ``k`` nearest neighbours (exact inner product over the archive's
image vectors, O(seeds · n · d)) with cosine ≥ ``min_cosine`` get a ``seed_neighbor`` signal
in the seed's categories: those named by the confirming decision, else the categories the
seed itself is flagged in, else ``seed-neighbor``.

A neighbour must satisfy each category's flag like any other item; only the image-similarity
part may come from the seed (``screen_seed_signals``): a combination category whose other
condition (a prompt rule) the neighbour does not meet is not given to it. Dismissals count as
evidence too: a neighbour dismissed in the category, or nearer to an item dismissed in it
than to the seed, gets no seed signal there.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from audit.findings.store import Signal
from audit.flag.base import margin
from audit.review import Decision

SEED_CATEGORY = "seed-neighbor"  # category of seed neighbours when the seed has none
SEED_SEVERITY = "high"


def seed_neighbor_signals(
    confirmed: Mapping[str, list[Decision]],
    item_ids: Sequence[str],
    vectors: np.ndarray,
    seed_categories: Mapping[str, set[str]],
    known_categories: set[str],
    *,
    k: int = 10,
    min_cosine: float = 0.9,
    suppressed: Mapping[str, set[str]] | None = None,
) -> list[tuple[str, str, Signal]]:
    """``[(item_id, category, signal)]`` for the neighbours of every confirmed item that has a
    vector. ``item_ids`` and ``vectors`` are aligned (unit rows); ``seed_categories``: the
    categories each item is flagged in now; ``suppressed``: item → categories a negative bank
    suppresses ("*": all)."""
    import faiss

    row_of = {item_id: i for i, item_id in enumerate(item_ids)}
    seeds = [s for s in confirmed if s in row_of]
    if not seeds or len(item_ids) < 2:
        return []
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    scores, nbrs = index.search(vectors[[row_of[s] for s in seeds]], min(k + 1, len(item_ids)))
    suppressed = suppressed or {}
    out = []
    for si, seed in enumerate(seeds):
        decisions = confirmed[seed]
        cats = {d.category for d in decisions if d.category and d.category in known_categories}
        cats = cats or (set(seed_categories.get(seed, set())) & known_categories) or {SEED_CATEGORY}
        ranked = [
            (float(score), item_ids[nb]) for score, nb in zip(scores[si], nbrs[si]) if nb >= 0 and item_ids[nb] != seed
        ][:k]
        out += signals_for_seed(seed, ranked, decisions, cats, min_cosine=min_cosine, suppressed=suppressed)
    return out


# ------------------------------------------------------------------------------ streaming


def top_neighbors(
    seed_ids: Sequence[str],
    seed_vecs: np.ndarray,
    blocks,
    k: int,
    best: dict[str, list[tuple[float, str]]] | None = None,
) -> dict[str, list[tuple[float, str]]]:
    """Each seed's ``k`` nearest other items over ``blocks`` of (ids, vectors), merged into
    ``best`` (score descending, ties by item id): exact, one block product at a time."""
    best = {s: list((best or {}).get(s, [])) for s in seed_ids}
    if not len(seed_ids):
        return best
    q = np.ascontiguousarray(seed_vecs, dtype=np.float32)
    for ids, x in blocks:
        if not len(ids):
            continue
        sim = q @ np.ascontiguousarray(x, dtype=np.float32).T
        take = min(k + 1, sim.shape[1])
        top = (
            np.argpartition(-sim, take - 1, axis=1)[:, :take]
            if take < sim.shape[1]
            else np.tile(np.arange(sim.shape[1]), (len(seed_ids), 1))
        )
        for si, seed in enumerate(seed_ids):
            cand = [(float(sim[si, j]), ids[j]) for j in top[si] if ids[j] != seed]
            have = {item for _, item in best[seed]}
            merged = best[seed] + [c for c in cand if c[1] not in have]
            merged.sort(key=lambda t: (-t[0], t[1]))
            best[seed] = merged[:k]
    return best


def signals_for_seed(
    seed: str,
    neighbors: list[tuple[float, str]],
    decisions: list[Decision],
    cats: set[str],
    *,
    min_cosine: float,
    suppressed: Mapping[str, set[str]],
) -> list[tuple[str, str, Signal]]:
    """The ``seed_neighbor`` signals of one seed's ranked neighbours (as ``seed_neighbor_signals``)."""
    last = decisions[-1]
    out = []
    for rank, (score, item_id) in enumerate(neighbors, start=1):
        if score < min_cosine:
            continue
        sup = suppressed.get(item_id, set())
        for cat in sorted(cats):
            if "*" in sup or cat in sup:
                continue
            out.append(
                (
                    item_id,
                    cat,
                    Signal(
                        "seed_neighbor",
                        f"seed:{seed[:16]}",
                        round(float(score), 6),
                        min_cosine,
                        round(margin(score, min_cosine), 6),
                        {
                            "seed_item_id": seed,
                            "rank": rank,
                            "space": "image",
                            "decision_id": last.decision_id,
                            "decided_by": last.decided_by,
                        },
                    ),
                )
            )
    return out


def screen_seed_signals(
    policy,
    signals: list[tuple[str, str, Signal]],
    fired: Mapping[str, set[str]],
    labels: Mapping[tuple[str, str], tuple[int, int]],
    nearest_dismissed: Mapping[tuple[str, str], float],
) -> tuple[list, dict]:
    """The seed signals a neighbour may carry, and counts of those dropped by reason.

    ``fired``: each neighbour's own signal names (``audit.flag.combine.fired_names``);
    ``labels``: (item, category) -> (1 confirm / 0 dismiss, decision id);
    ``nearest_dismissed``: (item, category) -> cosine to the nearest item dismissed in it."""
    from audit.flag.combine import fires_with_image_evidence

    keep, dropped = [], {"flag_not_met": 0, "dismissed": 0, "nearer_dismissed": 0}
    for item_id, cat, sig in signals:
        if (
            cat != SEED_CATEGORY
            and policy.flags
            and not fires_with_image_evidence(policy, cat, fired.get(item_id, set()))
        ):
            dropped["flag_not_met"] += 1
        elif labels.get((item_id, cat), (1, 0))[0] == 0:
            dropped["dismissed"] += 1
        elif nearest_dismissed.get((item_id, cat), -2.0) > sig.score:
            dropped["nearer_dismissed"] += 1
        else:
            keep.append((item_id, cat, sig))
    return keep, dropped
