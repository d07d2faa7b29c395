"""Cost of the learned flagger (audit.flag.learned) at scale, on synthetic unit vectors.

    python benchmarks/bench_learned.py [--items 1000000] [--dim 512] [--decisions 1000]

Training: Newton logistic regression + 5-fold cross-validation on ``--decisions`` labelled
vectors. Scoring: the model's probability for ``--items`` vectors, in batches of 20,000 (the
flag stage's batch size), as the flag run does per batch.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from audit.flag import learned as lm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--decisions", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=20_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    concept = rng.normal(size=args.dim)
    concept /= np.linalg.norm(concept)

    def unit(n, labels=False):
        # half the vectors lean toward the concept (cosine ~0.4), as the items a reviewer confirms
        lean = rng.integers(0, 2, (n, 1))
        x = (
            rng.normal(size=(n, args.dim)).astype(np.float32) / np.sqrt(args.dim)
            + 0.45 * concept.astype(np.float32) * lean
        )
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return (x, lean[:, 0]) if labels else x

    xd, y = unit(args.decisions, labels=True)
    t = time.perf_counter()
    x = np.concatenate([xd, (xd @ concept)[:, None]], axis=1)
    p, r = lm.cross_validate(x, y)
    w, b = lm.fit_logistic(x, y)
    train_s = time.perf_counter() - t
    model = lm.LearnedModel("c", ["c"], w, b, int(y.sum()), int(len(y) - y.sum()), p, r)
    score_s = 0.0
    for start in range(0, args.items, args.batch):
        xb = unit(min(args.batch, args.items - start))
        t = time.perf_counter()
        model.probability(xb, {"c": concept})
        score_s += time.perf_counter() - t
    print(
        json.dumps(
            {
                "items": args.items,
                "dim": args.dim,
                "decisions": args.decisions,
                "train_and_cv_s": round(train_s, 3),
                "cv_precision": p,
                "cv_recall": r,
                "score_s": round(score_s, 3),
                "score_items_per_s": round(args.items / score_s),
            }
        )
    )


if __name__ == "__main__":
    main()
