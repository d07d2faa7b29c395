"""When a semantic cluster is flagged, and which of its other members a reviewer should see.

A cluster is one review unit, so its flag must rest on what its members show, never on its
centroid (a centroid can sit between two kinds of content and fire a concept none of its
members holds):

* **flag** (``cluster_flags``): a category flags a cluster when at least
  ``ClusterOptions.min_flagged`` members (default 3) *and* at least ``ClusterOptions.share``
  of its members (default 0.25) are flagged directly for it, in a cluster of at least
  ``min_size`` members (a flag run takes them from ``FlagOptions.cluster_*``);
* **candidates** (``review_cluster``): of the members not flagged directly (nor at an equal
  or higher severity, nor cleared by a negative bank), only those that are themselves close to
  the category: nearer to the mean of the flagged members than to the mean of the unflagged
  ones, and, when the category's flags use image concepts, with a concept score within
  ``margin`` (default 0.05) below the concept's threshold and not cancelled by a
  negative concept. Ranked by how close they are, at most ``candidates`` (default
  10) per cluster and category become "via cluster" findings;
* **summary**: the rest of the cluster is counted on the cluster (``clusters.review``), not
  listed: which members fired (their best signal and score), the candidates, and how many
  members were left out.

Pure functions of the members' vectors and direct evidence: the SQL lives in
``audit.flag.clusters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from audit.flag.concepts import ConceptVectors

# fired members listed on a cluster's review summary (the count is always complete)
MAX_FIRED_LISTED = 50


@dataclass(frozen=True)
class ClusterOptions:
    """How flagged clusters are judged (``FlagOptions.cluster_options()`` in a flag run)."""

    share: float = 0.25  # at least this fraction of the members flagged directly
    min_flagged: int = 3  # and at least this many
    min_size: int = 3  # smaller clusters are never flagged
    margin: float = 0.05  # candidates: concept score at most this far below the threshold
    candidates: int = 10  # at most this many "via cluster" members per cluster and category


def cluster_flags(hits: dict[str, int], size: int, categories: dict, opts: ClusterOptions) -> dict[str, dict]:
    """category -> reason, for the categories whose direct hits among ``size`` members meet
    the minimum count and fraction."""
    out = {}
    if size < opts.min_size:
        return out
    for cat, n in sorted(hits.items()):
        if cat in categories and n >= opts.min_flagged and n / size >= opts.share:
            out[cat] = {"reason": "members", "flagged": int(n), "fraction": round(n / size, 4)}
    return out


def category_concepts(policy, category: str, image_concepts) -> list[str]:
    """Image concepts named by the flags of ``category`` (``concept:X`` or ``concept:X/image``)."""
    out = []
    for flag in policy.flags:
        if flag.category != category:
            continue
        for entry in (*flag.all, *flag.any):
            for name in entry.split("|"):
                if not name.startswith("concept:") or name.endswith("/prompt"):
                    continue
                cid = name.split(":", 1)[1].split("/", 1)[0]
                if cid in image_concepts and cid not in out:
                    out.append(cid)
    return out


def _unit_mean(x: np.ndarray) -> np.ndarray:
    m = x.mean(axis=0) if len(x) else np.zeros(x.shape[1], np.float32)
    norm = float(np.linalg.norm(m))
    return m / norm if norm > 0 else m


def _best_signal(signals: list[dict]) -> dict:
    scored = [s for s in signals if isinstance(s.get("score"), (int, float))]
    s = max(scored, key=lambda s: (s["score"] - (s.get("threshold") or 0), s["name"])) if scored else signals[0]
    return {"name": s.get("name"), "score": s.get("score"), "threshold": s.get("threshold")}


def review_cluster(
    policy,
    members: list[str],
    vecs: np.ndarray,
    direct: dict[str, dict[str, list]],
    suppressed: dict[str, set],
    reasons: dict[str, dict],
    concepts: "ConceptVectors | None",
    categories: dict,
    opts: ClusterOptions,
) -> dict[str, dict]:
    """Per flagged category: the fired members, the ranked and capped candidates (each with
    ``item_id``, ``score``, ``threshold`` and ``detail`` for its signal) and the counts."""
    image = concepts.image if concepts is not None else {}
    out = {}
    for cat, why in sorted(reasons.items()):
        if cat not in categories:
            continue
        rank = categories[cat].rank
        flagged = np.array([cat in direct.get(m, {}) for m in members], bool)
        fired = sorted(
            ({"item_id": m, **_best_signal(direct[m][cat])} for m in members if cat in direct.get(m, {})),
            key=lambda f: (-(f["score"] or 0), f["item_id"]),
        )
        eligible = np.zeros(len(members), bool)
        for r, m in enumerate(members):
            mine = direct.get(m, {})
            sup = suppressed.get(m, ())
            eligible[r] = not (
                cat in mine
                or any(x in categories and categories[x].rank >= rank for x in mine)
                or "*" in sup
                or cat in sup
            )
        to_flagged = vecs @ _unit_mean(vecs[flagged])
        to_unflagged = vecs @ _unit_mean(vecs[~flagged])
        closer = to_flagged > to_unflagged
        concept_ids = category_concepts(policy, cat, image)
        if concept_ids:
            per = np.stack([vecs @ image[x] - concepts.threshold(x, "image") for x in concept_ids])
            best = per.argmax(axis=0)
            gap = per[best, np.arange(len(members))]
            ok = gap >= -opts.margin
            negated = _negated(policy, concepts, vecs, concept_ids)
            ok &= ~negated
        else:
            # no image concept to be near: "nearer the flagged members than the rest" alone
            # lets a member in by a hair in a mixed cluster, so it must also sit within the
            # flagged members' own spread (as close to their mean as the least typical of them)
            gap = to_flagged - to_unflagged
            ok = to_flagged >= float(to_flagged[flagged].min()) - 1e-6
        chosen = np.flatnonzero(eligible & closer & ok)
        chosen = sorted(chosen.tolist(), key=lambda r: (-float(gap[r]), members[r]))
        cands = []
        for r in chosen[: opts.candidates]:
            detail = {"to_flagged": round(float(to_flagged[r]), 6), "to_unflagged": round(float(to_unflagged[r]), 6)}
            if concept_ids:
                x = concept_ids[int(best[r])]
                thr = concepts.threshold(x, "image")
                detail.update(concept=x, concept_threshold=round(thr, 6), allowed_margin=opts.margin)
                score, threshold = float(vecs[r] @ image[x]), thr - opts.margin
            else:
                score, threshold = float(to_flagged[r]), float(to_unflagged[r])
            cands.append(
                {"item_id": members[r], "score": round(score, 6), "threshold": round(threshold, 6), "detail": detail}
            )
        out[cat] = {
            **why,
            "min_flagged": opts.min_flagged,
            "min_fraction": opts.share,
            "fired": fired[:MAX_FIRED_LISTED],
            "candidates": cands,
            "eligible": len(chosen),
            "rest": len(members) - int(flagged.sum()) - len(cands),
        }
    return out


def _negated(policy, concepts: "ConceptVectors", vecs: np.ndarray, concept_ids: list[str]) -> np.ndarray:
    """Members on which a negative concept cancels every one of ``concept_ids``."""
    if not policy.negative_concepts or concepts is None:
        return np.zeros(len(vecs), bool)
    cancelled = {x: np.zeros(len(vecs), bool) for x in concept_ids}
    for neg in policy.negative_concepts:
        if neg.id not in concepts.negative:
            continue
        neg_score = vecs @ concepts.negative[neg.id]
        fires = neg_score >= concepts.threshold(f"negative:{neg.id}", "image")
        for x in neg.suppresses or [c.id for c in policy.concepts]:
            if x in cancelled:
                cancelled[x] |= fires & (vecs @ concepts.image[x] <= neg_score)
    return np.logical_and.reduce([cancelled[x] for x in concept_ids])
