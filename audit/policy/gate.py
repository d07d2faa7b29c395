"""A request-time prompt gate: what an inference provider asks before it generates.

``PromptGate(policy, embedder=None).check(prompt, negative_prompt, resources)`` answers one
JSON-ready dict::

    {"verdict": "allow" | "deny", "categories": [{category, severity, flags, signals}],
     "signals": [{kind, name, field, span, text, ...}], "errors": [...]}

from the policy's prompt rules and name lists (over prompt and negative prompt), rules and
lists with ``fields = ["resources"|"model"]`` over the requested resources' names, hash
lists' ``resource`` rows over the requested hashes / AIRs, and, when an ``embedder`` (a CLIP
text tower) is given and the policy has concepts, the prompt's cosine to each concept
(``concept:X/prompt`` and ``concept:X``; thresholds as the flag stage calibrates them for
prompts). Image-side signals (image concepts, faces, image hashes) cannot fire before there
is an image, so flags that need them do not hold here. A request is denied when any
category fires at or above ``deny_at`` (default: any severity).

Everything is compiled once per gate; a check of a prompt against the default policy and a
100,000-name list takes well under a millisecond after warm-up (``benchmarks/bench_gate.py``).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from audit.policy.schema import SEVERITY_RANK, Policy

__all__ = ["PromptGate", "check_prompt", "request_resources"]


def request_resources(resources: Iterable[Any]) -> list[dict]:
    """Requested resources as the catalog records them: a string is a name (and, when it
    reads as a model hash or AIR, that hash too); a dict may give kind, name and hash."""
    from audit.policy.resources import normalize_resource_hash

    out = []
    for value in resources or ():
        if isinstance(value, dict):
            name = value.get("name")
            out.append(
                {
                    "kind": str(value.get("kind") or "resource"),
                    "name": str(name) if name is not None else None,
                    "hash": str(value["hash"]) if value.get("hash") is not None else None,
                }
            )
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            out.append({"kind": "resource", "name": text, "hash": text if normalize_resource_hash(text) else None})
        else:
            raise ValueError(f"a resource must be a string or an object, got {type(value).__name__}")
    return out


class PromptGate:
    def __init__(self, policy: Policy, embedder=None, *, deny_at: str = "low"):
        from audit.policy.rules import compile_rules

        if deny_at not in SEVERITY_RANK:
            raise ValueError(f"deny_at must be one of {', '.join(SEVERITY_RANK)}")
        self.policy = policy
        self.compiled = compile_rules(policy)
        self.deny_rank = SEVERITY_RANK[deny_at]
        self.banks = [h for h in policy.hashlists if h.bank is not None and h.bank.resources]
        self.embedder = embedder if policy.concepts else None
        self.concepts: list[tuple[str, np.ndarray, float]] = []
        if self.embedder is not None:
            self._prepare_concepts()

    def _prepare_concepts(self) -> None:
        """Concept text vectors and prompt thresholds, as the flag stage obtains them."""
        from audit.flag.base import FlagContext
        from audit.flag.concepts import ConceptDetector

        empty = np.zeros((0, 1), np.float32)
        ctx = FlagContext(
            self.policy,
            [],
            [],
            [],
            [],
            [],
            [],
            empty,
            np.zeros(0, bool),
            empty,
            np.zeros(0, bool),
            embedder_factory=lambda: self.embedder,
        )
        vectors = ConceptDetector().prepare(ctx)
        for concept in self.policy.concepts:
            self.concepts.append(
                (concept.id, vectors.text[concept.id], float(vectors.thresholds[concept.id]["prompt"]["value"]))
            )

    def check(
        self,
        prompt: str | None,
        negative_prompt: str | None = None,
        resources: Sequence[Any] = (),
        *,
        request_id: Any = None,
    ) -> dict:
        from audit.flag.prompts import _signals
        from audit.policy import evaluate_flags
        from audit.policy.resources import match_resource_fields, match_resource_hashes
        from audit.policy.rules import match_prompt

        if prompt is not None and not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError("negative_prompt must be a string")
        items = request_resources(resources)
        signals: list[dict] = []
        match = match_prompt(self.compiled, prompt, negative_prompt)
        for sig in _signals(match, errors_fire=self.policy.timeout_is_finding):
            for m in sig.detail.get("matches", [{}]):
                signals.append({"kind": sig.kind, "name": sig.name, **m})
        checkpoints = [r["name"] for r in items if r.get("kind") == "checkpoint" and r.get("name")]
        for hit in match_resource_fields(self.compiled, items, checkpoints[0] if checkpoints else None):
            signals.append(
                {
                    "kind": hit.kind,
                    "name": hit.signal,
                    "field": hit.field,
                    "resource": hit.resource,
                    "span": list(hit.span),
                    "text": hit.matched_text,
                    ("name_listed" if hit.kind == "name" else "pattern"): hit.pattern,
                }
            )
        for hl in self.banks:
            for m in match_resource_hashes(hl.bank, items):
                signals.append(
                    {
                        "kind": "hash_match",
                        "name": hl.signal,
                        "field": "resources",
                        "resource": m.resource.get("name"),
                        "hash": m.item_hash,
                        "bank_hash": m.bank_hash,
                        "label": m.label,
                        "how": m.how,
                    }
                )
        if self.concepts and prompt:
            from audit.embed.base import l2_normalize

            vector = l2_normalize(np.asarray(self.embedder.embed_texts([prompt]), np.float32))[0]
            for cid, text, threshold in self.concepts:
                score = float(vector @ text)
                if score >= threshold:
                    signals.append(
                        {
                            "kind": "concept",
                            "name": f"concept:{cid}/prompt",
                            "field": "prompt",
                            "score": round(score, 4),
                            "threshold": round(threshold, 4),
                        }
                    )
        fired = {s["name"] for s in signals}
        fired |= {name.split("/", 1)[0] for name in fired if name.startswith("concept:")}
        categories = [
            {"category": hit.category, "severity": hit.severity, "flags": list(hit.flags), "signals": list(hit.signals)}
            for hit in evaluate_flags(self.policy, fired)
        ]
        deny = any(SEVERITY_RANK[c["severity"]] >= self.deny_rank for c in categories)
        out = {"verdict": "deny" if deny else "allow", "categories": categories, "signals": signals}
        if match.errors:
            out["errors"] = [{"rule": e.rule_id, "field": e.field, "message": e.message} for e in match.errors[:20]]
        if request_id is not None:
            out = {"id": request_id, **out}
        return out

    def check_request(self, request: Any) -> dict:
        """One request as a JSON object: prompt, negative_prompt (or negative), resources, id."""
        if not isinstance(request, dict):
            raise ValueError("a request must be a JSON object")
        unknown = set(request) - {"prompt", "negative_prompt", "negative", "resources", "id"}
        if unknown:
            raise ValueError(f"unknown field {sorted(unknown)[0]!r} (known: prompt, negative_prompt, resources, id)")
        resources = request.get("resources") or []
        if not isinstance(resources, list):
            raise ValueError("resources must be a list")
        negative = request.get("negative_prompt", request.get("negative"))
        return self.check(request.get("prompt"), negative, resources, request_id=request.get("id"))


def check_prompt(
    prompt: str | None,
    negative_prompt: str | None = None,
    resources: Sequence[Any] = (),
    *,
    policy: "Policy | str | None" = None,
    embedder=None,
    deny_at: str = "low",
) -> dict:
    """One gate answer for one request (``policy``: a Policy, a path, or None for the default).
    For many requests build one ``PromptGate`` and call ``check`` on it."""
    from audit.policy.loader import load_policy

    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    return PromptGate(pol, embedder, deny_at=deny_at).check(prompt, negative_prompt, resources)
