"""Provenance detector: the signals the catalog's ``provenance`` column fires
(``provenance:ai-generated``, ``provenance:c2pa-invalid``, ``provenance:c2pa``; see
``audit.provenance``). Signals of kind ``provenance`` with score 1.0, the manifest's
generator, signer and validation state (or the failure codes) in the detail. Asked for only
when a flag of the policy names one, so other policies read nothing more."""

from __future__ import annotations

import json

from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext
from audit.provenance import signals_of


def wanted(policy) -> bool:
    return policy.uses_provenance()


class ProvenanceDetector:
    name = "provenance"

    def __init__(self, conn) -> None:
        self.conn = conn

    def detect(self, ctx: FlagContext) -> Detections:
        det = Detections()
        if len(ctx) == 0:  # (asked for only when the policy names a provenance signal: extra.py)
            return det
        records = self._provenance(ctx.item_ids)
        hits = unreadable = 0
        for row, item_id in enumerate(ctx.item_ids):
            text = records.get(item_id)
            if not text:
                continue
            try:
                record = json.loads(text)
            except ValueError:  # a hand-edited catalog: the row loses its provenance signals only
                unreadable += 1
                continue
            fired = signals_of(record)
            for name, detail in fired:
                det.add(row, Signal("provenance", name, 1.0, 1.0, 0.0, detail))
            hits += bool(fired)
        det.stats = {"rows_with_hits": hits, "unreadable_records": unreadable}
        return det

    def _provenance(self, item_ids: list[str]) -> dict[str, str]:
        out = {}
        for start in range(0, len(item_ids), 900):
            chunk = item_ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for item_id, text in self.conn.execute(
                f"SELECT item_id, provenance FROM items WHERE item_id IN ({marks}) AND provenance IS NOT NULL", chunk
            ):
                out[item_id] = text
        return out
