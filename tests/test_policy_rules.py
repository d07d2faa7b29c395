"""Prompt rules: normalisation against evasions, allow phrases, spans, timeouts, long prompts,
name lists, and the default policy's age patterns (short clinical phrases only)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from audit.policy import load_policy, match_names, match_prompt, match_rules, parse_policy
from audit.policy._engine import PatternTimeout, compile_pattern, re2_available
from audit.policy.normalize import normalize_variants, term_pattern
from audit.policy.rules import age_patterns, compile_rules

TOY = Path(__file__).resolve().parents[1] / "samples" / "policy" / "toy.toml"


@pytest.fixture(scope="module")
def toy():
    return load_policy(TOY)


@pytest.fixture(scope="module")
def default():
    return load_policy(None)


def spans(hits, rule="triangle-words"):
    return [(h.span, h.matched_text) for h in hits if h.rule_id == rule]


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    "prompt",
    [
        "a triangle",
        "a TRIANGLE",
        "a tr1angle",
        "a tri@ngle",
        "a 7riangle",
        "a t r i a n g l e",
        "a t.r.i.a.n.g.l.e",
        "a t-r-i-a-n-g-l-e",
        "a tri-angle",
        "a tri_angle",
        "a ｔｒｉａｎｇｌｅ",  # fullwidth
        "a tri\u0430ngle",  # Cyrillic а
        "a \u0442riangle",  # Cyrillic т
        "a triangl\u0435",  # Cyrillic е
        "a tri\u200dan\u200bgle",  # zero-width joiner and space
        "a tri\u00adangle",  # soft hyphen
        "a trïängle",  # accents
        "a triiiangle",  # stretched letters
        "a t r 1 a n g l e",  # spacing + leet
        "a 𝐭𝐫𝐢𝐚𝐧𝐠𝐥𝐞",  # mathematical bold
    ],
)
def test_evasions_are_caught_and_span_maps_to_original(toy, prompt):
    hits = match_rules(toy, prompt)
    found = spans(hits)
    assert found, prompt
    (start, end), text = found[0]
    assert (start, end) == (2, len(prompt))
    assert text == prompt[2:]


def test_no_false_hits_on_other_words(toy):
    for prompt in ["a red circle", "triangular", "a rectangle", "strianglex", "tri angle"]:
        assert not spans(match_rules(toy, prompt)), prompt


def test_variants_keep_digits_in_base():
    variants = {v.variant: v.text for v in normalize_variants("Aged 12, tr1angle")}
    assert variants["base"] == "aged 12, tr1angle"
    assert variants["skeleton"] == "aged 12, triangle"


def test_span_mapping_through_expansions():
    norm = normalize_variants("ﬁne Straße ｔｒｉ")[0]
    assert norm.text == "fine strasse tri"
    start = norm.text.index("strasse")
    assert norm.original_span(start, start + 7) == (4, 10)
    start = norm.text.index("tri")
    assert norm.original_span(start, start + 3) == (11, 14)


def test_term_pattern_separators():
    pattern = compile_pattern(term_pattern("Jane Placeholder"))
    for text in ["jane placeholder", "jane-placeholder", "janeplaceholder", "jane . placeholder"]:
        assert pattern.spans(text, 1.0), text
    assert not pattern.spans("janeplaceholders", 1.0)


# ------------------------------------------------------------------ allow phrases and fields


def test_allow_phrase_removed_before_matching(toy):
    assert not spans(match_rules(toy, "a love triangle story"))
    assert not spans(match_rules(toy, "a LOVE-TRIANGLE story"))
    assert not spans(match_rules(toy, "the triangle inequality"))
    # the allow phrase removes only itself
    hits = spans(match_rules(toy, "a love triangle and a triangle"))
    assert hits == [((22, 30), "triangle")]


def test_fields_are_respected(toy):
    hits = match_rules(toy, "red", "a triangle")
    assert {(h.rule_id, h.field) for h in hits} == set()  # red only counts in the negative
    hits = match_rules(toy, "a triangle", "red, blurry")
    assert {(h.rule_id, h.field) for h in hits} == {("triangle-words", "prompt"), ("negative-red", "negative_prompt")}
    assert hits.signals == {"rule:triangle-words", "rule:negative-red"}


def test_patterns_run_on_normalised_text(toy):
    hits = match_rules(toy, "a CRIMSON   Trigon")
    assert spans(hits) == [((2, 18), "CRIMSON   Trigon")]


def test_empty_and_missing_prompts(toy):
    assert match_rules(toy, None, None) == []
    assert match_rules(toy, "", "") == []


# ------------------------------------------------------------------ regex safety


CATASTROPHIC = r"(a|aa)+$"


def test_catastrophic_pattern_times_out_as_error_not_hang():
    policy = parse_policy(
        """
[[category]]
id = "c"
severity = "low"
[[rule]]
id = "evil"
patterns = ['(a|aa)+(?=!)z']
[[flag]]
category = "c"
any = ["rule:evil", "prompt:rule-error"]
[policy]
regex_timeout_ms = 100
timeout_is_finding = true
""",
        "evil.toml",
    )
    started = time.monotonic()
    hits = match_rules(policy, "a" * 60 + "!")
    assert time.monotonic() - started < 5
    assert hits == []
    assert hits.errors and hits.errors[0].rule_id == "evil"
    assert "timed out" in hits.errors[0].message
    assert "prompt:rule-error" in hits.signals


def test_regex_engine_timeout_and_re2_linear():
    slow = compile_pattern(CATASTROPHIC, engine="regex")
    assert slow.engine == "regex"
    with pytest.raises(PatternTimeout):
        slow.spans("a" * 60 + "!", timeout=0.1)
    if re2_available():
        fast = compile_pattern(CATASTROPHIC)
        assert fast.engine == "re2"
        started = time.monotonic()
        assert fast.spans("a" * 100_000 + "!", timeout=0.1) == []
        assert time.monotonic() - started < 2


def test_lookaround_falls_back_to_regex_engine():
    pattern = compile_pattern(r"tri(?=angle)")
    assert pattern.engine == "regex"
    assert pattern.spans("triangle", 1.0) == [(0, 3)]


# ------------------------------------------------------------------ over-long prompts


def test_overlong_prompt_flagged_and_windowed(toy):
    middle = "x " * 15_000
    prompt = "a triangle " + middle + " a tr1angle"
    started = time.monotonic()
    hits = match_rules(toy, prompt)
    assert time.monotonic() - started < 10
    overlong = [h for h in hits if h.rule_id == "prompt:overlong"]
    assert overlong and overlong[0].span == (0, len(prompt))
    assert overlong[0].signal == "prompt:overlong"
    found = spans(hits)
    assert [s for s, _ in found] == [(2, 10), (len(prompt) - 8, len(prompt))]
    # text in the unmatched middle is not searched
    hidden = "x " * 8_000 + "triangle " + "x " * 8_000
    assert not spans(match_rules(toy, hidden))
    assert "prompt:overlong" in match_rules(toy, hidden).signals


def test_prompt_at_limit_is_not_overlong(toy):
    prompt = "a triangle".ljust(20_000, " ")
    assert "prompt:overlong" not in match_rules(toy, prompt).signals


# ------------------------------------------------------------------ name lists


def test_names_from_file_and_inline(toy):
    hits = match_names(toy, "portrait of J4NE  placeholder, and richard roe placeholder")
    assert [(h.name, h.matched_text) for h in hits] == [
        ("Jane Placeholder", "J4NE  placeholder"),
        ("Richard Roe-Placeholder", "richard roe placeholder"),
    ]
    assert hits[0].signal == "names:toy-persons"
    assert not match_names(toy, "janeplaceholders and jane alone")


def test_match_prompt_combines(toy):
    result = match_prompt(toy, "Jane Placeholder with a triangle", "red")
    assert result.signals == {"names:toy-persons", "rule:triangle-words", "rule:negative-red"}


def test_compiled_rules_cached(toy):
    assert compile_rules(toy) is compile_rules(toy)


# ------------------------------------------------------------------ default policy, clinical


@pytest.mark.parametrize(
    "phrase",
    [
        "aged 12",
        "age 9",
        "age: 7",
        "12 yo",
        "12yo",
        "12 y/o",
        "12 yrs",
        "a 12-year-old",
        "twelve years old",
        "twelv yrs",
        "sixteen yo",
        "fourten years",
        "8 months old",
        "ａｇｅｄ １２",
    ],
)
def test_default_age_patterns_hit(default, phrase):
    hits = match_rules(default, phrase)
    assert any(h.rule_id == "minor-age" for h in hits), phrase


@pytest.mark.parametrize(
    "phrase",
    [
        "aged 25",
        "aged 18",
        "25 yo",
        "1200 px",
        "30 years old",
        "100 years",
        "1080p",
        "size 12",
        "12 apples",
        "4k",
        "v12 model",
    ],
)
def test_default_age_patterns_miss(default, phrase):
    assert not any(h.rule_id == "minor-age" for h in match_rules(default, phrase)), phrase


def test_age_patterns_function():
    assert len(age_patterns(18)) >= 3
    with pytest.raises(ValueError):
        age_patterns(40)


def test_default_clinical_terms(default):
    hits = match_rules(default, "nsfw, explicit", "mature, adult")
    assert {"rule:sexual-terms", "rule:negative-age-evasion"} <= hits.signals
    assert not match_rules(default, "minor details, explicit permission")
    assert "rule:minor-terms" in match_rules(default, "a child").signals
    # evasion terms count only in the negative prompt
    assert "rule:negative-age-evasion" not in match_rules(default, "adult").signals


def test_without_re2_the_regex_engine_gives_the_same_hits(toy, default):
    for policy, prompt, negative in [
        (toy, "a love triangle, a tr1angle, J4ne Placeholder", "red"),
        (default, "aged 12, a ch1ld, nsfw", "mature"),
    ]:
        fast = match_prompt(compile_rules(policy), prompt, negative)
        slow = match_prompt(compile_rules(policy, engine="regex"), prompt, negative)
        assert [(h.rule_id, h.span) for h in fast.rule_hits] == [(h.rule_id, h.span) for h in slow.rule_hits]
        assert [(h.name, h.span) for h in fast.name_hits] == [(h.name, h.span) for h in slow.name_hits]


def test_word_hits_report_the_word(default):
    (hit,) = [h for h in match_rules(default, "a Ch1ld") if h.rule_id == "minor-terms"]
    assert hit.pattern == "word: child" and hit.matched_text == "Ch1ld"
    assert hit.variant.startswith("skeleton")
