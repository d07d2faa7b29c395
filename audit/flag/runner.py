"""``Audit.flag``: signals → categories → findings, clusters and seed neighbours, in one run.

Steps (times in ``FlagSummary.timings``):

1. load the policy (``None``: the packaged default) and the model whose vectors are stored;
2. choose the rows: items never evaluated under this policy hash and model (incremental), or
   every item when the policy changed (its content hash is new) or ``full=True``. Items that
   had no image vector yet are evaluated again once they have one;
3. detectors (``concepts``, ``prompts``, ``hashes``) over those rows; negative concepts cancel
   concept signals, negative banks suppress categories; the policy's flags combine the fired
   signals into categories (``audit.policy.evaluate_flags``): one finding per item and
   category, carrying every contributing signal (plus a ``combination`` signal naming the
   flag when it combines several conditions);
4. archive-wide structure over every item with an image vector: semantic clusters (FAISS
   k-means, k ≈ √(n/2)) with size, centroid concept scores, exemplars, top prompt terms and
   flagged share; near-duplicate groups (PDQ within ``dup_pdq_distance`` bits, CLIP cosine
   ≥ ``dup_min_cosine``; connected components). A cluster is flagged for a category when its
   centroid alone fires the category's flags, or when at least ``cluster_share`` of its
   members (and ``cluster_min_size`` members) hold an item-level finding of that category;
   its other members get findings with a ``cluster`` signal ("via cluster"), except members
   already flagged directly at an equal or higher severity (no duplicate review work);
5. seeds: items whose latest review decision is ``confirm`` (never automatic flags); their
   ``seed_k`` nearest image neighbours with cosine ≥ ``seed_min_cosine`` get findings with a
   ``seed_neighbor`` signal, in the seed's categories;
6. statuses from review decisions (dismissed / confirmed / escalated; else new, then known),
   and one transaction writes findings, clusters, the evaluated items and the run record
   (policy hash, model, every threshold with how it was obtained).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from audit.findings.store import DERIVED_KINDS, Finding, FindingsStore, Signal
from audit.flag.base import FlagContext
from audit.flag.combine import combine as _combine, merge as _merge
from audit.flag.seeds import SEED_SEVERITY, seed_neighbor_signals

if TYPE_CHECKING:  # pragma: no cover
    from audit.api import Audit
    from audit.policy import Policy

# The steps of a flag run, in order, as a progress bar counts them.
FLAG_PHASES = ("load", "prepare", "detect", "combine", "clusters", "seeds", "write")

DDL = """
CREATE TABLE IF NOT EXISTS flag_items (
    policy_hash TEXT NOT NULL, model_key TEXT NOT NULL, item_id TEXT NOT NULL,
    run_id INTEGER, complete INTEGER NOT NULL,  -- 0: evaluated without an image vector
    PRIMARY KEY (policy_hash, model_key, item_id)
) WITHOUT ROWID;
"""


@dataclass
class FlagOptions:
    full: bool = False
    n_clusters: int | None = None  # None: choose_k(n)
    cluster_share: float = 0.5
    cluster_min_size: int = 3
    dup_pdq_distance: int = 15
    dup_min_cosine: float | None = 0.98
    seed_k: int = 10
    seed_min_cosine: float = 0.9
    kmeans_seed: int = 1234


@dataclass
class FlagSummary:
    run_id: int
    policy: dict
    model_key: str
    mode: str  # full | incremental
    items: int = 0
    evaluated: int = 0
    findings: int = 0
    new_findings: int = 0
    by_category: dict = field(default_factory=dict)
    by_severity: dict = field(default_factory=dict)
    by_status: dict = field(default_factory=dict)
    by_signal_kind: dict = field(default_factory=dict)
    suppressed: int = 0
    clusters: int = 0
    flagged_clusters: int = 0
    near_duplicate_groups: int = 0
    seeds: int = 0
    deactivated: int = 0
    thresholds: dict = field(default_factory=dict)
    detectors: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    duration_s: float = 0.0
    decisions_seen: int = 0  # the newest decision id this run took into account
    # problems of the run itself (a policy rule disabled after timeouts), one dict each with
    # "detector", "kind", "message"; recorded with the run, printed by the CLI as warnings
    errors: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 3)
        d["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return d


# ------------------------------------------------------------------------------ loading


def _load_items(conn) -> dict[str, list]:
    cols = ("item_id", "prompt", "negative_prompt", "md5", "pdq", "pdq_quality")
    cur = conn.execute(
        f"SELECT {', '.join('i.' + c for c in cols)} FROM items i WHERE i.status = 'ok' AND EXISTS "
        "(SELECT 1 FROM locations l WHERE l.item_id = i.item_id AND l.present = 1) ORDER BY i.item_id")
    out: dict[str, list] = {c: [] for c in cols}
    while rows := cur.fetchmany(50_000):
        for c, values in zip(cols, zip(*rows)):
            out[c].extend(values)
    return out


def _image_matrix(vs, model_key: str, item_ids: list[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) image vectors aligned to sorted ``item_ids`` (zero rows where missing) and the mask."""
    n = len(item_ids)
    mat = np.zeros((n, dim), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    if n == 0:
        return mat, has
    ids = np.asarray(item_ids)
    for keys, vecs in vs.iter_all(model_key, "image"):
        pos = np.searchsorted(ids, np.asarray(keys))
        pos = np.clip(pos, 0, n - 1)
        ok = ids[pos] == np.asarray(keys)
        mat[pos[ok]] = vecs[ok]
        has[pos[ok]] = True
    return mat, has


def _prompt_matrix(vs, model_key: str, prompts: Sequence[str | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    from audit.catalog.vectors import prompt_key

    n = len(prompts)
    mat = np.zeros((n, dim), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    keys = [prompt_key(p) if p else None for p in prompts]
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return mat, has
    got, vecs = vs.get(model_key, "prompt", wanted)
    lookup = {k: i for i, k in enumerate(got)}
    for row, k in enumerate(keys):
        j = lookup.get(k) if k else None
        if j is not None:
            mat[row] = vecs[j]
            has[row] = True
    return mat, has


def _negative_bank_suppressions(pol, items: dict[str, list]) -> dict[str, set[str]]:
    from audit.policy.hashlists import load_hash_bank, match_negative

    out: dict[str, set[str]] = {}
    for hl in pol.negative_banks:
        bank = hl.bank if hl.bank is not None else load_hash_bank(hl.path)
        mask = match_negative(bank, items["pdq"], hl.pdq_max_distance, md5=items["md5"], sha256=items["item_id"])
        for r in np.flatnonzero(mask):
            out.setdefault(items["item_id"][r], set()).update(set(hl.suppresses) or {"*"})
    return out


def _calibration_sample(image_all: np.ndarray, has: np.ndarray) -> np.ndarray:
    """The archive's image vectors threshold calibration samples (at most 20,000, fixed seed)."""
    from audit.flag.concepts import MAX_CALIBRATION_SAMPLES

    rows = np.flatnonzero(has)
    if len(rows) > MAX_CALIBRATION_SAMPLES:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_CALIBRATION_SAMPLES, replace=False))
    return image_all[rows]


def _signals_from_json(text: str) -> list[Signal]:
    return [Signal(**s) for s in json.loads(text)]


# ------------------------------------------------------------------------------ the run


def default_detectors():
    from audit.flag.concepts import ConceptDetector
    from audit.flag.hashes import HashDetector
    from audit.flag.prompts import PromptDetector

    return [ConceptDetector(), PromptDetector(), HashDetector()]


def run_flag(audit: "Audit", policy: "str | os.PathLike | Policy | None" = None, *, model: str | None = None,
             checkpoint: str | os.PathLike | None = None, device: str = "cpu", embedder=None,
             options: FlagOptions | None = None, wait: bool = False, progress=None,
             argv: Sequence[str] | None = None) -> FlagSummary:
    from audit.catalog.lock import IndexLock
    from audit.catalog.vectors import VectorStore
    from audit.index.search import resolve_model
    from audit.policy import Policy, load_policy

    from audit.embed.device import check_device

    opts = options or FlagOptions()
    if not 0 < opts.cluster_share <= 1:
        from audit.errors import UsageError

        raise UsageError("cluster_share must be in (0, 1]")
    device = check_device(device)
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    conn = audit.catalog.conn
    vs = VectorStore(conn)
    if not vs.models() and not model and not (pol.concepts or pol.negative_concepts):
        identity = {"key": "", "dim": 0}  # a rules/hash-lists-only policy runs without embeddings
    else:
        identity = resolve_model(vs, model, audit.index_dir)
    model_key = identity["key"]
    dim = int(identity["dim"])

    def factory():
        if embedder is not None:
            return embedder
        from audit.index.search import Searcher

        return Searcher(audit.index_dir, conn).embedder(identity, checkpoint=str(checkpoint) if checkpoint else None,
                                                        device=device)

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    report = progress or (lambda event, n: None)
    report("total", len(FLAG_PHASES))
    phases_done: set[str] = set()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - since
        if name in FLAG_PHASES and name not in phases_done:
            phases_done.add(name)
            report("done", 1)
        return now

    with IndexLock(audit.index_dir, wait=wait), audit.recorded_run("flag", argv) as run:
        summary = _run(audit, conn, pol, vs, model_key, dim, factory, opts, run.run_id, timings, lap)
        summary.duration_s = time.perf_counter() - t0
        report("done", len(FLAG_PHASES) - len(phases_done))  # phases an unchanged run skips
        run.summary = summary
        return summary


def _unchanged_since_last_run(conn, policy_hash: str, model_key: str, n_items: int) -> bool:
    last = conn.execute(
        "SELECT f.run_id, f.at, r.summary, r.status FROM flag_runs f JOIN runs r ON r.run_id = f.run_id "
        "WHERE f.policy_hash=? AND f.model_key=? ORDER BY f.run_id DESC LIMIT 1",
        (policy_hash, model_key),
    ).fetchone()
    if last is None or last[3] != "ok":
        return False
    try:
        previous = json.loads(last[2] or "{}")
    except ValueError:
        return False
    previous_items = previous.get("items")
    # decision ids, not timestamps: an imported decision may carry an older `at`
    newest_decision = conn.execute("SELECT coalesce(max(decision_id), 0) FROM decisions").fetchone()[0]
    return previous_items == n_items and previous.get("decisions_seen", -1) == newest_decision


def _unchanged_summary(store, summary: FlagSummary, policy_hash: str, timings, lap, t) -> FlagSummary:
    summary.mode = "unchanged"
    active = store.findings(policy_hash=policy_hash)
    summary.findings = active.height
    summary.by_category = dict(active.group_by("category").len().iter_rows())
    summary.by_severity = dict(active.group_by("severity").len().iter_rows())
    summary.by_status = dict(active.group_by("status").len().iter_rows())
    clusters = store.clusters(policy_hash=policy_hash)
    summary.clusters = int((clusters["kind"] == "semantic").sum())
    summary.near_duplicate_groups = int((clusters["kind"] == "near_duplicate").sum())
    summary.flagged_clusters = int(clusters["flagged"].sum() or 0)
    lap("prepare", t)
    return summary


def _run(audit, conn, pol, vs, model_key, dim, factory, opts: FlagOptions, run_id, timings, lap) -> FlagSummary:
    from audit.flag.clusters import cluster_stage
    from audit.review import confirmed_items, latest_by_target
    from audit.timeutil import utc_now

    t = time.perf_counter()
    store = FindingsStore(conn)
    conn.executescript(DDL)
    ph = pol.content_hash
    summary = FlagSummary(run_id, {"name": pol.name, "version": pol.version, "hash": ph,
                                   "path": str(pol.path) if pol.path else None}, model_key, "full")
    items = _load_items(conn)
    ids: list[str] = items["item_id"]
    n = len(ids)
    summary.items = n
    image_all, has_all = _image_matrix(vs, model_key, ids, dim)
    t = lap("load", t)

    # --- which rows to evaluate
    done = dict(conn.execute("SELECT item_id, complete FROM flag_items WHERE policy_hash=? AND model_key=?",
                             (ph, model_key)).fetchall())
    prev_run = conn.execute("SELECT thresholds FROM flag_runs WHERE policy_hash=? AND model_key=? "
                            "ORDER BY run_id DESC LIMIT 1", (ph, model_key)).fetchone()
    incremental = bool(done) and not opts.full
    summary.mode = "incremental" if incremental else "full"
    if incremental:
        rows = np.array([r for r, item_id in enumerate(ids) if done.get(item_id) != 1
                         and not (done.get(item_id) == 0 and not has_all[r])], dtype=np.int64)
    else:
        rows = np.arange(n, dtype=np.int64)
    summary.evaluated = int(len(rows))
    summary.decisions_seen = conn.execute("SELECT coalesce(max(decision_id), 0) FROM decisions").fetchone()[0]
    if incremental and not len(rows) and _unchanged_since_last_run(conn, ph, model_key, n):
        # Nothing new to judge, no new decision, the same items: the stored findings and
        # clusters stand as they are. (A scan with nothing new must cost next to nothing.)
        summary.thresholds = json.loads(prev_run[0]) if prev_run and prev_run[0] else {}
        return _unchanged_summary(store, summary, ph, timings, lap, t)
    sel = rows.tolist()
    prompt_vecs, has_prompt = _prompt_matrix(vs, model_key, [items["prompt"][r] for r in sel], dim)
    ctx = FlagContext(
        policy=pol, item_ids=[ids[r] for r in sel], prompts=[items["prompt"][r] for r in sel],
        negative_prompts=[items["negative_prompt"][r] for r in sel], md5=[items["md5"][r] for r in sel],
        pdq=[items["pdq"][r] for r in sel], pdq_quality=[items["pdq_quality"][r] for r in sel],
        image_vectors=image_all[rows] if len(rows) else np.zeros((0, dim), np.float32),
        has_image=has_all[rows], prompt_vectors=prompt_vecs, has_prompt=has_prompt, model_key=model_key,
        embedder_factory=factory, sample_vectors=_calibration_sample(image_all, has_all),
        previous_thresholds=json.loads(prev_run[0]) if prev_run and prev_run[0] else {},
    )
    t = lap("prepare", t)

    # --- detectors
    from audit.flag.extra import policy_detectors

    detectors = default_detectors() + policy_detectors(conn, pol)  # resources, faces: as the policy asks
    concept_det = detectors[0]
    results = []
    for det in detectors:
        ts = time.perf_counter()
        res = det.detect(ctx)
        results.append(res)
        summary.detectors[det.name] = {**res.stats, "rows": len(res.signals),
                                       "suppressed_rows": len(res.suppressions), "seconds": round(time.perf_counter() - ts, 3)}
        summary.errors.extend({"detector": det.name, **error} for error in getattr(res, "errors", ()))
    if pol.concepts or pol.negative_concepts:
        concept_det.prepare(ctx)  # also when no row is new: cluster centroids are scored
    thresholds = concept_det.vectors.thresholds if concept_det.vectors else {}
    summary.thresholds = thresholds
    signals, sup_cat, sup_con = _merge(results)
    t = lap("detect", t)

    # --- item-level findings: new rows now, old rows from the store (incremental)
    findings: dict[tuple[str, str], Finding] = {}
    suppressed_total = 0
    row_suppressed_cats: dict[str, set[str]] = {}
    for local, sigs in signals.items():
        item_id = ctx.item_ids[local]
        hits, sup = _combine(pol, sigs, sup_con.get(local, set()), sup_cat.get(local, set()))
        suppressed_total += sup
        for hit, chosen in hits:
            findings[(item_id, hit.category)] = Finding(item_id, hit.category, hit.severity, ph, chosen)
    for local, cats in sup_cat.items():
        row_suppressed_cats[ctx.item_ids[local]] = cats
    if incremental and (pol.negative_banks):  # known false positives among items evaluated earlier
        for item_id, cats in _negative_bank_suppressions(pol, items).items():
            row_suppressed_cats.setdefault(item_id, set()).update(cats)
    if incremental:
        evaluated = set(ctx.item_ids)
        for item_id, category, severity, sig_json in conn.execute(
                "SELECT item_id, category, severity, signals FROM findings WHERE policy_hash=? AND active=1", (ph,)):
            if item_id in evaluated:
                continue
            kept = [s for s in _signals_from_json(sig_json) if s.kind not in DERIVED_KINDS]
            if kept:
                findings[(item_id, category)] = Finding(item_id, category, severity, ph, kept)
    summary.suppressed = suppressed_total
    item_level = {key for key in findings}
    t = lap("combine", t)

    # --- clusters, cluster flags, near-duplicate groups over every item with an image vector
    vec_rows = np.flatnonzero(has_all)
    vecs = image_all if len(vec_rows) == n else image_all[vec_rows]  # no copy when every item has a vector
    row_of = {ids[r]: r for r in range(n)}
    categories = {c.id: c for c in pol.categories}
    cl = cluster_stage(pol, ph, run_id, [ids[r] for r in vec_rows], vecs, [items["prompt"][r] for r in vec_rows],
                       [items["pdq"][r] for r in vec_rows], [items["pdq_quality"][r] for r in vec_rows],
                       concept_det, item_level, row_suppressed_cats, opts)
    for name, seconds in cl.timings.items():
        timings[name] = timings.get(name, 0.0) + seconds
    t = lap("clusters", time.perf_counter())  # timed above, per step; counted here as one phase
    cluster_rows, cluster_of = cl.rows, cl.cluster_of
    for item_id, cat, sig in cl.candidates:
        f = findings.get((item_id, cat))
        if f is None:
            findings[(item_id, cat)] = Finding(item_id, cat, categories[cat].severity, ph, [sig])
        else:
            f.signals.append(sig)
    summary.near_duplicate_groups = sum(1 for c in cluster_rows if c["kind"] == "near_duplicate")

    # --- seeds: human-confirmed items only (audit/flag/seeds.py)
    confirmed = confirmed_items(conn)
    summary.seeds = sum(1 for s in confirmed if s in row_of and has_all[row_of[s]])
    if summary.seeds:
        flagged_now: dict[str, set[str]] = {}
        for (item_id, cat) in findings:
            flagged_now.setdefault(item_id, set()).add(cat)
        for item_id, cat in conn.execute("SELECT item_id, category FROM findings WHERE policy_hash=? AND active=1", (ph,)):
            flagged_now.setdefault(item_id, set()).add(cat)
        for item_id, cat, sig in seed_neighbor_signals(
                confirmed, [ids[r] for r in vec_rows], vecs, flagged_now, set(categories), k=opts.seed_k,
                min_cosine=opts.seed_min_cosine, suppressed=row_suppressed_cats):
            f = findings.get((item_id, cat))
            if f is None:
                sev = categories[cat].severity if cat in categories else SEED_SEVERITY
                findings[(item_id, cat)] = Finding(item_id, cat, sev, ph, [sig])
            else:
                f.signals.append(sig)
    t = lap("seeds", t)

    # --- statuses from decisions
    item_dec, finding_dec = latest_by_target(conn)
    statuses: dict[str, str] = {}
    for (item_id, cat), f in findings.items():
        f.cluster_id = cluster_of.get(item_id)
        cands = [d for d in (item_dec.get(item_id), finding_dec.get(f.finding_id)) if d is not None]
        if cands:
            f.status = max(cands, key=lambda d: d.decision_id).status
            statuses[f.finding_id] = f.status
    prior = dict(conn.execute("SELECT finding_id, status FROM findings WHERE policy_hash=?", (ph,)).fetchall())

    # --- write: one transaction
    now = utc_now()
    with store.transaction() as c:
        store.upsert_findings_in(c, findings.values(), run_id=run_id, now=now)
        store.set_statuses_in(c, statuses)
        summary.deactivated = store.deactivate_others_in(c, ph, [f.finding_id for f in findings.values()])
        store.replace_clusters_in(c, ph, [{k: v for k, v in r.items() if not k.startswith("_")} for r in cluster_rows])
        c.executemany("INSERT OR REPLACE INTO flag_items VALUES (?,?,?,?,?)",
                      [(ph, model_key, ctx.item_ids[i], run_id, int(bool(ctx.has_image[i]) or not pol.concepts))
                       for i in range(len(ctx))])
        c.execute("INSERT INTO flag_runs (run_id, policy_hash, policy_name, policy_version, policy_path, model_key, "
                  "thresholds, at) VALUES (?,?,?,?,?,?,?,?)",
                  (run_id, ph, pol.name, pol.version, str(pol.path) if pol.path else None, model_key,
                   json.dumps(thresholds, default=float), now))
    t = lap("write", t)

    final = dict(conn.execute("SELECT finding_id, status FROM findings WHERE policy_hash=? AND active=1", (ph,)).fetchall())
    summary.findings = len(findings)
    summary.new_findings = sum(1 for f in findings.values() if f.finding_id not in prior and final.get(f.finding_id) == "new")
    summary.by_category = dict(Counter(f.category for f in findings.values()))
    summary.by_severity = dict(Counter(f.severity for f in findings.values()))
    summary.by_status = dict(Counter(final.get(f.finding_id, f.status) for f in findings.values()))
    summary.by_signal_kind = dict(Counter(s.kind for f in findings.values() for s in f.signals))
    summary.clusters = sum(1 for c in cluster_rows if c["kind"] == "semantic")
    summary.flagged_clusters = sum(1 for c in cluster_rows if c["flagged"])
    summary.timings = timings
    return summary


def concept_scores(audit: "Audit", policy: "str | os.PathLike | Policy | None" = None, *, model: str | None = None,
                   checkpoint: str | os.PathLike | None = None, device: str = "cpu", embedder=None):
    """Every item's cosine to every concept of ``policy``, image and prompt, with the
    thresholds a flag run would use now: a polars frame (item_id, concept, image_score,
    prompt_score, image_threshold, prompt_threshold). For notebooks and threshold tuning."""
    import polars as pl

    from audit.catalog.vectors import VectorStore
    from audit.flag.concepts import ConceptDetector
    from audit.embed.device import check_device
    from audit.index.search import Searcher, resolve_model
    from audit.policy import Policy, load_policy

    device = check_device(device)
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    conn = audit.catalog.conn
    vs = VectorStore(conn)
    identity = resolve_model(vs, model, audit.index_dir)
    FindingsStore(conn)
    items = _load_items(conn)
    ids = items["item_id"]
    dim = int(identity["dim"])
    image, has = _image_matrix(vs, identity["key"], ids, dim)
    prompts, has_prompt = _prompt_matrix(vs, identity["key"], items["prompt"], dim)
    prev = conn.execute("SELECT thresholds FROM flag_runs WHERE policy_hash=? AND model_key=? ORDER BY run_id DESC "
                        "LIMIT 1", (pol.content_hash, identity["key"])).fetchone()
    ctx = FlagContext(
        policy=pol, item_ids=ids, prompts=items["prompt"], negative_prompts=items["negative_prompt"], md5=items["md5"],
        pdq=items["pdq"], pdq_quality=items["pdq_quality"], image_vectors=image, has_image=has,
        prompt_vectors=prompts, has_prompt=has_prompt, model_key=identity["key"],
        embedder_factory=lambda: embedder or Searcher(audit.index_dir, conn).embedder(
            identity, checkpoint=str(checkpoint) if checkpoint else None, device=device),
        previous_thresholds=json.loads(prev[0]) if prev and prev[0] else {},
    )
    det = ConceptDetector()
    img, txt = det.scores(ctx, "image"), det.scores(ctx, "prompt")
    frames = [pl.DataFrame({"item_id": ids, "concept": [c.id] * len(ids), "image_score": img[c.id],
                            "prompt_score": txt[c.id],
                            "image_threshold": [det.threshold(c.id, "image")] * len(ids),
                            "prompt_threshold": [det.threshold(c.id, "prompt")] * len(ids)})
              for c in pol.concepts]
    return pl.concat(frames) if frames else pl.DataFrame()
