"""index.html: one self-contained page a reviewer can work through all day.

Safety properties (tested in a real browser by tests/test_report_browser.py):

- Self-contained: CSS and JS inline, thumbnails as ``data:`` URIs, no URL of any kind that
  the page would fetch. The Content-Security-Policy meta tag forbids every fetch but
  ``data:`` images, and runs only the style and script carrying this page's nonce
  (``style-src``/``script-src 'nonce-…'``): no inline event handler or style attribute
  from anywhere would run even if escaping failed.
- Everything from the archive (prompts, names, metadata, uris) goes through ``esc``.
- Thumbnails: see ``thumbs.py``. The ``<img>`` shows the heavily blurred cover; the reveal
  version sits in a ``data-reveal`` attribute that nothing renders until a click (or ``v``)
  swaps it in; revealing one covers the one revealed before; ``Esc`` covers all.
- A ``no_view`` item gets no ``<img>``, no ``data-reveal`` and no CSS image at all: the page
  has no ``url(`` in its stylesheet, and such cards carry hashes and metadata only.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit.report.assets import CSS, JS
from audit.report.data import SEVERITY_ORDER, FindingRow, Item, ReportData
from audit.report.files import write_private

DISPLAY_PROMPT_CHARS = 2_000
MAX_HTML_FINDINGS = 5_000  # a page a browser opens quickly; every finding is in findings.jsonl
DISPLAY_VALUE_CHARS = 300
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute: escaped, control characters visible."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return html.escape(_CONTROL.sub("\ufffd", text), quote=True)


def _short(text: str | None, n: int = DISPLAY_VALUE_CHARS) -> str:
    if text is None:
        return ""
    return text if len(text) <= n else text[:n] + "…"


def _num(v: Any, digits: int = 4) -> str:
    """A score or count for a table cell: floats to ``digits`` places, "—" for none."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.{digits}f}"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _mtime(ns: Any) -> str:
    if not isinstance(ns, int):
        return ""
    try:
        return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(ns)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "x"


def _data_uri(mime: str, raw: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


class HtmlWriter:
    name = "html"

    def __init__(self, *, blur: bool = True, grayscale: bool = False, limit: int = MAX_HTML_FINDINGS):
        self.blur = blur
        self.grayscale = grayscale
        self.limit = limit

    def write(self, data: ReportData, out_dir: Path, *, meta: dict[str, Any] | None = None) -> list[Path]:
        page = render(data, meta or {}, blur=self.blur, grayscale=self.grayscale, limit=self.limit)
        return [write_private(out_dir / "index.html", page)]


# ----------------------------------------------------------------------------- page


def render(
    data: ReportData,
    meta: dict[str, Any],
    *,
    blur: bool = True,
    grayscale: bool = False,
    limit: int = MAX_HTML_FINDINGS,
) -> str:
    nonce = secrets.token_urlsafe(18)
    csp = (
        f"default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "base-uri 'none'; form-action 'none'; object-src 'none'"
    )
    generated = meta.get("generated_at", "")
    report_id = meta.get("report_id", "")
    title = f"Audit report · {data.index_name} · {generated[:16].replace('T', ' ')}"
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">',
        '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex,nofollow">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>{esc(title)}</title><style nonce="{nonce}">{CSS}</style></head>',
        f'<body data-report-id="{esc(report_id)}" data-index="{esc(data.index_name)}" '
        f'data-blur="{int(blur)}" data-grayscale="{int(grayscale)}">',
        _header(data),
        '<main id="main">',
        _summary(data, meta, blur=blur, grayscale=grayscale),
        _findings(data, limit),
        "</main>",
        _help(),
        f'<script nonce="{nonce}">{JS}</script>',
        "</body></html>\n",
    ]
    return "".join(parts)


def _header(data: ReportData) -> str:
    counts = data.counts()  # of every finding, also those past the page's limit
    sev_buttons = "".join(
        f'<button type="button" class="chip sev-{s}{"" if n else " zero"}" data-sev="{s}" aria-pressed="true" '
        f'title="Show {s} findings">{s} <b>{n}</b></button>'
        for s, n in ((s, counts["by_severity"].get(s, 0)) for s in SEVERITY_ORDER)
    )
    cats = sorted(
        (c for c, n in counts["by_category"].items() if n),
        key=lambda c: (SEVERITY_ORDER.get(data.categories[c]["severity"], 9), c),
    )
    cat_opts = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in cats)
    return (
        '<header class="bar"><div class="brand"><span class="logo">audit</span>'
        f'<span class="idx" title="{esc(data.index_dir)}">{esc(data.index_name)}</span></div>'
        '<div class="filters" role="search">'
        '<input type="search" id="q" placeholder="Filter findings  ( / )" aria-label="Filter findings" autocomplete="off">'
        f'<div class="chips" role="group" aria-label="Severity">{sev_buttons}</div>'
        f'<select id="cat" aria-label="Category"><option value="">All categories</option>{cat_opts}</select>'
        '<select id="st" aria-label="Status"><option value="">Any status</option>'
        '<option value="undecided">Undecided here</option><option value="decided">Decided here</option>'
        '<option value="new">New since last report</option><option value="confirmed">Confirmed</option>'
        '<option value="dismissed">Dismissed</option><option value="escalated">Escalated</option></select>'
        '<span id="shown" class="muted" aria-live="polite"></span></div>'
        '<div class="actions"><input id="reviewer" placeholder="Reviewer" aria-label="Reviewer name" autocomplete="off">'
        '<button type="button" id="download" class="primary" title="Download decisions as JSON for audit review --import">'
        'Download decisions <b id="ndec">0</b></button>'
        '<button type="button" id="helpbtn" class="ghost" title="Keyboard shortcuts (?)" aria-label="Keyboard shortcuts">?</button>'
        "</div></header>"
    )


def _tile(label: str, value: Any, cls: str = "", sub: str = "") -> str:
    return f'<div class="tile {cls}"><div class="v">{esc(value)}</div><div class="l">{esc(label)}</div>{sub}</div>'


def _summary(data: ReportData, meta: dict[str, Any], *, blur: bool, grayscale: bool) -> str:
    c = data.counts()
    notes = "".join(f'<div class="notice warn" role="note">{esc(n)}</div>' for n in data.notes)
    prev = data.previous_report
    new_sub = (
        f'<div class="s">since {esc((prev.get("started") or "")[:16].replace("T", " "))} UTC</div>'
        if prev
        else '<div class="s">first report of this index</div>'
    )
    tiles = "".join(
        [
            _tile("findings", c["findings"]),
            _tile("items", c["items"]),
            _tile(
                "new since last report",
                c["new_since_last_report"],
                "new" if c["new_since_last_report"] else "",
                new_sub,
            ),
            *(
                _tile(s, c["by_severity"].get(s, 0), f"sev-{s}" if c["by_severity"].get(s) else "zero")
                for s in SEVERITY_ORDER
            ),
            _tile(
                "review candidates",
                c["review_candidates"],
                "" if c["review_candidates"] else "zero",
                '<div class="s">via cluster or neighbour only</div>',
            ),
            _tile("no-view items", c["no_view_items"], "", '<div class="s">hashes and metadata only</div>'),
            _tile("missing originals", c["missing_items"], "warn" if c["missing_items"] else "zero"),
        ]
    )
    if c["changed_items"]:
        tiles += _tile("changed since crawl", c["changed_items"], "warn")

    rows = []
    stats = data.category_stats if data.category_stats is not None else _category_stats(data.findings)
    for cat, info in sorted(data.categories.items(), key=lambda kv: (SEVERITY_ORDER.get(kv[1]["severity"], 9), kv[0])):
        st = stats.get(cat) or {"findings": 0, "new": 0, "confirmed": 0, "dismissed": 0, "escalated": 0}
        if not st["findings"] and not info.get("in_policy"):
            continue
        rows.append(
            f'<tr class="{"" if st["findings"] else "zero"}"><td><a href="#cat-{_slug(cat)}">{esc(cat)}</a>'
            f'<div class="muted">{esc(info.get("description") or "")}</div></td>'
            f'<td><span class="sev sev-{esc(info["severity"])}">{esc(info["severity"])}</span></td>'
            f"<td>{'<span class=nv>no view</span>' if info['no_view'] else ''}</td>"
            f'<td class="n">{st["findings"]}</td><td class="n">{st["new"]}</td>'
            f'<td class="n">{st["confirmed"]}</td><td class="n">{st["dismissed"]}</td><td class="n">{st["escalated"]}</td></tr>'
        )
    table = (
        '<table class="cats"><thead><tr><th>Category</th><th>Severity</th><th>View</th><th class="n">Findings</th>'
        '<th class="n">New</th><th class="n">Confirmed</th><th class="n">Dismissed</th><th class="n">Escalated</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )

    pol = data.policy
    model = data.model or {}
    model_txt = model.get("name") or model.get("model_key") or "—"
    if model.get("pretrained"):
        model_txt += f" · {model['pretrained']}"
    if model.get("checkpoint_sha256"):
        model_txt += f" · checkpoint sha256 {model['checkpoint_sha256']}"
    prov = [
        ("Policy", f"{pol.get('name') or '—'} v{pol.get('version') or '?'}"),
        ("Policy hash", pol.get("content_hash") or pol.get("policy_hash") or "—"),
        ("Model", model_txt),
        ("Flag run", f"#{data.flag_run['run_id']} at {data.flag_run['at']}" if data.flag_run else "—"),
        ("Learned from decisions", _learned(data.flag_run)),
        ("Catalog version", str(data.catalog_version)),
        ("Generated", f"{meta.get('generated_at', '')} by {meta.get('user', '')}@{meta.get('host', '')}"),
        (
            "Thumbnails",
            (
                "blurred; a click reveals a lightly blurred version"
                if blur
                else "blurred; a click reveals the clear thumbnail"
            )
            + (", grayscale" if grayscale else ""),
        ),
        ("Report id", meta.get("report_id", "")),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in prov)
    if not c["findings"]:
        if data.policy.get("policy_hash") is None:
            empty = "No findings: `audit flag` has not run on this index yet."
        else:
            empty = f"No findings: policy {pol.get('name') or pol.get('policy_hash')} flagged nothing in this index."
        body = f'<div class="empty" id="empty">{esc(empty)}</div>'
    else:
        body = ""
    return (
        f'<section id="summary" aria-label="Summary"><h1>Findings report <span class="muted">{esc(data.index_name)}</span></h1>'
        f'{notes}<div class="tiles">{tiles}</div>{body}<div class="sumgrid"><div>{table}</div>'
        f'<dl class="prov">{dl}</dl></div></section>'
    )


def _findings(data: ReportData, limit: int = MAX_HTML_FINDINGS) -> str:
    if not data.findings:
        return ""
    clusters = {c["cluster_id"]: c for c in data.clusters}
    out = []
    total = data.counts()["findings"]
    if total > min(limit, len(data.findings)):
        shown = min(limit, len(data.findings))
        out.append(
            f'<div class="notice warn" role="note">This page shows the first {shown:,} of {total:,} '
            f"findings, most severe first; the other {total - shown:,} are in findings.jsonl, .parquet and .csv "
            "(audit report --html-limit N shows more).</div>"
        )
    by_cat: dict[str, list[FindingRow]] = {}
    for f in data.findings[:limit]:
        by_cat.setdefault(f.category, []).append(f)
    for cat, fs in sorted(
        by_cat.items(), key=lambda kv: (SEVERITY_ORDER.get(data.categories[kv[0]]["severity"], 9), kv[0])
    ):
        info = data.categories[cat]
        nv = (
            '<span class="nv" title="Images in this category are never rendered">no view</span>'
            if info["no_view"]
            else ""
        )
        out.append(
            f'<section class="category" id="cat-{_slug(cat)}" data-cat="{esc(cat)}">'
            f'<h2><span class="sev sev-{esc(info["severity"])}">{esc(info["severity"])}</span> {esc(cat)} '
            f'<span class="count">{len(fs)}</span> {nv} <span class="muted desc">{esc(info.get("description") or "")}</span></h2>'
        )
        groups: dict[str | None, list[FindingRow]] = {}
        for f in fs:
            groups.setdefault(f.cluster_id, []).append(f)
        order = sorted(groups, key=lambda k: (k is None, -len(groups[k]), k or ""))
        for cid in order:
            out.append(_cluster_head(cid, clusters.get(cid), len(groups[cid])))
            out.append(_review_unit(cid, clusters.get(cid), cat))
            out.extend(_card(data, f) for f in groups[cid])
            out.append("</div>")
        out.append("</section>")
    return "".join(out)


def _category_stats(findings) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for f in findings:
        c = out.setdefault(f.category, {"findings": 0, "new": 0, "confirmed": 0, "dismissed": 0, "escalated": 0})
        c["findings"] += 1
        c["new"] += f.new_since_last_report
        if f.status in c:
            c[f.status] += 1
    return out


def _cluster_head(cid: str | None, c: dict | None, n: int) -> str:
    if cid is None:
        return f'<div class="group"><h3 class="gh">Not in a cluster <span class="count">{n}</span></h3>'
    bits = []
    if c:
        bits.append(f"{esc(c.get('kind'))} · {esc(c.get('size'))} items")
        if c.get("flagged_share") is not None:
            bits.append(f"{float(c['flagged_share']) * 100:.0f}% flagged")
        terms = c.get("top_terms") or []
        if terms:
            bits.append("terms: " + ", ".join(esc(t[0] if isinstance(t, (list, tuple)) else t) for t in terms[:8]))
    return (
        f'<div class="group" data-cluster="{esc(cid)}"><h3 class="gh">Cluster <code>{esc(cid)}</code> '
        f'<span class="count">{n}</span> <span class="muted">{" · ".join(bits)}</span></h3>'
    )


def _review_unit(cid: str | None, c: dict | None, category: str) -> str:
    """A cluster flagged for ``category`` is one review unit: the members that fired (ids and
    scores, never images), what was left out, and one decision for the whole cluster (the
    download writes it as a ``cluster_id`` entry that ``audit review --import`` logs for the
    cluster's members with findings of ``category``)."""
    review = (c or {}).get("review") or {}
    unit = review.get(category) if isinstance(review, dict) else None
    if not cid or not isinstance(unit, dict) or category not in ((c or {}).get("categories") or []):
        return ""
    fired = unit.get("fired") or []
    rows = "".join(
        f'<li><span class="mono">{esc(str(f.get("item_id", ""))[:16])}</span> {esc(f.get("name"))} '
        f"{_num(f.get('score'))} ≥ {_num(f.get('threshold'))}</li>"
        for f in fired[:10]
        if isinstance(f, dict)
    )
    more = len(fired) - 10 if len(fired) > 10 else 0
    cands = unit.get("candidates") or []
    return (
        f'<div class="unit" data-cluster-id="{esc(cid)}" data-cat="{esc(category)}">'
        f'<div class="unit-evidence"><b>Cluster review unit</b> · flagged on member evidence: '
        f"{esc(unit.get('flagged'))} of {esc((c or {}).get('size'))} members flagged directly "
        f"(minimum {esc(unit.get('min_flagged'))} and {float(unit.get('min_fraction') or 0) * 100:.0f}%) · "
        f"{len(cands)} review candidate{'' if len(cands) == 1 else 's'} (closest first, of {esc(unit.get('eligible'))} "
        f"close to the category) · {esc(unit.get('rest'))} other members not listed"
        f'<ul class="fired">{rows}{f"<li class=muted>and {more} more</li>" if more else ""}</ul></div>'
        '<div class="decide unit-decide" role="group" aria-label="Decision for the whole cluster">'
        '<button type="button" data-decision="confirm" title="Confirm the cluster">Confirm cluster</button>'
        '<button type="button" data-decision="dismiss" title="Dismiss the cluster">Dismiss cluster</button>'
        '<button type="button" data-decision="escalate" title="Escalate the cluster">Escalate cluster</button>'
        '<textarea class="note" rows="2" placeholder="Note for the cluster" aria-label="Note"></textarea>'
        "</div></div>"
    )


def _spans(signals: list[dict], field: str, text: str) -> list[tuple[int, int]]:
    out = []
    for s in signals:
        d = s.get("detail") if isinstance(s, dict) else None
        if not isinstance(d, dict):
            continue
        # the flag stage writes {"matches": [{"field", "span", "text"}, ...]}; a bare span is accepted too
        matches = d.get("matches") if isinstance(d.get("matches"), list) else [d]
        for m in matches:
            if not isinstance(m, dict) or m.get("field", "prompt") != field:
                continue
            span = m.get("span")
            if isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(x, int) for x in span):
                a, b = span
                if 0 <= a < b <= len(text):
                    out.append((a, b))
    out.sort()
    merged: list[tuple[int, int]] = []
    for a, b in out:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _prompt(text: str | None, signals: list[dict], field: str) -> str:
    if not text:
        return '<span class="muted">—</span>'
    shown = text[:DISPLAY_PROMPT_CHARS]
    out, pos = [], 0
    for a, b in _spans(signals, field, text):
        if a >= len(shown):
            break
        b = min(b, len(shown))
        out.append(esc(shown[pos:a]) + f"<mark>{esc(shown[a:b])}</mark>")
        pos = b
    out.append(esc(shown[pos:]))
    more = len(text) - len(shown)
    if more > 0:
        out.append(f'<span class="trunc">… {more:,} more characters (full text in findings.jsonl)</span>')
    return "".join(out)


def _detail(d: Any) -> str:
    if not isinstance(d, dict):
        return esc(_short(json.dumps(d, default=str, ensure_ascii=False))) if d not in (None, "") else ""
    bits = []
    for k, v in d.items():
        if k == "span":
            continue
        if k == "matches" and isinstance(v, list):
            for m in v[:5]:
                if isinstance(m, dict):
                    where = m.get("field", "")
                    if isinstance(m.get("span"), (list, tuple)) and len(m["span"]) == 2:
                        where += f" {m['span'][0]}–{m['span'][1]}"
                    bits.append(
                        f'<span class="kv"><i>match</i> “{esc(_short(str(m.get("text", "")), 120))}” '
                        f'<span class="muted">{esc(where)}</span></span>'
                    )
            if len(v) > 5:
                bits.append(f'<span class="kv muted">+{len(v) - 5} more</span>')
            continue
        if k == "text" and isinstance(d.get("matches"), list):
            continue  # the first match's text, already shown
        val = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
        bits.append(f'<span class="kv"><i>{esc(k)}</i> {esc(_short(val, 160))}</span>')
    return "".join(bits)


def _learned(flag_run: dict | None) -> str:
    """The flag run's learned models (``audit.flag.learned``): how each was derived."""
    out = []
    for key, rec in sorted(((flag_run or {}).get("thresholds") or {}).items()):
        if not key.startswith("learned:") or not isinstance(rec, dict):
            continue
        dec = rec.get("decisions") or {}
        out.append(
            f"{key[len('learned:') :]}: {dec.get('confirmed', 0)} confirmed, {dec.get('dismissed', 0)} dismissed, "
            f"cross-validated precision {_num(rec.get('cv_precision'), 2) or '—'}, recall {_num(rec.get('cv_recall'), 2) or '—'}"
        )
    return "; ".join(out) or "none (zero-shot thresholds only)"


def _signals(signals: list[dict]) -> str:
    if not signals:
        return '<div class="muted">no signals recorded</div>'
    rows = []
    for s in signals:
        if not isinstance(s, dict):
            continue
        margin = s.get("margin")
        mcls = (
            "pos"
            if isinstance(margin, (int, float)) and margin >= 0
            else "neg"
            if isinstance(margin, (int, float))
            else ""
        )
        rows.append(
            f'<tr><td><span class="kind">{esc(s.get("kind"))}</span></td><td class="mono">{esc(_short(str(s.get("name") or ""), 80))}</td>'
            f'<td class="n">{esc(_num(s.get("score")))}</td><td class="n">{esc(_num(s.get("threshold")))}</td>'
            f'<td class="n {mcls}">{esc(_num(s.get("margin")))}</td><td class="det">{_detail(s.get("detail"))}</td></tr>'
        )
    return (
        '<table class="sig"><thead><tr><th>Signal</th><th>Name</th><th class="n">Score</th><th class="n">Threshold</th>'
        f'<th class="n">Margin</th><th>Detail</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _thumb(item: Item) -> str:
    if item.no_view:
        return '<div class="noimg nvbox" title="This category is never rendered"><b>no view</b><span>image withheld</span></div>'
    if item.missing:
        return '<div class="noimg missbox"><b>missing</b><span>original not found</span></div>'
    if item.thumb is None:
        why = "content changed" if item.verified is False else "no thumbnail"
        return f'<div class="noimg"><b>{esc(why)}</b></div>'
    t = item.thumb
    return (
        f'<button type="button" class="reveal" aria-pressed="false" title="Reveal this image (v); Esc covers it again" '
        f'data-reveal="{_data_uri(t.mime, t.reveal)}"><img class="covered" alt="blurred thumbnail" '
        f'width="{t.width}" height="{t.height}" src="{_data_uri(t.mime, t.cover)}"><span class="eye">reveal</span></button>'
    )


def _card(data: ReportData, f: FindingRow) -> str:
    item = data.items[f.item_id]
    facts = item.facts
    prompt, neg = facts.get("prompt"), facts.get("negative_prompt")
    search = " ".join(
        str(x)
        for x in (
            f.finding_id,
            f.item_id,
            f.category,
            f.cluster_id or "",
            f.uri or "",
            (prompt or "")[:500],
            facts.get("generator") or "",
            facts.get("model") or "",
        )
        if x
    )
    flags = []
    if f.new_since_last_report:
        flags.append('<span class="tag new" title="new since the last report">new</span>')
    if f.review_candidate:
        via = "cluster" if any(s.get("kind") == "cluster" for s in f.signals if isinstance(s, dict)) else "neighbour"
        flags.append(
            f'<span class="tag cand" title="No signal of its own: flagged through its {via}. '
            f'Review as a candidate.">candidate · via {via}</span>'
        )
    if item.missing:
        flags.append('<span class="tag miss">missing</span>')
    elif item.verified is False:
        flags.append('<span class="tag miss">changed</span>')
    elif item.verified:
        flags.append(
            '<span class="tag ok" title="The original was read at report time and its SHA-256 matches">verified</span>'
        )
    if item.no_view:
        flags.append('<span class="nv">no view</span>')
    res = []
    for r in item.resources:
        if isinstance(r, dict):
            label = " ".join(str(r[k]) for k in ("kind", "name") if r.get(k))
            extra = " ".join(f"{k}={r[k]}" for k in ("weight", "hash") if r.get(k) is not None)
            res.append(
                f'<span class="res">{esc(_short(label, 120))} <span class="muted">{esc(_short(extra, 120))}</span></span>'
            )
        else:
            res.append(f'<span class="res">{esc(_short(str(r), 160))}</span>')
    locs = "".join(
        f'<li class="{"gone" if not loc["present"] else ""}"><span class="mono uri">{esc(loc["uri"])}</span> '
        f'<span class="muted">{esc(_size(loc["size"]))} · mtime {esc(_mtime(loc["mtime_ns"]))}'
        f"{' · gone since ' + esc(loc['missing_since']) if loc.get('missing_since') else ''}</span></li>"
        for loc in item.locations[:20]
    ) + (
        f'<li class="muted">… {len(item.locations) - 20} more in manifest.json</li>' if len(item.locations) > 20 else ""
    )
    dims = f"{facts.get('format') or '?'} · {facts.get('width') or '?'}×{facts.get('height') or '?'} · {_size(facts.get('size'))}"
    gen = " · ".join(
        x
        for x in (
            facts.get("generator"),
            facts.get("model") and f"model {facts['model']}",
            facts.get("model_hash") and f"hash {facts['model_hash']}",
            facts.get("seed") and f"seed {facts['seed']}",
        )
        if x
    )
    prov = _provenance_line(facts.get("provenance"))
    prior = ""
    if f.decision:
        prior = (
            f'<div class="prior">recorded: <b>{esc(f.decision["decision"])}</b> by {esc(f.decision.get("by"))} '
            f"{esc((f.decision.get('at') or '')[:16])}{(' — ' + esc(_short(f.decision.get('note') or '', 200))) if f.decision.get('note') else ''}</div>"
        )
    status = (
        ""
        if (f.status == "new" and f.new_since_last_report)
        else f'<span class="status st-{esc(f.status)}">{esc(f.status)}</span>'
    )
    err = f'<div class="muted small">{esc(_short(item.read_error, 300))}</div>' if item.read_error else ""
    return (
        f'<article class="finding sevb-{esc(f.severity)}" tabindex="0" id="f-{esc(f.finding_id)}" '
        f'data-finding-id="{esc(f.finding_id)}" data-item-id="{esc(f.item_id)}" data-sev="{esc(f.severity)}" '
        f'data-cat="{esc(f.category)}" data-status="{esc(f.status)}" data-new="{int(f.new_since_last_report)}" '
        f'data-search="{esc(search.lower())}">'
        f'<div class="thumb">{_thumb(item)}</div>'
        '<div class="body">'
        f'<div class="line1"><span class="sev sev-{esc(f.severity)}">{esc(f.severity)}</span>'
        f'<span class="cat">{esc(f.category)}</span>{status}'
        f'{"".join(flags)}<span class="fid mono" title="finding id">{esc(f.finding_id)}</span></div>'
        f'<div class="uri1 mono" title="{esc(f.uri)}">{esc(f.uri or "(no location)")}</div>'
        f"{_signals(f.signals)}"
        '<dl class="meta">'
        f'<dt>Prompt</dt><dd class="prompt">{_prompt(prompt, f.signals, "prompt")}</dd>'
        f'<dt>Negative</dt><dd class="prompt neg">{_prompt(neg, f.signals, "negative_prompt")}</dd>'
        f"<dt>Generator</dt><dd>{esc(gen) or '<span class=muted>—</span>'}</dd>"
        + (f"<dt>Resources</dt><dd>{''.join(res)}</dd>" if res else "")
        + (f"<dt>Provenance</dt><dd>{esc(prov)}</dd>" if prov else "")
        + f"<dt>File</dt><dd>{esc(dims)}</dd>"
        f'<dt>SHA-256</dt><dd class="mono sel">{esc(f.item_id)}</dd>'
        f'<dt>MD5 · PDQ</dt><dd class="mono"><span class="sel">{esc(facts.get("md5") or "—")}</span>'
        f' <span class="muted">·</span> <span class="sel">{esc(facts.get("pdq") or "—")}</span></dd>'
        f'<dt>Locations</dt><dd><ul class="locs">{locs or "<li class=muted>none recorded</li>"}</ul>{err}</dd>'
        "</dl></div>"
        '<div class="decide" role="group" aria-label="Decision">'
        '<button type="button" data-decision="confirm" title="Confirm (c)">Confirm</button>'
        '<button type="button" data-decision="dismiss" title="Dismiss (d)">Dismiss</button>'
        '<button type="button" data-decision="escalate" title="Escalate (e)">Escalate</button>'
        '<textarea class="note" rows="3" placeholder="Note (n)" aria-label="Note"></textarea>'
        f"{prior}</div></article>"
    )


def _provenance_line(text) -> str:
    """The C2PA / IPTC source-type record as one line (``audit.provenance.summary_line``)."""
    if not text:
        return ""
    from audit.provenance import summary_line

    try:
        return _short(summary_line(json.loads(text)), 300)
    except (ValueError, TypeError):
        return "provenance record unreadable"


def _help() -> str:
    keys = [
        ("j / k", "next / previous finding"),
        ("c / d / e", "confirm / dismiss / escalate"),
        ("n", "write a note"),
        ("v or Enter on the image", "reveal / cover the image"),
        ("Esc", "cover every image, leave a field"),
        ("/", "filter"),
        ("?", "this help"),
    ]
    rows = "".join(f"<tr><td><kbd>{esc(k)}</kbd></td><td>{esc(v)}</td></tr>" for k, v in keys)
    return f'<div id="help" class="help" hidden role="dialog" aria-label="Keyboard shortcuts"><h3>Keyboard</h3><table>{rows}</table></div>'
