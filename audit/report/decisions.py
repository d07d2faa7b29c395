"""The decisions file a report page downloads (see decisions_format.md beside this file)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from audit.vocabulary import DECISIONS

DECISION_KEYS = ("finding_id", "item_id", "decision", "note", "by", "at")
CLUSTER_DECISION_KEYS = ("cluster_id", "category", "decision", "note", "by", "at")
_HEX = re.compile(r"^[0-9a-f]+$")


def validate_decisions(data: Any) -> list[dict[str, str]]:
    """``data`` (parsed JSON) if it is a valid decisions file, else ``ValueError`` naming the entry."""
    if not isinstance(data, list):
        raise ValueError(f"a decisions file is a JSON list, not {type(data).__name__}")
    for i, entry in enumerate(data):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object")
        keys = CLUSTER_DECISION_KEYS if "cluster_id" in entry else DECISION_KEYS
        if set(entry) != set(keys):
            raise ValueError(f"{where}: keys must be exactly {', '.join(keys)}; got {', '.join(sorted(entry))}")
        for k in keys:
            if not isinstance(entry[k], str):
                raise ValueError(f"{where}: {k!r} must be a string")
        if keys is CLUSTER_DECISION_KEYS:
            if not entry["cluster_id"].strip() or not entry["category"].strip():
                raise ValueError(f"{where}: cluster_id and category must not be empty")
        elif not _HEX.match(entry["finding_id"]) or not _HEX.match(entry["item_id"]) or len(entry["item_id"]) != 64:
            raise ValueError(f"{where}: finding_id/item_id must be lowercase hex (item_id a SHA-256)")
        if entry["decision"] not in DECISIONS:
            raise ValueError(f"{where}: decision must be one of {', '.join(DECISIONS)}")
        if not entry["by"].strip():
            raise ValueError(f"{where}: 'by' is empty")
        try:
            datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where}: 'at' is not an ISO 8601 timestamp") from None
        if not entry["at"].endswith("Z"):
            raise ValueError(f"{where}: 'at' must be UTC with a Z suffix")
    return data
