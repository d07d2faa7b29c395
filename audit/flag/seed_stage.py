"""The seed stage of a flag run (its step 6): human-confirmed items, their nearest image
neighbours kept in ``seed_neighbors``, and the ``2seed:<seed>`` evidence those neighbours
carry in ``flag_signals``. The pure parts (neighbour search, signals, screening) are in
``audit.flag.seeds``; this module reads and writes the scope's tables.
"""

from __future__ import annotations

import json

import numpy as np

from audit.flag.combine import merge as _merge
from audit.flag.stream import in_chunks


def confirmed_members(conn, scope: int) -> dict:
    """Confirmed items (``audit.review.confirmed_items``) that are cluster members (have a vector)."""
    from audit.review import confirmed_items

    confirmed = confirmed_items(conn)
    keep = set()
    for chunk in in_chunks(sorted(confirmed)):
        marks = ",".join("?" * len(chunk))
        keep.update(
            r[0]
            for r in conn.execute(
                f"SELECT item_id FROM cluster_members WHERE scope=? AND item_id IN ({marks})", (scope, *chunk)
            )
        )
    return {s: confirmed[s] for s in sorted(keep)}


def seed_merge(seed_ids, seed_vecs, ids, vecs, best, k):
    from audit.flag.seeds import top_neighbors

    return {**best, **top_neighbors(seed_ids, seed_vecs, [(ids, vecs)], k, best)}


def seed_screen(conn, vs, pol, model_key: str, dim: int, best: dict, detectors, make_ctx, summary):
    """A filter for seed signals (``audit.flag.seeds.screen_seed_signals``): the neighbours'
    own signals come from the run's detectors on those few items, dismissals from the review
    log (``audit.flag.learned.decided_labels``)."""
    from audit.flag.combine import fired_names
    from audit.flag.learned import decided_labels
    from audit.flag.seeds import screen_seed_signals
    from audit.flag.stream import align, fetch_items, load_vectors

    neighbours = sorted({item for nbrs in best.values() for _, item in nbrs})
    fired: dict[str, set[str]] = {}
    vec_of: dict[str, np.ndarray] = {}
    for start in range(0, len(neighbours), 2000):
        b, _ = fetch_items(conn, neighbours[start : start + 2000])
        if not len(b):
            continue
        load_vectors(vs, model_key, dim, b)
        signals, _, sup_con = _merge([det.detect(make_ctx(b)) for det in detectors])
        for row, item_id in enumerate(b.item_ids):
            fired[item_id] = fired_names(signals.get(row, []), sup_con.get(row, set()))
            if b.has_image[row]:
                vec_of[item_id] = b.image[row]
    labels = decided_labels(conn)
    dismissed: dict[str, list[str]] = {}
    for (item_id, cat), (label, _) in labels.items():
        if label == 0:
            dismissed.setdefault(cat, []).append(item_id)
    near: dict[tuple[str, str], float] = {}
    for cat, ids in dismissed.items():
        ids = sorted(set(ids))
        gk, gv = vs.get(model_key, "image", ids)
        dv, has = align(ids, gk, gv, dim)
        dv = dv[has]
        if not len(dv) or not vec_of:
            continue
        names = sorted(vec_of)
        sims = np.stack([vec_of[n] for n in names]) @ dv.T
        for n, row in zip(names, sims):
            near[(n, cat)] = float(row.max())
    stats = summary.detectors.setdefault("seeds", {})

    def screen(signals):
        keep, dropped = screen_seed_signals(pol, signals, fired, labels, near)
        for k, v in dropped.items():
            stats[f"dropped_{k}"] = stats.get(f"dropped_{k}", 0) + v
        return keep

    return screen


def write_seeds(
    c, scope: int, confirmed: dict, best: dict, categories: dict, opts, screen=None
) -> set[tuple[str, str]]:
    """Store each seed's neighbours and remake every seed signal (seeds are few: seeds × k rows)."""
    from audit.flag.seeds import SEED_CATEGORY, SEED_SEVERITY, signals_for_seed

    dirty = set(
        c.execute(
            "SELECT item_id, category FROM flag_signals WHERE scope=? AND source LIKE '2seed:%'", (scope,)
        ).fetchall()
    )
    c.execute("DELETE FROM flag_signals WHERE scope=? AND source LIKE '2seed:%'", (scope,))
    c.execute("DELETE FROM seed_neighbors WHERE scope=?", (scope,))
    rows = []
    for seed in sorted(confirmed):
        neighbors = best.get(seed, [])
        c.executemany(
            "INSERT INTO seed_neighbors VALUES (?,?,?,?)",
            [(scope, seed, "", -2.0)] + [(scope, seed, item, score) for score, item in neighbors],
        )
        decisions = confirmed[seed]
        cats = {d.category for d in decisions if d.category and d.category in categories}
        if not cats:
            cats = {
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT category FROM flag_signals WHERE scope=? AND item_id=?", (scope, seed)
                )
            } & set(categories)
        cats = cats or {SEED_CATEGORY}
        nbr_ids = [item for _, item in neighbors]
        suppressed = {}
        for chunk in in_chunks(nbr_ids):
            marks = ",".join("?" * len(chunk))
            suppressed.update(
                {
                    i: set(json.loads(cs))
                    for i, cs in c.execute(
                        f"SELECT item_id, categories FROM flag_suppressed WHERE scope=? AND item_id IN ({marks})",
                        (scope, *chunk),
                    )
                }
            )
        made = signals_for_seed(
            seed, neighbors, decisions, cats, min_cosine=opts.seed_min_cosine, suppressed=suppressed
        )
        for item_id, cat, sig in screen(made) if screen is not None else made:
            sev = categories[cat].severity if cat in categories else SEED_SEVERITY
            rows.append(
                (
                    scope,
                    item_id,
                    cat,
                    f"2seed:{seed}",
                    sev,
                    json.dumps([sig.to_dict()], default=float, ensure_ascii=False),
                )
            )
    c.executemany("INSERT OR REPLACE INTO flag_signals VALUES (?,?,?,?,?,?)", rows)
    return dirty | {(r[1], r[2]) for r in rows}
