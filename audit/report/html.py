"""index.html: one self-contained page a reviewer can work through all day.

Safety properties (tested in a real browser by tests/test_report_browser.py):

- Self-contained: CSS and JS inline, thumbnails as ``data:`` URIs, no URL of any kind that
  the page would fetch. The Content-Security-Policy meta tag forbids every fetch but
  ``data:`` images, and runs only the style and script carrying this page's nonce
  (``style-src``/``script-src 'nonce-…'``): no inline event handler or style attribute
  from anywhere would run even if escaping failed.
- Escaping is the default: the markup is in Jinja2 templates (``templates/*.html.j2``)
  rendered with autoescape (``templating.py``), and this module hands them plain values
  only. The page's own CSS and JS are the only unescaped text (``trusted_assets``).
- Thumbnails: see ``thumbs.py``. The ``<img>`` shows the heavily blurred cover; the reveal
  version sits in a ``data-reveal`` attribute that nothing renders until a click (or ``v``)
  swaps it in; revealing one covers the one revealed before; ``Esc`` covers all.
- A ``no_view`` item gets no ``<img>``, no ``data-reveal`` and no CSS image at all: the page
  has no ``url(`` in its stylesheet, and such cards carry hashes and metadata only. Its
  thumbnail never even reaches the template (``_thumb``).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit.report.data import SEVERITY_ORDER, FindingRow, Item, ReportData
from audit.report.files import write_private

DISPLAY_PROMPT_CHARS = 2_000
MAX_HTML_FINDINGS = 5_000  # a page a browser opens quickly; every finding is in findings.jsonl
DISPLAY_VALUE_CHARS = 300
MAX_FIRED_SHOWN = 10
MAX_LOCATIONS_SHOWN = 20
MAX_MATCHES_SHOWN = 5
PAGE_TEMPLATE = "index.html.j2"


def trusted_assets() -> dict[str, Any]:
    """The page's stylesheet and script, the only text the page carries unescaped: they are
    constants of this package (``assets.py``), never data, and escaping would break them
    (``>`` selectors, ``&&`` in the script). The CSP runs them by nonce."""
    from markupsafe import Markup

    from audit.report.assets import CSS, JS

    return {"css": Markup(CSS), "js": Markup(JS)}


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


def _severity_rank(data: ReportData, category: str) -> tuple[int, str]:
    return SEVERITY_ORDER.get(data.categories[category]["severity"], 9), category


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
    from audit.report import templating  # Jinja2 loads with the first page, not with `import audit`

    context = page_context(data, meta, blur=blur, grayscale=grayscale, limit=limit)
    return templating.render(PAGE_TEMPLATE, **context) + "\n"


def page_context(
    data: ReportData,
    meta: dict[str, Any],
    *,
    blur: bool = True,
    grayscale: bool = False,
    limit: int = MAX_HTML_FINDINGS,
) -> dict[str, Any]:
    """Every value the templates see: plain data (escaped by the templates), and the page's
    CSS and JS (``trusted_assets``)."""
    generated = meta.get("generated_at", "")
    return {
        "nonce": secrets.token_urlsafe(18),
        "title": f"Audit report · {data.index_name} · {generated[:16].replace('T', ' ')}",
        "report_id": meta.get("report_id", ""),
        "index_name": data.index_name,
        "index_dir": data.index_dir,
        "blur": int(blur),
        "grayscale": int(grayscale),
        "header": _header(data),
        "summary": _summary(data, meta, blur=blur, grayscale=grayscale),
        "findings": _findings(data, limit),
        "keys": KEYS,
        **trusted_assets(),
    }


KEYS = [
    ("j / k", "next / previous finding"),
    ("c / d / e", "confirm / dismiss / escalate"),
    ("n", "write a note"),
    ("v or Enter on the image", "reveal / cover the image"),
    ("Esc", "cover every image, leave a field"),
    ("/", "filter"),
    ("?", "this help"),
]


def _header(data: ReportData) -> dict[str, Any]:
    counts = data.counts()  # of every finding, also those past the page's limit
    return {
        "severities": [(s, counts["by_severity"].get(s, 0)) for s in SEVERITY_ORDER],
        "categories": sorted((c for c, n in counts["by_category"].items() if n), key=lambda c: _severity_rank(data, c)),
    }


def _tile(label: str, value: Any, cls: str = "", sub: str = "") -> dict[str, Any]:
    return {"label": label, "value": value, "cls": cls, "sub": sub}


def _summary(data: ReportData, meta: dict[str, Any], *, blur: bool, grayscale: bool) -> dict[str, Any]:
    c = data.counts()
    prev = data.previous_report
    new_sub = (
        f"since {(prev.get('started') or '')[:16].replace('T', ' ')} UTC" if prev else "first report of this index"
    )
    tiles = [
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
            "via cluster or neighbour only",
        ),
        _tile("no-view items", c["no_view_items"], "", "hashes and metadata only"),
        _tile("missing originals", c["missing_items"], "warn" if c["missing_items"] else "zero"),
    ]
    if c["changed_items"]:
        tiles.append(_tile("changed since crawl", c["changed_items"], "warn"))

    rows = []
    stats = data.category_stats if data.category_stats is not None else _category_stats(data.findings)
    for cat, info in sorted(data.categories.items(), key=lambda kv: (SEVERITY_ORDER.get(kv[1]["severity"], 9), kv[0])):
        st = stats.get(cat) or {"findings": 0, "new": 0, "confirmed": 0, "dismissed": 0, "escalated": 0}
        if not st["findings"] and not info.get("in_policy"):
            continue
        rows.append(
            {
                "category": cat,
                "slug": _slug(cat),
                "description": info.get("description") or "",
                "severity": info["severity"],
                "no_view": bool(info["no_view"]),
                **{k: st[k] for k in ("findings", "new", "confirmed", "dismissed", "escalated")},
            }
        )

    pol = data.policy
    model = data.model or {}
    model_txt = model.get("name") or model.get("model_key") or "—"
    if model.get("pretrained"):
        model_txt += f" · {model['pretrained']}"
    if model.get("checkpoint_sha256"):
        model_txt += f" · checkpoint sha256 {model['checkpoint_sha256']}"
    provenance = [
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
    empty = None
    if not c["findings"]:
        if data.policy.get("policy_hash") is None:
            empty = "No findings: `audit flag` has not run on this index yet."
        else:
            empty = f"No findings: policy {pol.get('name') or pol.get('policy_hash')} flagged nothing in this index."
    return {"notes": list(data.notes), "tiles": tiles, "rows": rows, "provenance": provenance, "empty": empty}


def _findings(data: ReportData, limit: int = MAX_HTML_FINDINGS) -> dict[str, Any]:
    out: dict[str, Any] = {"truncated": None, "categories": []}
    if not data.findings:
        return out
    clusters = {c["cluster_id"]: c for c in data.clusters}
    total = data.counts()["findings"]
    shown = min(limit, len(data.findings))
    if total > shown:
        out["truncated"] = {"shown": f"{shown:,}", "total": f"{total:,}", "rest": f"{total - shown:,}"}
    by_cat: dict[str, list[FindingRow]] = {}
    for f in data.findings[:limit]:
        by_cat.setdefault(f.category, []).append(f)
    for cat, fs in sorted(by_cat.items(), key=lambda kv: _severity_rank(data, kv[0])):
        info = data.categories[cat]
        groups: dict[str | None, list[FindingRow]] = {}
        for f in fs:
            groups.setdefault(f.cluster_id, []).append(f)
        order = sorted(groups, key=lambda k: (k is None, -len(groups[k]), k or ""))
        out["categories"].append(
            {
                "category": cat,
                "slug": _slug(cat),
                "severity": info["severity"],
                "no_view": bool(info["no_view"]),
                "description": info.get("description") or "",
                "count": len(fs),
                "groups": [
                    {
                        "cluster_id": cid,
                        "count": len(groups[cid]),
                        "bits": _cluster_bits(clusters.get(cid)),
                        "unit": _review_unit(cid, clusters.get(cid), cat),
                        "cards": [_card(data, f) for f in groups[cid]],
                    }
                    for cid in order
                ],
            }
        )
    return out


def _category_stats(findings) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for f in findings:
        c = out.setdefault(f.category, {"findings": 0, "new": 0, "confirmed": 0, "dismissed": 0, "escalated": 0})
        c["findings"] += 1
        c["new"] += f.new_since_last_report
        if f.status in c:
            c[f.status] += 1
    return out


def _cluster_bits(c: dict | None) -> list[str]:
    """The cluster heading's facts: kind and size, share flagged, top terms."""
    bits: list[str] = []
    if c:
        bits.append(f"{_text(c.get('kind'))} · {_text(c.get('size'))} items")
        if c.get("flagged_share") is not None:
            bits.append(f"{float(c['flagged_share']) * 100:.0f}% flagged")
        terms = c.get("top_terms") or []
        if terms:
            bits.append("terms: " + ", ".join(_text(t[0] if isinstance(t, (list, tuple)) else t) for t in terms[:8]))
    return bits


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _review_unit(cid: str | None, c: dict | None, category: str) -> dict[str, Any] | None:
    """A cluster flagged for ``category`` is one review unit: the members that fired (ids and
    scores, never images), what was left out, and one decision for the whole cluster (the
    download writes it as a ``cluster_id`` entry that ``audit review --import`` logs for the
    cluster's members with findings of ``category``)."""
    review = (c or {}).get("review") or {}
    unit = review.get(category) if isinstance(review, dict) else None
    if not cid or not isinstance(unit, dict) or category not in ((c or {}).get("categories") or []):
        return None
    fired = unit.get("fired") or []
    cands = unit.get("candidates") or []
    return {
        "cluster_id": cid,
        "category": category,
        "flagged": unit.get("flagged"),
        "size": (c or {}).get("size"),
        "min_flagged": unit.get("min_flagged"),
        "min_percent": f"{float(unit.get('min_fraction') or 0) * 100:.0f}",
        "candidates": len(cands),
        "eligible": unit.get("eligible"),
        "rest": unit.get("rest"),
        "fired": [
            {
                "item_id": str(f.get("item_id", ""))[:16],
                "name": f.get("name"),
                "score": _num(f.get("score")),
                "threshold": _num(f.get("threshold")),
            }
            for f in fired[:MAX_FIRED_SHOWN]
            if isinstance(f, dict)
        ],
        "more": max(len(fired) - MAX_FIRED_SHOWN, 0),
    }


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


def _prompt(text: str | None, signals: list[dict], field: str) -> dict[str, Any] | None:
    """A prompt as segments (text, whether a rule matched it) and how much was cut off."""
    if not text:
        return None
    shown = text[:DISPLAY_PROMPT_CHARS]
    segments, pos = [], 0
    for a, b in _spans(signals, field, text):
        if a >= len(shown):
            break
        b = min(b, len(shown))
        segments += [(shown[pos:a], False), (shown[a:b], True)]
        pos = b
    segments.append((shown[pos:], False))
    more = len(text) - len(shown)
    return {"segments": segments, "more": f"{more:,}" if more > 0 else None}


def _detail(d: Any) -> list[dict[str, Any]]:
    """A signal's detail as display bits: a rule's matches, then ``key value`` pairs."""
    if not isinstance(d, dict):
        return [{"text": _short(json.dumps(d, default=str, ensure_ascii=False))}] if d not in (None, "") else []
    bits: list[dict[str, Any]] = []
    for k, v in d.items():
        if k == "span":
            continue
        if k == "matches" and isinstance(v, list):
            for m in v[:MAX_MATCHES_SHOWN]:
                if isinstance(m, dict):
                    where = m.get("field", "")
                    if isinstance(m.get("span"), (list, tuple)) and len(m["span"]) == 2:
                        where += f" {m['span'][0]}–{m['span'][1]}"
                    bits.append({"match": _short(str(m.get("text", "")), 120), "where": where})
            if len(v) > MAX_MATCHES_SHOWN:
                bits.append({"more": len(v) - MAX_MATCHES_SHOWN})
            continue
        if k == "text" and isinstance(d.get("matches"), list):
            continue  # the first match's text, already shown
        val = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
        bits.append({"key": k, "value": _short(val, 160)})
    return bits


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


def _signals(signals: list[dict]) -> list[dict[str, Any]]:
    rows = []
    for s in signals:
        if not isinstance(s, dict):
            continue
        margin = s.get("margin")
        margin_cls = ("pos" if margin >= 0 else "neg") if isinstance(margin, (int, float)) else ""
        rows.append(
            {
                "kind": s.get("kind"),
                "name": _short(str(s.get("name") or ""), 80),
                "score": _num(s.get("score")),
                "threshold": _num(s.get("threshold")),
                "margin": _num(margin),
                "margin_cls": margin_cls,
                "detail": _detail(s.get("detail")),
            }
        )
    return rows


def _thumb(item: Item) -> dict[str, Any]:
    """What the card shows for the picture. A ``no_view`` item is decided first and gets no
    image data at all, so no template can render one."""
    if item.no_view:
        return {"kind": "no_view"}
    if item.missing:
        return {"kind": "missing"}
    if item.thumb is None:
        return {"kind": "none", "why": "content changed" if item.verified is False else "no thumbnail"}
    t = item.thumb
    return {
        "kind": "image",
        "reveal": _data_uri(t.mime, t.reveal),
        "cover": _data_uri(t.mime, t.cover),
        "width": t.width,
        "height": t.height,
    }


def _card(data: ReportData, f: FindingRow) -> dict[str, Any]:
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
    via = None
    if f.review_candidate:
        via = "cluster" if any(s.get("kind") == "cluster" for s in f.signals if isinstance(s, dict)) else "neighbour"
    if item.missing:
        check = "missing"
    elif item.verified is False:
        check = "changed"
    elif item.verified:
        check = "verified"
    else:
        check = None
    resources = []
    for r in item.resources:
        if isinstance(r, dict):
            label = " ".join(str(r[k]) for k in ("kind", "name") if r.get(k))
            extra = " ".join(f"{k}={r[k]}" for k in ("weight", "hash") if r.get(k) is not None)
            resources.append({"label": _short(label, 120), "extra": _short(extra, 120)})
        else:
            resources.append({"label": _short(str(r), 160), "extra": None})
    locations = [
        {
            "present": bool(loc["present"]),
            "uri": loc["uri"],
            "size": _size(loc["size"]),
            "mtime": _mtime(loc["mtime_ns"]),
            "missing_since": loc.get("missing_since") or None,
        }
        for loc in item.locations[:MAX_LOCATIONS_SHOWN]
    ]
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
    prior = None
    if f.decision:
        note = f.decision.get("note")
        prior = {
            "decision": f.decision["decision"],
            "by": f.decision.get("by"),
            "at": (f.decision.get("at") or "")[:16],
            "note": _short(note or "", 200) if note else None,
        }
    return {
        "finding_id": f.finding_id,
        "item_id": f.item_id,
        "severity": f.severity,
        "category": f.category,
        "status": f.status,
        # a finding new to this report says so with its "new" tag; its status would repeat it
        "show_status": not (f.status == "new" and f.new_since_last_report),
        "new": int(f.new_since_last_report),
        "search": search.lower(),
        "uri": f.uri,
        "via": via,
        "check": check,
        "no_view": item.no_view,
        "thumb": _thumb(item),
        "signals": _signals(f.signals) if f.signals else None,
        "prompt": _prompt(prompt, f.signals, "prompt"),
        "negative": _prompt(neg, f.signals, "negative_prompt"),
        "generator": gen,
        "resources": resources,
        "provenance": _provenance_line(facts.get("provenance")),
        "dims": dims,
        "md5": facts.get("md5") or "—",
        "pdq": facts.get("pdq") or "—",
        "locations": locations,
        "more_locations": max(len(item.locations) - MAX_LOCATIONS_SHOWN, 0),
        "read_error": _short(item.read_error, 300) if item.read_error else None,
        "prior": prior,
    }


def _provenance_line(text) -> str:
    """The C2PA / IPTC source-type record as one line (``audit.provenance.summary_line``)."""
    if not text:
        return ""
    from audit.provenance import summary_line

    try:
        return _short(summary_line(json.loads(text)), 300)
    except (ValueError, TypeError):
        return "provenance record unreadable"
