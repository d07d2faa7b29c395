"""Which items carry a prompt: the reverse of ``prompt_key(text)``, for prompt-space search.

Prompt vectors are keyed by the SHA-256 of the prompt text (identical prompts are stored
once), so a hit in the prompt index names a prompt, not an item. ``prompt_refs`` maps it
back to every item whose positive or negative prompt has that key. ``refresh()`` runs in
``audit index``: it adds rows for items not mapped yet and replaces rows whose prompt
changed (a later crawl with a better metadata parser), in one transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

from audit.catalog.vectors import prompt_key

FIELDS = ("prompt", "negative_prompt")


def _key_or_null(text):
    return prompt_key(text) if text else None


class PromptRefs:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.create_function("audit_prompt_key", 1, _key_or_null, deterministic=True)

    def refresh(self) -> int:
        """Bring the map up to date with the items table; returns rows added."""
        from audit.catalog.store import transaction

        added = 0
        with transaction(self.conn):
            for f in FIELDS:
                # prompts that changed or vanished since they were mapped
                self.conn.execute(
                    f"DELETE FROM prompt_refs WHERE field=? AND prompt_key IS NOT (SELECT audit_prompt_key({f}) "
                    "FROM items WHERE items.item_id = prompt_refs.item_id)",
                    (f,),
                )
                cur = self.conn.execute(
                    f"INSERT OR IGNORE INTO prompt_refs (prompt_key, item_id, field) "
                    f"SELECT audit_prompt_key({f}), item_id, ? FROM items i WHERE {f} IS NOT NULL AND {f} != '' "
                    "AND NOT EXISTS (SELECT 1 FROM prompt_refs r WHERE r.item_id = i.item_id AND r.field = ?)",
                    (f, f),
                )
                added += max(cur.rowcount, 0)

        return added

    def items_for(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """prompt key → [(item_id, field), ...] in item order."""
        out: dict[str, list[tuple[str, str]]] = {}
        for i in range(0, len(keys), 2000):
            chunk = list(keys[i : i + 2000])
            marks = ",".join("?" * len(chunk))
            for k, item_id, f in self.conn.execute(
                f"SELECT prompt_key, item_id, field FROM prompt_refs WHERE prompt_key IN ({marks}) "
                "ORDER BY prompt_key, field DESC, item_id",
                chunk,
            ):
                out.setdefault(k, []).append((item_id, f))
        return out
