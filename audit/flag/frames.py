"""Later frames of animations in the flag stage (``audit.animation``).

- ``FrameHashDetector``: the policy's PDQ hash lists against every sampled frame after
  frame 0 (``items.frame_pdq``); frame 0 is the item's own PDQ, matched by ``HashDetector``.
  A hit is the same ``hash:ID`` signal with ``frame`` in its detail; the closest frame wins.
  Negative banks stay frame-0 only: a later frame that resembles a known false positive
  must not cancel a hit elsewhere in the animation.
- ``frame_vectors``: the image vectors of the sampled frames (vector space ``frame``) of
  the rows of a flag batch, for ``ConceptDetector``, which scores each concept on the best
  frame and names it.
"""

from __future__ import annotations

import numpy as np

from audit.animation import frame_key, parse_frame_pdq, split_frame_key
from audit.catalog.vectors import FRAME_SPACE
from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext


def wanted(policy) -> bool:
    return bool(policy.hashlists)


class FrameHashDetector:
    name = "frame_hashes"

    def __init__(self, conn) -> None:
        self.conn = conn

    def detect(self, ctx: FlagContext) -> Detections:
        from audit.policy.hashlists import load_hash_bank, match_pdq

        det = Detections()
        if len(ctx) == 0 or not ctx.policy.hashlists:
            return det
        rows, pdqs, quality, frames = [], [], [], []
        by_item = _frame_pdq(self.conn, ctx.item_ids)
        for row, item_id in enumerate(ctx.item_ids):
            for f in by_item.get(item_id, []):
                rows.append(row)
                pdqs.append(f["pdq"])
                quality.append(f.get("quality"))
                frames.append(int(f.get("frame", -1)))
        counts = {}
        if pdqs:
            for hl in ctx.policy.hashlists:
                bank = hl.bank if hl.bank is not None else load_hash_bank(hl.path)
                hits = match_pdq(
                    bank, pdqs, max_distance=hl.pdq_max_distance, min_quality=hl.pdq_min_quality, qualities=quality
                )
                best: dict[int, Signal] = {}
                for at, b, dist in zip(hits.rows.tolist(), hits.bank_index.tolist(), hits.distance.tolist()):
                    row = rows[at]
                    if row in best and best[row].score <= dist:
                        continue
                    best[row] = Signal(
                        "hash_match",
                        f"hash:{hl.id}",
                        float(dist),
                        float(hl.pdq_max_distance),
                        float(hl.pdq_max_distance - dist),
                        {
                            "hash_type": "pdq",
                            "frame": frames[at],
                            "label": bank.pdq_labels[b],
                            "distance": int(dist),
                            "bank_hash": bank.pdq_hex[b],
                            "bank": hl.id,
                            "line": bank.pdq_lines[b],
                            "item_quality": quality[at],
                            "min_quality": hl.pdq_min_quality,
                        },
                    )
                for row, sig in best.items():
                    det.add(row, sig)
                counts[hl.id] = len(best)
        det.stats = {"frames_checked": len(pdqs), "matches": counts}
        return det


def _frame_pdq(conn, item_ids: list[str]) -> dict[str, list[dict]]:
    out = {}
    for start in range(0, len(item_ids), 900):
        chunk = item_ids[start : start + 900]
        marks = ",".join("?" * len(chunk))
        for item_id, text in conn.execute(
            f"SELECT item_id, frame_pdq FROM items WHERE item_id IN ({marks}) AND frame_pdq IS NOT NULL", chunk
        ):
            out[item_id] = parse_frame_pdq(text)
    return out


def frame_vectors(conn, store, model_key: str, item_ids: list[str]) -> dict[int, tuple[list[int], np.ndarray]]:
    """row -> (frame indices, (k, d) unit vectors) for the rows whose sampled frames have
    vectors under ``model_key`` (animations and videos embedded with frames; empty
    otherwise). The frames are those the crawl sampled (``items.frame_pdq``): embed samples
    the same ones (``audit.animation.later_frames``)."""
    if store.count(model_key, FRAME_SPACE) == 0:
        return {}
    row_of = {item_id: row for row, item_id in enumerate(item_ids)}
    keys = [
        frame_key(item_id, f["frame"])
        for item_id, frames in _frame_pdq(conn, item_ids).items()
        for f in frames
        if isinstance(f.get("frame"), int)
    ]
    if not keys:
        return {}
    got, vecs = store.get(model_key, FRAME_SPACE, keys)
    grouped: dict[int, tuple[list[int], list[int]]] = {}
    for at, key in enumerate(got):
        item_id, index = split_frame_key(key)
        idx, ats = grouped.setdefault(row_of[item_id], ([], []))
        idx.append(index)
        ats.append(at)
    return {row: (idx, vecs[ats]) for row, (idx, ats) in grouped.items()}
