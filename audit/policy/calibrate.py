"""Thresholds for concepts that omit them, calibrated for the model in use.

Cosine similarities differ from model to model (and, within a CLIP model, between text-text
and image-text pairs: the "modality gap"), so a policy may leave ``image_threshold`` /
``prompt_threshold`` out and let the engine derive one. An explicit threshold always wins.

The method (``calibrate_threshold``), inputs being L2-normalisable embeddings of one model:

* **references**: benign captions: ``NEUTRAL_CAPTIONS`` (~100 everyday scenes) and the shipped
  reference vocabulary (``reference_vocabulary()``: ~3,000 short clinical captions of people of
  every age in everyday settings and clothing, swimwear and sport, medicine and anatomy
  diagrams, art and statues, cartoons and anime, animals, objects, scenes, text and
  screenshots, plain shapes and colours; built by ``tools/make_reference_vocabulary.py``),
  less the captions the concept itself *names* (``names_caption``: "a red triangle on a
  gray background" is no reference for "a red triangle", "a child reading" none for a concept
  about minors, while "a red star" and "an adult reading" are), plus the near misses the policy
  wrote (its other concepts and the concept's own ``contrast`` texts). A concept is not
  distinctive enough to fire on something unless that thing is closer to it than any benign
  reference is: near misses nobody wrote into the policy land in the background.

* ``method="reference"`` (text space: prompt thresholds, or no samples available):
  ``threshold = max_j cos(concept, reference_j) + margin`` (margin 0.02 by default): the
  concept fires on a prompt only when the prompt is closer to it than every benign reference.

* ``method="reference-stats"``: ``threshold = percentile_q(cos(concept, refs)) + k · std``
  (q = 99, k = 1), less sensitive to one odd reference caption.

* ``method="samples"`` (the right one for image thresholds, which live in image-text cosine
  space): given embeddings of samples of the target modality (e.g. a random sample of the
  archive's images), each sample is labelled zero-shot by its nearest text among the concept
  and the references. The samples not nearest to the concept form the *background*;
  ``threshold = percentile_q(background scores for the concept) + margin`` (q = 99.5,
  margin 0.01) while fewer than ``min_foreground`` (5) samples are foreground. With a
  foreground, the threshold is the cut between the two zero-shot labelled groups with the
  fewest samples on the wrong side (foreground below, background above; of the cuts within
  one sample of the fewest, the one at the widest gap), placed mid-gap between the two scores
  around it: a near miss at the background's top does not fire, and a
  few true items a reference happened to describe better (a word the model never learned)
  do not drag the threshold up into the concept's own scores.
  No labels are needed; at least ``min_background`` (20) background samples
  are required, else the reference method is used. Choosing a high percentile of the
  background keeps false alarms near (100 - q) % of the archive while sitting below the
  scores of samples that truly show the concept.

* ``method="auto"`` (default): ``samples`` when samples are given, else ``reference``.

The explanation string states which method, the inputs' sizes and the numbers, so a report can
show how the value came about.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np

VOCABULARY_FILE = Path(__file__).with_name("data") / "reference_vocabulary.jsonl"
# a reference caption this close (text-text cosine) to the concept is a paraphrase of it, not a near miss
PARAPHRASE_COSINE = 0.95

__all__ = [
    "NEUTRAL_CAPTIONS",
    "calibrate_threshold",
    "ensemble",
    "names_caption",
    "reference_captions",
    "reference_vocabulary",
]

NEUTRAL_CAPTIONS: tuple[str, ...] = (
    "a photo of a street",
    "a bowl of fruit",
    "a cup of coffee on a table",
    "a city skyline",
    "a mountain landscape",
    "a beach at sunset",
    "a forest path",
    "a river in the countryside",
    "a field of flowers",
    "a snowy mountain",
    "a desert with sand dunes",
    "a lake with a boat",
    "a kitchen interior",
    "a living room with a sofa",
    "an office desk with a computer",
    "a bookshelf full of books",
    "a bicycle leaning on a wall",
    "a red car parked on a road",
    "a train at a station",
    "an airplane in the sky",
    "a sailboat on the sea",
    "a bridge over a river",
    "a lighthouse on a cliff",
    "a castle on a hill",
    "a wooden house",
    "a modern building",
    "a garden with trees",
    "a park bench",
    "a plate of pasta",
    "a slice of pizza",
    "a loaf of bread",
    "a salad in a bowl",
    "a birthday cake",
    "a glass of water",
    "a basket of vegetables",
    "a cat sleeping on a bed",
    "a dog running in a park",
    "a horse in a field",
    "a bird on a branch",
    "a fish in an aquarium",
    "a cow on a farm",
    "a butterfly on a flower",
    "a pair of shoes",
    "a wristwatch",
    "a smartphone on a table",
    "a laptop computer",
    "a pair of headphones",
    "a camera",
    "a guitar",
    "a piano",
    "a clock on a wall",
    "a lamp",
    "a chair",
    "a wooden table",
    "a vase of flowers",
    "a potted plant",
    "a teapot",
    "a set of keys",
    "an umbrella",
    "a backpack",
    "a map of a country",
    "a chart with numbers",
    "a page of text",
    "a screenshot of a website",
    "a logo on a white background",
    "an abstract painting",
    "a watercolor landscape",
    "a pencil sketch of a building",
    "a cartoon of a robot",
    "a pattern of geometric shapes",
    "a close-up of leaves",
    "clouds in a blue sky",
    "the moon at night",
    "a starry sky",
    "a rainy window",
    "a foggy morning",
    "a sunrise",
    "a waterfall",
    "a rocky coastline",
    "a tropical island",
    "a vineyard",
    "a farm with a barn",
    "a market stall",
    "a busy intersection",
    "a subway platform",
    "a library reading room",
    "a museum hall",
    "a stadium",
    "a swimming pool",
    "a tennis ball",
    "a soccer ball on grass",
    "a chess board",
    "a stack of coins",
    "a toolbox with tools",
    "a microscope",
    "a satellite in orbit",
    "a wind turbine",
    "a solar panel",
    "a mug on a desk",
    "a spoon and fork",
    "a snow-covered street",
    "an empty road",
    "a plain gray background",
    "a blurry photo",
)


@functools.lru_cache(maxsize=1)
def reference_vocabulary() -> tuple[dict, ...]:
    """The shipped reference vocabulary: ``{"caption", "group", "keys"}`` per caption."""
    with open(VOCABULARY_FILE, encoding="utf-8") as fh:
        return tuple(json.loads(line) for line in fh if line.strip())


def _words(texts) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z0-9]+", str(t).lower())}


def names_caption(concept_words: set[str], keys) -> bool:
    """A concept names a caption when every key slot of the caption has an alternative among the
    concept's words (a slotless caption is named by nothing)."""
    return bool(keys) and all(any(w in concept_words for w in slot) for slot in keys)


def reference_captions(concept_texts) -> list[str]:
    """``NEUTRAL_CAPTIONS`` and the vocabulary's captions, less those ``concept_texts`` name
    (the concept's own texts, not its templates: "on a white background" names no white shape)."""
    words = _words(concept_texts)
    own = {str(t).strip().lower() for t in concept_texts}
    out = [c for c in NEUTRAL_CAPTIONS if c not in own]
    out += [
        e["caption"]
        for e in reference_vocabulary()
        if e["caption"] not in own and not names_caption(words, e.get("keys") or [])
    ]
    return out


def drop_paraphrases(concept_text_emb, reference_embs, limit: float = PARAPHRASE_COSINE) -> np.ndarray:
    """The reference rows whose text cosine to the concept stays below ``limit``."""
    c = _unit(np.asarray(concept_text_emb, dtype=np.float64))
    refs = _unit(np.atleast_2d(np.asarray(reference_embs, dtype=np.float64)))
    return refs[refs @ c < limit]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        norm = np.linalg.norm(x)
        return x / norm if norm > 0 else x
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def ensemble(text_embs: np.ndarray) -> np.ndarray:
    """Prompt ensembling: the normalised mean of the normalised embeddings of a concept's prompts."""
    return _unit(_unit(np.atleast_2d(text_embs)).mean(axis=0))


def _as_matrix(x, dim: int) -> np.ndarray:
    if x is None:
        return np.zeros((0, dim))
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros((0, dim))
    return _unit(x.reshape(-1, dim))


def _best_cut(scores: np.ndarray, foreground: np.ndarray, slack: int = 1) -> tuple[float, int, float, float]:
    """(threshold, samples on the wrong side, score below, score above) of the 1-D cut between
    ``foreground`` and the rest with the fewest foreground below plus background above, or one
    more (``slack``), the widest gap among those. The labels are zero-shot guesses: one true
    item a reference happened to describe better must not pin the cut to a sliver just above
    it when a gap many times wider lies one label away."""
    order = np.argsort(scores, kind="stable")
    x, fg = scores[order], foreground[order].astype(np.int64)
    # cut i sits between x[i-1] and x[i]: fg below = cumsum before i, bg at or above = the rest
    fg_below = np.concatenate([[0], np.cumsum(fg)])
    bg_above = (len(x) - np.arange(len(x) + 1)) - (fg.sum() - fg_below)
    wrong = fg_below + bg_above
    lo = np.concatenate([[x[0] - 0.02], x])
    hi = np.concatenate([x, [x[-1] + 0.02]])
    width = hi - lo
    best = np.flatnonzero(wrong <= wrong.min() + slack)
    i = int(best[np.argmax(width[best])])
    return float(np.clip((lo[i] + hi[i]) / 2, -1.0, 1.0)), int(wrong[i]), float(lo[i]), float(hi[i])


def calibrate_threshold(
    concept_text_emb,
    neutral_text_embs,
    other_concept_embs=None,
    image_or_prompt_embs=None,
    *,
    method: str = "auto",
    margin: float | None = None,
    percentile: float | None = None,
    k: float = 1.0,
    min_background: int = 20,
    min_foreground: int = 5,
) -> tuple[float, str]:
    """A threshold for one concept and model, and a one-line explanation of how it was derived.

    ``concept_text_emb``: (d,) ensembled concept embedding (or (t, d) prompt embeddings,
    ensembled here). ``neutral_text_embs``: (n, d) embeddings of ``NEUTRAL_CAPTIONS`` (or any
    benign captions). ``other_concept_embs``: (m, d) near misses (other concepts, contrast
    texts). ``image_or_prompt_embs``: (s, d) samples of the modality the threshold is for.
    See the module docstring for the methods.
    """
    c = np.asarray(concept_text_emb, dtype=np.float64)
    c = ensemble(c) if c.ndim == 2 else _unit(c)
    dim = c.shape[-1]
    neutral = _as_matrix(neutral_text_embs, dim)
    others = _as_matrix(other_concept_embs, dim)
    refs = np.concatenate([neutral, others]) if len(others) else neutral
    samples = _as_matrix(image_or_prompt_embs, dim)
    if method not in ("auto", "reference", "reference-stats", "samples"):
        raise ValueError(f"unknown calibration method {method!r}")
    if len(refs) == 0:
        raise ValueError("calibration needs at least one reference embedding")
    ref_scores = refs @ c
    chosen = method
    fallback = ""
    if method in ("auto", "samples"):
        chosen = "samples" if len(samples) else "reference"
        if method == "samples" and not len(samples):
            fallback = " (no samples given)"
    if chosen == "samples":
        scores = samples @ c
        best_ref = (samples @ refs.T).max(axis=1)
        background = scores[scores < best_ref]
        n_fg = int(len(scores) - len(background))
        if len(background) >= min_background:
            q = 99.5 if percentile is None else percentile
            m = 0.01 if margin is None else margin
            base = float(np.percentile(background, q))
            threshold = float(np.clip(base + m, -1.0, 1.0))
            gap = ""
            if n_fg >= min_foreground:
                threshold, wrong, lo, hi = _best_cut(scores, scores >= best_ref)
                gap = (
                    f"; with {n_fg} foreground samples: the cut with the fewest on the wrong side "
                    f"({wrong}), mid-gap between {lo:.4f} and {hi:.4f} = {threshold:.4f}"
                )
            return threshold, (
                f"samples: {q:g}th percentile of concept scores over {len(background)} "
                f"background samples ({base:.4f}) + margin {m:g} = {base + m:.4f}{gap}; "
                f"{n_fg} of {len(scores)} samples nearer the concept than any of "
                f"{len(refs)} references"
            )
        chosen = "reference"
        fallback = f" (only {len(background)} background samples, fewer than {min_background})"
    if chosen == "reference-stats":
        q = 99.0 if percentile is None else percentile
        m = 0.0 if margin is None else margin
        base = float(np.percentile(ref_scores, q))
        spread = float(ref_scores.std())
        threshold = float(np.clip(base + k * spread + m, -1.0, 1.0))
        return threshold, (
            f"reference-stats: {q:g}th percentile of similarity to {len(refs)} references "
            f"({base:.4f}) + {k:g}·std ({spread:.4f}) + margin {m:g} = {threshold:.4f}"
        )
    m = 0.02 if margin is None else margin
    top = int(np.argmax(ref_scores))
    base = float(ref_scores[top])
    threshold = float(np.clip(base + m, -1.0, 1.0))
    source = "neutral" if top < len(neutral) else "near-miss"
    return threshold, (
        f"reference{fallback}: max similarity to {len(neutral)} neutral and {len(others)} "
        f"near-miss references ({base:.4f}, {source} #{top if top < len(neutral) else top - len(neutral)}) "
        f"+ margin {m:g} = {threshold:.4f}"
    )
