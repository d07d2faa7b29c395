"""Score a metadata reader against the real-world corpora in ``../shared/corpora/metadata``.

Shared by ``tests/test_meta_corpora.py`` and ``benchmarks/metadata_vs_sd_parsers.py`` so our
reader and the peer library are measured by one rule:

* fields ``prompt, negative_prompt, seed, steps, sampler, cfg_scale, model, model_hash``
  are compared where the expected value is present and not null (null records that the
  peer asserted the field absent; reading more than the peer is not an error);
* numbers compare numerically (``5 == 5.0``, ``"235284042" == 235284042``), text exactly;
* entries with a ``samplers`` list (sd-parsers' ComfyUI expectations) compare each expected
  sampler with the observed sampler of the same node id: its sampler/seed/steps/cfg_scale/
  model, and its prompt and negative prompt texts (as sets of node id and text);
* files expected without generation metadata (``has_generation_metadata``/``readable_image``
  false) score one ``has_metadata`` check: the reader must report none.

An *observation* is a plain dict: the flat fields, ``samplers`` (list of dicts shaped like
``extra["samplers"]``) and ``has_generation_metadata``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

FIELDS = ("prompt", "negative_prompt", "seed", "steps", "sampler", "cfg_scale", "model", "model_hash")
SAMPLER_FIELDS = ("sampler", "seed", "steps", "cfg_scale", "model")


def default_corpora_root() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "metadata"


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def values_equal(expected: Any, observed: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        left, right = _number(expected), _number(observed)
        if left is None or right is None:
            return False
        return abs(left - right) <= Decimal("1e-9") * max(Decimal(1), abs(left))
    if isinstance(expected, str) and isinstance(observed, (int, float)) and not isinstance(observed, bool):
        return values_equal(observed, expected)
    if (
        isinstance(expected, str)
        and isinstance(observed, str)
        and _number(expected) is not None
        and _number(observed) is not None
        and expected.strip().lstrip("-").isdigit()
    ):
        return _number(expected) == _number(observed)
    return expected == observed


@dataclass
class Check:
    file: str
    field: str
    ok: bool
    expected: Any = None
    observed: Any = None


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def per_field(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for check in self.checks:
            counts[check.field][0] += check.ok
            counts[check.field][1] += 1
        return {k: (v[0], v[1]) for k, v in counts.items()}

    @property
    def passed(self) -> int:
        return sum(c.ok for c in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def score_entry(name: str, expected: dict, observed: dict) -> list[Check]:
    checks: list[Check] = []
    if expected.get("has_generation_metadata") is False or expected.get("readable_image") is False:
        has = bool(observed.get("has_generation_metadata"))
        return [Check(name, "has_metadata", not has, False, has)]
    for key in FIELDS:
        if expected.get(key) is not None:
            value = observed.get(key)
            checks.append(Check(name, key, values_equal(expected[key], value), expected[key], value))
    for index, wanted in enumerate(expected.get("samplers") or []):
        checks.extend(_score_sampler(f"{name}#sampler{index}", wanted, observed.get("samplers") or [], index))
    return checks


def _score_sampler(name: str, wanted: dict, observed: list[dict], index: int) -> list[Check]:
    match = next((s for s in observed if str(s.get("node_id")) == str(wanted.get("node_id"))), None)
    if match is None and "node_id" not in wanted and index < len(observed):
        match = observed[index]
    match = match or {}
    checks = []
    for key in SAMPLER_FIELDS:
        if wanted.get(key) is not None:
            checks.append(Check(name, key, values_equal(wanted[key], match.get(key)), wanted[key], match.get(key)))
    for expected_key, observed_key, field_name in (
        ("prompts", "prompts", "prompt"),
        ("negative_prompts", "negative_prompts", "negative_prompt"),
    ):
        if expected_key in wanted:
            want = {(str(p.get("node_id")), p.get("text")) for p in wanted[expected_key]}
            got = {(str(p.get("node_id")), p.get("text")) for p in match.get(observed_key) or []}
            checks.append(Check(name, field_name, want == got, sorted(want), sorted(got)))
    for expected_key, observed_key, field_name in (
        ("positive_text_node", "prompts", "prompt"),
        ("negative_text_node", "negative_prompts", "negative_prompt"),
    ):
        if expected_key in wanted:
            nodes = [str(p.get("node_id")) for p in match.get(observed_key) or []]
            checks.append(Check(name, field_name, str(wanted[expected_key]) in nodes, wanted[expected_key], nodes))
    if "positive_text" in wanted:
        texts = [p.get("text") for p in match.get("prompts") or []]
        checks.append(Check(name, "prompt", wanted["positive_text"] in texts, wanted["positive_text"], texts))
    return checks


def corpus_entries(root: Path | None = None):
    """(path, entry) for every file listed in every EXPECTED.json under ``root``."""
    root = root or default_corpora_root()
    for expected_file in sorted(root.glob("*/EXPECTED.json")):
        listing = json.loads(expected_file.read_text(encoding="utf-8"))
        for entry in listing.get("files", []):
            yield expected_file.parent / entry["file"], entry


def score_corpus(observe: Callable[[Path], dict], root: Path | None = None) -> Report:
    report = Report()
    for path, entry in corpus_entries(root):
        name = f"{path.parent.name}/{path.name}"
        try:
            observed = observe(path)
        except Exception as exc:  # noqa: BLE001 - a reader that raises scores zero on that file
            observed = {"error": f"{type(exc).__name__}: {exc}"}
        report.checks.extend(score_entry(name, entry.get("expected", {}), observed))
    return report


def observe_extraction(extraction) -> dict:
    """Observation dict of an ``audit.meta.Extraction``."""
    best = extraction.best
    observed = {key: getattr(best, key) for key in FIELDS}
    observed["samplers"] = best.extra.get("samplers", [])
    observed["has_generation_metadata"] = extraction.has_generation_metadata
    return observed


def format_table(reports: dict[str, Report]) -> str:
    """Per-field scores, one column per reader."""
    names = list(reports)
    fields = []
    for report in reports.values():
        for key in report.per_field():
            if key not in fields:
                fields.append(key)
    lines = [f"{'field':<18}" + "".join(f"{n:>22}" for n in names)]
    for key in fields:
        row = f"{key:<18}"
        for report in reports.values():
            ok, total = report.per_field().get(key, (0, 0))
            row += f"{f'{ok}/{total}':>14} {100 * ok / total if total else 0:6.1f}%"
        lines.append(row)
    row = f"{'OVERALL':<18}"
    for report in reports.values():
        row += f"{f'{report.passed}/{report.total}':>14} {100 * report.score:6.1f}%"
    lines.append(row)
    return "\n".join(lines)
