"""The archive-wide stage of a flag run: semantic clusters, cluster flags, near-duplicate groups.

Over every item with an image vector (``audit.cluster`` does the arithmetic):

* semantic clusters: FAISS k-means (k ≈ √(n/2) unless given); per cluster its size, members,
  the 3 members nearest the centroid, top prompt terms, the centroid's score, threshold and
  margin for every concept, and the share of members flagged;
* cluster flags: a cluster is flagged for a category when its centroid alone fires the
  category's flags (reason ``centroid``), or when at least ``cluster_share`` of its members
  (and ``cluster_min_size`` members) are flagged in that category (reason ``share``). Its
  other members become review candidates with a ``cluster`` signal ("via cluster"), except
  members already flagged directly at an equal or higher severity, members a negative bank
  clears, and (for centroid flags) members a negative concept cancels;
* near-duplicate groups: PDQ within ``dup_pdq_distance`` bits (PDQ quality ≥ 50) or CLIP
  cosine ≥ ``dup_min_cosine``, connected components; recorded with their flagged share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from audit.findings.store import Signal


@dataclass
class ClusterResult:
    rows: list[dict] = field(default_factory=list)  # clusters table rows (semantic, near_duplicate)
    cluster_of: dict[str, str] = field(default_factory=dict)  # item → its semantic cluster
    candidates: list[tuple[str, str, Signal]] = field(default_factory=list)  # (item, category, cluster signal)
    timings: dict[str, float] = field(default_factory=dict)


def cluster_stage(policy, policy_hash: str, run_id: int, item_ids: Sequence[str], vectors: np.ndarray,
                  prompts: Sequence[str | None], pdq: Sequence[str | None], pdq_quality: Sequence[int | None],
                  concepts, flagged: set[tuple[str, str]], suppressed: Mapping[str, set[str]], opts) -> ClusterResult:
    """``concepts``: the run's prepared ``ConceptDetector`` (or one without vectors);
    ``flagged``: (item, category) pairs flagged directly; ``suppressed``: item → categories a
    negative bank clears ("*": all); ``opts``: the run's ``FlagOptions``."""
    from audit.cluster import choose_k, group_members, kmeans, near_duplicate_groups, nearest_to_centroid, top_terms
    from audit.policy import evaluate_flags
    from audit.policy.hashlists import pdq_hex_to_array

    out = ClusterResult()
    n = len(item_ids)
    if n == 0:
        return out
    t = time.perf_counter()
    categories = {c.id: c for c in policy.categories}
    km = kmeans(vectors, opts.n_clusters or choose_k(n), seed=opts.kmeans_seed, normalized=True)
    out.timings["kmeans"] = time.perf_counter() - t
    t = time.perf_counter()

    flagged_by_cat: dict[str, np.ndarray] = {}
    local_of = {item_id: i for i, item_id in enumerate(item_ids)}
    for item_id, cat in flagged:
        if item_id in local_of:
            flagged_by_cat.setdefault(cat, np.zeros(n, bool))[local_of[item_id]] = True
    any_flagged = np.zeros(n, bool)
    for mask in flagged_by_cat.values():
        any_flagged |= mask
    concept_vectors = concepts.vectors.image if concepts.vectors is not None else {}

    order = np.argsort(km.assign, kind="stable")  # members of every cluster in one pass, O(n log n)
    bounds = np.searchsorted(km.assign[order], np.arange(km.k + 1))
    semantic = []
    for c in range(km.k):
        members = np.sort(order[bounds[c]:bounds[c + 1]])
        if len(members) == 0:
            continue
        cid = f"{policy_hash[:12]}:semantic:{c}"
        member_ids = [item_ids[m] for m in members]
        for m in member_ids:
            out.cluster_of[m] = cid
        centroid = km.centroids[c]
        scores, fired = {}, set()
        for concept_id, cvec in concept_vectors.items():
            s = float(centroid @ cvec)
            thr = concepts.threshold(concept_id, "image")
            scores[concept_id] = {"score": round(s, 6), "threshold": round(thr, 6), "margin": round(s - thr, 6)}
            if s >= thr:
                fired |= {f"concept:{concept_id}", f"concept:{concept_id}/image"}
        reasons: dict[str, dict] = {}
        for hit in evaluate_flags(policy, fired) if fired else ():
            reasons[hit.category] = {"reason": "centroid", "signals": list(hit.signals)}
        shares = {}
        for cat, mask in flagged_by_cat.items():
            k_flag = int(mask[members].sum())
            if k_flag:
                shares[cat] = k_flag / len(members)
                if shares[cat] >= opts.cluster_share and len(members) >= opts.cluster_min_size and cat not in reasons:
                    reasons[cat] = {"reason": "share", "share": round(shares[cat], 4)}
        semantic.append((members, reasons, shares))
        out.rows.append({
            "cluster_id": cid, "policy_hash": policy_hash, "kind": "semantic", "size": len(members),
            "members": member_ids, "medoids": [item_ids[m] for m in nearest_to_centroid(vectors, members, centroid, 3)],
            "top_terms": top_terms(prompts[m] for m in members), "concept_scores": scores,
            "flagged_share": round(float(any_flagged[members].mean()), 6), "flagged": int(bool(reasons)),
            "categories": sorted(reasons), "run_id": run_id,
        })
    out.timings["clusters"] = time.perf_counter() - t
    t = time.perf_counter()

    # --- cluster flags: review candidates "via cluster"
    top_rank = np.full(n, -1)
    for cat, mask in flagged_by_cat.items():
        if cat in categories:
            top_rank[mask] = np.maximum(top_rank[mask], categories[cat].rank)
    item_scores = {cid: vectors @ v for cid, v in concept_vectors.items()}
    negated: dict[str, np.ndarray] = {}
    for neg in policy.negative_concepts if concepts.vectors is not None else ():
        neg_score = vectors @ concepts.vectors.negative[neg.id]
        fires = neg_score >= concepts.threshold(f"negative:{neg.id}", "image")
        for cid in neg.suppresses or [c.id for c in policy.concepts]:
            if cid in item_scores:
                negated[cid] = negated.get(cid, np.zeros(n, bool)) | (fires & (item_scores[cid] <= neg_score))
    for row, (members, reasons, shares) in zip(out.rows, semantic):
        cid = row["cluster_id"]
        for cat, why in reasons.items():
            if cat not in categories:
                continue
            concept_ids = sorted({s.split(":", 1)[1].split("/", 1)[0] for s in why.get("signals", ())
                                  if s.startswith("concept:")})
            for m in members:
                item_id = item_ids[m]
                if top_rank[m] >= categories[cat].rank or (item_id, cat) in flagged:
                    continue  # already flagged directly, here or at an equal or higher severity
                sup = suppressed.get(item_id, ())
                if "*" in sup or cat in sup:
                    continue
                if why["reason"] == "centroid":
                    if concept_ids and all(c in negated and negated[c][m] for c in concept_ids):
                        continue
                    cs = row["concept_scores"][concept_ids[0]] if concept_ids else {}
                    detail = {"cluster_id": cid, "reason": "centroid", "concept": concept_ids[0] if concept_ids else None,
                              "cluster_size": row["size"]}
                    if concept_ids and concept_ids[0] in item_scores:
                        detail["member_score"] = round(float(item_scores[concept_ids[0]][m]), 6)
                    sig = Signal("cluster", f"cluster:{cid}", cs.get("score"), cs.get("threshold"), cs.get("margin"),
                                 detail)
                else:
                    share = shares[cat]
                    sig = Signal("cluster", f"cluster:{cid}", round(share, 6), opts.cluster_share,
                                 round(share - opts.cluster_share, 6),
                                 {"cluster_id": cid, "reason": "share", "cluster_size": row["size"],
                                  "flagged_members": int(round(share * row["size"]))})
                out.candidates.append((item_id, cat, sig))
    out.timings["cluster_flags"] = time.perf_counter() - t
    t = time.perf_counter()

    # --- near-duplicate groups
    quality = np.array([q if q is not None else -1 for q in pdq_quality], dtype=np.int64)
    pdq_arr = pdq_hex_to_array(pdq)
    valid = (quality >= 50) & pdq_arr.any(axis=1)
    labels, _ = near_duplicate_groups(n, pdq=pdq_arr, pdq_valid=valid, pdq_max_distance=opts.dup_pdq_distance,
                                      vectors=vectors, min_cosine=opts.dup_min_cosine, centroids=km.centroids)
    for g, members in enumerate(group_members(labels)):
        member_ids = [item_ids[m] for m in members]
        out.rows.append({
            "cluster_id": f"{policy_hash[:12]}:near_duplicate:{g}", "policy_hash": policy_hash,
            "kind": "near_duplicate", "size": len(members), "members": member_ids, "medoids": member_ids[:3],
            "top_terms": None, "concept_scores": None, "flagged_share": round(float(any_flagged[members].mean()), 6),
            "flagged": 0, "categories": [], "run_id": run_id,
        })
    out.timings["near_duplicates"] = time.perf_counter() - t
    return out
