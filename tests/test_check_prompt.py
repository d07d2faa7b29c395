"""The request-time prompt gate: library (audit.check_prompt, Policy.check_prompt, PromptGate)
and the ``audit check-prompt`` command (one request, JSON lines on stdin, exit codes).
Prompts are short clinical phrases and toy-world stand-ins only."""

from __future__ import annotations

import json

import pytest

from audit.errors import ExitCode
from tests.cli_helper import audit_cli
from tests.paths import REPO

TOY_POLICY = """
[policy]
name = "gate"
[[category]]
id = "prohibited-shape"
severity = "high"
[[category]]
id = "real-person"
severity = "medium"
[[concept]]
id = "red-triangle"
texts = ["a red triangle"]
[[names]]
id = "persons"
names = ["Jane Placeholder"]
fields = ["prompt", "resources"]
[[hashlist]]
path = "loras.csv"
id = "loras"
category = "real-person"
[[flag]]
category = "prohibited-shape"
any = ["concept:red-triangle"]
[[flag]]
category = "real-person"
any = ["names:persons"]
"""


@pytest.fixture()
def toy_policy(tmp_path):
    (tmp_path / "loras.csv").write_text("hash_type,hash,label\nresource,urn:air:sd1:lora:civitai:5@6,person LoRA\n")
    path = tmp_path / "gate.toml"
    path.write_text(TOY_POLICY)
    return path


def _cli(*args, stdin: str | None = None):
    out = audit_cli("check-prompt", *args, stdin=stdin, cwd=REPO, expected=None)
    return out.exit_status, out.stdout, out.stderr


def test_library_allow_and_deny_with_spans():
    import audit

    assert audit.check_prompt("a blue circle on a white background") == {
        "verdict": "allow",
        "categories": [],
        "signals": [],
    }
    answer = audit.check_prompt("a photo, nude, studio light")
    assert answer["verdict"] == "deny"
    assert [c["category"] for c in answer["categories"]] == ["sexual"]
    (signal,) = answer["signals"]
    assert signal["name"] == "rule:sexual-terms" and signal["span"] == [9, 13] and signal["text"] == "nude"


def test_negative_prompt_and_severity_threshold():
    from audit.policy import load_policy

    pol = load_policy()
    answer = pol.check_prompt("a nude figure study", "adult, mature")
    assert {c["category"] for c in answer["categories"]} == {"sexual", "sexual-minors"}
    assert any(s["field"] == "negative_prompt" for s in answer["signals"])
    assert pol.check_prompt("a nude figure study", deny_at="high")["verdict"] == "allow"  # sexual is medium
    assert pol.check_prompt("a nude figure study", "adult", deny_at="critical")["verdict"] == "deny"


def test_resources_by_name_and_by_air(toy_policy):
    from audit.policy import load_policy
    from audit.policy.gate import PromptGate

    gate = PromptGate(load_policy(toy_policy))
    by_name = gate.check("a red circle", resources=["loras/jane_placeholder_v3.safetensors"])
    assert by_name["verdict"] == "deny" and by_name["signals"][0]["field"] == "resources"
    assert by_name["signals"][0]["text"] == "jane_placeholder"
    by_air = gate.check("a red circle", resources=["urn:air:sdxl:lora:civitai:5@6"])
    assert by_air["verdict"] == "deny" and by_air["signals"][0]["label"] == "person LoRA"
    assert gate.check("a red circle", resources=["urn:air:sdxl:lora:civitai:5@7"])["verdict"] == "allow"
    # concepts need a text tower: without one the gate says nothing about them
    assert gate.check("a red triangle")["verdict"] == "allow"


def test_prompt_concepts_with_the_toy_text_tower(toy_policy):
    from audit.embed.openclip import load_embedder
    from audit.policy import load_policy
    from audit.policy.gate import PromptGate

    gate = PromptGate(load_policy(toy_policy), load_embedder("toy-shapes"))
    hit = gate.check("a photo of a red triangle")
    assert hit["verdict"] == "deny" and hit["categories"][0]["category"] == "prohibited-shape"
    assert hit["signals"][0]["name"] == "concept:red-triangle/prompt"
    assert hit["signals"][0]["score"] >= hit["signals"][0]["threshold"]
    assert gate.check("a photo of a blue circle")["verdict"] == "allow"


def test_cli_single_request_exit_codes():
    code, out, _ = _cli("a yellow star", "--json")
    assert code == ExitCode.OK and json.loads(out)["verdict"] == "allow"
    code, out, _ = _cli("a gory scene", "--negative", "blurry", "--json")
    assert code == ExitCode.FINDINGS and json.loads(out)["categories"][0]["category"] == "graphic-violence"
    code, out, _ = _cli("a gory scene")
    assert code == ExitCode.FINDINGS and out.startswith("deny")
    code, _, err = _cli("x", "--deny-at", "sometimes")
    assert code == ExitCode.USAGE and "--deny-at" in err


def test_cli_batch_json_lines_bad_line_is_an_error_object(toy_policy):
    lines = (
        "\n".join(
            [
                json.dumps({"id": "a", "prompt": "a green square"}),
                "{not json",
                json.dumps({"id": "c", "prompt": "a green square", "resources": ["Jane Placeholder LoRA"]}),
                json.dumps({"id": "d", "prompt": 5}),
                json.dumps({"id": "e", "prompt": "ok", "colour": "red"}),
            ]
        )
        + "\n"
    )
    code, out, err = _cli("--policy", str(toy_policy), stdin=lines)
    answers = [json.loads(line) for line in out.splitlines()]
    assert code == ExitCode.FINDINGS and not err
    assert [a.get("id") for a in answers] == ["a", None, "c", None, None]
    assert answers[0]["verdict"] == "allow" and answers[2]["verdict"] == "deny"
    assert answers[1] == {"line": 2, "error": answers[1]["error"]} and "not valid JSON" in answers[1]["error"]
    assert "prompt must be a string" in answers[3]["error"] and "unknown field 'colour'" in answers[4]["error"]
    code, out, _ = _cli("--policy", str(toy_policy), stdin="{oops\n" + json.dumps({"prompt": "a red circle"}) + "\n")
    assert code == ExitCode.USAGE and len(out.splitlines()) == 2  # nothing denied, a bad line: usage error


def test_cli_usage_errors(toy_policy):
    code, _, err = _cli("--resource", "x", stdin="")
    assert code == ExitCode.USAGE and "--resource" in err
    code, _, err = _cli("a red circle", "--policy", str(toy_policy.with_name("missing.toml")))
    assert code == ExitCode.USAGE and "policy file not found" in err
