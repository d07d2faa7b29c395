"""Combination flags: which categories fire for an item, given the signals that fired.

A flag holds when

* every entry of ``all`` holds (an entry ``"a|b"`` holds when ``a`` or ``b`` fired; ``|``
  works the same way in ``any`` and ``none``),
* at least ``min_any`` entries of ``any`` fired (when ``any`` is not empty), and
* no entry of ``none`` fired.

``kind:*`` in any list stands for every signal of that kind. A category fires when any of its
flags holds; its result carries the flags that held and the signals that made them hold (the
signals that satisfied ``all`` and ``any``), so a reviewer sees why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from audit.policy.schema import Flag, Policy

__all__ = [
    "CategoryHit",
    "concept_signal_names",
    "suppress_concepts",
    "evaluate_flag",
    "evaluate_flags",
]


@dataclass(frozen=True)
class CategoryHit:
    category: str
    severity: str
    no_view: bool
    flags: tuple[str, ...]  # ids of the flags that held
    signals: tuple[str, ...]  # contributing signals, sorted


def concept_signal_names(concept_id: str, *, image: bool = False, prompt: bool = False) -> set[str]:
    """The signal names the flag stage emits for a concept that fired on image and/or prompt."""
    out = set()
    if image:
        out.add(f"concept:{concept_id}/image")
    if prompt:
        out.add(f"concept:{concept_id}/prompt")
    if out:
        out.add(f"concept:{concept_id}")
    return out


def suppress_concepts(signals: Iterable[str], concept_ids: Iterable[str]) -> set[str]:
    """``signals`` without those of the given concepts (a negative concept fired for them)."""
    drop = set(concept_ids)
    out = set()
    for name in signals:
        if name.startswith("concept:"):
            cid = name[len("concept:") :].split("/", 1)[0]
            if cid in drop:
                continue
        out.add(name)
    return out


def _fired(name: str, signals: set[str], kinds: set[str]) -> list[str]:
    """The fired signals that satisfy ``name`` (a concrete name or ``kind:*``)."""
    if name.endswith(":*"):
        kind = name[:-2]
        if kind not in kinds:
            return []
        return sorted(s for s in signals if s.startswith(kind + ":"))
    return [name] if name in signals else []


def _entry(entry: str, signals: set[str], kinds: set[str]) -> list[str]:
    return [s for alt in entry.split("|") for s in _fired(alt.strip(), signals, kinds)]


def evaluate_flag(flag: Flag, signals: set[str] | frozenset[str]) -> tuple[str, ...] | None:
    """Contributing signals when ``flag`` holds for ``signals``, else ``None``."""
    kinds = {s.split(":", 1)[0] for s in signals}
    contributing: set[str] = set()
    for entry in flag.all:
        matched = _entry(entry, signals, kinds)
        if not matched:
            return None
        contributing.update(matched)
    if flag.any:
        matched_entries = 0
        for entry in flag.any:
            matched = _entry(entry, signals, kinds)
            if matched:
                matched_entries += 1
                contributing.update(matched)
        if matched_entries < flag.min_any:
            return None
    for entry in flag.none:
        if _entry(entry, signals, kinds):
            return None
    return tuple(sorted(contributing))


def evaluate_flags(policy: Policy, signals: Iterable[str] | Mapping[str, object]) -> list[CategoryHit]:
    """Categories that fire for one item, most severe first.

    ``signals``: the fired signal names (a mapping's keys are used, so a dict of
    name → score works too).
    """
    fired = frozenset(signals.keys() if isinstance(signals, Mapping) else signals)
    by_category: dict[str, tuple[list[str], set[str]]] = {}
    for flag in policy.flags:
        contributing = evaluate_flag(flag, fired)
        if contributing is None:
            continue
        flags, sigs = by_category.setdefault(flag.category, ([], set()))
        flags.append(flag.id)
        sigs.update(contributing)
    out = []
    for category_id, (flags, sigs) in by_category.items():
        category = policy.category(category_id)
        out.append(CategoryHit(category_id, category.severity, category.no_view, tuple(flags), tuple(sorted(sigs))))
    out.sort(key=lambda hit: (-policy.category(hit.category).rank, hit.category))
    return out
