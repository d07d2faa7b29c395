"""Policy: what to look for (concepts, prompt rules, name lists, hash banks) and how signals
combine into categories. Importing this package is cheap; numpy loads with hash lists.

Public API::

    load_policy(path=None) -> Policy            # None: the packaged default policy
    parse_policy(text, source_name) -> Policy
    match_rules(policy, prompt, negative_prompt) -> RuleHits   # list[RuleHit] + .errors
    match_names(policy, prompt, negative_prompt) -> list[NameHit]
    match_prompt(policy, prompt, negative_prompt) -> PromptMatch  # both, one normalisation
    evaluate_flags(policy, signals) -> list[CategoryHit]
    calibrate_threshold(concept_emb, neutral_embs, others, samples, method=...) -> (float, str)
    load_hash_bank(path) / match_pdq(bank, pdq_hexes, max_distance, min_quality, qualities)
"""

from __future__ import annotations

from audit.policy.loader import default_policy_path, load_policy, parse_policy
from audit.policy.schema import (
    Category,
    Concept,
    Flag,
    HashList,
    NameList,
    NegativeConcept,
    Policy,
    Rule,
)

_LAZY = {
    "match_rules": "audit.policy.rules",
    "match_prompt": "audit.policy.rules",
    "compile_rules": "audit.policy.rules",
    "age_patterns": "audit.policy.rules",
    "RuleHit": "audit.policy.rules",
    "RuleHits": "audit.policy.rules",
    "PromptMatch": "audit.policy.rules",
    "match_names": "audit.policy.names",
    "NameHit": "audit.policy.names",
    "evaluate_flags": "audit.policy.combine",
    "concept_signal_names": "audit.policy.combine",
    "suppress_concepts": "audit.policy.combine",
    "CategoryHit": "audit.policy.combine",
    "calibrate_threshold": "audit.policy.calibrate",
    "NEUTRAL_CAPTIONS": "audit.policy.calibrate",
    "HashBank": "audit.policy.hashlists",
    "load_hash_bank": "audit.policy.hashlists",
    "match_pdq": "audit.policy.hashlists",
    "match_exact": "audit.policy.hashlists",
    "match_negative": "audit.policy.hashlists",
    "normalize_variants": "audit.policy.normalize",
}

__all__ = [
    "Category",
    "Concept",
    "Flag",
    "HashList",
    "NameList",
    "NegativeConcept",
    "Policy",
    "Rule",
    "default_policy_path",
    "load_policy",
    "parse_policy",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'audit.policy' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
