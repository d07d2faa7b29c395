"""Semantic clusters that persist between runs: trained once, joined by new items, flagged
where the new items land.

* training: FAISS k-means (``audit.cluster.kmeans``, spherical) on a deterministic sample of
  the archive's image vectors (``stream.sample_vectors``, at most ``FlagOptions.cluster_sample``);
  k = ``n_clusters`` or ``size_k``: one cluster per ``cluster_size`` (25) estimated vectors, at
  most ``cluster_max_k`` (4096), so a cluster is a set of near-alike generations (purity and
  cost measured in benchmarks/bench_cluster.py); the centroids are kept in ``flag_centroids``
  until the next re-clustering (archive grown by ``recluster_factor``, policy or model
  changed, ``--full``);
* members: each item with an image vector joins its nearest centroid (``cluster_members``,
  with the cosine), batch by batch; prompt words are counted per cluster (``cluster_terms``);
* stats and flags, recomputed from SQL each run (sizes: one grouped count; flagged members:
  the sparse direct hits joined to their clusters), so they never drift: a cluster is flagged
  for a category on member evidence only (``audit.flag.cluster_review``: at least
  ``cluster_min_flagged`` members and ``cluster_share`` of them flagged directly), never on
  its centroid; the centroid's concept scores are shown, not used;
* "via cluster" signals (``flag_signals`` source ``1cluster:<id>``) for at most
  ``cluster_candidates`` members close to the category (ranked), remade only for flagged
  clusters the run touched or whose flag state changed (``cluster_state``), dropped for
  clusters no longer flagged; the rest of a flagged cluster is counted in ``clusters.review``
  (with the fired members and their scores), not listed;
* ``clusters`` table rows (size, the 3 members nearest the centroid, top prompt terms,
  centroid concept scores, flagged share, review summary; ``members`` names the
  cluster_members rows, ``audit.findings.store.members_ref``) rewritten for the touched
  clusters only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from audit.findings.store import Signal, members_ref
from audit.flag.cluster_review import ClusterOptions
from audit.flag.stream import in_chunks

if TYPE_CHECKING:  # pragma: no cover
    from audit.flag.concepts import ConceptVectors
    from audit.policy import Policy

CLUSTER_COLS = (
    "cluster_id",
    "policy_hash",
    "kind",
    "size",
    "members",
    "medoids",
    "top_terms",
    "concept_scores",
    "flagged_share",
    "flagged",
    "categories",
    "run_id",
)


def semantic_id(policy_hash: str, cluster: int) -> str:
    return f"{policy_hash[:12]}:semantic:{cluster}"


def group_id(policy_hash: str, root: str) -> str:
    return f"{policy_hash[:12]}:near_duplicate:{root[:16]}"


def size_k(n: int, cluster_size: int, max_k: int) -> int:
    """Clusters for ``n`` vectors: one per ``cluster_size`` (near-alike generations, a unit a
    reviewer can decide at once), at most ``max_k`` (the cost of training and assignment
    grows with k; see benchmarks/bench_cluster.py), at least 1."""
    if n <= 0:
        return 0
    return int(max(1, min(max_k, round(n / cluster_size), n)))


def cell_probes(base: int, k: int, n: int) -> int:
    """Cells the near-duplicate search probes per item: ``base`` cells of a √(n/2)-cell
    clustering (what ``dup_probes`` was tuned for), scaled to ``k`` cells so that the same
    share of the archive is compared (same recall, same cost) however fine the clusters are."""
    import math

    from audit.cluster import choose_k

    if k <= 0:
        return base
    return int(min(k, max(base, math.ceil(base * k / max(1, choose_k(n))))))


def train(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    from audit.cluster import kmeans

    return kmeans(sample, k, seed=seed, normalized=True).centroids


def save_centroids(c, scope: int, centroids: np.ndarray) -> None:
    c.execute("DELETE FROM flag_centroids WHERE scope = ?", (scope,))
    c.executemany(
        "INSERT INTO flag_centroids VALUES (?,?,?)",
        [(scope, i, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for i, v in enumerate(centroids)],
    )


def load_centroids(conn, scope: int, dim: int) -> np.ndarray:
    rows = conn.execute("SELECT vector FROM flag_centroids WHERE scope = ? ORDER BY cluster", (scope,)).fetchall()
    if not rows:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), -1).copy()


def assign(centroids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (inner product of unit vectors) of each row, and the cosine."""
    import faiss

    if not len(vectors) or not len(centroids):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    score, nearest = index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return nearest[:, 0].astype(np.int64), score[:, 0]


def _terms(prompt: str | None) -> set[str]:
    from audit.cluster import STOP_WORDS, _WORD

    return {w for w in _WORD.findall(prompt.lower()) if w not in STOP_WORDS} if prompt else set()


def add_members(
    c, scope: int, item_ids: Sequence[str], clusters: np.ndarray, scores: np.ndarray, prompts: Sequence[str | None]
) -> set[int]:
    """Members joining (idempotent: an item already a member of its cluster is counted once);
    returns the clusters touched."""
    old: dict[str, int] = {}
    for start in range(0, len(item_ids), 900):
        chunk = list(item_ids[start : start + 900])
        marks = ",".join("?" * len(chunk))
        old.update(
            c.execute(
                f"SELECT item_id, cluster FROM cluster_members WHERE scope = ? AND item_id IN ({marks})",
                (scope, *chunk),
            ).fetchall()
        )
    c.executemany(
        "INSERT INTO cluster_members VALUES (?,?,?,?) ON CONFLICT(scope, item_id) DO UPDATE SET "
        "cluster=excluded.cluster, score=excluded.score",
        [(scope, i, int(k), float(s)) for i, k, s in zip(item_ids, clusters.tolist(), scores.tolist())],
    )
    counts: dict[tuple[int, str], int] = {}
    for item_id, k, prompt in zip(item_ids, clusters.tolist(), prompts):
        if old.get(item_id) == k:
            continue  # counted when it joined (a resumed run handles it again)
        for term in _terms(prompt):
            counts[(k, term)] = counts.get((k, term), 0) + 1
    c.executemany(
        "INSERT INTO cluster_terms VALUES (?,?,?,?) ON CONFLICT(scope, cluster, term) DO UPDATE SET n = n + excluded.n",
        [(scope, k, t, n) for (k, t), n in sorted(counts.items())],  # key order: each page once
    )
    return set(clusters.tolist()) | set(old.values())


def remove_members(c, scope: int, item_ids: Sequence[str]) -> set[int]:
    touched: set[int] = set()
    for start in range(0, len(item_ids), 900):
        chunk = list(item_ids[start : start + 900])
        marks = ",".join("?" * len(chunk))
        touched.update(
            r[0]
            for r in c.execute(
                f"SELECT cluster FROM cluster_members WHERE scope = ? AND item_id IN ({marks})", (scope, *chunk)
            )
        )
        c.execute(f"DELETE FROM cluster_members WHERE scope = ? AND item_id IN ({marks})", (scope, *chunk))
    return touched


def _json(x) -> str:
    return json.dumps(x, default=float, ensure_ascii=False)


def _member_counts(
    c, scope: int, clusters: Sequence[int] | None
) -> tuple[dict[int, int], dict[int, dict[str, int]], dict[int, int]]:
    """Per cluster: members, members flagged directly per category, members flagged directly
    at all. Sizes of the given clusters only (``None``: every cluster), counted on the
    ``(scope, cluster)`` index: an incremental run reads the members of the clusters it
    touched, never every member of the archive. The flagged counts start from the direct
    evidence rows (few), whatever the clusters."""
    sizes: dict[int, int] = {}
    if clusters is None:
        sizes.update(
            c.execute("SELECT cluster, count(*) FROM cluster_members WHERE scope = ? GROUP BY cluster", (scope,))
        )
    else:
        for chunk in in_chunks(clusters):
            sizes.update(
                c.execute(
                    f"SELECT cluster, count(*) FROM cluster_members WHERE scope = ? AND cluster IN "
                    f"({','.join('?' * len(chunk))}) GROUP BY cluster",
                    (scope, *chunk),
                )
            )
    hits: dict[int, dict[str, int]] = {}
    for k, cat, n in c.execute(
        "SELECT m.cluster, s.category, count(*) FROM flag_signals s JOIN cluster_members m "
        "ON m.scope = s.scope AND m.item_id = s.item_id WHERE s.scope = ? AND s.source = '0direct' "
        "GROUP BY m.cluster, s.category",
        (scope,),
    ):
        hits.setdefault(k, {})[cat] = n
    any_hit = dict(
        c.execute(
            "SELECT m.cluster, count(DISTINCT s.item_id) FROM flag_signals s JOIN cluster_members m "
            "ON m.scope = s.scope AND m.item_id = s.item_id WHERE s.scope = ? AND s.source = '0direct' "
            "GROUP BY m.cluster",
            (scope,),
        ).fetchall()
    )
    return sizes, hits, any_hit


@dataclass(frozen=True)
class ClusterStage:
    """What the cluster stage of one flag run works on: its scope, policy, model and centroids,
    the run's concept vectors (``audit.flag.concepts.prepare_concepts``; ``None`` without
    concepts) and the options that judge a cluster."""

    scope: int
    policy: "Policy"
    policy_hash: str
    run_id: int
    model_key: str
    dim: int
    centroids: np.ndarray
    concepts: "ConceptVectors | None"
    options: ClusterOptions = field(default_factory=ClusterOptions)


def refresh(c, vs, stage: ClusterStage, touched: set[int] | None) -> tuple[set[tuple[str, str]], dict]:
    """Cluster stats, flags, "via cluster" candidates and ``clusters`` rows (semantic) for the
    ``touched`` clusters (``None``: all), inside the caller's transaction. Returns the
    (item, category) pairs whose evidence changed, and counts for the summary."""
    from audit.flag.cluster_review import cluster_flags

    scope, policy, policy_hash, centroids = stage.scope, stage.policy, stage.policy_hash, stage.centroids
    concepts, opts = stage.concepts, stage.options
    categories = {cat.id: cat for cat in policy.categories}
    todo = range(len(centroids)) if touched is None else sorted(touched)
    sizes, hits, any_hit = _member_counts(c, scope, None if touched is None else todo)
    concept_vectors = concepts.image if concepts is not None else {}
    old_state = dict(
        c.execute("SELECT cluster_id, fingerprint FROM cluster_state WHERE scope = ?", (scope,)).fetchall()
    )
    dirty: set[tuple[str, str]] = set()
    stats = {"clusters_refreshed": 0, "clusters_flag_remade": 0, "candidates": 0, "summarised": 0}
    for k in todo:
        cid = semantic_id(policy_hash, k)
        size = int(sizes.get(k, 0))
        if size == 0:
            c.execute("DELETE FROM clusters WHERE cluster_id = ?", (cid,))
            if cid in old_state:
                dirty |= _drop_via(c, scope, cid)
            continue
        centroid = centroids[k]
        scores = {}  # shown on the cluster; never a reason to flag it
        for concept_id, cvec in concept_vectors.items():
            s = float(centroid @ cvec)
            thr = concepts.threshold(concept_id, "image")
            scores[concept_id] = {"score": round(s, 6), "threshold": round(thr, 6), "margin": round(s - thr, 6)}
        # member evidence only: enough members flagged directly, by count and by fraction
        reasons = cluster_flags(hits.get(k, {}), size, categories, opts)
        review: dict = {}
        if reasons:
            dirty |= _drop_via(c, scope, cid)
            made, review = _make_via(
                c,
                vs,
                scope=scope,
                policy=policy,
                cid=cid,
                cluster=k,
                size=size,
                reasons=reasons,
                concepts=concepts,
                model_key=stage.model_key,
                dim=stage.dim,
                categories=categories,
                opts=opts,
            )
            dirty |= made
            fingerprint = _json({"reasons": reasons, "size": size})
            c.execute("INSERT OR REPLACE INTO cluster_state VALUES (?,?,?)", (scope, cid, fingerprint))
            stats["clusters_flag_remade"] += 1
            stats["candidates"] += sum(len(r["candidates"]) for r in review.values())
            stats["summarised"] += sum(r["rest"] for r in review.values())
        elif cid in old_state:
            dirty |= _drop_via(c, scope, cid)
        medoids = [
            r[0]
            for r in c.execute(
                "SELECT item_id FROM cluster_members WHERE scope = ? AND cluster = ? ORDER BY score DESC, item_id LIMIT 3",
                (scope, k),
            )
        ]
        terms = [
            [t, n]
            for t, n in c.execute(
                "SELECT term, n FROM cluster_terms WHERE scope = ? AND cluster = ? ORDER BY n DESC, term LIMIT 10",
                (scope, k),
            )
        ]
        c.execute("DELETE FROM clusters WHERE cluster_id = ?", (cid,))
        # members stay in cluster_members: the row names them (members_ref), so a run that
        # touches a cluster writes one small row, not its member list
        c.execute(
            f"INSERT INTO clusters ({', '.join(CLUSTER_COLS)}, review) VALUES (?,?,'semantic',?,?,?,?,?,?,?,?,?,?)",
            (
                cid,
                policy_hash,
                size,
                members_ref(scope, k),
                _json(medoids),
                _json(terms),
                _json(scores),
                round(float(any_hit.get(k, 0)) / size, 6),
                int(bool(reasons)),
                _json(sorted(reasons)),
                stage.run_id,
                _json(review) if review else None,
            ),
        )
        stats["clusters_refreshed"] += 1
    return dirty, stats


def _drop_via(c, scope: int, cid: str) -> set[tuple[str, str]]:
    source = f"1cluster:{cid}"
    pairs = set(
        c.execute(
            "SELECT item_id, category FROM flag_signals WHERE scope = ? AND source = ?", (scope, source)
        ).fetchall()
    )
    c.execute("DELETE FROM flag_signals WHERE scope = ? AND source = ?", (scope, source))
    c.execute("DELETE FROM cluster_state WHERE scope = ? AND cluster_id = ?", (scope, cid))
    return pairs


def _make_via(
    c, vs, *, scope, policy, cid, cluster, size, reasons, concepts, model_key, dim, categories, opts
) -> tuple[set[tuple[str, str]], dict]:
    """ "Via cluster" signals for the chosen candidates of one flagged cluster, and its review
    summary per category (``audit.flag.cluster_review.review_cluster``)."""
    from audit.flag.cluster_review import review_cluster
    from audit.flag.stream import align

    members = [
        r[0]
        for r in c.execute(
            "SELECT item_id FROM cluster_members WHERE scope = ? AND cluster = ? ORDER BY item_id", (scope, cluster)
        )
    ]
    direct: dict[str, dict[str, list]] = {}
    for item_id, cat, sig_json in c.execute(
        "SELECT s.item_id, s.category, s.signals FROM cluster_members m JOIN flag_signals s ON s.scope = m.scope "
        "AND s.item_id = m.item_id AND s.source = '0direct' WHERE m.scope = ? AND m.cluster = ?",
        (scope, cluster),
    ):
        direct.setdefault(item_id, {})[cat] = json.loads(sig_json)
    suppressed = {
        item_id: set(json.loads(cats))
        for item_id, cats in c.execute(
            "SELECT s.item_id, s.categories FROM cluster_members m JOIN flag_suppressed s ON s.scope = m.scope "
            "AND s.item_id = m.item_id WHERE m.scope = ? AND m.cluster = ?",
            (scope, cluster),
        )
    }
    got_keys, got = vs.get(model_key, "image", members)
    vecs, _ = align(members, got_keys, got, dim)
    review = review_cluster(policy, members, vecs, direct, suppressed, reasons, concepts, categories, opts)
    rows = []
    for cat, summary in review.items():
        for rank, cand in enumerate(summary["candidates"], 1):
            detail = {
                "cluster_id": cid,
                "reason": "members",
                "cluster_size": size,
                "rank": rank,
                "flagged_members": summary["flagged"],
                **cand["detail"],
            }
            sig = Signal(
                "cluster",
                f"cluster:{cid}",
                cand["score"],
                cand["threshold"],
                round(cand["score"] - cand["threshold"], 6),
                detail,
            )
            rows.append(
                (scope, cand["item_id"], cat, f"1cluster:{cid}", categories[cat].severity, _json([sig.to_dict()]))
            )
    c.executemany("INSERT OR REPLACE INTO flag_signals VALUES (?,?,?,?,?,?)", rows)
    return {(r[1], r[2]) for r in rows}, review


def refresh_groups(c, *, scope: int, policy_hash: str, run_id: int, roots: Iterable[str], gone: Iterable[str]) -> int:
    """``clusters`` rows (near_duplicate) of the groups named by ``roots``; rows of ``gone``
    roots (merged into another group) deleted."""
    for root in gone:
        c.execute("DELETE FROM clusters WHERE cluster_id = ?", (group_id(policy_hash, root),))
    n = 0
    for root in sorted(set(roots)):
        gid = group_id(policy_hash, root)
        c.execute("DELETE FROM clusters WHERE cluster_id = ?", (gid,))
        size = c.execute("SELECT count(*) FROM dup_groups WHERE scope = ? AND root = ?", (scope, root)).fetchone()[0]
        flagged = c.execute(
            "SELECT count(DISTINCT s.item_id) FROM dup_groups g JOIN flag_signals s ON s.scope = g.scope "
            "AND s.item_id = g.item_id AND s.source = '0direct' WHERE g.scope = ? AND g.root = ?",
            (scope, root),
        ).fetchone()[0]
        if size < 2:
            continue
        medoids = [
            r[0]
            for r in c.execute(
                "SELECT item_id FROM dup_groups WHERE scope = ? AND root = ? ORDER BY item_id LIMIT 3", (scope, root)
            )
        ]
        c.execute(
            f"INSERT INTO clusters ({', '.join(CLUSTER_COLS)}) VALUES (?,?,'near_duplicate',?,"
            "(SELECT json_group_array(item_id) FROM (SELECT item_id FROM dup_groups WHERE scope = ? AND root = ? "
            " ORDER BY item_id)),?,NULL,NULL,?,0,'[]',?)",
            (gid, policy_hash, size, scope, root, _json(medoids), round(flagged / size, 6), run_id),
        )
        n += 1
    return n
