"""Prompt detector: the policy's prompt rules and name lists (``audit.policy.match_prompt``).

Every hit becomes a signal with the matched span and text; rule hits are kind
``prompt_rule`` (``rule:ID``, and the built-ins ``prompt:overlong`` / ``prompt:rule-error``),
name hits kind ``name`` (``names:ID``). Score 1.0, threshold 1.0, margin 0: a rule either
matched or not. Identical prompts are matched once.

One ``PatternBreaker`` serves the whole run: a rule or name list that keeps timing out (or is
slow) is disabled for the rest of the run and reported once in ``Detections.errors``; a
timeout is a ``prompt:rule-error`` signal only when the policy sets ``timeout_is_finding``.
"""

from __future__ import annotations

from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext


class PromptDetector:
    name = "prompts"

    def __init__(self, *, shared: bool = False) -> None:
        # shared: one breaker for every batch of a run (a rule disabled in batch 1 stays off)
        self.shared = shared
        self.breaker = None

    def detect(self, ctx: FlagContext) -> Detections:
        from audit.policy.breaker import PatternBreaker
        from audit.policy.rules import compile_rules, match_prompt

        det = Detections()
        policy = ctx.policy
        if len(ctx) == 0:
            return det
        compiled = compile_rules(policy)
        breaker = (
            self.breaker if self.shared and self.breaker is not None else PatternBreaker(timeout_s=compiled.timeout)
        )
        self.breaker = breaker
        cache: dict[tuple, list[Signal]] = {}
        matched = 0
        for row, (prompt, negative) in enumerate(zip(ctx.prompts, ctx.negative_prompts)):
            if not prompt and not negative:
                continue
            key = (prompt, negative)
            signals = cache.get(key)
            if signals is None:
                signals = _signals(
                    match_prompt(compiled, prompt, negative, breaker=breaker), errors_fire=policy.timeout_is_finding
                )
                if len(cache) < 100_000:
                    cache[key] = signals
            for s in signals:
                det.add(row, Signal(s.kind, s.name, s.score, s.threshold, s.margin, dict(s.detail)))
            matched += bool(signals)
        det.stats = {"rows_with_hits": matched, "distinct_prompts": len(cache)}
        det.errors = [trouble.to_dict() for trouble in breaker.troubles()]
        return det


def _signals(match, *, errors_fire: bool = False) -> list[Signal]:
    by_name: dict[str, Signal] = {}
    for hit in match.rule_hits:
        name = hit.signal
        sig = by_name.get(name)
        span = {"field": hit.field, "span": list(hit.span), "text": hit.matched_text, "pattern": hit.pattern}
        if hit.variant != "base":
            span["variant"] = hit.variant
        if sig is None:
            by_name[name] = Signal("prompt_rule", name, 1.0, 1.0, 0.0, {"matches": [span]})
        elif len(sig.detail["matches"]) < 20:
            sig.detail["matches"].append(span)
    if match.errors and errors_fire:  # an engine failure is evidence only if the policy says so
        by_name["prompt:rule-error"] = Signal(
            "prompt_rule",
            "prompt:rule-error",
            1.0,
            1.0,
            0.0,
            {"errors": [{"rule": e.rule_id, "field": e.field, "message": e.message} for e in match.errors[:20]]},
        )
    for hit in match.name_hits:
        name = hit.signal
        span = {"field": hit.field, "span": list(hit.span), "text": hit.matched_text, "name": hit.name}
        sig = by_name.get(name)
        if sig is None:
            by_name[name] = Signal("name", name, 1.0, 1.0, 0.0, {"matches": [span]})
        elif len(sig.detail["matches"]) < 20:
            sig.detail["matches"].append(span)
    for sig in by_name.values():  # the first match's text up front, for one-line displays
        first = (sig.detail.get("matches") or [{}])[0]
        if "text" in first:
            sig.detail["text"] = first["text"]
    return list(by_name.values())
