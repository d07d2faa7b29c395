"""What ``audit embed`` has left to do, found by following the new items, not the archive.

Per model and space, ``embed_progress.item_seq`` is a watermark on ``items.seq`` (the
catalog's change sequence): every item at or below it was handled (its vector or skip is
committed, it is not an ok item, or it had no present location and was noted in
``embed_absent``). Discovery reads ``items WHERE seq > watermark`` in seq order, so a run
after a crawl that added 10 items examines those 10 (and the noted absent ones, which are
looked at again each run in case a location came back).

The watermark is raised only after the work below it is committed (the runner tracks the
lowest seq still in flight), so a crash leaves it at or below the truth; redoing a page is
harmless because discovery also checks that no vector or skip exists. Prompts: every new
ok item's prompt texts are checked against the store (keys are SHA-256 of the text, shared
by all items), so a prompt already embedded for another item is not embedded again.

Forgetting vectors (``VectorStore.delete``, ``verify(repair=True)``) resets the watermark;
``--retry-skipped`` lowers it to just below the oldest skipped item.
"""

from __future__ import annotations

import sqlite3
from typing import Iterator

from audit.catalog.vectors import VectorStore, prompt_key
from audit.timeutil import utc_now

PAGE = 2048  # items read from the catalog at a time


class PendingWork:
    def __init__(self, conn: sqlite3.Connection, store: VectorStore, model_key: str):
        self.conn = conn
        self.store = store
        self.key = model_key
        self.examined = 0  # item rows read to find work (absent notes included)
        self.seen: dict[str, int] = {}  # space -> highest item seq read by its pages

    # --- the watermark
    def watermark(self, space: str) -> int:
        row = self.conn.execute(
            "SELECT item_seq FROM embed_progress WHERE model_key=? AND space=?", (self.key, space)
        ).fetchone()
        return int(row[0]) if row else 0

    def advance(self, space: str, seq: int) -> None:
        """Raise the watermark to ``seq`` (never lowers it: that is ``retry``/``delete``'s job)."""
        from audit.catalog.store import transaction

        if seq <= self.watermark(space):
            return
        with transaction(self.conn) as c:
            c.execute(
                "INSERT INTO embed_progress VALUES (?,?,?,?) ON CONFLICT(model_key, space) DO UPDATE SET "
                "item_seq=max(item_seq, excluded.item_seq), updated=excluded.updated",
                (self.key, space, seq, utc_now()),
            )

    def retry_skipped(self) -> int:
        """Forget this model's image skips and lower the watermark below the oldest of
        them, in one transaction; returns how many skips were forgotten."""
        from audit.catalog.store import transaction

        with transaction(self.conn) as c:
            low = c.execute(
                "SELECT min(i.seq) FROM embed_skips s JOIN items i ON i.item_id = s.item_id WHERE s.model_key=?",
                (self.key,),
            ).fetchone()[0]
            if low is not None:
                c.execute(
                    "UPDATE embed_progress SET item_seq=min(item_seq, ?) WHERE model_key=? AND space='image'",
                    (int(low) - 1, self.key),
                )
            return c.execute("DELETE FROM embed_skips WHERE model_key=?", (self.key,)).rowcount

    # --- images
    def _vspace(self, space: str) -> int:
        s = self.store._space(self.key, space)
        return s[0] if s else -1

    _IMAGE_PAGE = (
        "SELECT i.seq, i.item_id, i.status = 'ok', "
        "(SELECT min(l.uri) FROM locations l WHERE l.item_id = i.item_id AND l.present = 1), "
        "EXISTS (SELECT 1 FROM vector_rows v WHERE v.vspace = ? AND v.key = i.item_id) "
        "OR EXISTS (SELECT 1 FROM embed_skips s WHERE s.model_key = ? AND s.item_id = i.item_id) "
        "FROM items i WHERE i.seq > ? ORDER BY i.seq LIMIT ?"
    )

    def image_pages(self) -> Iterator[tuple[list[tuple[str, str]], int, int]]:
        """Pages of (item_id, uri) to embed, each with the lowest and highest item seq it
        covers (0, 0 for items noted absent that came back). Items of a page without a
        present location are noted absent before the page is handed out."""
        yield from self._returned_absent()
        last = self.watermark("image")
        vspace = self._vspace("image")
        while True:
            rows = self.conn.execute(self._IMAGE_PAGE, (vspace, self.key, last, PAGE)).fetchall()
            if not rows:
                return
            self.examined += len(rows)
            todo, absent = [], []
            for seq, item_id, ok, uri, done in rows:
                if not ok or done:
                    continue
                if uri is None:
                    absent.append(item_id)
                else:
                    todo.append((item_id, uri))
            if absent:
                self._note_absent(absent)
            self.seen["image"] = int(rows[-1][0])
            yield todo, int(rows[0][0]), int(rows[-1][0])
            last = rows[-1][0]

    def _returned_absent(self) -> Iterator[tuple[list[tuple[str, str]], int, int]]:
        last = ""
        vspace = self._vspace("image")
        while True:
            rows = self.conn.execute(
                "SELECT a.item_id, "
                "(SELECT min(l.uri) FROM locations l WHERE l.item_id = a.item_id AND l.present = 1), "
                "EXISTS (SELECT 1 FROM vector_rows v WHERE v.vspace = ? AND v.key = a.item_id) "
                "OR EXISTS (SELECT 1 FROM embed_skips s WHERE s.model_key = a.model_key AND s.item_id = a.item_id) "
                "OR NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = a.item_id AND i.status = 'ok') "
                "FROM embed_absent a WHERE a.model_key = ? AND a.item_id > ? ORDER BY a.item_id LIMIT ?",
                (vspace, self.key, last, PAGE),
            ).fetchall()
            if not rows:
                return
            self.examined += len(rows)
            last = rows[-1][0]
            settled = [item_id for item_id, _, done in rows if done]
            if settled:
                self.settle_absent(settled)
            todo = [(item_id, uri) for item_id, uri, done in rows if not done and uri is not None]
            if todo:
                yield todo, 0, 0

    def _note_absent(self, item_ids: list[str]) -> None:
        from audit.catalog.store import transaction

        with transaction(self.conn) as c:
            c.executemany("INSERT OR IGNORE INTO embed_absent VALUES (?, ?)", [(self.key, i) for i in item_ids])

    def settle_absent(self, item_ids: list[str]) -> None:
        """Drop the absent notes of items now embedded, skipped or gone."""
        from audit.catalog.store import transaction

        with transaction(self.conn) as c:
            c.executemany("DELETE FROM embed_absent WHERE model_key=? AND item_id=?", [(self.key, i) for i in item_ids])

    def count_images(self) -> int:
        """How many images are pending (for the progress display)."""
        vspace = self._vspace("image")
        present = "EXISTS (SELECT 1 FROM locations l WHERE l.item_id = {t}.item_id AND l.present = 1)"
        missing = (
            "NOT EXISTS (SELECT 1 FROM vector_rows v WHERE v.vspace = ? AND v.key = {t}.item_id) "
            "AND NOT EXISTS (SELECT 1 FROM embed_skips s WHERE s.model_key = ? AND s.item_id = {t}.item_id)"
        )
        new = self.conn.execute(
            f"SELECT count(*) FROM items i WHERE i.seq > ? AND i.status = 'ok' AND {present.format(t='i')} "
            f"AND {missing.format(t='i')}",
            (self.watermark("image"), vspace, self.key),
        ).fetchone()[0]
        back = self.conn.execute(
            f"SELECT count(*) FROM embed_absent a WHERE a.model_key = ? AND {present.format(t='a')} "
            f"AND {missing.format(t='a')}",
            (self.key, vspace, self.key),
        ).fetchone()[0]
        return int(new + back)

    # --- prompts
    def prompt_pages(self) -> Iterator[tuple[dict[str, str], int, int]]:
        """Pages of {prompt key: text} not yet embedded, from the ok items above the
        prompt watermark, with the lowest and highest item seq each covers."""
        last = self.watermark("prompt")
        while True:
            rows = self.conn.execute(
                "SELECT seq, prompt, negative_prompt FROM items WHERE seq > ? AND status = 'ok' ORDER BY seq LIMIT ?",
                (last, PAGE),
            ).fetchall()
            if not rows:
                return
            self.examined += len(rows)
            fresh: dict[str, str] = {}
            for _, prompt, negative in rows:
                for text in (prompt, negative):
                    if text and text.strip():
                        fresh.setdefault(prompt_key(text), text)
            have = self.store.has(self.key, "prompt", list(fresh)) if fresh else set()
            self.seen["prompt"] = int(rows[-1][0])
            yield {k: t for k, t in fresh.items() if k not in have}, int(rows[0][0]), int(rows[-1][0])
            last = rows[-1][0]

    # --- anything at all?
    def any_pending(self, images: bool, prompts: bool) -> bool:
        """Whether a run would embed anything (reads no further than the first hit). A
        space found with nothing to do has its watermark raised over what was read, so the
        next look starts there (the caller holds the index lock)."""
        for space, wanted, pages in (("image", images, self.image_pages), ("prompt", prompts, self.prompt_pages)):
            if not wanted:
                continue
            for todo, _, _ in pages():
                if todo:
                    return True
            if space in self.seen and not self.store.read_only:
                self.advance(space, self.seen[space])
        return False
