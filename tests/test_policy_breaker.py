"""A bad policy pattern can neither slow a run down nor pass for a finding.

Catastrophic patterns are forced onto the ``regex`` engine with a look-ahead (RE2 refuses
look-arounds): ``(a|aa)+(?=b)`` backtracks exponentially on a run of "a" with no "b" after it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from PIL import PngImagePlugin

from audit.errors import InputError
from audit.policy import parse_policy
from audit.policy._engine import compile_pattern
from audit.policy.breaker import MAX_TIMEOUTS, SLOW_GRACE_S, PatternBreaker, clock
from audit.policy.rules import compile_rules, match_prompt, match_rules
from tests.cli_helper import audit_cli
from tests.toy_world import a1111_infotext, shape_image

EVIL = r"(a|aa)+(?=b)"


def evil_policy(timeout_ms: int = 100, *, extra: str = "", opt_in: bool = False) -> str:
    return f"""
[policy]
name = "evil"
regex_timeout_ms = {timeout_ms}
{"timeout_is_finding = true" if opt_in else ""}
[[category]]
id = "c"
severity = "critical"
[[rule]]
id = "evil"
patterns = ['{EVIL}']
[[flag]]
category = "c"
any = ["rule:evil", "prompt:*"]
{extra}
"""


def catastrophic(i: int) -> str:
    return "a" * 40 + f" {i}"  # distinct prompts: no cache can hide the cost


# ------------------------------------------------------------------ the breaker, per owner


def test_a_rule_that_keeps_timing_out_is_disabled_after_max_timeouts():
    policy = parse_policy(evil_policy(100), "evil.toml")
    breaker = PatternBreaker(timeout_s=0.1)
    n = 20
    started = time.monotonic()
    results = [match_prompt(policy, catastrophic(i), breaker=breaker) for i in range(n)]
    elapsed = time.monotonic() - started
    # without the breaker: n prompts x every normalised variant x 0.1 s
    assert elapsed < (MAX_TIMEOUTS + 3) * 0.1 + 1.0, elapsed
    assert sum(len(r.errors) for r in results) == MAX_TIMEOUTS
    (trouble,) = breaker.troubles()
    assert trouble.owner == "rule:evil" and trouble.disabled == "timeouts"
    assert trouble.timeouts == MAX_TIMEOUTS
    first_skipped = next(i for i, r in enumerate(results) if not r.errors)
    assert trouble.not_checked == n - first_skipped
    assert "disabled for this run after 3 regular-expression timeouts" in trouble.message()
    assert all(not r.errors for r in results[first_skipped:])


def test_a_single_call_is_bounded_too():
    # one call, many variants: no more than MAX_TIMEOUTS time limits
    policy = parse_policy(evil_policy(200), "evil.toml")
    started = time.monotonic()
    hits = match_rules(policy, "a" * 40 + " 4 3 1 0 7 !", "a" * 40 + " 5")
    assert time.monotonic() - started < (MAX_TIMEOUTS + 1) * 0.2 + 1.0
    assert len(hits.errors) <= MAX_TIMEOUTS


def _calibrated_slow_prompt(policy, low: float = 0.04) -> tuple[str, float]:
    """A prompt on which the evil rule costs at least ``low`` CPU seconds, well under its limit."""
    for n in range(16, 40):
        text = "a" * n + " x"
        started = clock()
        match_prompt(policy, text)
        cost = clock() - started
        if cost >= low:
            return text, cost
    raise AssertionError("could not make the pattern slow")


def test_a_rule_slow_on_every_prompt_but_under_the_timeout_trips_the_time_budget():
    policy = parse_policy(evil_policy(5_000), "slow.toml")  # never times out
    text, cost = _calibrated_slow_prompt(policy)
    n = int((SLOW_GRACE_S + 3.0) / cost) + 1  # a run of n prompts would cost 5+ s of matching
    breaker = PatternBreaker(timeout_s=5.0)
    started = clock()
    results = [match_prompt(policy, f"{text} {i}", breaker=breaker) for i in range(n)]
    spent = clock() - started
    (trouble,) = breaker.troubles()
    assert trouble.disabled == "slow" and trouble.timeouts == 0
    assert trouble.not_checked > 0
    assert not any(r.errors for r in results)
    assert spent < SLOW_GRACE_S + 2.0, (spent, cost, n)
    assert "disabled for this run" in trouble.message()


def test_a_sound_rule_never_trips():
    policy = parse_policy(evil_policy(100).replace(EVIL, r"\btriangle\b"), "ok.toml")
    breaker = PatternBreaker(timeout_s=0.1)
    for i in range(3000):
        match_prompt(policy, f"a red triangle number {i} on a white background", breaker=breaker)
    assert breaker.troubles() == []
    hits = match_prompt(policy, "a red triangle", breaker=breaker)
    assert {h.rule_id for h in hits.rule_hits} == {"evil"}


def _swap(compiled, **changes):
    return dataclasses.replace(compiled, **changes)


def test_allow_phrase_timeouts_count_against_their_rule():
    policy = parse_policy(
        evil_policy(100).replace(f"patterns = ['{EVIL}']", "words = ['triangle']\nallow = ['x']"), "allow.toml"
    )
    compiled = compile_rules(policy)
    evil = compile_pattern(EVIL, "regex")
    rule = dataclasses.replace(compiled.rules[0], allow=[evil])
    bad = _swap(compiled, rules=[rule], screens={})
    breaker = PatternBreaker(timeout_s=0.1)
    started = time.monotonic()
    for i in range(15):
        match_prompt(bad, catastrophic(i) + " triangle", breaker=breaker)
    assert time.monotonic() - started < (MAX_TIMEOUTS + 3) * 0.1 + 1.0
    (trouble,) = breaker.troubles()
    assert trouble.owner == "rule:evil" and trouble.disabled == "timeouts"


def test_name_list_timeouts_are_recorded_and_trip_the_breaker():
    policy = parse_policy(
        evil_policy(100).replace(f"patterns = ['{EVIL}']", "words = ['triangle']")
        + '\n[[names]]\nid = "people"\nnames = ["Jane Placeholder"]\n',
        "names.toml",
    )
    compiled = compile_rules(policy)
    names = dataclasses.replace(compiled.names[0], patterns=[compile_pattern(EVIL, "regex")])
    bad = _swap(compiled, names=[names])
    breaker = PatternBreaker(timeout_s=0.1)
    started = time.monotonic()
    results = [match_prompt(bad, catastrophic(i), breaker=breaker) for i in range(15)]
    assert time.monotonic() - started < (MAX_TIMEOUTS + 3) * 0.1 + 1.0
    (trouble,) = breaker.troubles()
    assert trouble.owner == "names:people" and trouble.disabled == "timeouts"
    errors = [e for r in results for e in r.errors]
    assert len(errors) == MAX_TIMEOUTS and {e.owner for e in errors} == {"names:people"}


# ------------------------------------------------------------------ timeouts are not findings


def test_a_timeout_is_not_a_signal_unless_the_policy_opts_in():
    default = parse_policy(evil_policy(100), "evil.toml")
    hits = match_rules(default, catastrophic(1))
    assert hits.errors and "prompt:rule-error" not in hits.signals
    opted = parse_policy(evil_policy(100, opt_in=True), "evil.toml")
    assert opted.timeout_is_finding and not default.timeout_is_finding
    assert "prompt:rule-error" in match_rules(opted, catastrophic(1)).signals


def test_the_loader_validates_the_opt_in():
    with pytest.raises(InputError, match="timeout_is_finding must be true or false"):
        parse_policy(evil_policy(100).replace("[policy]", '[policy]\ntimeout_is_finding = "yes"'), "p.toml")
    naming = evil_policy(100).replace('any = ["rule:evil", "prompt:*"]', 'any = ["prompt:rule-error"]')
    with pytest.raises(
        InputError,
        match=r'p.toml:\d+: .*"prompt:rule-error" fires only with \[policy\] '
        r"timeout_is_finding = true",
    ):
        parse_policy(naming, "p.toml")
    assert parse_policy(naming.replace("[policy]", "[policy]\ntimeout_is_finding = true"), "p.toml")


def test_the_packaged_policies_do_not_turn_timeouts_into_findings():
    from audit.policy import load_policy
    from tests.paths import REPO

    for path in (None, REPO / "samples" / "policy" / "toy.toml"):
        policy = load_policy(path)
        assert not policy.timeout_is_finding
        assert all("prompt:rule-error" not in " ".join(f.all + f.any) for f in policy.flags)


# ------------------------------------------------------------------ a whole flag run


def _archive(root: Path, n: int) -> Path:
    """``n`` small PNGs whose prompts are runs of "a" (benign, distinct)."""
    root.mkdir(parents=True)
    for i in range(n):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", a1111_infotext(catastrophic(i), i))
        shape_image("red", "circle", 32, i % 5).save(root / f"g{i:04d}.png", pnginfo=info)
    return root


def test_audit_flag_with_a_catastrophic_rule_is_fast_warns_once_and_finds_nothing(tmp_path):
    n, timeout = 40, 0.25
    archive = _archive(tmp_path / "archive", n)
    idx = tmp_path / "idx"
    policy = tmp_path / "evil.toml"
    policy.write_text(evil_policy(int(timeout * 1000)))
    audit_cli("crawl", archive, "--index", idx, "--workers", "0", "--quiet")

    res = audit_cli("flag", "--index", idx, "--policy", policy, "--json", "--quiet")
    data = json.loads(res.stdout)
    # every prompt times out on every variant without the breaker: n x timeout at the least
    assert data["duration_s"] < 0.4 * n * timeout, data["duration_s"]
    assert data["findings"] == 0 and data["by_category"] == {}  # a timeout is not a finding
    (error,) = data["errors"]
    assert error["kind"] == "pattern_disabled" and error["owner"] == "rule:evil"
    # the prompts that timed out (each on one or more normalised variants) were checked
    assert error["timeouts"] == MAX_TIMEOUTS and n - MAX_TIMEOUTS <= error["not_checked"] < n
    warnings = [line for line in res.stderr.splitlines() if line.startswith("audit: warning:")]
    assert len(warnings) == 1 and "rule:evil disabled for this run" in warnings[0], res.stderr
    assert "Traceback" not in res.stderr
    with closing(sqlite3.connect(idx / "catalog.sqlite")) as conn:
        summary = json.loads(
            conn.execute("SELECT summary FROM runs WHERE command = 'flag' ORDER BY run_id DESC LIMIT 1").fetchone()[0]
        )
    assert [e["owner"] for e in summary["errors"]] == ["rule:evil"]


def test_with_the_opt_in_timeouts_are_findings_but_still_bounded(tmp_path):
    n = 30
    archive = _archive(tmp_path / "archive", n)
    idx = tmp_path / "idx"
    policy = tmp_path / "evil.toml"
    policy.write_text(evil_policy(100, opt_in=True))
    audit_cli("crawl", archive, "--index", idx, "--workers", "0", "--quiet")
    res = audit_cli("flag", "--index", idx, "--policy", policy, "--json", "--quiet", expected=None)
    data = json.loads(res.stdout)
    (error,) = data["errors"]
    # a finding for each prompt that timed out before the breaker tripped, none after
    assert data["by_category"] == {"c": n - error["not_checked"]} and 1 <= n - error["not_checked"] <= MAX_TIMEOUTS


@pytest.mark.slow
def test_audit_scan_warns_once_even_with_quiet_and_records_the_flag_error(tmp_path):
    n = 30
    archive = _archive(tmp_path / "archive", n)
    policy = tmp_path / "evil.toml"
    policy.write_text(evil_policy(250))
    # exit OK, no finding: the timeouts are not findings
    res = audit_cli(
        "scan",
        archive,
        "--index",
        tmp_path / "idx",
        "--policy",
        policy,
        "--model",
        "toy-shapes",
        "--workers",
        "0",
        "--fail-on",
        "critical",
        "--quiet",
        "--json",
    )
    data = json.loads(res.stdout)
    assert data["new_findings"] == 0
    assert data["durations"]["flag"] < 0.4 * n * 0.25
    assert data["errors"]["flag"]["count"] == 1
    assert [e["owner"] for e in data["stages"]["flag"]["errors"]] == ["rule:evil"]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("audit: warning:")]
    assert len(warnings) == 1 and "flag: policy rule:evil disabled for this run" in warnings[0], res.stderr
