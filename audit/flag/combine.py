"""Combination: the signals of one item → the categories the policy's flags fire.

``merge`` joins the detectors' results per row; ``combine`` drops concept signals a negative
concept cancelled, adds the aggregate ``concept:X`` name for ``concept:X/image|prompt``,
evaluates the policy's flags (``audit.policy.evaluate_flags``), drops categories a negative
bank suppressed, and returns each category with its contributing signals, plus a
``combination`` signal naming the flag when it joined several conditions.
"""

from __future__ import annotations

from typing import Any

from audit.findings.store import Signal
from audit.flag.base import Detections


def combine(
    policy, row_signals: list[Signal], suppressed_concepts: set[str], suppressed_categories: set[str]
) -> tuple[list[tuple[Any, list[Signal]]], int]:
    """CategoryHits for one item with their contributing signals; and how many were suppressed."""
    from audit.policy import evaluate_flags

    signals = [
        s
        for s in row_signals
        if not (s.kind == "concept" and s.name[len("concept:") :].split("/", 1)[0] in suppressed_concepts)
    ]
    fired = {s.name for s in signals}
    fired |= {s.name.split("/", 1)[0] for s in signals if s.kind == "concept"}
    out = []
    suppressed = 0
    flags_by_id = {f.id: f for f in policy.flags}
    for hit in evaluate_flags(policy, fired):
        if "*" in suppressed_categories or hit.category in suppressed_categories:
            suppressed += 1
            continue
        contributing = set(hit.signals)
        chosen = [s for s in signals if s.name in contributing or s.name.split("/", 1)[0] in contributing]
        combo = [
            fid
            for fid in hit.flags
            if (f := flags_by_id.get(fid)) is not None and len(f.all) + bool(f.any) + bool(f.none) >= 2
        ]
        if combo:
            chosen.append(
                Signal(
                    "combination",
                    f"flag:{combo[0]}",
                    1.0,
                    1.0,
                    0.0,
                    {"flags": list(hit.flags), "signals": list(hit.signals)},
                )
            )
        out.append((hit, chosen))
    return out, suppressed


def merge(detections: list[Detections]) -> tuple[dict[int, list[Signal]], dict[int, set[str]], dict[int, set[str]]]:
    signals: dict[int, list[Signal]] = {}
    sup_cat: dict[int, set[str]] = {}
    sup_con: dict[int, set[str]] = {}
    for det in detections:
        for row, sigs in det.signals.items():
            signals.setdefault(row, []).extend(sigs)
        for row, cats in det.suppress_categories.items():
            sup_cat.setdefault(row, set()).update(cats)
        for row, cons in det.suppress_concepts.items():
            sup_con.setdefault(row, set()).update(cons)
    return signals, sup_cat, sup_con


def image_evidence_names(policy, category: str) -> set[str]:
    """The signal names by which image similarity satisfies ``category``'s flags: for every
    concept its flags name (``concept:X`` or ``concept:X/image``), both names. What a seed (or
    a learned model) may stand in for; prompt concepts, rules and hashes are not among them."""
    out: set[str] = set()
    for flag in policy.flags:
        if flag.category != category:
            continue
        for entry in (*flag.all, *flag.any):
            for name in entry.split("|"):
                name = name.strip()
                if name.startswith("concept:") and not name.endswith("/prompt"):
                    base = name.split("/", 1)[0]
                    out |= {base, f"{base}/image"}
    return out


def fires_with_image_evidence(policy, category: str, fired: set[str]) -> bool:
    """Whether ``category`` fires for an item whose own signals are ``fired`` once the image
    part of its flags is taken as given (``image_evidence_names``): the item must still meet
    every other condition (a prompt rule of a combination) itself."""
    from audit.policy import evaluate_flags

    names = set(fired) | image_evidence_names(policy, category)
    return any(hit.category == category for hit in evaluate_flags(policy, names))


def fired_names(signals: list[Signal], suppressed_concepts: set[str]) -> set[str]:
    """The names ``combine`` evaluates flags on: signal names (less cancelled concepts) and the
    aggregate ``concept:X`` of ``concept:X/space``."""
    kept = [
        s
        for s in signals
        if not (s.kind == "concept" and s.name[len("concept:") :].split("/", 1)[0] in suppressed_concepts)
    ]
    return {s.name for s in kept} | {s.name.split("/", 1)[0] for s in kept if s.kind == "concept"}
