"""``Audit.flag``: signals → categories → findings, clusters and seed neighbours, streamed in
bounded batches and incremental per policy and model (state: ``audit.flag.state``).

1. load the policy and the model; decide the mode (``_decide``): *full* on the first run of
   a policy hash + model key (a changed policy or model), on ``full=True``, after an
   interrupted full run, or when the image vectors grew ``recluster_factor`` times since the
   clusters were trained; else *incremental*: only items with ``items.seq`` above the last
   completed run's watermark, plus items handled without an image vector that have one now;
   *unchanged* when there is nothing new and no new review decision; *full* as well when the
   learned models (``audit.flag.learned``: review decisions per category, enough of each
   kind) differ from those the stored evidence was scored with (``flag_scopes.learned_fp``);
2. full: k-means centroids trained on a deterministic sample (``cluster_sample``) and kept;
   incremental: the kept centroids;
3. per batch of ``batch_size`` items (keyset order; vectors by ``VectorStore.get``): the
   detectors (one prompt-rule breaker for the whole run), combination flags (a category with
   a learned model has the image part of its flag decided by that model), direct evidence
   (``flag_signals``) and findings written in one transaction with the batch's cluster
   memberships, PDQ bands and (incremental) near-duplicate edges against the stored items;
4. full: near-duplicate edges over everything (PDQ in memory by multi-index hashing, cosine
   block by block), one union-find write;
5. clusters the run touched: stats from SQL, flags, "via cluster" evidence, ``clusters`` rows;
6. seeds (human-confirmed items only): each seed's nearest neighbours are kept; new items are
   compared with the seeds, a new seed searches the archive once; a neighbour carries a
   category only when it meets the category's flag with the seed as its image evidence, and
   not when it was dismissed in it or lies nearer a dismissed item than the seed;
7. decisions' statuses, new → known, a full run's stale findings deactivated, the watermark
   and the run record (``flag_runs``: mode, why, reclustered, recluster_why, seq_done).

A finding is the union of its (item, category) evidence in ``flag_signals``; only the pairs
whose evidence changed are rewritten, so an incremental run costs what is new.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from audit.findings.store import Finding, FindingsStore, Signal
from audit.flag.base import FlagContext
from audit.flag.combine import combine as _combine, merge as _merge
from audit.flag.seed_stage import confirmed_members, seed_merge, seed_screen, write_seeds
from audit.flag.stream import in_chunks

if TYPE_CHECKING:  # pragma: no cover
    from audit.api import Audit
    from audit.catalog.store import Catalog
    from audit.flag.cluster_review import ClusterOptions
    from audit.flag.concepts import ConceptVectors
    from audit.policy import Policy

# The steps of a flag run, in order, as a progress bar counts them.
FLAG_PHASES = ("load", "prepare", "detect", "combine", "clusters", "seeds", "write")


@dataclass
class FlagOptions:
    full: bool = False
    n_clusters: int | None = None  # None: choose_k(n)
    # A cluster is flagged for a category when at least ``cluster_min_flagged`` members AND at
    # least ``cluster_share`` of its members are flagged directly (never on its centroid);
    # ``cluster_min_size``: smaller clusters are never flagged. See audit.flag.cluster_review.
    cluster_share: float = 0.25
    cluster_min_flagged: int = 3
    cluster_min_size: int = 3
    # "via cluster" candidates: members within ``cluster_margin`` below a concept threshold
    # (and nearer to the flagged members than to the others), at most ``cluster_candidates``
    # per cluster and category; the rest is counted on the cluster.
    cluster_margin: float = 0.05
    cluster_candidates: int = 10
    # k = n_clusters, else about one cluster per ``cluster_size`` items (at most cluster_max_k)
    cluster_size: int = 25
    cluster_max_k: int = 4096
    dup_pdq_distance: int = 15
    dup_min_cosine: float | None = 0.98
    seed_k: int = 10
    seed_min_cosine: float = 0.9
    kmeans_seed: int = 1234
    batch_size: int = 20_000  # items per batch: memory follows it, not the archive
    cluster_sample: int = 200_000  # k-means trains on at most this many vectors
    recluster_factor: float = 2.0  # re-cluster once the image vectors grew this much since training
    block: int = 20_000  # vectors per block of the exact near-duplicate and seed passes
    # Up to this many image vectors cosine near-duplicates are exact (every pair); above it
    # they come from an inverted-file search over the clusters' cells, ``dup_probes`` cells
    # of a √(n/2)-cell clustering per item (scaled to the clusters' k: the same share of the
    # archive is searched whatever k the cluster size rule gives; ``clusters.cell_probes``)
    # per item (see audit.flag.dups).
    dup_exact_max: int = 200_000
    dup_probes: int = 8
    # learn from review decisions (audit.flag.learned): per category with at least
    # MIN_CONFIRMED confirmed and MIN_DISMISSED dismissed decided items
    learn: bool = True

    def cluster_options(self) -> "ClusterOptions":
        """The cluster stage's options (``audit.flag.cluster_review.ClusterOptions``)."""
        from audit.flag.cluster_review import ClusterOptions

        return ClusterOptions(
            share=self.cluster_share,
            min_flagged=self.cluster_min_flagged,
            min_size=self.cluster_min_size,
            margin=self.cluster_margin,
            candidates=self.cluster_candidates,
        )


@dataclass
class FlagSummary:
    run_id: int
    policy: dict
    model_key: str
    mode: str  # full | incremental | unchanged
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
    why: str = ""  # why the run was full or incremental
    reclustered: bool = False  # clusters trained again in this run
    recluster_why: str = ""
    seq_done: int = 0  # the highest items.seq the run handled (the next run starts above it)

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
        "(SELECT 1 FROM locations l WHERE l.item_id = i.item_id AND l.present = 1) ORDER BY i.item_id"
    )
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


# ------------------------------------------------------------------------------ the run


def default_detectors():
    from audit.flag.concepts import ConceptDetector
    from audit.flag.hashes import HashDetector
    from audit.flag.prompts import PromptDetector

    return [ConceptDetector(), PromptDetector(), HashDetector()]


def run_flag(
    catalog: "Catalog",
    policy: "str | os.PathLike | Policy | None" = None,
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    embedder=None,
    options: FlagOptions | None = None,
    wait: bool = False,
    progress=None,
    argv: Sequence[str] | None = None,
) -> FlagSummary:
    from audit.catalog.lock import IndexLock
    from audit.catalog.runs import recorded_run
    from audit.catalog.vectors import VectorStore
    from audit.index.search import resolve_model
    from audit.policy import Policy, load_policy

    from audit.embed.device import check_device

    opts = options or FlagOptions()
    if not 0 < opts.cluster_share <= 1:
        from audit.errors import UsageError

        raise UsageError("cluster_share must be in (0, 1]")
    if opts.cluster_min_flagged < 1 or opts.cluster_candidates < 0 or opts.cluster_margin < 0 or opts.cluster_size < 1:
        from audit.errors import UsageError

        raise UsageError(
            "cluster_min_flagged and cluster_size must be >= 1, cluster_candidates and cluster_margin >= 0"
        )
    device = check_device(device)
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    conn = catalog.conn
    vs = VectorStore(conn)
    if not vs.models() and not model and not (pol.concepts or pol.negative_concepts):
        identity = {"key": "", "dim": 0}  # a rules/hash-lists-only policy runs without embeddings
    else:
        identity = resolve_model(vs, model, catalog.index_dir)
    model_key = identity["key"]
    dim = int(identity["dim"])

    def factory():
        if embedder is not None:
            return embedder
        from audit.index.search import Searcher

        return Searcher(catalog.index_dir, conn).embedder(
            identity, checkpoint=str(checkpoint) if checkpoint else None, device=device
        )

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

    with IndexLock(catalog.index_dir, wait=wait), recorded_run(catalog, "flag", argv) as run:
        summary = _run(catalog, conn, pol, vs, model_key, dim, factory, opts, run.run_id, timings, lap)
        summary.duration_s = time.perf_counter() - t0
        report("done", len(FLAG_PHASES) - len(phases_done))  # phases an unchanged run skips
        run.summary = summary
        return summary


def _decide(conn, row: dict | None, opts: "FlagOptions", ph: str, model_key: str, vcount: int) -> tuple[str, str, str]:
    """(mode, why, why the clusters are retrained or '') for this run of one policy and model."""
    if row is None or row["state"] == "empty":
        if conn.execute(
            "SELECT 1 FROM flag_scopes WHERE model_key=? AND policy_hash<>? LIMIT 1", (model_key, ph)
        ).fetchone():
            why = "the policy changed (a new policy hash)"
        elif conn.execute(
            "SELECT 1 FROM flag_scopes WHERE policy_hash=? AND model_key<>? LIMIT 1", (ph, model_key)
        ).fetchone():
            why = "the model changed"
        else:
            why = "first run of this policy and model"
        return "full", why, why
    if opts.full:
        return "full", "--full asked for it", "--full asked for it"
    if row["state"] == "full":
        why = "the previous full run was interrupted"
        return "full", why, why
    if model_key and vcount and not row["k"]:
        why = "no clusters yet (no image vector at the last run)"
        return "full", why, why
    trained = row["trained_items"] or 0
    if model_key and trained and vcount >= opts.recluster_factor * trained:
        why = (
            f"the archive grew from {trained} to {vcount} image vectors since the clusters were trained "
            f"(re-cluster factor {opts.recluster_factor:g})"
        )
        return "full", why, why
    return "incremental", "same policy and model: only items changed or embedded since the last run", ""


def _fill_summary(conn, summary: "FlagSummary", ph: str, now: str | None = None) -> None:
    q = "FROM findings WHERE policy_hash=? AND active=1"
    summary.findings = conn.execute(f"SELECT count(*) {q}", (ph,)).fetchone()[0]
    summary.by_category = dict(conn.execute(f"SELECT category, count(*) {q} GROUP BY category", (ph,)).fetchall())
    summary.by_severity = dict(conn.execute(f"SELECT severity, count(*) {q} GROUP BY severity", (ph,)).fetchall())
    summary.by_status = dict(conn.execute(f"SELECT status, count(*) {q} GROUP BY status", (ph,)).fetchall())
    summary.by_signal_kind = dict(
        conn.execute(
            "SELECT json_extract(j.value, '$.kind'), count(*) FROM findings f, json_each(f.signals) j "
            "WHERE f.policy_hash=? AND f.active=1 GROUP BY 1",
            (ph,),
        ).fetchall()
    )
    if now is not None:
        summary.new_findings = conn.execute(
            f"SELECT count(*) {q} AND status='new' AND first_flagged=?", (ph, now)
        ).fetchone()[0]
    kinds = dict(
        conn.execute("SELECT kind, count(*) FROM clusters WHERE policy_hash=? GROUP BY kind", (ph,)).fetchall()
    )
    summary.clusters = int(kinds.get("semantic", 0))
    summary.near_duplicate_groups = int(kinds.get("near_duplicate", 0))
    summary.flagged_clusters = int(
        conn.execute("SELECT coalesce(sum(flagged), 0) FROM clusters WHERE policy_hash=?", (ph,)).fetchone()[0]
    )


def _compose(c, store, scope: int, ph: str, pairs, run_id: int, now: str) -> int:
    """Findings of the (item, category) pairs whose evidence changed: the union of their
    ``flag_signals`` (direct, via cluster, seed neighbour); a pair with none left is
    deactivated. Returns how many were deactivated."""
    from audit.findings.store import finding_id
    from audit.flag.clusters import semantic_id

    by_item: dict[str, set[str]] = {}
    for item_id, cat in pairs:
        by_item.setdefault(item_id, set()).add(cat)
    deactivated = 0
    for chunk in in_chunks(sorted(by_item)):
        marks = ",".join("?" * len(chunk))
        sources: dict[tuple[str, str], list] = {}
        for item_id, cat, source, severity, sig_json in c.execute(
            f"SELECT item_id, category, source, severity, signals FROM flag_signals WHERE scope=? "
            f"AND item_id IN ({marks}) ORDER BY item_id, category, source",
            (scope, *chunk),
        ):
            sources.setdefault((item_id, cat), []).append((severity, sig_json))
        cluster_of = dict(
            c.execute(
                f"SELECT item_id, cluster FROM cluster_members WHERE scope=? AND item_id IN ({marks})", (scope, *chunk)
            ).fetchall()
        )
        out, gone = [], []
        for item_id in chunk:
            for cat in sorted(by_item[item_id]):
                rows = sources.get((item_id, cat))
                if not rows:
                    gone.append((finding_id(ph, item_id, cat),))
                    continue
                sigs = [Signal(**d) for _, js in rows for d in json.loads(js)]
                k = cluster_of.get(item_id)
                out.append(
                    Finding(item_id, cat, rows[0][0], ph, sigs, cluster_id=None if k is None else semantic_id(ph, k))
                )
        store.upsert_findings_in(c, out, run_id=run_id, now=now)
        if gone:
            before = c.total_changes
            c.executemany("UPDATE findings SET active=0 WHERE finding_id=? AND active=1", gone)
            deactivated += c.total_changes - before
    return deactivated


def _apply_decisions(c, conn, ph: str) -> None:
    """Statuses of the decided findings: ``audit.review.LatestDecisions`` (the rule the
    report shows too)."""
    from audit.review import LatestDecisions

    latest = LatestDecisions.read(conn)
    rows: list[tuple[str, str, str]] = []
    for chunk in in_chunks(sorted(latest.decided_items())):
        marks = ",".join("?" * len(chunk))
        rows += c.execute(
            f"SELECT finding_id, item_id, category FROM findings WHERE policy_hash=? AND active=1 "
            f"AND item_id IN ({marks})",
            (ph, *chunk),
        ).fetchall()
    for chunk in in_chunks(sorted(latest.findings)):
        marks = ",".join("?" * len(chunk))
        rows += c.execute(
            f"SELECT finding_id, item_id, category FROM findings WHERE policy_hash=? AND active=1 "
            f"AND finding_id IN ({marks})",
            (ph, *chunk),
        ).fetchall()
    statuses = {}
    for fid, item_id, category in rows:
        d = latest.for_finding(fid, item_id, category)
        if d is not None:
            statuses[fid] = d.status
    FindingsStore(conn).set_statuses_in(c, statuses)


def _merge_stats(into: dict, stats: dict) -> None:
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
            into[key] = value
        elif isinstance(value, dict):
            _merge_stats(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


@dataclass
class _FlagRun:
    """What the steps of one flag run share: its inputs, what step 1 decided and what the
    later steps build (``_run`` calls the steps in order)."""

    catalog: "Catalog"
    conn: object
    pol: "Policy"
    vs: object
    model_key: str
    dim: int
    factory: object  # the embedder, loaded on first need
    opts: FlagOptions
    run_id: int
    timings: dict
    lap: object  # lap(phase, since) -> now: times a phase and reports its progress
    t: float  # when the current phase began
    store: FindingsStore
    summary: FlagSummary
    ph: str
    with_vectors: bool
    n_items: int
    seq_top: int
    vcount: int
    newest_decision: int
    row: dict | None
    usable: dict
    learned_fp: str
    previous_thresholds: dict
    full: bool = False
    todo: list[str] = field(default_factory=list)
    scope: int = 0
    # step 2: concept vectors computed once (the detector, the learned models and the cluster
    # stage all use these), the detectors, the learned models and the centroids
    concepts: "ConceptVectors | None" = None
    detectors: list = field(default_factory=list)
    prompt_det: object = None
    models: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # step 3 on: what the batches touched, the near-duplicate work left for step 4, the seeds
    now: str = ""
    categories: dict = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    roots: set[str] = field(default_factory=set)
    gone_roots: set[str] = field(default_factory=set)
    full_pdq_ids: list = field(default_factory=list)  # a full run's eligible hashes: ids (bytes)
    full_pdq_codes: list = field(default_factory=list)  # and (n, 32) uint8 codes
    probe_ids: list[str] = field(default_factory=list)  # an incremental run's items for the cell-probe
    probe_vecs: list = field(default_factory=list)  # search, and their vectors
    probed: bool = False
    dup_probes: int = 0
    searched: set[str] = field(default_factory=set)
    seed_ids: list[str] = field(default_factory=list)
    seed_best: dict[str, list] = field(default_factory=dict)
    seed_vecs: np.ndarray | None = None
    _sampled: list = field(default_factory=list)

    def calibration_sample(self) -> np.ndarray:
        from audit.flag.concepts import MAX_CALIBRATION_SAMPLES
        from audit.flag.stream import sample_vectors

        if not self._sampled:
            self._sampled.append(
                sample_vectors(self.conn, self.vs, self.model_key, self.dim, self.n_items, MAX_CALIBRATION_SAMPLES)[0]
            )
        return self._sampled[0]

    def make_ctx(self, b) -> FlagContext:
        from audit.flag.frames import frame_vectors

        conn, vs, model_key = self.conn, self.vs, self.model_key
        return FlagContext(
            policy=self.pol,
            item_ids=b.item_ids,
            prompts=b.prompts,
            negative_prompts=b.negative_prompts,
            md5=b.md5,
            pdq=b.pdq,
            pdq_quality=b.pdq_quality,
            image_vectors=b.image,
            has_image=b.has_image,
            prompt_vectors=b.prompt_vectors,
            has_prompt=b.has_prompt,
            model_key=model_key,
            embedder_factory=self.factory,
            sample_factory=self.calibration_sample if self.with_vectors else None,
            previous_thresholds=self.previous_thresholds,
            frame_vectors=frame_vectors(conn, vs, model_key, b.item_ids) if self.with_vectors else {},
            concepts=self.concepts,
        )


def _run(catalog, conn, pol, vs, model_key, dim, factory, opts: FlagOptions, run_id, timings, lap) -> FlagSummary:
    """The steps of the module docstring, in order."""
    r = _load(catalog, conn, pol, vs, model_key, dim, factory, opts, run_id, timings, lap)  # 1
    if r.summary.mode == "unchanged":
        return r.summary
    _prepare(r)  # 2
    _detect_batches(r)  # 3
    _near_duplicates(r)  # 4
    _clusters(r)  # 5
    _seeds(r)  # 6
    return _finish(r)  # 7


def _load(catalog, conn, pol, vs, model_key, dim, factory, opts: FlagOptions, run_id, timings, lap) -> _FlagRun:
    """Step 1: the mode, the work list of an incremental run and the scope opened for writing
    (an unchanged run's summary is complete when this returns)."""
    from audit.catalog.store import transaction
    from audit.flag import learned as lm, state
    from audit.flag.stream import count_items

    t = time.perf_counter()
    store = FindingsStore(conn)
    ph = pol.content_hash
    summary = FlagSummary(
        run_id,
        {"name": pol.name, "version": pol.version, "hash": ph, "path": str(pol.path) if pol.path else None},
        model_key,
        "full",
    )
    with_vectors = bool(model_key) and dim > 0
    n_items = count_items(conn)
    summary.items = n_items
    seq_top = catalog.max_item_seq()  # read first: rows written later are the next run's
    vcount = vs.count(model_key, "image") if with_vectors else 0
    newest_decision = conn.execute("SELECT coalesce(max(decision_id), 0) FROM decisions").fetchone()[0]
    summary.decisions_seen = newest_decision
    row = state.scope_row(conn, ph, model_key)
    mode, why, recluster_why = _decide(conn, row, opts, ph, model_key, vcount)

    labels = lm.decided_labels(conn) if with_vectors and opts.learn else {}
    usable = (
        lm.usable_labels(
            labels, {cat.id for cat in pol.categories}, set(vs.has(model_key, "image", sorted({i for i, _ in labels})))
        )
        if labels
        else {}
    )
    learned_fp = lm.labels_fingerprint(usable)
    if mode == "incremental" and (row.get("learned_fp") or "") != learned_fp:
        mode, why = "full", "the learned model changed (new review decisions): every item is scored again"
        recluster_why = why
    full = mode == "full"
    summary.mode, summary.why = mode, why
    summary.reclustered, summary.recluster_why = bool(full and with_vectors), recluster_why if with_vectors else ""
    prev_run = conn.execute(
        "SELECT thresholds FROM flag_runs WHERE policy_hash=? AND model_key=? ORDER BY run_id DESC LIMIT 1",
        (ph, model_key),
    ).fetchone()
    previous_thresholds = json.loads(prev_run[0]) if prev_run and prev_run[0] else {}
    r = _FlagRun(
        catalog=catalog,
        conn=conn,
        pol=pol,
        vs=vs,
        model_key=model_key,
        dim=dim,
        factory=factory,
        opts=opts,
        run_id=run_id,
        timings=timings,
        lap=lap,
        t=t,
        store=store,
        summary=summary,
        ph=ph,
        with_vectors=with_vectors,
        n_items=n_items,
        seq_top=seq_top,
        vcount=vcount,
        newest_decision=newest_decision,
        row=row,
        usable=usable,
        learned_fp=learned_fp,
        previous_thresholds=previous_thresholds,
        full=full,
    )

    # --- the work list of an incremental run: rows changed since the watermark, and items
    # that had no image vector last time and have one now (O(new), never O(archive))
    todo: list[str] = []
    if not full:
        todo = [
            q[0]
            for q in conn.execute(
                "SELECT item_id FROM items WHERE seq > ? AND seq <= ? ORDER BY seq", (row["seq_done"], seq_top)
            )
        ]
        if with_vectors and vcount != row["vectors_seen"]:
            pending = [q[0] for q in conn.execute("SELECT item_id FROM flag_pending WHERE scope=?", (row["scope"],))]
            todo += sorted(vs.has(model_key, "image", pending))
        todo = list(dict.fromkeys(todo))
        if not todo and row["state"] == "complete" and newest_decision == row["decisions_seen"]:
            # nothing new to judge and no new decision: the stored findings and clusters stand
            summary.mode = "unchanged"
            summary.why = "nothing new since the last run"
            summary.seq_done = row["seq_done"]
            summary.thresholds = previous_thresholds
            _fill_summary(conn, summary, ph)
            lap("load", t)
            return r
    r.todo = todo
    with transaction(conn) as c:
        scope = state.open_scope(c, ph, model_key)
        if full:
            state.reset_scope(c, scope)
        else:
            c.execute("UPDATE flag_scopes SET state='incremental' WHERE scope=?", (scope,))
        # findings first written by a flag run that was killed count as this run's (they stay new)
        c.execute(
            "UPDATE findings SET run_id=? WHERE policy_hash=? AND status='new' AND run_id IN "
            "(SELECT run_id FROM runs WHERE command='flag' AND status='running' AND run_id<>?)",
            (run_id, ph, run_id),
        )
    r.scope = scope
    r.t = lap("load", t)
    return r


def _prepare(r: _FlagRun) -> None:
    """Step 2: the concept vectors and thresholds (once, for every later step), the
    detectors, the learned models, and the centroids (trained on a full run, else kept)."""
    from audit.catalog.store import transaction
    from audit.flag import clusters as cl, learned as lm
    from audit.flag.concepts import ConceptDetector, prepare_concepts
    from audit.flag.extra import policy_detectors
    from audit.flag.hashes import HashDetector
    from audit.flag.prompts import PromptDetector
    from audit.flag.stream import ItemBatch, load_vectors, sample_vectors

    conn, vs, pol, opts, summary = r.conn, r.vs, r.pol, r.opts, r.summary
    model_key, dim, scope = r.model_key, r.dim, r.scope
    empty = ItemBatch([], [], [], [], [], [])
    load_vectors(vs, model_key, dim, empty)
    if pol.concepts or pol.negative_concepts:
        r.concepts = prepare_concepts(r.make_ctx(empty))  # cluster centroids are scored even with no new row
    r.prompt_det = PromptDetector(shared=True)
    # resources and faces only as the policy asks
    r.detectors = [ConceptDetector(r.concepts), r.prompt_det, HashDetector(), *policy_detectors(conn, pol)]
    summary.thresholds = r.thresholds = r.concepts.thresholds if r.concepts else {}
    if r.usable and r.concepts is not None:
        from audit.flag.stream import align

        def vectors_of(ids):
            gk, gv = vs.get(model_key, "image", ids)
            return align(ids, gk, gv, dim)[0]

        tl = time.perf_counter()
        r.models = lm.train(pol, r.usable, vectors_of, r.concepts.image)
        r.thresholds = summary.thresholds = {
            **r.thresholds,
            **{f"learned:{c}": m.record() for c, m in r.models.items()},
        }
        summary.detectors["learned"] = {
            "models": len(r.models),
            "vetoed": 0,
            "added": 0,
            "train_seconds": round(time.perf_counter() - tl, 3),
        }
    r.centroids = np.zeros((0, max(dim, 0)), np.float32)
    if r.with_vectors and r.full:
        sample, share = sample_vectors(conn, vs, model_key, dim, r.n_items, opts.cluster_sample)
        if len(sample):
            estimate = int(round(len(sample) / share))
            k = int(min(opts.n_clusters or cl.size_k(estimate, opts.cluster_size, opts.cluster_max_k), len(sample)))
            ts = time.perf_counter()
            r.centroids = cl.train(sample, k, opts.kmeans_seed)
            r.timings["kmeans"] = time.perf_counter() - ts
            with transaction(conn) as c:
                cl.save_centroids(c, scope, r.centroids)
                c.execute(
                    "UPDATE flag_scopes SET k=?, trained_items=?, trained_run=?, dim=? WHERE scope=?",
                    (len(r.centroids), r.vcount, r.run_id, dim, scope),
                )
        del sample
    elif r.with_vectors:
        r.centroids = cl.load_centroids(conn, scope, dim)
    r.t = r.lap("prepare", r.t)


def _detect_batches(r: _FlagRun) -> None:
    """Step 3: per batch the detectors, the combined flags, and one transaction with the direct
    evidence, findings, cluster memberships, PDQ bands and (incremental) near-duplicate edges."""
    from audit.flag import clusters as cl
    from audit.flag.stream import load_vectors
    from audit.timeutil import utc_now

    conn, vs, opts, summary = r.conn, r.vs, r.opts, r.summary
    model_key, dim, scope, full = r.model_key, r.dim, r.scope, r.full
    r.now = utc_now()
    r.categories = {cat.id: cat for cat in r.pol.categories}
    confirmed = confirmed_members(conn, scope) if r.with_vectors and not full else {}
    r.searched = (
        {q[0] for q in conn.execute("SELECT DISTINCT seed FROM seed_neighbors WHERE scope=?", (scope,))}
        if not full
        else set()
    )
    r.seed_ids = sorted(s for s in confirmed if s in r.searched)
    if r.seed_ids:
        from audit.flag.stream import align

        gk, gv = vs.get(model_key, "image", r.seed_ids)
        r.seed_vecs, _ = align(r.seed_ids, gk, gv, dim)
        r.seed_best = {
            s: [
                (float(sc), i)
                for i, sc in conn.execute(
                    "SELECT item_id, score FROM seed_neighbors WHERE scope=? AND seed=? AND item_id<>''", (scope, s)
                )
            ]
            for s in r.seed_ids
        }

    # exact cosine near-duplicates while the archive is small, cell probes above (recorded)
    r.probed = r.with_vectors and vs.count(model_key, "image") > opts.dup_exact_max if model_key else False
    r.dup_probes = cl.cell_probes(
        opts.dup_probes, len(r.centroids), r.vcount if full else (r.row["trained_items"] or r.vcount)
    )
    summary.detectors.setdefault("near_duplicates", {})["cosine_search"] = (
        f"cells (probes={r.dup_probes})" if r.probed else "exact"
    )
    for b in _batches(r):
        if not len(b):
            continue
        load_vectors(vs, model_key, dim, b)
        ctx = r.make_ctx(b)
        r.t = r.lap("load", r.t)
        direct_rows, sup_rows = _evaluate(r, b, ctx)
        _write_batch(r, b, direct_rows, sup_rows)
        summary.evaluated += len(b)
        r.t = r.lap("write", r.t)
    summary.errors.extend(
        {"detector": r.prompt_det.name, **trouble.to_dict()}
        for trouble in (r.prompt_det.breaker.troubles() if r.prompt_det.breaker else ())
    )


def _batches(r: _FlagRun):
    """A full run's items in keyset order; an incremental run's work list (items gone from
    the catalog since are removed from the scope on the way)."""
    from audit.flag.stream import fetch_items, iter_all_items

    if r.full:
        yield from iter_all_items(r.conn, r.opts.batch_size)
        return
    for start in range(0, len(r.todo), r.opts.batch_size):
        b, gone = fetch_items(r.conn, r.todo[start : start + r.opts.batch_size])
        if gone:
            _remove_items(r, gone)
        yield b


def _remove_items(r: _FlagRun, gone: list[str]) -> None:
    from audit.catalog.store import transaction
    from audit.flag import clusters as cl

    scope = r.scope
    with transaction(r.conn) as c:
        dirty = set()
        for chunk in in_chunks(gone):
            marks = ",".join("?" * len(chunk))
            dirty |= set(
                c.execute(
                    f"SELECT item_id, category FROM flag_signals WHERE scope=? AND item_id IN ({marks})",
                    (scope, *chunk),
                ).fetchall()
            )
            for table in ("flag_signals", "flag_suppressed", "flag_pending"):
                c.execute(f"DELETE FROM {table} WHERE scope=? AND item_id IN ({marks})", (scope, *chunk))
        r.touched.update(cl.remove_members(c, scope, gone))
        r.summary.deactivated += _compose(c, r.store, scope, r.ph, dirty, r.run_id, r.now)


def _evaluate(r: _FlagRun, b, ctx: FlagContext) -> tuple[list, list]:
    """One batch through the detectors and the policy's flags (a learned model deciding the
    image part of its category): the rows of ``flag_signals`` (direct) and ``flag_suppressed``."""
    from audit.flag import learned as lm

    pol, summary, models, scope = r.pol, r.summary, r.models, r.scope
    results = []
    for det in r.detectors:
        td = time.perf_counter()
        res = det.detect(ctx)
        results.append(res)
        st = summary.detectors.setdefault(det.name, {})
        _merge_stats(
            st,
            {
                **{k: v for k, v in res.stats.items()},
                "rows": len(res.signals),
                "suppressed_rows": len(res.suppressions),
            },
        )
        st["seconds"] = round(st.get("seconds", 0.0) + time.perf_counter() - td, 3)
        if det is not r.prompt_det:
            for error in getattr(res, "errors", ()):
                entry = {"detector": det.name, **error}
                if entry not in summary.errors:
                    summary.errors.append(entry)
    signals, sup_cat, sup_con = _merge(results)
    r.t = r.lap("detect", r.t)
    direct_rows, sup_rows = [], []
    probs = {c: m.probability(b.image, r.concepts.image) for c, m in models.items()}
    rows_now = set(signals)
    for c, m in models.items():
        rows_now.update(int(row) for row in np.flatnonzero((probs[c] >= m.threshold) & b.has_image))
    for local in sorted(rows_now):
        sigs = signals.get(local, [])
        hits, sup = _combine(pol, sigs, sup_con.get(local, set()), sup_cat.get(local, set()))
        summary.suppressed += sup
        if models and b.has_image[local]:
            from audit.flag.combine import fired_names

            hits, vetoed, added = lm.adjust_hits(
                pol,
                models,
                {c: float(p[local]) for c, p in probs.items()},
                fired_names(sigs, sup_con.get(local, set())),
                hits,
                sup_cat.get(local, set()),
            )
            summary.detectors["learned"]["vetoed"] += vetoed
            summary.detectors["learned"]["added"] += added
        for hit, chosen in hits:
            direct_rows.append(
                (
                    scope,
                    b.item_ids[local],
                    hit.category,
                    "0direct",
                    hit.severity,
                    json.dumps([s.to_dict() for s in chosen], default=float, ensure_ascii=False),
                )
            )
    for local, cats in sup_cat.items():
        sup_rows.append((scope, b.item_ids[local], json.dumps(sorted(cats))))
    r.t = r.lap("combine", r.t)
    return direct_rows, sup_rows


def _write_batch(r: _FlagRun, b, direct_rows: list, sup_rows: list) -> None:
    """One batch's transaction: its direct evidence and findings, cluster memberships, PDQ
    bands and (incremental) near-duplicate edges and seed neighbours."""
    from audit.catalog.store import transaction
    from audit.flag import clusters as cl, dups
    from audit.flag.stream import iter_member_vectors
    from audit.policy.hashlists import pdq_hex_to_array

    conn, vs, opts, scope, full = r.conn, r.vs, r.opts, r.scope, r.full
    model_key, dim, centroids, timings = r.model_key, r.dim, r.centroids, r.timings
    touched, roots, gone_roots = r.touched, r.roots, r.gone_roots
    with transaction(conn) as c:
        dirty = set()
        for chunk in in_chunks(b.item_ids):
            marks = ",".join("?" * len(chunk))
            dirty |= set(
                c.execute(
                    f"SELECT item_id, category FROM flag_signals WHERE scope=? AND source='0direct' "
                    f"AND item_id IN ({marks})",
                    (scope, *chunk),
                ).fetchall()
            )
            for table in ("flag_suppressed", "flag_pending"):
                c.execute(f"DELETE FROM {table} WHERE scope=? AND item_id IN ({marks})", (scope, *chunk))
            c.execute(
                f"DELETE FROM flag_signals WHERE scope=? AND source='0direct' AND item_id IN ({marks})",
                (scope, *chunk),
            )
        c.executemany("INSERT INTO flag_signals VALUES (?,?,?,?,?,?)", direct_rows)
        c.executemany("INSERT INTO flag_suppressed VALUES (?,?,?)", sup_rows)
        dirty |= {(row[1], row[2]) for row in direct_rows}
        if r.with_vectors:
            c.executemany(
                "INSERT OR IGNORE INTO flag_pending VALUES (?,?)",
                [(scope, b.item_ids[row]) for row in np.flatnonzero(~b.has_image)],
            )
        rows = np.flatnonzero(b.has_image)
        if r.with_vectors and len(rows) and len(centroids):
            ids = [b.item_ids[row] for row in rows]
            vecs = b.image[rows]
            k_of, score = cl.assign(centroids, vecs)
            touched.update(cl.add_members(c, scope, ids, k_of, score, [b.prompts[row] for row in rows]))
            # near-duplicate edges of these items
            ok = dups.eligible([b.pdq[row] for row in rows], [b.pdq_quality[row] for row in rows])
            pdq_ids = [ids[i] for i in np.flatnonzero(ok)]
            pdq_hex = [b.pdq[rows[i]] for i in np.flatnonzero(ok)]
            words = dups.pdq_words(pdq_hex)
            edges = []
            if full:  # bands written once, sorted, after the batches
                r.full_pdq_ids.append(np.array([i.encode() for i in pdq_ids], dtype=bytes))
                r.full_pdq_codes.append(pdq_hex_to_array(pdq_hex))
            else:
                dups.insert_bands(c, scope, pdq_ids, words)
                tp = time.perf_counter()
                edges += dups.pdq_edges_lookup(c, scope, pdq_ids, words, opts.dup_pdq_distance)
                if opts.dup_min_cosine is not None and not r.probed:
                    edges += dups.cosine_edges(
                        ids,
                        vecs,
                        iter_member_vectors(c, vs, scope, model_key, dim, opts.block),
                        opts.dup_min_cosine,
                    )
                elif opts.dup_min_cosine is not None:
                    # searched once after the batches, grouped by cell (each cell read once per run)
                    r.probe_ids += ids
                    r.probe_vecs.append(vecs.astype(np.float16))
                timings["near_duplicates"] = timings.get("near_duplicates", 0.0) + time.perf_counter() - tp
                if r.seed_ids:
                    r.seed_best = seed_merge(r.seed_ids, r.seed_vecs, ids, vecs, r.seed_best, opts.seed_k)
            changed, gone = dups.union(c, scope, edges)
            roots.update(changed)
            gone_roots.update(gone)
        for chunk in in_chunks(b.item_ids):
            marks = ",".join("?" * len(chunk))
            roots.update(
                row[0]
                for row in c.execute(
                    f"SELECT DISTINCT root FROM dup_groups WHERE scope=? AND item_id IN ({marks})", (scope, *chunk)
                )
            )
        r.summary.deactivated += _compose(c, r.store, scope, r.ph, dirty, r.run_id, r.now)


def _near_duplicates(r: _FlagRun) -> None:
    """Step 4: an incremental run's cosine edges by cell probes, a full run's near-duplicate
    edges over everything; one union-find write each."""
    from audit.catalog.store import transaction
    from audit.flag import dups
    from audit.flag.stream import iter_member_vectors

    conn, vs, opts, scope, timings = r.conn, r.vs, r.opts, r.scope, r.timings
    model_key, dim, centroids = r.model_key, r.dim, r.centroids
    # --- an incremental run's cosine edges by cell probes: all its items at once (a SIGKILL
    # before this commit leaves the watermark where it was: the rerun handles them again)
    if r.probe_ids:
        tp = time.perf_counter()
        edges = dups.cosine_edges_probed(
            r.probe_ids,
            np.concatenate(r.probe_vecs).astype(np.float32),
            conn,
            vs,
            scope,
            model_key,
            dim,
            centroids,
            opts.dup_min_cosine,
            r.dup_probes,
            stats=r.summary.detectors.setdefault("near_duplicates", {}),
        )
        r.probe_vecs = []
        with transaction(conn) as c:
            changed, gone = dups.union(c, scope, edges)
            r.roots.update(changed)
            r.gone_roots.update(gone)
        timings["near_duplicates"] = timings.get("near_duplicates", 0.0) + time.perf_counter() - tp

    # --- a full run's near-duplicate edges: all hashes at once, vectors block by block
    if r.with_vectors and r.full and len(centroids):
        tp = time.perf_counter()
        pdq_ids = np.concatenate(r.full_pdq_ids) if r.full_pdq_ids else np.zeros(0, dtype=bytes)
        r.full_pdq_ids = []
        codes = np.concatenate(r.full_pdq_codes) if r.full_pdq_codes else np.zeros((0, 32), np.uint8)
        r.full_pdq_codes = []
        edges = dups.pdq_edges_within_arrays(pdq_ids, codes, opts.dup_pdq_distance)
        with transaction(conn) as c:
            dups.insert_bands_sorted(c, scope, pdq_ids, codes)
        del pdq_ids, codes
        if opts.dup_min_cosine is not None and r.probed:
            edges += dups.cosine_edges_by_cells(
                conn, vs, scope, model_key, dim, centroids, opts.dup_min_cosine, r.dup_probes
            )
        elif opts.dup_min_cosine is not None:
            for ids, x in iter_member_vectors(conn, vs, scope, model_key, dim, opts.block):
                edges += dups.cosine_edges_within(ids, x, opts.dup_min_cosine)
                edges += dups.cosine_edges(
                    ids,
                    x,
                    iter_member_vectors(conn, vs, scope, model_key, dim, opts.block, after=ids[-1]),
                    opts.dup_min_cosine,
                )
        with transaction(conn) as c:
            changed, gone = dups.union(c, scope, edges)
            r.roots.update(changed)
            r.gone_roots.update(gone)
        timings["near_duplicates"] = timings.get("near_duplicates", 0.0) + time.perf_counter() - tp


def _clusters(r: _FlagRun) -> None:
    """Step 5: the clusters the run touched (all on a full run): stats, flags, "via cluster"
    evidence (gated by the learned models), ``clusters`` rows; near-duplicate group rows."""
    from audit.catalog.store import transaction
    from audit.flag import clusters as cl, learned as lm

    conn, ph, summary = r.conn, r.ph, r.summary
    tc = time.perf_counter()
    with transaction(conn) as c:
        if r.full:
            c.execute("DELETE FROM clusters WHERE policy_hash=?", (ph,))
        if r.with_vectors and len(r.centroids):
            stage = cl.ClusterStage(
                scope=r.scope,
                policy=r.pol,
                policy_hash=ph,
                run_id=r.run_id,
                model_key=r.model_key,
                dim=r.dim,
                centroids=r.centroids,
                concepts=r.concepts,
                options=r.opts.cluster_options(),
            )
            dirty, stats = cl.refresh(c, r.vs, stage, None if r.full else r.touched)
            summary.detectors["clusters"] = stats
            if r.models:
                summary.detectors["learned"]["vetoed_via_cluster"] = lm.gate_via_cluster(
                    c, r.vs, r.scope, r.models, r.concepts.image, r.model_key, r.dim, dirty
                )
            summary.deactivated += _compose(c, r.store, r.scope, ph, dirty, r.run_id, r.now)
        cl.refresh_groups(c, scope=r.scope, policy_hash=ph, run_id=r.run_id, roots=r.roots, gone=r.gone_roots)
    r.timings["clusters"] = time.perf_counter() - tc
    r.t = r.lap("clusters", time.perf_counter())


def _seeds(r: _FlagRun) -> None:
    """Step 6: human-confirmed items only; a new seed searches the archive once."""
    from audit.catalog.store import transaction
    from audit.flag.stream import iter_member_vectors

    conn, vs, opts, summary = r.conn, r.vs, r.opts, r.summary
    model_key, dim, scope = r.model_key, r.dim, r.scope
    if r.with_vectors:
        confirmed = confirmed_members(conn, scope)
        summary.seeds = len(confirmed)
        fresh = sorted(s for s in confirmed if s not in r.searched)
        if fresh:
            from audit.flag.seeds import top_neighbors
            from audit.flag.stream import align

            gk, gv = vs.get(model_key, "image", fresh)
            fv, _ = align(fresh, gk, gv, dim)
            r.seed_best.update(
                top_neighbors(fresh, fv, iter_member_vectors(conn, vs, scope, model_key, dim, opts.block), opts.seed_k)
            )
        screen = seed_screen(conn, vs, r.pol, model_key, dim, r.seed_best, r.detectors, r.make_ctx, summary)
        with transaction(conn) as c:
            dirty = write_seeds(c, scope, confirmed, r.seed_best, r.categories, opts, screen)
            summary.deactivated += _compose(c, r.store, scope, r.ph, dirty, r.run_id, r.now)
    r.t = r.lap("seeds", r.t)


def _finish(r: _FlagRun) -> FlagSummary:
    """Step 7: decisions' statuses, new → known, a full run's stale findings deactivated, the
    watermark and the run record."""
    from audit.catalog.store import transaction

    conn, ph, pol, summary, run_id = r.conn, r.ph, r.pol, r.summary, r.run_id
    full, seq_top, scope, now = r.full, r.seq_top, r.scope, r.now
    with transaction(conn) as c:
        _apply_decisions(c, conn, ph)
        if full:
            before = c.total_changes
            c.execute("UPDATE findings SET active=0 WHERE policy_hash=? AND active=1 AND run_id IS NOT ?", (ph, run_id))
            summary.deactivated += c.total_changes - before
        c.execute(
            "UPDATE findings SET status='known' WHERE policy_hash=? AND active=1 AND status='new' AND run_id IS NOT ?",
            (ph, run_id),
        )
        c.execute(
            "UPDATE flag_scopes SET state='complete', seq_done=?, vectors_seen=?, decisions_seen=?, learned_fp=? "
            "WHERE scope=?",
            (seq_top, r.vcount, r.newest_decision, r.learned_fp, scope),
        )
        c.execute(
            "INSERT INTO flag_runs (run_id, policy_hash, policy_name, policy_version, policy_path, model_key, "
            "thresholds, at, seq_done, mode, why, reclustered, recluster_why, items_handled) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id,
                ph,
                pol.name,
                pol.version,
                str(pol.path) if pol.path else None,
                r.model_key,
                json.dumps(r.thresholds, default=float),
                now,
                seq_top,
                summary.mode,
                summary.why,
                int(summary.reclustered),
                summary.recluster_why or None,
                summary.evaluated,
            ),
        )
    summary.seq_done = seq_top
    _fill_summary(conn, summary, ph, now)
    summary.timings = r.timings
    r.lap("write", r.t)
    return summary


def concept_scores(
    audit: "Audit",
    policy: "str | os.PathLike | Policy | None" = None,
    *,
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str = "cpu",
    embedder=None,
):
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
    prev = conn.execute(
        "SELECT thresholds FROM flag_runs WHERE policy_hash=? AND model_key=? ORDER BY run_id DESC LIMIT 1",
        (pol.content_hash, identity["key"]),
    ).fetchone()
    ctx = FlagContext(
        policy=pol,
        item_ids=ids,
        prompts=items["prompt"],
        negative_prompts=items["negative_prompt"],
        md5=items["md5"],
        pdq=items["pdq"],
        pdq_quality=items["pdq_quality"],
        image_vectors=image,
        has_image=has,
        prompt_vectors=prompts,
        has_prompt=has_prompt,
        model_key=identity["key"],
        embedder_factory=lambda: (
            embedder
            or Searcher(audit.index_dir, conn).embedder(
                identity, checkpoint=str(checkpoint) if checkpoint else None, device=device
            )
        ),
        previous_thresholds=json.loads(prev[0]) if prev and prev[0] else {},
    )
    det = ConceptDetector()
    img, txt = det.scores(ctx, "image"), det.scores(ctx, "prompt")
    frames = [
        pl.DataFrame(
            {
                "item_id": ids,
                "concept": [c.id] * len(ids),
                "image_score": img[c.id],
                "prompt_score": txt[c.id],
                "image_threshold": [det.threshold(c.id, "image")] * len(ids),
                "prompt_threshold": [det.threshold(c.id, "prompt")] * len(ids),
            }
        )
        for c in pol.concepts
    ]
    return pl.concat(frames) if frames else pl.DataFrame()
