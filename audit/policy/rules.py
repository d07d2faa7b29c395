"""Prompt rules: regular expressions and word lists over normalised prompt text.

Matching, per field (``prompt``, ``negative_prompt``):

1. over-long text (more than ``policy.max_prompt_chars``, 20,000 by default, the length Civitai
   blocks as an evasion path) yields a hit of the built-in rule ``prompt:overlong`` and is
   matched only on two windows: its first and its last ``max_prompt_chars // 2`` characters
   (a match never straddles the gap; a long prompt cannot make matching slow);
2. the text is normalised into variants (``normalize.normalize_variants``);
3. per rule and variant, the rule's allow phrases are blanked out, then every pattern is
   searched; hits are mapped back to spans of the original text and deduplicated.

Regular expressions run on RE2 when possible, else with a time bound (``_engine``); a search
that times out is recorded in ``RuleHits.errors``, never a hang, and a rule or name list that
keeps timing out or is slow is disabled for the rest of the run (``breaker``). Engine failures
are not evidence: the signal ``prompt:rule-error`` fires only with ``[policy]
timeout_is_finding = true``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from audit.policy._engine import (
    PatternTimeout,
    SafePattern,
    compile_pattern,
)
from audit.policy.breaker import PatternBreaker, clock
from audit.policy.normalize import (
    NormalizedText,
    blank_spans,
    normalize_term,
    normalize_variants,
    term_pattern,
)
from audit.policy.schema import PROMPT_FIELDS, RULE_ERROR_SIGNAL, Policy, Rule

__all__ = [
    "RuleHit",
    "RuleError",
    "RuleHits",
    "CompiledRule",
    "CompiledRules",
    "PromptMatch",
    "age_patterns",
    "compile_rule",
    "compile_rules",
    "match_rules",
    "match_prompt",
    "prompt_windows",
]

OVERLONG_RULE = "prompt:overlong"
MAX_MATCHED_TEXT = 500

_NUMBER_WORDS = {
    1: ["one"],
    2: ["two"],
    3: ["three"],
    4: ["four"],
    5: ["five"],
    6: ["six"],
    7: ["seven", "sevn"],
    8: ["eight", "eigth", "eigh"],
    9: ["nine", "nien"],
    10: ["ten"],
    11: ["eleven", "elevn", "eleve"],
    12: ["twelve", "twelv", "twelf", "twelfe"],
    13: ["thirteen", "thirten", "therteen", "thirtheen"],
    14: ["fourteen", "fourten", "forteen", "fourtheen", "forten"],
    15: ["fifteen", "fiveteen", "fifteen", "fifthteen", "fiften"],
    16: ["sixteen", "sixten", "sixtheen", "sixtean"],
    17: ["seventeen", "seventen", "sevnteen", "seventeem"],
    18: ["eighteen", "eightteen", "eighten"],
    19: ["nineteen", "ninteen", "nineten"],
}


def age_patterns(below: int = 18) -> list[str]:
    """Regular expressions (RE2 syntax) for stated ages under ``below``.

    Digits ("12") and number words with common misspellings ("twelve", "twelv"), in the forms
    "aged N" / "age N" / "age: N", "N yo" / "N y/o" / "N y.o.", "N yrs" / "N years (old)",
    "N-year-old", "N months old". Ages are whole numbers from 1 (months: any number).
    """
    if not 2 <= below <= 20:
        raise ValueError("ages_below must be between 2 and 20")
    digits = [str(n) for n in range(below - 1, 0, -1)]
    words: set[str] = set()
    for n in range(below - 1, 0, -1):
        words.update(_NUMBER_WORDS.get(n, []))
    ordered = sorted(words, key=lambda w: (-len(w), w))
    number = r"(?:" + "|".join(digits + ordered) + r")"
    unit = r"(?:years?|yrs?|yo|y\s?/\s?o|y\.o|yr\.?s?)"
    return [
        rf"\bage[ds]?\s*(?:of\s*)?[:=]?\s*{number}\b",
        rf"\b{number}[\s\-]*{unit}(?:[\s\-]*old)?\b",
        rf"\b{number}[\s\-]*months?[\s\-]*old\b",
    ]


@dataclass(frozen=True)
class RuleHit:
    rule_id: str
    field: str  # "prompt" or "negative_prompt"
    span: tuple[int, int]  # in the ORIGINAL text of that field
    matched_text: str  # the original text of the span (cut at 500 characters)
    pattern: str
    variant: str = "base"  # the normalised variant that matched

    @property
    def signal(self) -> str:
        return self.rule_id if ":" in self.rule_id else f"rule:{self.rule_id}"


@dataclass(frozen=True)
class RuleError:
    rule_id: str  # the rule's id, or the name list's id when kind is "names"
    field: str
    pattern: str
    message: str
    kind: str = "rule"  # "rule" | "names"

    @property
    def owner(self) -> str:
        """``rule:ID`` or ``names:ID``: what the circuit breaker counts it against."""
        return f"{self.kind}:{self.rule_id}"


class RuleHits(list):
    """A list of ``RuleHit`` with the errors met while matching in ``errors``.

    An error (a timeout) is an engine failure, not evidence about the prompt: it becomes the
    signal ``prompt:rule-error`` only when the policy opts in (``timeout_is_finding``)."""

    def __init__(self, hits=(), errors=(), *, errors_fire: bool = False):
        super().__init__(hits)
        self.errors: list[RuleError] = list(errors)
        self.errors_fire = errors_fire

    @property
    def signals(self) -> set[str]:
        names = {hit.signal for hit in self}
        if self.errors and self.errors_fire:
            names.add(RULE_ERROR_SIGNAL)
        return names


@dataclass
class CompiledRule:
    rule: Rule
    patterns: list[SafePattern]  # the rule's patterns, its word list as one alternation, ages
    allow: list[SafePattern]
    words: dict[str, str] = field(default_factory=dict)  # squashed normalised word -> word
    words_pattern: SafePattern | None = None

    def describe(self, pattern: SafePattern, normalised_match: str) -> str:
        """The pattern to report for a hit (for a word list: the word that matched)."""
        if pattern is self.words_pattern:
            word = self.words.get(_squash(normalised_match))
            return f"word: {word}" if word else "words"
        return pattern.source


@dataclass
class CompiledRules:
    policy: Policy
    rules: list[CompiledRule]
    names: list = field(default_factory=list)  # names.CompiledNameList, filled by compile_rules
    timeout: float = 0.25
    max_chars: int = 20_000
    screens: dict = field(default_factory=dict)  # field -> SafePattern | None


def _squash(text: str) -> str:
    return "".join(ch for ch in normalize_term(text) if ch.isalnum())


def compile_rule(rule: Rule, engine: str = "auto") -> CompiledRule:
    patterns = [compile_pattern(source, engine) for source in rule.patterns]
    words_pattern = None
    if rule.words:
        alternation = sorted({term_pattern(word) for word in rule.words}, key=len, reverse=True)
        words_pattern = compile_pattern("(?:" + "|".join(alternation) + ")", engine)
        patterns.append(words_pattern)
    if rule.ages_below is not None:
        patterns += [compile_pattern(source, engine) for source in age_patterns(rule.ages_below)]
    return CompiledRule(
        rule,
        patterns,
        [compile_pattern(term_pattern(phrase), engine) for phrase in rule.allow],
        {_squash(word): word for word in rule.words},
        words_pattern,
    )


def _screen(rules: list[CompiledRule], field_name: str, engine: str) -> SafePattern | None:
    """One RE2 alternation of every RE2 pattern of the field's rules: a text it does not match
    cannot hit those patterns, so most prompts cost one search per variant."""
    sources = [p.source for r in rules if field_name in r.rule.fields for p in r.patterns if p.engine == "re2"]
    if not sources or engine == "regex":
        return None
    try:
        screen = compile_pattern("|".join(f"(?:{s})" for s in sources), "re2")
    except Exception:  # e.g. a group name used twice
        return None
    return screen


_cache_lock = threading.Lock()
_cache: dict[tuple[int, str, str], tuple[Policy, CompiledRules]] = {}


def compile_rules(policy: Policy, engine: str = "auto") -> CompiledRules:
    """Compile every rule and name list of ``policy`` (cached per policy object)."""
    key = (id(policy), policy.content_hash, engine)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] is policy:
            return cached[1]
    from audit.policy.names import compile_name_list

    rules = [compile_rule(rule, engine) for rule in policy.rules]
    compiled = CompiledRules(
        policy,
        rules,
        [compile_name_list(names, engine) for names in policy.name_lists],
        policy.regex_timeout_s,
        policy.max_prompt_chars,
        {name: _screen(rules, name, engine) for name in PROMPT_FIELDS},
    )
    with _cache_lock:
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = (policy, compiled)
    return compiled


def prompt_windows(text: str, max_chars: int) -> list[tuple[int, str]]:
    """``[(offset, window)]``: the whole text, or its head and tail when over ``max_chars``."""
    if len(text) <= max_chars:
        return [(0, text)]
    half = max_chars // 2
    return [(0, text[:half]), (len(text) - half, text[-half:])]


def _variants(text: str, max_chars: int) -> list[NormalizedText]:
    out: list[NormalizedText] = []
    for offset, window in prompt_windows(text, max_chars):
        out.extend(normalize_variants(window, offset=offset))
    return out


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MATCHED_TEXT else text[:MAX_MATCHED_TEXT] + "…"


def _match_rules_on(
    compiled: CompiledRules,
    field_name: str,
    text: str,
    variants: list[NormalizedText],
    hits: RuleHits,
    timeout: float,
    breaker: PatternBreaker,
) -> None:
    seen: set[tuple[str, tuple[int, int]]] = set()
    screen = compiled.screens.get(field_name)
    screened = {id(v): screen is not None and not screen.found(v.text, timeout) for v in variants}
    for crule in compiled.rules:
        if field_name not in crule.rule.fields:
            continue
        owner = crule.rule.signal
        todo = [v for v in variants if not (screened[id(v)] and all(p.engine == "re2" for p in crule.patterns))]
        if not todo or not breaker.allows(owner):
            continue  # nothing in these variants can match an RE2 pattern / disabled for the run
        started = clock()
        try:
            for variant in todo:
                _match_rule_variant(crule, field_name, text, variant, hits, seen, timeout, breaker)
                if breaker.is_disabled(owner):
                    break
        finally:
            breaker.spent(owner, clock() - started)


def _match_rule_variant(
    crule: CompiledRule,
    field_name: str,
    text: str,
    variant: NormalizedText,
    hits: RuleHits,
    seen: set,
    timeout: float,
    breaker: PatternBreaker,
) -> None:
    owner = crule.rule.signal
    work = variant
    if crule.allow:
        spans: list[tuple[int, int]] = []
        try:
            for allow in crule.allow:
                spans.extend(allow.spans(variant.text, timeout))
        except PatternTimeout as exc:  # an allow phrase pattern (never expected on RE2)
            hits.errors.append(RuleError(crule.rule.id, field_name, "allow", str(exc)))
            breaker.timed_out(owner)
            return
        work = blank_spans(variant, spans)
    for pattern in crule.patterns:
        if breaker.is_disabled(owner):
            return
        try:
            spans = pattern.spans(work.text, timeout)
        except PatternTimeout as exc:
            hits.errors.append(RuleError(crule.rule.id, field_name, pattern.source, str(exc)))
            breaker.timed_out(owner)
            continue
        for start, end in spans:
            span = work.original_span(start, end)
            if (crule.rule.id, span) in seen:
                continue
            seen.add((crule.rule.id, span))
            hits.append(
                RuleHit(
                    crule.rule.id,
                    field_name,
                    span,
                    _cut(text[span[0] : span[1]]),
                    crule.describe(pattern, work.text[start:end]),
                    variant.variant,
                )
            )


def _tidy(hits: RuleHits) -> RuleHits:
    """Drop hits contained in a longer hit of the same rule and field; sort by position."""
    ordered = sorted(hits, key=lambda h: (h.field != "prompt", h.rule_id, h.span[0], -h.span[1]))
    kept: list[RuleHit] = []
    for hit in ordered:
        last = kept[-1] if kept else None
        if (
            last is not None
            and last.rule_id == hit.rule_id
            and last.field == hit.field
            and last.span[0] <= hit.span[0]
            and hit.span[1] <= last.span[1]
        ):
            continue
        kept.append(hit)
    kept.sort(key=lambda h: (h.field != "prompt", h.span, h.rule_id))
    return RuleHits(kept, hits.errors, errors_fire=hits.errors_fire)


def _fields(prompt: str | None, negative_prompt: str | None) -> list[tuple[str, str]]:
    return [(name, value) for name, value in zip(PROMPT_FIELDS, (prompt, negative_prompt)) if value]


def _breaker(compiled: CompiledRules, breaker: PatternBreaker | None, timeout: float) -> PatternBreaker:
    # Without a run-wide breaker a single call still gets one: a bad rule costs at most
    # MAX_TIMEOUTS time limits per call, whatever the number of normalised variants.
    return breaker if breaker is not None else PatternBreaker(timeout_s=timeout)


def match_rules(
    policy: Policy | CompiledRules,
    prompt: str | None,
    negative_prompt: str | None = None,
    *,
    timeout: float | None = None,
    breaker: PatternBreaker | None = None,
) -> RuleHits:
    """Rule hits (spans in the original texts) for one item's prompt and negative prompt.

    ``breaker``: the run's ``PatternBreaker`` (rules it disabled are skipped, and this call's
    timeouts and costs count towards disabling); default: a fresh one for this call."""
    compiled = policy if isinstance(policy, CompiledRules) else compile_rules(policy)
    timeout = compiled.timeout if timeout is None else timeout
    breaker = _breaker(compiled, breaker, timeout)
    hits = RuleHits(errors_fire=compiled.policy.timeout_is_finding)
    for field_name, text in _fields(prompt, negative_prompt):
        if len(text) > compiled.max_chars:
            hits.append(
                RuleHit(OVERLONG_RULE, field_name, (0, len(text)), "", f"length {len(text)} > {compiled.max_chars}")
            )
        _match_rules_on(compiled, field_name, text, _variants(text, compiled.max_chars), hits, timeout, breaker)
    return _tidy(hits)


@dataclass
class PromptMatch:
    """Everything the prompt side of a policy says about one item."""

    rule_hits: RuleHits
    name_hits: list  # list[names.NameHit]

    @property
    def errors(self) -> list[RuleError]:
        return self.rule_hits.errors

    @property
    def signals(self) -> set[str]:
        return self.rule_hits.signals | {hit.signal for hit in self.name_hits}


def match_prompt(
    policy: Policy | CompiledRules,
    prompt: str | None,
    negative_prompt: str | None = None,
    *,
    timeout: float | None = None,
    breaker: PatternBreaker | None = None,
) -> PromptMatch:
    """Rules and name lists over one item's prompts, normalising each text once
    (``breaker`` as for ``match_rules``; a flag run passes one for the whole run)."""
    from audit.policy.names import _match_names_on

    compiled = policy if isinstance(policy, CompiledRules) else compile_rules(policy)
    timeout = compiled.timeout if timeout is None else timeout
    breaker = _breaker(compiled, breaker, timeout)
    hits = RuleHits(errors_fire=compiled.policy.timeout_is_finding)
    names: list = []
    for field_name, text in _fields(prompt, negative_prompt):
        if len(text) > compiled.max_chars:
            hits.append(
                RuleHit(OVERLONG_RULE, field_name, (0, len(text)), "", f"length {len(text)} > {compiled.max_chars}")
            )
        variants = _variants(text, compiled.max_chars)
        _match_rules_on(compiled, field_name, text, variants, hits, timeout, breaker)
        _match_names_on(compiled.names, field_name, text, variants, names, timeout, breaker, hits.errors)
    hits = _tidy(hits)
    names.sort(key=lambda h: (h.field != "prompt", h.span, h.list_id))
    return PromptMatch(hits, names)
