"""``audit check-prompt [PROMPT] [--negative T] [--resource R]... [--policy FILE] [--model NAME] [--json]``"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from audit.cli.app import app
from audit.cli import options
from audit.embed import DEFAULT_PRETRAINED
from audit.cli.output import pretrained_tag
from audit.errors import ExitCode, UsageError


@app.command("check-prompt")
def check_prompt_command(
    prompt: Optional[str] = typer.Argument(
        None, help="The prompt to check. Leave out (or '-') to read requests as JSON lines on stdin."
    ),
    negative: Optional[str] = typer.Option(None, "--negative", "-n", help="The request's negative prompt."),
    resource: Optional[List[str]] = typer.Option(
        None,
        "--resource",
        "-r",
        help="A model, LoRA or embedding the request uses: name, hash or Civitai AIR (repeatable).",
    ),
    policy: Optional[Path] = typer.Option(
        None,
        "--policy",
        "-p",
        envvar=options.POLICY_ENV,
        help="Policy file (TOML). Default: the policy shipped with audit.",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="CLIP model whose text tower scores the prompt against the policy's concepts (e.g. toy-shapes, ViT-B-32). Default: rules, names and resource lists only.",
    ),
    pretrained: str = typer.Option(
        DEFAULT_PRETRAINED,
        "--pretrained",
        help="open_clip pretrained tag of --model ('none': random weights, benchmarks only).",
    ),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local weights of --model."),
    deny_at: str = typer.Option(
        "low", "--deny-at", help="Deny when a category of this severity or higher fires: critical, high, medium or low."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the answer as one JSON object (batch input always answers JSON lines)."
    ),
) -> None:
    """Request-time gate: allow or deny one generation request before it runs.

    Checks the prompt and negative prompt against the policy's prompt rules and name lists,
    the requested resources against its resource names and hash lists, and (with --model)
    the prompt against its concepts. One JSON object per request: verdict (allow|deny),
    categories, signals with matched spans. Batch: JSON lines on stdin, each
    {"prompt", "negative_prompt", "resources", "id"}; one answer per line, a bad line gets
    an error object. Exit code 1 when any request is denied, 2 on usage errors.
    """
    from audit.policy import load_policy
    from audit.policy.gate import PromptGate

    from audit.vocabulary import SEVERITIES

    if deny_at not in SEVERITIES:
        raise UsageError(f"--deny-at must be one of {', '.join(SEVERITIES)} (got {deny_at!r})")
    batch = prompt is None or prompt == "-"
    if batch and (negative is not None or resource):
        raise UsageError("--negative and --resource go with a PROMPT argument; on stdin put them in each JSON line")
    if batch and sys.stdin.isatty():
        raise UsageError("give a PROMPT, or pipe JSON lines on stdin")
    pol = load_policy(policy)
    embedder = None
    if model and pol.concepts:
        import torch

        from audit.embed.openclip import load_embedder

        # one short prompt at a time: intra-op threads cost more than they give (measured:
        # toy-shapes p50 23 ms with 2 threads on a busy 2-core machine, 1.8 ms with one)
        torch.set_num_threads(1)

        embedder = load_embedder(model, pretrained_tag(pretrained), checkpoint=str(checkpoint) if checkpoint else None)
    gate = PromptGate(pol, embedder, deny_at=deny_at)
    denied = False
    if not batch:
        answer = gate.check(prompt, negative, resource or [])
        denied = answer["verdict"] == "deny"
        if json_out:
            sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(_human(answer) + "\n")
        raise typer.Exit(int(ExitCode.FINDINGS if denied else ExitCode.OK))
    bad = False
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            try:
                request = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
            answer = gate.check_request(request)
        except (ValueError, TypeError) as exc:  # a bad line answers an error, the batch goes on
            bad = True
            answer = {"line": number, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        denied |= answer.get("verdict") == "deny"
        sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    raise typer.Exit(int(ExitCode.FINDINGS if denied else (ExitCode.USAGE if bad else ExitCode.OK)))


def _human(answer: dict) -> str:
    if answer["verdict"] == "allow":
        return "allow"
    parts = []
    for category in answer["categories"]:
        parts.append(f"{category['category']} ({category['severity']}: {', '.join(category['signals'])})")
    spans = [f"{s['name']} {s.get('text', s.get('resource', ''))!r}" for s in answer["signals"][:5]]
    return "deny  " + "; ".join(parts) + ("  · " + ", ".join(spans) if spans else "")
