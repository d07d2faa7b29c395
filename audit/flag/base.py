"""The detector seam: a tiny protocol every detector implements, and what it is given.

A detector looks at the rows of a ``FlagContext`` (items to evaluate, their metadata and
vectors) and returns ``Detections``: the signals that fired per row (each with score,
threshold, margin and detail) and what it suppresses (known false positives). Detectors
never write; the runner merges their results, combines signals into categories with the
policy's flags, and writes findings. ``tests/test_flag_detectors.py`` is the contract test
kit every detector runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from audit.findings.store import Signal
from audit.policy import Policy


@dataclass
class FlagContext:
    """The rows a detector evaluates. Arrays are aligned to ``item_ids``."""

    policy: Policy
    item_ids: list[str]
    prompts: list[str | None]
    negative_prompts: list[str | None]
    md5: list[str | None]
    pdq: list[str | None]
    pdq_quality: list[int | None]
    image_vectors: np.ndarray  # (n, d) float32 unit rows; zero rows where has_image is False
    has_image: np.ndarray  # (n,) bool
    prompt_vectors: np.ndarray  # (n, d) float32, the prompt's vector; zero where has_prompt is False
    has_prompt: np.ndarray
    model_key: str = ""
    # lazily loaded text/image embedder of the model the vectors came from
    embedder_factory: Callable[[], Any] | None = None
    # image vectors of the whole archive (not only the rows evaluated): calibration samples
    sample_vectors: np.ndarray | None = None
    # or a callable drawing them when first needed (a streaming run calibrates lazily)
    sample_factory: Callable[[], np.ndarray] | None = None
    # thresholds a previous run of the same policy and model used: reused for consistency
    previous_thresholds: dict = field(default_factory=dict)
    # row -> (frame indices, (k, d) unit vectors): sampled later frames of animations
    # (audit.flag.frames); concepts score each row on its best frame
    frame_vectors: dict = field(default_factory=dict)
    # the run's concept vectors and thresholds (``audit.flag.concepts.prepare_concepts``),
    # computed once per run; a detector that needs a concept's vector or threshold reads them
    # here instead of computing them again (None: not computed, as outside a flag run)
    concepts: Any = None
    _embedder: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def embedder(self):
        if self._embedder is None:
            if self.embedder_factory is None:
                raise RuntimeError("this flag run has no embedder for concept texts")
            self._embedder = self.embedder_factory()
        return self._embedder


@dataclass
class Detections:
    """What one detector found. Rows index the context's arrays."""

    signals: dict[int, list[Signal]] = field(default_factory=dict)
    # row -> categories suppressed ("*": every category): negative banks
    suppress_categories: dict[int, set[str]] = field(default_factory=dict)
    # row -> concept ids whose signals are cancelled: negative concepts
    suppress_concepts: dict[int, set[str]] = field(default_factory=dict)
    # row -> why it was suppressed (signals of kind "negative", kept for the record)
    suppressions: dict[int, list[Signal]] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)  # recorded in flag_runs.thresholds
    stats: dict[str, Any] = field(default_factory=dict)
    # problems of the run, not of an item (a policy rule disabled after timeouts): dicts with
    # at least "kind" and a one-line "message"; the run records them and the CLI warns
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: int, signal: Signal) -> None:
        self.signals.setdefault(int(row), []).append(signal)

    def suppress(self, row: int, signal: Signal, *, categories=None, concepts=None) -> None:
        self.suppressions.setdefault(int(row), []).append(signal)
        if categories is not None:
            self.suppress_categories.setdefault(int(row), set()).update(categories or {"*"})
        if concepts is not None:
            self.suppress_concepts.setdefault(int(row), set()).update(concepts)


@runtime_checkable
class Detector(Protocol):
    """One kind of evidence. ``name`` is for logs and summaries; ``detect`` must be pure."""

    name: str

    def detect(self, ctx: FlagContext) -> Detections: ...


def margin(score: float, threshold: float) -> float:
    return float(score) - float(threshold)
