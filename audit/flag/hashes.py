"""Hash-bank detector: the policy's hash lists (known items) and negative banks.

PDQ entries match within the list's ``pdq_max_distance`` bits when the item's PDQ quality is
at least ``pdq_min_quality`` (Meta HMA's rule); md5 and sha256 entries match exactly (the
item id is the SHA-256 of the bytes). A signal (kind ``hash_match``, name ``hash:ID``) carries
the distance as score, the maximum distance as threshold, margin = threshold - distance, and
the bank label, entry line and hash type in its detail; the closest entry wins.

A negative bank match marks the item a known false positive: the categories the bank
``suppresses`` (every category when empty) are dropped for it, whatever the signals.
"""

from __future__ import annotations

from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext


class HashDetector:
    name = "hashes"

    def detect(self, ctx: FlagContext) -> Detections:
        from audit.policy.hashlists import load_hash_bank, match_exact, match_pdq

        det = Detections()
        if len(ctx) == 0:
            return det
        policy = ctx.policy
        sha = list(ctx.item_ids)
        counts = {}
        for hl in (*policy.hashlists, *policy.negative_banks):
            bank = hl.bank if hl.bank is not None else load_hash_bank(hl.path)
            best: dict[int, Signal] = {}
            min_quality = 0 if hl.negative else hl.pdq_min_quality
            hits = match_pdq(
                bank, ctx.pdq, max_distance=hl.pdq_max_distance, min_quality=min_quality, qualities=ctx.pdq_quality
            )
            for row, b, dist in zip(hits.rows.tolist(), hits.bank_index.tolist(), hits.distance.tolist()):
                if row in best and best[row].score <= dist:
                    continue
                best[row] = Signal(
                    "negative" if hl.negative else "hash_match",
                    f"hash:{hl.id}",
                    float(dist),
                    float(hl.pdq_max_distance),
                    float(hl.pdq_max_distance - dist),
                    {
                        "hash_type": "pdq",
                        "label": bank.pdq_labels[b],
                        "distance": int(dist),
                        "bank_hash": bank.pdq_hex[b],
                        "bank": hl.id,
                        "line": bank.pdq_lines[b],
                        "item_quality": ctx.pdq_quality[row],
                        "min_quality": min_quality,
                    },
                )
            for row, kind, value, label in match_exact(bank, md5=ctx.md5, sha256=sha):
                best[row] = Signal(
                    "negative" if hl.negative else "hash_match",
                    f"hash:{hl.id}",
                    0.0,
                    0.0,
                    0.0,
                    {"hash_type": kind, "label": label, "distance": 0, "bank_hash": value, "bank": hl.id},
                )
            for row, sig in best.items():
                if hl.negative:
                    det.suppress(row, sig, categories=set(hl.suppresses) or {"*"})
                else:
                    det.add(row, sig)
            counts[hl.id] = len(best)
        det.stats = {"matches": counts}
        return det
