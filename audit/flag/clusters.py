"""Semantic clusters that persist between runs: trained once, joined by new items, flagged
where the new items land.

* training: FAISS k-means (``audit.cluster.kmeans``, spherical) on a deterministic sample of
  the archive's image vectors (``stream.sample_vectors``, at most ``FlagOptions.cluster_sample``);
  k = ``n_clusters`` or ``choose_k`` of the estimated number of vectors; the centroids are
  kept in ``flag_centroids`` until the next re-clustering (archive grown by
  ``recluster_factor``, policy or model changed, ``--full``);
* members: each item with an image vector joins its nearest centroid (``cluster_members``,
  with the cosine), batch by batch; prompt words are counted per cluster (``cluster_terms``);
* stats and flags, recomputed from SQL each run (sizes: one grouped count; flagged members:
  the sparse direct hits joined to their clusters), so they never drift: a cluster is flagged
  for a category when its centroid alone fires the category's flags (reason ``centroid``), or
  when at least ``cluster_share`` of its members (and ``cluster_min_size`` members) hold a
  direct finding of that category (reason ``share``);
* "via cluster" signals (``flag_signals`` source ``1cluster:<id>``) for the other members,
  except members flagged directly at an equal or higher severity, members a negative bank
  clears, and (centroid flags) members a negative concept cancels; remade only for flagged
  clusters the run touched or whose flag state changed (``cluster_state``), dropped for
  clusters no longer flagged;
* ``clusters`` table rows (size, the 3 members nearest the centroid, top prompt terms,
  centroid concept scores, flagged share; ``members`` names the cluster_members rows,
  ``audit.findings.store.members_ref``) rewritten for the touched clusters only.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import numpy as np

from audit.findings.store import Signal, members_ref

CLUSTER_COLS = ("cluster_id", "policy_hash", "kind", "size", "members", "medoids", "top_terms",
                "concept_scores", "flagged_share", "flagged", "categories", "run_id")


def semantic_id(policy_hash: str, cluster: int) -> str:
    return f"{policy_hash[:12]}:semantic:{cluster}"


def group_id(policy_hash: str, root: str) -> str:
    return f"{policy_hash[:12]}:near_duplicate:{root[:16]}"


def train(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    from audit.cluster import kmeans

    return kmeans(sample, k, seed=seed, normalized=True).centroids


def save_centroids(c, scope: int, centroids: np.ndarray) -> None:
    c.execute("DELETE FROM flag_centroids WHERE scope = ?", (scope,))
    c.executemany("INSERT INTO flag_centroids VALUES (?,?,?)",
                  [(scope, i, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for i, v in enumerate(centroids)])


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


def add_members(c, scope: int, item_ids: Sequence[str], clusters: np.ndarray, scores: np.ndarray,
                prompts: Sequence[str | None]) -> set[int]:
    """Members joining (idempotent: an item already a member of its cluster is counted once);
    returns the clusters touched."""
    old: dict[str, int] = {}
    for start in range(0, len(item_ids), 900):
        chunk = list(item_ids[start:start + 900])
        marks = ",".join("?" * len(chunk))
        old.update(c.execute(f"SELECT item_id, cluster FROM cluster_members WHERE scope = ? AND item_id IN ({marks})",
                             (scope, *chunk)).fetchall())
    c.executemany("INSERT INTO cluster_members VALUES (?,?,?,?) ON CONFLICT(scope, item_id) DO UPDATE SET "
                  "cluster=excluded.cluster, score=excluded.score",
                  [(scope, i, int(k), float(s)) for i, k, s in zip(item_ids, clusters.tolist(), scores.tolist())])
    counts: dict[tuple[int, str], int] = {}
    for item_id, k, prompt in zip(item_ids, clusters.tolist(), prompts):
        if old.get(item_id) == k:
            continue  # counted when it joined (a resumed run handles it again)
        for term in _terms(prompt):
            counts[(k, term)] = counts.get((k, term), 0) + 1
    c.executemany("INSERT INTO cluster_terms VALUES (?,?,?,?) ON CONFLICT(scope, cluster, term) DO UPDATE SET "
                  "n = n + excluded.n", [(scope, k, t, n) for (k, t), n in counts.items()])
    return set(clusters.tolist()) | set(old.values())


def remove_members(c, scope: int, item_ids: Sequence[str]) -> set[int]:
    touched: set[int] = set()
    for start in range(0, len(item_ids), 900):
        chunk = list(item_ids[start:start + 900])
        marks = ",".join("?" * len(chunk))
        touched.update(r[0] for r in c.execute(
            f"SELECT cluster FROM cluster_members WHERE scope = ? AND item_id IN ({marks})", (scope, *chunk)))
        c.execute(f"DELETE FROM cluster_members WHERE scope = ? AND item_id IN ({marks})", (scope, *chunk))
    return touched


def _json(x) -> str:
    return json.dumps(x, default=float, ensure_ascii=False)


def refresh(c, vs, *, scope: int, policy, policy_hash: str, run_id: int, model_key: str, dim: int,
            centroids: np.ndarray, concepts, touched: set[int] | None, opts) -> tuple[set[tuple[str, str]], dict]:
    """Cluster stats, flags, "via cluster" signals and ``clusters`` rows (semantic) for the
    ``touched`` clusters (``None``: all), inside the caller's transaction. Returns the
    (item, category) pairs whose evidence changed, and counts for the summary."""
    from audit.policy import evaluate_flags

    categories = {cat.id: cat for cat in policy.categories}
    sizes = dict(c.execute("SELECT cluster, count(*) FROM cluster_members WHERE scope = ? GROUP BY cluster",
                           (scope,)).fetchall())
    hits: dict[int, dict[str, int]] = {}
    for k, cat, n in c.execute(
            "SELECT m.cluster, s.category, count(*) FROM flag_signals s JOIN cluster_members m "
            "ON m.scope = s.scope AND m.item_id = s.item_id WHERE s.scope = ? AND s.source = '0direct' "
            "GROUP BY m.cluster, s.category", (scope,)):
        hits.setdefault(k, {})[cat] = n
    any_hit = dict(c.execute(
        "SELECT m.cluster, count(DISTINCT s.item_id) FROM flag_signals s JOIN cluster_members m "
        "ON m.scope = s.scope AND m.item_id = s.item_id WHERE s.scope = ? AND s.source = '0direct' "
        "GROUP BY m.cluster", (scope,)).fetchall())
    concept_vectors = concepts.vectors.image if concepts.vectors is not None else {}
    old_state = dict(c.execute("SELECT cluster_id, fingerprint FROM cluster_state WHERE scope = ?", (scope,)).fetchall())
    dirty: set[tuple[str, str]] = set()
    stats = {"clusters_refreshed": 0, "clusters_flag_remade": 0}
    todo = range(len(centroids)) if touched is None else sorted(touched)
    for k in todo:
        cid = semantic_id(policy_hash, k)
        size = int(sizes.get(k, 0))
        if size == 0:
            c.execute("DELETE FROM clusters WHERE cluster_id = ?", (cid,))
            if cid in old_state:
                dirty |= _drop_via(c, scope, cid)
            continue
        centroid = centroids[k]
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
        for cat, n in sorted(hits.get(k, {}).items()):
            shares[cat] = n / size
            if shares[cat] >= opts.cluster_share and size >= opts.cluster_min_size and cat not in reasons:
                reasons[cat] = {"reason": "share", "share": round(shares[cat], 4)}
        fingerprint = _json({"reasons": reasons, "size": size, "shares": {c_: round(v, 6) for c_, v in shares.items()}})
        if reasons:
            dirty |= _drop_via(c, scope, cid)
            dirty |= _make_via(c, vs, scope=scope, policy=policy, cid=cid, cluster=k, size=size, reasons=reasons,
                               shares=shares, scores=scores, concepts=concepts, model_key=model_key, dim=dim,
                               categories=categories, opts=opts)
            c.execute("INSERT OR REPLACE INTO cluster_state VALUES (?,?,?)", (scope, cid, fingerprint))
            stats["clusters_flag_remade"] += 1
        elif cid in old_state:
            dirty |= _drop_via(c, scope, cid)
        medoids = [r[0] for r in c.execute(
            "SELECT item_id FROM cluster_members WHERE scope = ? AND cluster = ? ORDER BY score DESC, item_id LIMIT 3",
            (scope, k))]
        terms = [[t, n] for t, n in c.execute(
            "SELECT term, n FROM cluster_terms WHERE scope = ? AND cluster = ? ORDER BY n DESC, term LIMIT 10",
            (scope, k))]
        c.execute("DELETE FROM clusters WHERE cluster_id = ?", (cid,))
        # members stay in cluster_members: the row names them (members_ref), so a run that
        # touches a cluster writes one small row, not its member list
        c.execute(f"INSERT INTO clusters ({', '.join(CLUSTER_COLS)}) VALUES (?,?,'semantic',?,?,?,?,?,?,?,?,?)",
                  (cid, policy_hash, size, members_ref(scope, k), _json(medoids), _json(terms), _json(scores),
                   round(float(any_hit.get(k, 0)) / size, 6), int(bool(reasons)), _json(sorted(reasons)), run_id))
        stats["clusters_refreshed"] += 1
    return dirty, stats


def _drop_via(c, scope: int, cid: str) -> set[tuple[str, str]]:
    source = f"1cluster:{cid}"
    pairs = set(c.execute("SELECT item_id, category FROM flag_signals WHERE scope = ? AND source = ?",
                          (scope, source)).fetchall())
    c.execute("DELETE FROM flag_signals WHERE scope = ? AND source = ?", (scope, source))
    c.execute("DELETE FROM cluster_state WHERE scope = ? AND cluster_id = ?", (scope, cid))
    return pairs


def _make_via(c, vs, *, scope, policy, cid, cluster, size, reasons, shares, scores, concepts, model_key, dim,
              categories, opts) -> set[tuple[str, str]]:
    from audit.flag.stream import align

    members = [r[0] for r in c.execute("SELECT item_id FROM cluster_members WHERE scope = ? AND cluster = ? "
                                       "ORDER BY item_id", (scope, cluster))]
    direct: dict[str, set[str]] = {}
    for item_id, cat in c.execute(
            "SELECT s.item_id, s.category FROM cluster_members m JOIN flag_signals s ON s.scope = m.scope "
            "AND s.item_id = m.item_id AND s.source = '0direct' WHERE m.scope = ? AND m.cluster = ?", (scope, cluster)):
        direct.setdefault(item_id, set()).add(cat)
    suppressed = {item_id: set(json.loads(cats)) for item_id, cats in c.execute(
        "SELECT s.item_id, s.categories FROM cluster_members m JOIN flag_suppressed s ON s.scope = m.scope "
        "AND s.item_id = m.item_id WHERE m.scope = ? AND m.cluster = ?", (scope, cluster))}
    item_scores: dict[str, np.ndarray] = {}
    negated: dict[str, np.ndarray] = {}
    if concepts.vectors is not None and concepts.vectors.image and any(
            why["reason"] == "centroid" for why in reasons.values()):
        got_keys, got = vs.get(model_key, "image", members)
        vecs, _ = align(members, got_keys, got, dim)
        item_scores = {cid_: vecs @ v for cid_, v in concepts.vectors.image.items()}
        for neg in policy.negative_concepts:
            neg_score = vecs @ concepts.vectors.negative[neg.id]
            fires = neg_score >= concepts.threshold(f"negative:{neg.id}", "image")
            for concept_id in neg.suppresses or [x.id for x in policy.concepts]:
                if concept_id in item_scores:
                    negated[concept_id] = negated.get(concept_id, np.zeros(len(members), bool)) | (
                        fires & (item_scores[concept_id] <= neg_score))
    rows = []
    for cat, why in reasons.items():
        if cat not in categories:
            continue
        rank = categories[cat].rank
        concept_ids = sorted({s.split(":", 1)[1].split("/", 1)[0] for s in why.get("signals", ())
                              if s.startswith("concept:")})
        for m, item_id in enumerate(members):
            mine = direct.get(item_id, set())
            if cat in mine or any(x in categories and categories[x].rank >= rank for x in mine):
                continue  # already flagged directly, here or at an equal or higher severity
            sup = suppressed.get(item_id, ())
            if "*" in sup or cat in sup:
                continue
            if why["reason"] == "centroid":
                if concept_ids and all(x in negated and negated[x][m] for x in concept_ids):
                    continue
                cs = scores.get(concept_ids[0], {}) if concept_ids else {}
                detail = {"cluster_id": cid, "reason": "centroid", "concept": concept_ids[0] if concept_ids else None,
                          "cluster_size": size}
                if concept_ids and concept_ids[0] in item_scores:
                    detail["member_score"] = round(float(item_scores[concept_ids[0]][m]), 6)
                sig = Signal("cluster", f"cluster:{cid}", cs.get("score"), cs.get("threshold"), cs.get("margin"), detail)
            else:
                share = shares[cat]
                sig = Signal("cluster", f"cluster:{cid}", round(share, 6), opts.cluster_share,
                             round(share - opts.cluster_share, 6),
                             {"cluster_id": cid, "reason": "share", "cluster_size": size,
                              "flagged_members": int(round(share * size))})
            rows.append((scope, item_id, cat, f"1cluster:{cid}", categories[cat].severity, _json([sig.to_dict()])))
    c.executemany("INSERT OR REPLACE INTO flag_signals VALUES (?,?,?,?,?,?)", rows)
    return {(r[1], r[2]) for r in rows}


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
            (scope, root)).fetchone()[0]
        if size < 2:
            continue
        medoids = [r[0] for r in c.execute("SELECT item_id FROM dup_groups WHERE scope = ? AND root = ? "
                                           "ORDER BY item_id LIMIT 3", (scope, root))]
        c.execute(
            f"INSERT INTO clusters ({', '.join(CLUSTER_COLS)}) VALUES (?,?,'near_duplicate',?,"
            "(SELECT json_group_array(item_id) FROM (SELECT item_id FROM dup_groups WHERE scope = ? AND root = ? "
            " ORDER BY item_id)),?,NULL,NULL,?,0,'[]',?)",
            (gid, policy_hash, size, scope, root, _json(medoids), round(flagged / size, 6), run_id))
        n += 1
    return n
