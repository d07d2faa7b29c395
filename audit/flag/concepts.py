"""Concept detector: CLIP concepts on the image and on the prompt embedding.

For each concept of the policy:

* the text vector is the ensemble (normalised mean of normalised embeddings) of every text
  under every template (``Concept.prompts()``), embedded by the model whose vectors are stored;
* the image-space vector is the text vector, or, when the concept has exemplar images, the
  normalised sum of the text vector and the normalised mean of the exemplars' image
  embeddings (exemplars pull the concept toward what it looks like in this model's image space);
* scores are cosines: image vector · concept image-space vector, prompt vector · text vector;
* thresholds: the policy's, else those a previous run of the same policy and model used, else
  calibrated (``audit.policy.calibrate_threshold``): image thresholds by the ``samples`` method
  over the archive's image vectors, prompt thresholds by the ``reference`` method; references
  are ``NEUTRAL_CAPTIONS`` and the shipped reference vocabulary less the captions the concept
  names (``audit.policy.calibrate.reference_captions``) and less its paraphrases, the other
  concepts and the concept's own ``contrast`` texts. The vocabulary is embedded only when a
  threshold is calibrated (a run reusing its thresholds never embeds it).
  Value, source and explanation are recorded in ``flag_runs.thresholds``;
* "special care" (as in the Stable Diffusion safety checker): when a ``special_care`` concept
  fires for an item, every other concept's thresholds for that item drop by the policy's
  ``special_care_adjustment``;
* negative concepts: when one fires (image or prompt) and the item resembles it more than a
  concept it ``suppresses`` (every concept when the list is empty), that concept's signals
  are cancelled for the item (an orange triangle is not a red triangle; a red triangle that
  also looks a little orange stays one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit.embed.base import l2_normalize
from audit.errors import InputError
from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext, margin
from audit.imaging import DecodeError, decode_file

MAX_CALIBRATION_SAMPLES = 20_000
# Recorded with each calibrated threshold; a threshold calibrated by an older method (before the
# reference vocabulary) is not reused by later runs but calibrated again.
CALIBRATION_VERSION = 2
# model key -> caption -> unit text vector of the reference vocabulary: embedded once per
# process and model (a notebook or a test that flags again does not embed ~3,000 captions again);
# the key names the weights (name + pretrained tag or checkpoint SHA-256), so entries never go stale
_REFERENCE_VECTORS: dict[str, dict[str, np.ndarray]] = {}


@dataclass
class ConceptVectors:
    text: dict[str, np.ndarray] = field(default_factory=dict)  # concept id -> (d,) text-space vector
    image: dict[str, np.ndarray] = field(default_factory=dict)  # concept id -> (d,) image-space vector
    negative: dict[str, np.ndarray] = field(default_factory=dict)
    thresholds: dict[str, dict] = field(default_factory=dict)  # concept id -> {image, prompt, ...}

    def threshold(self, concept_id: str, space: str) -> float:
        return float(self.thresholds[concept_id][space]["value"])


def _embed_texts(embedder, texts: list[str]) -> np.ndarray:
    return l2_normalize(np.asarray(embedder.embed_texts(list(texts)), dtype=np.float32))


def _exemplar_vector(embedder, paths: tuple[Path, ...]) -> np.ndarray | None:
    """The mean image vector of a concept's exemplars, decoded as the crawl decodes the
    originals (``decode_file``); one that cannot be read is the policy's error (exit 2)."""
    if not paths:
        return None
    images = []
    for p in paths:
        try:
            images.append(decode_file(p).rgb())
        except FileNotFoundError:
            raise InputError(f"concept exemplar {p}: file not found") from None
        except DecodeError as exc:
            raise InputError(f"concept exemplar {p}: {exc}") from None
    embs = l2_normalize(np.asarray(embedder.embed_images(images), dtype=np.float32))
    return l2_normalize(embs.mean(axis=0))


def _sample(vectors: np.ndarray | None, n: int = MAX_CALIBRATION_SAMPLES) -> np.ndarray | None:
    if vectors is None or len(vectors) == 0:
        return None
    if len(vectors) <= n:
        return vectors
    idx = np.random.default_rng(0).choice(len(vectors), n, replace=False)
    return vectors[np.sort(idx)]


def prepare_concepts(ctx: FlagContext) -> ConceptVectors:
    """The policy's concept vectors and thresholds (``ctx`` gives the policy, the embedder,
    calibration samples and the previous run's thresholds; its rows are not scored). A flag
    run computes them once and hands them to the detector, the learned models and the
    cluster stage."""
    from audit.policy import calibrate_threshold
    from audit.policy.calibrate import (
        drop_paraphrases,
        ensemble,
        reference_captions,
    )

    policy = ctx.policy
    cv = ConceptVectors()
    if not policy.concepts and not policy.negative_concepts:
        return cv
    emb = ctx.embedder
    for concept in policy.concepts:
        text = l2_normalize(ensemble(_embed_texts(emb, concept.prompts())))
        cv.text[concept.id] = text
        ex = _exemplar_vector(emb, concept.exemplar_paths)
        cv.image[concept.id] = text if ex is None else l2_normalize(text + ex)
    for neg in policy.negative_concepts:
        cv.negative[neg.id] = l2_normalize(ensemble(_embed_texts(emb, neg.prompts())))
    embedded: dict[str, np.ndarray] = _REFERENCE_VECTORS.setdefault(ctx.model_key, {}) if ctx.model_key else {}

    def references_for(texts, vec) -> np.ndarray:
        """Benign references for one concept (vocabulary embedded once, on first need)."""
        captions = reference_captions(texts)
        missing = [c for c in dict.fromkeys(captions) if c not in embedded]
        if missing:
            embedded.update(zip(missing, _embed_texts(emb, missing)))
        return drop_paraphrases(vec, np.stack([embedded[c] for c in captions]))

    drawn: list = []

    def samples_now():  # drawn only when a threshold is calibrated
        if not drawn:
            if ctx.sample_vectors is not None:
                drawn.append(_sample(ctx.sample_vectors))
            elif ctx.sample_factory is not None:
                drawn.append(_sample(ctx.sample_factory()))
            else:
                drawn.append(_sample(ctx.image_vectors[ctx.has_image]))
        return drawn[0]

    previous = ctx.previous_thresholds or {}

    def others_for(cid: str, contrast: tuple[str, ...]) -> np.ndarray:
        rows = [v for other, v in cv.text.items() if other != cid]
        if contrast:
            rows.extend(_embed_texts(emb, list(contrast)))
        dim = next(iter(cv.text.values())).shape[0] if cv.text else 0
        return np.stack(rows) if rows else np.zeros((0, dim), np.float32)

    def resolve(key: str, space: str, explicit: float | None, vec_text, vec_space, others, texts) -> dict:
        if explicit is not None:
            return {"value": float(explicit), "source": "policy", "how": "set in the policy"}
        prev = (previous.get(key) or {}).get(space)
        if (
            isinstance(prev, dict)
            and prev.get("source", "").startswith("calibrated")
            and prev.get("calibration") == CALIBRATION_VERSION
        ):
            return {**prev, "source": prev["source"], "reused": True}
        neutral = references_for(texts, vec_text)
        if space == "image":
            value, how = calibrate_threshold(vec_space, neutral, others, samples_now(), method="auto")
        else:
            value, how = calibrate_threshold(vec_text, neutral, others, None, method="reference")
        method = how.split(":", 1)[0].split(" ", 1)[0]
        return {
            "value": float(value),
            "source": f"calibrated:{method}",
            "how": how,
            "calibration": CALIBRATION_VERSION,
        }

    for concept in policy.concepts:
        others = others_for(concept.id, concept.contrast)
        cv.thresholds[concept.id] = {
            "image": resolve(
                concept.id,
                "image",
                concept.image_threshold,
                cv.text[concept.id],
                cv.image[concept.id],
                others,
                concept.texts,
            ),
            "prompt": resolve(
                concept.id,
                "prompt",
                concept.prompt_threshold,
                cv.text[concept.id],
                cv.text[concept.id],
                others,
                concept.texts,
            ),
            "special_care": concept.special_care,
            "exemplars": len(concept.exemplar_paths),
        }
    for neg in policy.negative_concepts:
        key = f"negative:{neg.id}"
        others = np.stack(list(cv.text.values())) if cv.text else None
        cv.thresholds[key] = {
            "image": resolve(key, "image", neg.threshold, cv.negative[neg.id], cv.negative[neg.id], others, neg.texts),
            "prompt": resolve(
                key, "prompt", neg.threshold, cv.negative[neg.id], cv.negative[neg.id], others, neg.texts
            ),
            "suppresses": list(neg.suppresses),
        }
    return cv


class ConceptDetector:
    name = "concepts"

    def __init__(self, vectors: ConceptVectors | None = None) -> None:
        # a flag run passes the vectors it computed once (``prepare_concepts``); without them
        # the detector computes them from the first context it is given
        self.vectors: ConceptVectors | None = vectors
        self.best_frames: dict[tuple[str, int], int] = {}  # (concept, row) -> frame that scored (last image scores)

    def prepare(self, ctx: FlagContext) -> ConceptVectors:
        if self.vectors is None:
            self.vectors = prepare_concepts(ctx)
        return self.vectors

    def threshold(self, concept_id: str, space: str) -> float:
        assert self.vectors is not None
        return self.vectors.threshold(concept_id, space)

    def scores(self, ctx: FlagContext, space: str) -> dict[str, np.ndarray]:
        """concept id -> (n,) cosine of every row (NaN where the row has no vector)."""
        cv = self.prepare(ctx)
        vecs, has = (ctx.image_vectors, ctx.has_image) if space == "image" else (ctx.prompt_vectors, ctx.has_prompt)
        table = cv.image if space == "image" else cv.text
        out = {}
        frames = ctx.frame_vectors if space == "image" else {}
        if space == "image":
            self.best_frames = {}
        for cid, c in table.items():
            s = (vecs @ c).astype(np.float64) if len(vecs) else np.zeros(0)
            s[~has] = np.nan
            for row, (indices, fv) in frames.items():  # an animation scores as its best frame
                fs = fv @ c
                j = int(np.argmax(fs))
                if np.isnan(s[row]) or fs[j] > s[row]:
                    s[row] = float(fs[j])
                    self.best_frames[(cid, row)] = indices[j]
            out[cid] = s
        return out

    # --- the detector
    def detect(self, ctx: FlagContext) -> Detections:
        det = Detections()
        policy = ctx.policy
        if len(ctx) == 0 or (not policy.concepts and not policy.negative_concepts):
            return det
        cv = self.prepare(ctx)
        det.thresholds = cv.thresholds
        scores = {space: self.scores(ctx, space) for space in ("image", "prompt")}
        n = len(ctx)
        # special care: rows where a special-care concept fires on image or prompt
        special = np.zeros(n, dtype=bool)
        special_ids = [c.id for c in policy.concepts if c.special_care]
        for cid in special_ids:
            for space in ("image", "prompt"):
                special |= np.nan_to_num(scores[space][cid], nan=-2.0) >= self.threshold(cid, space)
        adjust = float(policy.special_care_adjustment)
        for concept in policy.concepts:
            for space in ("image", "prompt"):
                t = self.threshold(concept.id, space)
                s = np.nan_to_num(scores[space][concept.id], nan=-2.0)
                tt = np.full(n, t)
                if not concept.special_care:
                    tt[special] -= adjust
                for row in np.flatnonzero(s >= tt):
                    info = cv.thresholds[concept.id][space]
                    detail = {"space": space, "threshold_source": info["source"]}
                    if space == "image" and (concept.id, int(row)) in self.best_frames:
                        detail["frame"] = self.best_frames[(concept.id, int(row))]
                    if tt[row] != t:
                        detail["special_care"] = f"threshold lowered by {adjust:g} (a special-care concept fired)"
                    det.add(
                        row,
                        Signal(
                            "concept",
                            f"concept:{concept.id}/{space}",
                            round(float(s[row]), 6),
                            round(float(tt[row]), 6),
                            round(margin(s[row], tt[row]), 6),
                            detail,
                        ),
                    )
        for neg in policy.negative_concepts:
            targets = set(neg.suppresses) or {c.id for c in policy.concepts}
            key = f"negative:{neg.id}"
            for space in ("image", "prompt"):
                vecs, has = (
                    (ctx.image_vectors, ctx.has_image) if space == "image" else (ctx.prompt_vectors, ctx.has_prompt)
                )
                s = (vecs @ cv.negative[neg.id]).astype(np.float64)
                s[~has] = -2.0
                t = self.threshold(key, space)
                for row in np.flatnonzero(s >= t):
                    # it cancels the concepts the item resembles less than it resembles the negative one
                    beaten = sorted(
                        cid
                        for cid in targets
                        if cid in scores[space] and not np.nan_to_num(scores[space][cid][row], nan=-2.0) > s[row]
                    )
                    if not beaten:
                        continue
                    det.suppress(
                        row,
                        Signal(
                            "negative",
                            f"negative_concept:{neg.id}/{space}",
                            round(float(s[row]), 6),
                            round(t, 6),
                            round(margin(s[row], t), 6),
                            {"space": space, "suppresses": beaten},
                        ),
                        concepts=set(beaten),
                    )
        det.stats = {"special_care_rows": int(special.sum())}
        return det
