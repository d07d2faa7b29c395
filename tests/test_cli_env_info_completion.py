"""Conveniences of the command line: AUDIT_INDEX / AUDIT_POLICY for the options every command
repeats, `audit info`, shell completion, `--device auto`."""

from __future__ import annotations

import pytest

from audit.embed.device import check_device
from audit.errors import ExitCode, UsageError
from tests.cli_helper import audit_cli

TOY_POLICY = """
[policy]
name = "env-toy"
version = "1"

[[category]]
id = "triangles"
severity = "high"

[[rule]]
id = "triangle"
patterns = ['\\btriangle\\b']

[[flag]]
category = "triangles"
any = ["rule:triangle"]
"""


@pytest.fixture()
def crawled(tmp_path, archive):
    idx = tmp_path / "idx"
    audit_cli("crawl", archive, "--index", idx, "--quiet")
    return idx


def test_audit_index_stands_for_index_and_the_option_wins(crawled, tmp_path):
    info = audit_cli("info", "--json", env={"AUDIT_INDEX": str(crawled)}).json()
    assert info["index"] == str(crawled) and info["items"]["total"] == 12
    # a --index on the command line beats the environment
    missing = audit_cli(
        "info", "--index", tmp_path / "nowhere", env={"AUDIT_INDEX": str(crawled)}, expected=ExitCode.USAGE
    )
    assert "nowhere" in missing.stderr
    audit_cli("info", env={"AUDIT_INDEX": ""}, expected=ExitCode.USAGE)  # neither: --index is required


def test_audit_policy_stands_for_policy(tmp_path):
    policy = tmp_path / "toy.toml"
    policy.write_text(TOY_POLICY)
    env = {"AUDIT_POLICY": str(policy)}
    denied = audit_cli("check-prompt", "a red triangle", "--json", env=env, expected=ExitCode.FINDINGS)
    assert denied.json()["categories"][0]["category"] == "triangles"  # not in the default policy
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nname = 1\n")
    wrong = audit_cli("check-prompt", "a red triangle", env={"AUDIT_POLICY": str(bad)}, expected=ExitCode.USAGE)
    assert "bad.toml" in wrong.stderr


def test_info_counts_what_the_index_holds(crawled, archive):
    (archive / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    audit_cli("crawl", archive, "--index", crawled, "--quiet")
    info = audit_cli("info", "--index", crawled, "--json").json()
    assert info["command"] == "info"
    assert info["items"] == {"total": 13, "ok": 12, "errors": 1}
    assert info["locations"]["present"] == 13 and info["locations"]["missing"] == 0
    assert info["models"] == [] and info["policies"] == [] and info["findings"]["active"] == 0
    assert info["runs"]["total"] == 2 and info["runs"]["latest"]["command"] == "crawl"
    assert info["disk"]["files"]["catalog.sqlite"] == (crawled / "catalog.sqlite").stat().st_size
    assert info["disk"]["total_bytes"] >= info["disk"]["files"]["catalog.sqlite"] > 0
    human = audit_cli("info", "--index", crawled).stdout
    assert "items:     13 (1 errors)" in human and "model:     none" in human and "catalog.sqlite" in human


def test_info_without_an_index_is_a_usage_error(tmp_path):
    res = audit_cli("info", "--index", tmp_path / "none", expected=ExitCode.USAGE)
    assert res.stderr.startswith("audit: error:") and len(res.stderr.strip().splitlines()) == 1


def test_shell_completion_is_enabled():
    script = audit_cli("--show-completion", "bash").stdout
    assert "_AUDIT_COMPLETE" in script and "complete" in script
    assert "--install-completion" in audit_cli("--help").stdout


def test_device_auto_picks_what_this_machine_has():
    import torch

    usable = torch.cuda.is_available() and torch.cuda.device_count() > 0
    assert check_device("auto") == ("cuda" if usable else "cpu")
    assert check_device(" AUTO ") == check_device("auto")
    with pytest.raises(UsageError, match="--executor ray"):
        check_device("auto", probe=False)
    res = audit_cli("embed", "--index", "/nonexistent/idx", "--device", "auto", expected=ExitCode.USAGE)
    assert "--device" not in res.stderr  # auto is a valid device: the missing index is the error
