"""Review decisions as labels, and a flagger that learns from them.

``decided_labels``: the latest decision per (item, category) through the review API
(``audit.review.latest_by_target``: item-level decisions, cluster decisions as logged for
their members, and finding-level ones; the latest wins). An item decision without a category
applies to every category the item has a finding in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

LABELS = {"confirm": 1, "dismiss": 0}


def decided_labels(conn) -> dict[tuple[str, str], tuple[int, int]]:
    """(item_id, category) -> (label 1 confirm / 0 dismiss, decision id) of the decision that
    holds for the pair under the one rule of ``audit.review.LatestDecisions`` (the rule the
    flag stage and the report use); escalations are no label."""
    from audit.review import LatestDecisions

    latest = LatestDecisions.read(conn)
    best: dict[tuple[str, str], object] = {}

    def put(key, d):
        if d is not None and (key not in best or best[key].decision_id < d.decision_id):
            best[key] = d

    if latest.items or latest.findings:
        covered: set[tuple[str, str]] = set()
        for fid, item, cat in conn.execute("SELECT finding_id, item_id, category FROM findings"):
            covered.add((item, cat))
            put((item, cat), latest.for_finding(fid, item, cat))
        # an item decision naming a category the item has no finding in (yet) still labels it
        for (item, cat), d in latest.items.items():
            if cat and (item, cat) not in covered:
                put((item, cat), d)
                put((item, cat), latest.items.get((item, None)))
    # the pair's latest decision decides; an escalation is no label
    return {k: (LABELS[d.decision], d.decision_id) for k, d in best.items() if d.decision in LABELS}


# ------------------------------------------------------------------------------ the model
#
# Per category and model (a flag scope is one policy and one model): logistic regression on
# the stored image embedding plus the zero-shot scores of the concepts the category's flags name,
# trained on the decided (item, category) pairs, L2-regularised, classes weighted equally. From
# the next flag run on it decides the *image part* of the category's flag in place of the
# zero-shot thresholds: an item whose other conditions hold fires when the model says yes; an
# item that fired only through image evidence is dropped when it says no. Signals, rules and
# hash matches that make a category fire without image evidence are never overruled.


LEARNER_VERSION = 1
MIN_CONFIRMED = 5  # never used with fewer decisions than these of each kind
MIN_DISMISSED = 5
L2 = 1e-3
CV_FOLDS = 5


@dataclass
class LearnedModel:
    category: str
    concepts: list[str]  # concept ids whose zero-shot image scores are features
    weights: np.ndarray  # (d + len(concepts),)
    bias: float
    confirmed: int
    dismissed: int
    cv_precision: float | None
    cv_recall: float | None
    threshold: float = 0.5
    extra: dict = field(default_factory=dict)

    def features(self, vectors: np.ndarray, concept_vectors: dict[str, np.ndarray]) -> np.ndarray:
        cols = [vectors @ concept_vectors[c] for c in self.concepts]
        return np.concatenate([vectors, np.stack(cols, axis=1)], axis=1) if cols else vectors

    def probability(self, vectors: np.ndarray, concept_vectors: dict[str, np.ndarray]) -> np.ndarray:
        z = self.features(np.asarray(vectors, np.float64), concept_vectors) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def record(self) -> dict:
        """What ``flag_runs.thresholds`` keeps under ``learned:<category>`` (and the report shows)."""
        return {
            "method": f"logistic regression v{LEARNER_VERSION} on image embedding + zero-shot scores "
            f"({', '.join(self.concepts) or 'none'})",
            "decisions": {"confirmed": self.confirmed, "dismissed": self.dismissed},
            "cv_precision": self.cv_precision,
            "cv_recall": self.cv_recall,
            "cv_folds": CV_FOLDS,
            "threshold": self.threshold,
            "minimums": {"confirmed": MIN_CONFIRMED, "dismissed": MIN_DISMISSED},
            "fingerprint": hashlib.sha256(np.round(np.append(self.weights, self.bias), 6).tobytes()).hexdigest()[:16],
        }


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised, class-balanced logistic regression (Newton's method).

    With fewer samples than features (40 decisions, 512-d embeddings) the optimum lies in the
    span of the samples (representer theorem), so it is solved there, in ``n`` dimensions, and
    mapped back: the same weights at a fraction of the cost."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    if n < d:
        _, sv, vt = np.linalg.svd(x, full_matrices=False)
        keep = sv > sv[0] * 1e-10 if len(sv) else sv > 0
        w_small, b = _newton(x @ vt[keep].T, y, l2, iters)
        return vt[keep].T @ w_small, b
    return _newton(x, y, l2, iters)


def _newton(x: np.ndarray, y: np.ndarray, l2: float, iters: int) -> tuple[np.ndarray, float]:
    n, d = x.shape
    pos = max(1.0, y.sum())
    neg = max(1.0, n - y.sum())
    sw = np.where(y > 0, n / (2 * pos), n / (2 * neg))
    xa = np.concatenate([x, np.ones((n, 1))], axis=1)
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2 * n)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ w, -50, 50)))
        grad = xa.T @ (sw * (p - y)) + reg * w
        h = (xa * (sw * p * (1 - p))[:, None]).T @ xa + np.diag(reg + 1e-9)
        step = np.linalg.solve(h, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def cross_validate(x: np.ndarray, y: np.ndarray, folds: int = CV_FOLDS) -> tuple[float | None, float | None]:
    """Pooled out-of-fold precision and recall (stratified, deterministic folds)."""
    pred = np.zeros(len(y), dtype=bool)
    fold = np.zeros(len(y), dtype=int)
    for label in (0, 1):
        rows = np.flatnonzero(y == label)
        fold[rows] = np.arange(len(rows)) % folds
    for f in range(folds):
        test = fold == f
        if not test.any() or len(set(y[~test])) < 2:
            continue
        w, b = fit_logistic(x[~test], y[~test])
        pred[test] = x[test] @ w + b >= 0
    tp = int((pred & (y == 1)).sum())
    precision = tp / int(pred.sum()) if pred.any() else None
    recall = tp / int((y == 1).sum()) if (y == 1).any() else None
    return precision, recall


def usable_labels(
    labels: dict[tuple[str, str], tuple[int, int]], categories, has_vector: set[str]
) -> dict[str, dict[str, int]]:
    """category -> {item: label} for the categories with at least the minimum of each kind."""
    by_cat: dict[str, dict[str, int]] = {}
    for (item, cat), (label, _) in labels.items():
        if cat in categories and item in has_vector:
            by_cat.setdefault(cat, {})[item] = label
    return {
        cat: d
        for cat, d in sorted(by_cat.items())
        if sum(d.values()) >= MIN_CONFIRMED and len(d) - sum(d.values()) >= MIN_DISMISSED
    }


def labels_fingerprint(usable: dict[str, dict[str, int]]) -> str:
    """Names the learned models a run will use: training is deterministic, so the same labels
    (and learner version and minimums) make the same models. '' when there is none."""
    if not usable:
        return ""
    blob = json.dumps(
        [LEARNER_VERSION, MIN_CONFIRMED, MIN_DISMISSED, L2, {c: sorted(d.items()) for c, d in usable.items()}],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def train(
    policy, usable: dict[str, dict[str, int]], vectors_of, concept_vectors: dict[str, np.ndarray]
) -> dict[str, LearnedModel]:
    """One model per category with enough labels. ``vectors_of(ids) -> (n, d)`` unit rows."""
    from audit.flag.combine import image_evidence_names

    out = {}
    for cat, labelled in usable.items():
        concepts = sorted(
            {
                n.split(":", 1)[1]
                for n in image_evidence_names(policy, cat)
                if "/" not in n and n.split(":", 1)[1] in concept_vectors
            }
        )
        if not concepts:
            continue  # no image part in the category's flags: nothing for an image model to decide
        ids = sorted(labelled)
        y = np.array([labelled[i] for i in ids])
        proto = LearnedModel(cat, concepts, np.zeros(0), 0.0, int(y.sum()), int(len(y) - y.sum()), None, None)
        x = proto.features(np.asarray(vectors_of(ids), np.float64), concept_vectors)
        proto.cv_precision, proto.cv_recall = cross_validate(x, y)
        proto.weights, proto.bias = fit_logistic(x, y)
        out[cat] = proto
    return out


def adjust_hits(
    policy,
    models: dict[str, LearnedModel],
    probabilities: dict[str, float],
    fired: set[str],
    hits: list,
    suppressed_categories: set[str],
) -> tuple[list, int, int]:
    """The hits of one item once the learned models decide the image part of their categories:
    (hits, vetoed, added). ``probabilities``: category -> the model's probability for the item."""
    from audit.flag.combine import image_evidence_names
    from audit.policy import evaluate_flags

    out, vetoed, added = [], 0, 0
    have = {hit.category for hit, _ in hits}
    for hit, chosen in hits:
        model = models.get(hit.category)
        if model is None:
            out.append((hit, chosen))
            continue
        p = probabilities[hit.category]
        without = without_image_evidence(fired, image_evidence_names(policy, hit.category))
        if p < model.threshold and not any(h.category == hit.category for h in evaluate_flags(policy, without)):
            vetoed += 1
            continue
        out.append((hit, chosen + [_signal(model, p)]))
    for cat, model in models.items():
        if cat in have or probabilities[cat] < model.threshold:
            continue
        if "*" in suppressed_categories or cat in suppressed_categories:
            continue
        names = fired | image_evidence_names(policy, cat)
        hit = next((h for h in evaluate_flags(policy, names) if h.category == cat), None)
        if hit is not None:
            added += 1
            out.append((hit, [_signal(model, probabilities[cat])]))
    return out, vetoed, added


def without_image_evidence(fired: set[str], image_names: set[str]) -> set[str]:
    """``fired`` less its image evidence: ``concept:X/image``, and the aggregate ``concept:X``
    unless the prompt fired it (``concept:X/prompt``)."""
    out = set(fired) - {n for n in image_names if n.endswith("/image")}
    for base in (n for n in image_names if "/" not in n):
        if f"{base}/prompt" not in out:
            out.discard(base)
    return out


def _signal(model: LearnedModel, p: float):
    from audit.findings.store import Signal

    rec = model.record()
    return Signal(
        "learned",
        f"learned:{model.category}",
        round(float(p), 6),
        model.threshold,
        round(float(p) - model.threshold, 6),
        {
            "space": "image",
            "decisions": rec["decisions"],
            "cv_precision": rec["cv_precision"],
            "cv_recall": rec["cv_recall"],
            "model": rec["fingerprint"],
        },
    )


def gate_via_cluster(c, vs, scope: int, models: dict, concept_vectors: dict, model_key: str, dim: int, pairs) -> int:
    """Drop the "via cluster" evidence of members a category's learned model rejects: a member
    is a candidate only when the model, trained on what reviewers decided, agrees it shows the
    category (the cluster's flag gives no image evidence of the member's own). Returns how many
    (item, category) pairs lost it; they are among ``pairs``, which the flag runner composes
    into findings next."""
    from audit.flag.stream import align

    wanted = sorted({(i, cat) for i, cat in pairs if cat in models})
    if not wanted:
        return 0
    ids = sorted({i for i, _ in wanted})
    gk, gv = vs.get(model_key, "image", ids)
    vecs, has = align(ids, gk, gv, dim)
    row = {i: k for k, i in enumerate(ids)}
    probs = {cat: m.probability(vecs, concept_vectors) for cat, m in models.items()}
    reject = [(scope, i, cat) for i, cat in wanted if has[row[i]] and probs[cat][row[i]] < models[cat].threshold]
    before = c.total_changes
    c.executemany(
        "DELETE FROM flag_signals WHERE scope=? AND item_id=? AND category=? AND source LIKE '1cluster:%'", reject
    )
    return c.total_changes - before
