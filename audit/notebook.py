"""Jupyter helpers: small, blurred thumbnail grids that protect the reviewer.

``Audit.show(ids)`` renders a grid of at most ``limit`` items. Thumbnails are made by the
report's own thumbnailer (blurred in the pixels, not by CSS) and shown blurred unless
``blur=False``; an item with an active finding in a ``no_view`` category of its policy (or
in a category no loaded policy describes) never gets an image at all: its cell shows the
hashes and the reason instead. Everything from the archive is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from markupsafe import Markup

MAX_PROMPT = 160


@dataclass
class Cell:
    item_id: str
    uri: str | None
    prompt: str | None
    caption: list[str] = field(default_factory=list)  # category: score lines
    image: bytes | None = None  # JPEG, already blurred unless blur=False
    withheld: str | None = None  # why no image is shown


@dataclass
class Grid:
    """What ``show`` returns: renders itself as HTML in Jupyter, and as text elsewhere."""

    cells: list[Cell]
    blurred: bool
    omitted: int = 0

    def _repr_html_(self) -> str:
        # Markup.format and Markup.join escape every value they are given: the archive's text
        # cannot become markup here, the same default as the report's templates.
        parts = [
            Markup(
                '<div style="display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;'
                'font:12px system-ui,sans-serif">'
            )
        ]
        for c in self.cells:
            if c.image is not None:
                src = "data:image/jpeg;base64," + base64.b64encode(c.image).decode("ascii")
                visual = Markup(
                    '<img src="{}" alt="" style="width:96px;height:96px;object-fit:contain;border-radius:4px">'
                ).format(src)
            else:
                visual = Markup(
                    '<div style="width:96px;height:96px;display:flex;align-items:center;justify-content:center;'
                    'background:#2b2b2b;color:#ddd;border-radius:4px;text-align:center;padding:4px">{}</div>'
                ).format(c.withheld or "no image")
            lines = Markup("").join(Markup("<div>{}</div>").format(x) for x in c.caption)
            parts.append(
                Markup(
                    '<div style="border:1px solid #ddd;border-radius:6px;padding:6px">{}'
                    '<div style="font-family:monospace;color:#666">{}</div>'
                    "{}<div style='color:#333'>{}</div></div>"
                ).format(visual, c.item_id[:12], lines, _clip(c.prompt or "", MAX_PROMPT))
            )
        parts.append(Markup("</div>"))
        note = "thumbnails blurred" if self.blurred else "thumbnails NOT blurred"
        if self.omitted:
            note += f"; {self.omitted} more not shown"
        parts.append(Markup('<div style="font:11px system-ui;color:#888">{}</div>').format(note))
        return str(Markup("").join(parts))

    def __repr__(self) -> str:
        rows = [
            f"{c.item_id[:12]}  {'[withheld] ' if c.withheld else ''}{_clip(c.prompt or '', 60)}" for c in self.cells
        ]
        return "\n".join(rows + ([f"... {self.omitted} more"] if self.omitted else []))


def show(audit_index, ids: Any, *, limit: int = 24, blur: bool = True, grayscale: bool = False) -> Grid:
    """A grid of ``ids`` (item ids, or a DataFrame with an ``item_id`` column)."""
    from audit.report.data import resolve_policy
    from audit.report.thumbs import make_thumb

    wanted = _item_ids(ids)
    omitted = max(0, len(wanted) - limit)
    wanted = wanted[:limit]
    conn = audit_index.catalog.conn
    audit_index._findings_store()  # the findings tables exist even before a flag run
    policy, _, _, _ = resolve_policy(conn, None)
    no_view = {c.id for c in policy.categories if c.no_view} if policy is not None else None
    marks = ",".join("?" * len(wanted))
    findings: dict[str, list[tuple[str, list]]] = {}
    if wanted:
        for item_id, category, signals in conn.execute(
            f"SELECT item_id, category, signals FROM findings WHERE active = 1 AND item_id IN ({marks})", wanted
        ):
            findings.setdefault(item_id, []).append((category, json.loads(signals)))
    facts = {}
    if wanted:
        for item_id, prompt, uri in conn.execute(
            f"SELECT i.item_id, i.prompt, (SELECT min(uri) FROM locations l WHERE l.item_id = i.item_id AND l.present = 1) "
            f"FROM items i WHERE i.item_id IN ({marks})",
            wanted,
        ):
            facts[item_id] = (prompt, uri)
    from audit.findings.store import flagged_cluster_categories
    from audit.ingest.reader import read_uri

    cluster_hidden = flagged_cluster_categories(conn, wanted)
    cells = []
    for item_id in wanted:
        prompt, uri = facts.get(item_id, (None, None))
        cell = Cell(item_id=item_id, uri=uri, prompt=prompt)
        for category, signals in findings.get(item_id, []):
            best = max(
                (s for s in signals if s.get("score") is not None), key=lambda s: s.get("margin") or 0, default=None
            )
            score = (
                f" {best['kind']} {best['score']:.3f}/{best['threshold']:.3f}"
                if best and best.get("threshold") is not None
                else ""
            )
            cell.caption.append(f"{category}{score}")
        categories = {c for c, _ in findings.get(item_id, [])} | cluster_hidden.get(item_id, set())
        hidden = categories & no_view if no_view is not None else categories
        if hidden:
            cell.withheld = f"withheld: {', '.join(sorted(hidden))} is no_view"
        elif uri is None:
            cell.withheld = "original missing"
        else:
            try:
                thumb = make_thumb(read_uri(uri), blur=blur, grayscale=grayscale)
                cell.image = thumb.cover if blur else thumb.reveal
            except Exception as exc:  # noqa: BLE001 - an unreadable original: say so in its cell
                cell.withheld = f"unreadable: {type(exc).__name__}"
        cells.append(cell)
    return Grid(cells=cells, blurred=blur, omitted=omitted)


def _item_ids(ids: Any) -> list[str]:
    if isinstance(ids, pl.DataFrame):
        return [i for i in ids["item_id"].to_list() if i]
    if isinstance(ids, pl.Series):
        return [i for i in ids.to_list() if i]
    if isinstance(ids, str):
        return [ids]
    return [str(i) for i in ids if i]


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
