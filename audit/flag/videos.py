"""Known videos in the flag stage: each video's vPDQ (``items.video_hash``, computed at crawl
by ``audit.video``) against the ``vpdq`` rows of the policy's hash lists.

The matching is vpdq's reference brute matcher (``audit.policy.vpdq``): per-frame PDQ within
the list's ``pdq_max_distance``, frames under ``pdq_min_quality`` left out, and a match when the
query match percentage is at least ``vpdq_query_match`` and the compared one at least
``vpdq_compared_match``. A hit is the list's ``hash:ID`` signal (kind ``hash_match``, so the
list's category fires as for an image hash) with score = query match %, threshold = the
list's ``vpdq_query_match``, margin = score - threshold, and both percentages, the frame
counts, the time of the first matching frame and the listed video's label and line in its
detail; the listed video with the best query percentage wins. Asked for (``extra.py``) only
when a hash list of the policy holds vpdq rows.
"""

from __future__ import annotations

from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext


def wanted(policy) -> bool:
    return any(h.bank is not None and h.bank.vpdq for h in policy.hashlists)


class VideoHashDetector:
    name = "video_hashes"

    def __init__(self, conn) -> None:
        self.conn = conn
        self._indexes: dict[tuple[str, int], object] = {}  # (list id, min quality) -> VpdqIndex

    def detect(self, ctx: FlagContext) -> Detections:
        from audit.policy.hashlists import load_hash_bank
        from audit.policy.vpdq import VpdqIndex, features_of_video_hash

        det = Detections()
        lists = [h for h in ctx.policy.hashlists if h.bank is None or h.bank.vpdq]
        if len(ctx) == 0 or not lists:
            return det
        hashes = self._video_hashes(ctx.item_ids)
        counts: dict[str, int] = {}
        for hl in lists:
            key = (hl.id, hl.pdq_min_quality)
            index = self._indexes.get(key)
            if index is None:
                bank = hl.bank if hl.bank is not None else load_hash_bank(hl.path)
                index = self._indexes[key] = VpdqIndex(bank.vpdq, hl.pdq_min_quality)
            hits = 0
            for row, item_id in enumerate(ctx.item_ids):
                features = features_of_video_hash(hashes.get(item_id))
                if not features:
                    continue
                for m in index.match(features, hl.pdq_max_distance):
                    if m.query_percent < hl.vpdq_query_match or m.compared_percent < hl.vpdq_compared_match:
                        continue
                    video = index.videos[m.video]
                    det.add(
                        row,
                        Signal(
                            "hash_match",
                            f"hash:{hl.id}",
                            round(m.query_percent, 2),
                            float(hl.vpdq_query_match),
                            round(m.query_percent - hl.vpdq_query_match, 2),
                            {
                                "hash_type": "vpdq",
                                "label": video.label,
                                "bank": hl.id,
                                "line": video.line,
                                "query_match_percent": round(m.query_percent, 2),
                                "compared_match_percent": round(m.compared_percent, 2),
                                "query_match_threshold": hl.vpdq_query_match,
                                "compared_match_threshold": hl.vpdq_compared_match,
                                "query_frames": m.query_frames,
                                "compared_frames": m.compared_frames,
                                "first_match_ms": m.first_query_ms,
                                "max_distance": hl.pdq_max_distance,
                                "min_quality": hl.pdq_min_quality,
                            },
                        ),
                    )
                    hits += 1
                    break  # best first: one signal per list and video
            counts[hl.id] = hits
        det.stats = {"videos_checked": sum(1 for i in ctx.item_ids if hashes.get(i)), "matches": counts}
        return det

    def _video_hashes(self, item_ids: list[str]) -> dict[str, str]:
        out = {}
        for start in range(0, len(item_ids), 900):
            chunk = item_ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for item_id, text in self.conn.execute(
                f"SELECT item_id, video_hash FROM items WHERE item_id IN ({marks}) AND video_hash IS NOT NULL", chunk
            ):
                out[item_id] = text
        return out
