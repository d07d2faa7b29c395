"""Resource detector: rules and name lists over the item's recorded resources and model
(``fields = ["resources"]`` / ``["model"]``), and hash lists' ``resource`` rows against the
hashes generators record for checkpoints and LoRAs (``audit.policy.resources``).

Rule and name hits have the kinds of prompt hits (``prompt_rule`` / ``name``, signals
``rule:ID`` / ``names:ID``), with ``field``, the resource name and kind in their detail, so a
list of person names or person-LoRA names fires the same signal from a prompt or a LoRA. A
hash match is a ``hash_match`` signal ``hash:ID`` with ``hash_type = "resource"``.
"""

from __future__ import annotations

from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext
from audit.policy.schema import RESOURCE_FIELDS


def wanted(policy) -> bool:
    return policy.uses_fields(RESOURCE_FIELDS) or policy.has_resource_hashes()


class ResourceDetector:
    name = "resources"

    def __init__(self, conn) -> None:
        self.conn = conn

    def detect(self, ctx: FlagContext) -> Detections:
        from audit.policy.breaker import PatternBreaker
        from audit.policy.resources import match_resource_fields, match_resource_hashes, parse_resources
        from audit.policy.rules import compile_rules

        det = Detections()
        policy = ctx.policy
        if len(ctx) == 0 or not wanted(policy):
            return det
        compiled = compile_rules(policy)
        breaker = PatternBreaker(timeout_s=compiled.timeout)
        use_fields = policy.uses_fields(RESOURCE_FIELDS)
        banks = [h for h in policy.hashlists if h.bank is not None and h.bank.resources]
        rows = self._metadata(ctx.item_ids)
        hits = 0
        for row, item_id in enumerate(ctx.item_ids):
            model, model_hash, resources_json = rows.get(item_id, (None, None, None))
            resources = parse_resources(resources_json)
            if not resources and not model and not model_hash:
                continue
            by_name: dict[str, Signal] = {}
            if use_fields:
                for hit in match_resource_fields(compiled, resources, model, breaker=breaker):
                    match = {
                        "field": hit.field,
                        "resource": hit.resource,
                        "resource_kind": hit.resource_kind,
                        "span": list(hit.span),
                        "text": hit.matched_text,
                        ("name" if hit.kind == "name" else "pattern"): hit.pattern,
                    }
                    sig = by_name.get(hit.signal)
                    if sig is None:
                        by_name[hit.signal] = Signal(
                            hit.kind, hit.signal, 1.0, 1.0, 0.0, {"matches": [match], "text": hit.matched_text}
                        )
                    elif len(sig.detail["matches"]) < 20:
                        sig.detail["matches"].append(match)
            for hl in banks:
                found = match_resource_hashes(hl.bank, resources, model_hash)
                if found:
                    first = found[0]
                    by_name[hl.signal] = Signal(
                        "hash_match",
                        hl.signal,
                        0.0,
                        0.0,
                        0.0,
                        {
                            "hash_type": "resource",
                            "label": first.label,
                            "distance": 0,
                            "bank": hl.id,
                            "bank_hash": first.bank_hash,
                            "item_hash": first.item_hash,
                            "how": first.how,
                            "line": first.line,
                            "resource": first.resource.get("name"),
                            "resource_kind": first.resource.get("kind"),
                            "matches": [
                                {
                                    "resource": m.resource.get("name"),
                                    "item_hash": m.item_hash,
                                    "bank_hash": m.bank_hash,
                                    "label": m.label,
                                    "how": m.how,
                                }
                                for m in found[:20]
                            ],
                        },
                    )
            for sig in by_name.values():
                det.add(row, sig)
            hits += bool(by_name)
        det.stats = {"rows_with_hits": hits}
        det.errors = [trouble.to_dict() for trouble in breaker.troubles()]
        return det

    def _metadata(self, item_ids: list[str]) -> dict[str, tuple]:
        out = {}
        for start in range(0, len(item_ids), 900):
            chunk = item_ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for item_id, model, model_hash, resources in self.conn.execute(
                f"SELECT item_id, model, model_hash, resources FROM items WHERE item_id IN ({marks})", chunk
            ):
                out[item_id] = (model, model_hash, resources)
        return out
