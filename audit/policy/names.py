"""Name lists (real persons): whole-name matches over normalised prompt text.

A name matches as a whole phrase: case, accents, confusables, leetspeak and spacing tricks are
undone as for rules (``normalize``), its words may be separated by spaces, punctuation or
nothing ("Jane Placeholder", "jane_placeholder", "JanePlaceholder"), and it must stand between
word boundaries. Lists come inline (``names = [...]``) or from a UTF-8 file, one name per
line, ``#`` comments and blank lines ignored, path relative to the policy file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from audit.errors import InputError
from audit.policy._engine import PatternTimeout, SafePattern, compile_pattern
from audit.policy.breaker import PatternBreaker, clock
from audit.policy.normalize import NormalizedText, normalize_term, term_pattern
from audit.policy.schema import NameList, Policy

__all__ = ["NameHit", "CompiledNameList", "read_names_file", "compile_name_list", "match_names"]

_CHUNK = 2000  # names per alternation


@dataclass(frozen=True)
class NameHit:
    list_id: str
    field: str
    span: tuple[int, int]  # in the ORIGINAL text
    matched_text: str
    name: str  # the listed name it matched

    @property
    def signal(self) -> str:
        return f"names:{self.list_id}"


@dataclass
class CompiledNameList:
    names: NameList
    patterns: list[SafePattern]
    by_key: dict[str, str]


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", "", normalize_term(text))


def read_names_file(path: Path) -> list[str]:
    """Names from a file, one a line; ``#`` starts a comment line."""
    try:
        raw = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read names file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: names file is not UTF-8 ({exc.reason})") from None
    out = []
    for line in raw.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def compile_name_list(names: NameList, engine: str = "auto") -> CompiledNameList:
    by_key: dict[str, str] = {}
    sources: list[str] = []
    for name in names.names:
        key = _key(name)
        if key and key not in by_key:
            by_key[key] = name
            sources.append(term_pattern(name))
    # longest first so "Jane Placeholder Smith" wins over "Jane Placeholder"
    sources.sort(key=len, reverse=True)
    patterns = [
        compile_pattern("(?:" + "|".join(sources[i : i + _CHUNK]) + ")", engine) for i in range(0, len(sources), _CHUNK)
    ]
    return CompiledNameList(names, patterns, by_key)


def _match_names_on(
    compiled: list[CompiledNameList],
    field_name: str,
    text: str,
    variants: list[NormalizedText],
    out: list,
    timeout: float,
    breaker: PatternBreaker | None = None,
    errors: list | None = None,
) -> None:
    breaker = breaker if breaker is not None else PatternBreaker(timeout_s=timeout)
    for clist in compiled:
        if field_name not in clist.names.fields or not breaker.allows(clist.names.signal):
            continue
        started = clock()
        try:
            _match_list(clist, field_name, text, variants, out, timeout, breaker, errors)
        finally:
            breaker.spent(clist.names.signal, clock() - started)


def _match_list(
    clist: CompiledNameList,
    field_name: str,
    text: str,
    variants: list[NormalizedText],
    out: list,
    timeout: float,
    breaker: PatternBreaker,
    errors: list | None,
) -> None:
    from audit.policy.rules import RuleError

    owner = clist.names.signal
    seen: set[tuple[int, int]] = set()
    for variant in variants:
        for pattern in clist.patterns:
            if breaker.is_disabled(owner):
                return
            try:
                spans = pattern.spans(variant.text, timeout)
            except PatternTimeout as exc:  # literal alternations: not expected, but counted
                breaker.timed_out(owner)
                if errors is not None:
                    errors.append(RuleError(clist.names.id, field_name, "names", str(exc), "names"))
                continue
            for start, end in spans:
                span = variant.original_span(start, end)
                if span in seen:
                    continue
                seen.add(span)
                name = clist.by_key.get(_key(variant.text[start:end]), variant.text[start:end])
                out.append(NameHit(clist.names.id, field_name, span, text[span[0] : span[1]], name))


def match_names(
    policy: Policy, prompt: str | None, negative_prompt: str | None = None, *, timeout: float | None = None
) -> list[NameHit]:
    """Name-list hits (spans in the original texts) for one item's prompts."""
    from audit.policy.rules import match_prompt

    return match_prompt(policy, prompt, negative_prompt, timeout=timeout).name_hits
