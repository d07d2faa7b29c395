"""Notebook plots as hand-written SVG: a 2-D map of the embeddings, and concept scores
against their thresholds.

SVG by hand keeps plotting free of a dependency (no matplotlib in the image) and makes the
safety rule easy to check: a plot is points, bars and escaped text, never an ``<image>``;
no item is ever drawn as a picture, ``no_view`` or not.

``embedding_map`` samples at most ``max_points`` image vectors as the vector store streams
them (keys are SHA-256 digests, so the first keys in key order are a random sample: nothing
else is read) and projects them on their two principal components (numpy SVD). Members of
flagged clusters are coloured by cluster, items with an active finding are ringed.
``score_histograms`` draws, per concept and space, the distribution of every item's cosine
with the threshold a flag run would use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from markupsafe import escape

# colour-blind-safe palette (Okabe-Ito) for flagged clusters; the rest is grey
PALETTE = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
GREY = "#b8b8b8"
MAX_LEGEND = len(PALETTE)


@dataclass
class SvgPlot:
    """A plot that Jupyter shows (``_repr_svg_``) and that can be saved (``save``)."""

    svg: str
    summary: str  # one line for text consoles and logs

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return self.summary

    def save(self, path) -> None:
        from pathlib import Path

        Path(path).write_text(self.svg, encoding="utf-8")


def sample_vectors(
    audit_index, *, model: str | None = None, space: str = "image", max_points: int = 2000
) -> tuple[list[str], np.ndarray]:
    """At most ``max_points`` (key, vector) of one model and space, read as a prefix in key
    order (a random sample: see the module doc); never the whole store."""
    from audit.catalog.vectors import VectorStore
    from audit.index.search import resolve_model

    vs = VectorStore(audit_index.catalog.conn)
    identity = resolve_model(vs, model, audit_index.index_dir)
    keys: list[str] = []
    parts: list[np.ndarray] = []
    pages = vs.iter_all(identity["key"], space, batch=max(1, min(max_points, 8192)))
    try:
        for page_keys, vecs in pages:
            take = max_points - len(keys)
            keys.extend(page_keys[:take])
            parts.append(np.asarray(vecs[:take], dtype=np.float32))
            if len(keys) >= max_points:
                break
    finally:
        pages.close()
    dim = parts[0].shape[1] if parts else int(identity.get("dim") or 0)
    return keys, (np.concatenate(parts) if parts else np.zeros((0, dim), np.float32))


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """The rows of ``vectors`` on their first two principal components (n x 2)."""
    if len(vectors) == 0:
        return np.zeros((0, 2))
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    if out.shape[1] < 2:  # one point or one dimension: a flat second axis
        out = np.hstack([out, np.zeros((len(out), 2 - out.shape[1]))])
    return out


def embedding_map(audit_index, *, model: str | None = None, max_points: int = 2000, size: int = 520) -> SvgPlot:
    """A 2-D map (PCA) of at most ``max_points`` image embeddings: flagged clusters in colour,
    items with an active finding ringed. Points only, never images."""
    keys, vectors = sample_vectors(audit_index, model=model, space="image", max_points=max_points)
    xy = project_2d(vectors)
    sample = pl.DataFrame({"item_id": keys}, schema={"item_id": pl.Utf8})
    # membership of the sampled items only: the flagged clusters' member lists stream past
    flagged = (
        audit_index.clusters(flagged_only=True, lazy=True)
        .select("cluster_id", "size", "categories", "members")
        .explode("members")
        .join(sample.lazy(), left_on="members", right_on="item_id", how="semi")
        .collect()
    )
    order = (
        flagged.group_by("cluster_id")
        .agg(pl.len().alias("n"), pl.first("size"), pl.first("categories"))
        .sort(["n", "cluster_id"], descending=[True, False])
    )
    colour_of = {cid: PALETTE[i % len(PALETTE)] for i, cid in enumerate(order["cluster_id"])}
    cluster_of = dict(zip(flagged["members"], flagged["cluster_id"]))
    found = set(
        audit_index.findings(lazy=True)
        .select("item_id")
        .join(sample.lazy(), on="item_id", how="semi")
        .collect()["item_id"]
    )
    pad, width, height = 28, size, size
    inner = size - 2 * pad
    parts = [_head(width, height + 22 * min(len(order), MAX_LEGEND) + 40, "Embedding map")]
    parts.append(f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#ddd"/>')
    if len(xy):
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        pts = pad + 4 + (xy - lo) / span * (inner - 8)
        # grey first, so the flagged clusters are drawn on top
        ranked = sorted(range(len(keys)), key=lambda i: keys[i] in cluster_of)
        for i in ranked:
            x, y = pts[i, 0], pad + inner - (pts[i, 1] - pad)
            fill = colour_of.get(cluster_of.get(keys[i]), GREY)
            ring = ' stroke="#222" stroke-width="1.2"' if keys[i] in found else ""
            r = 3.2 if keys[i] in cluster_of else 2.4
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}"{ring} fill-opacity="0.85"/>')
    y = height + 4
    parts.append(
        f'<text x="{pad}" y="{y}" class="t">{len(keys)} points (PCA of image embeddings); '
        f"ringed: an active finding; colour: a flagged cluster</text>"
    )
    for row in order.head(MAX_LEGEND).iter_rows(named=True):
        y += 22
        cats = ", ".join(row["categories"] or [])
        parts.append(
            f'<circle cx="{pad + 6}" cy="{y - 4}" r="5" fill="{colour_of[row["cluster_id"]]}"/>'
            f'<text x="{pad + 18}" y="{y}" class="t">{escape(row["cluster_id"])} · {escape(cats)} · '
            f"{row['n']} of {row['size']} members in the sample</text>"
        )
    if len(order) > MAX_LEGEND:
        y += 22
        parts.append(
            f'<text x="{pad}" y="{y}" class="t">{len(order) - MAX_LEGEND} more flagged clusters (colours repeat)</text>'
        )
    parts.append("</svg>")
    summary = f"embedding map: {len(keys)} points, {len(order)} flagged clusters, {len(found)} with findings"
    return SvgPlot("".join(parts), summary)


def score_histograms(
    scores: pl.DataFrame,
    *,
    bins: int = 30,
    spaces: tuple[str, ...] = ("image", "prompt"),
    panel: tuple[int, int] = (300, 160),
) -> SvgPlot:
    """Per concept and space, a histogram of the items' scores with the threshold marked:
    ``scores`` is ``Audit.concept_scores()`` (concept, image_score, image_threshold, ...)."""
    panels = []
    for concept in sorted(set(scores["concept"].to_list())) if scores.height else []:
        rows = scores.filter(pl.col("concept") == concept)
        for space in spaces:
            vals = rows[f"{space}_score"].drop_nulls().drop_nans().to_numpy()
            thr = rows[f"{space}_threshold"].drop_nulls()
            if len(vals):
                panels.append((concept, space, vals, float(thr[0]) if len(thr) else None))
    pw, ph = panel
    cols = max(1, min(len(spaces), len(panels)))
    nrows = -(-len(panels) // cols) if panels else 1
    parts = [_head(pw * cols, ph * nrows + 4, "Concept scores against thresholds")]
    if not panels:
        parts.append('<text x="10" y="30" class="t">no concept scores (no concepts, or no embeddings)</text>')
    for k, (concept, space, vals, thr) in enumerate(panels):
        parts.append(_histogram(k % cols * pw, k // cols * ph, pw, ph, concept, space, vals, thr, bins))
    parts.append("</svg>")
    summary = (
        "; ".join(
            f"{c}/{s}: {int((v >= t).sum()) if t is not None else '?'} of {len(v)} at or above "
            f"{t if t is None else round(t, 3)}"
            for c, s, v, t in panels
        )
        or "no concept scores"
    )
    return SvgPlot("".join(parts), summary)


def _histogram(
    ox: float, oy: float, w: int, h: int, concept: str, space: str, vals: np.ndarray, thr: float | None, bins: int
) -> str:
    left, right, top, bottom = 36, 10, 34, 24
    iw, ih = w - left - right, h - top - bottom
    lo, hi = float(vals.min()), float(vals.max())
    if thr is not None:
        lo, hi = min(lo, thr), max(hi, thr)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.05, hi + 0.05
    if thr is not None:  # the threshold on a bin edge: every bar is wholly below or at/above it
        width = (hi - lo) / bins
        lo = thr - np.ceil((thr - lo) / width - 1e-9) * width
        bins = max(int(np.ceil((hi - lo) / width - 1e-9)), 1)
        if lo + bins * width < hi:  # rounding: keep the largest score inside the last bin
            bins += 1
        hi = lo + bins * width
    counts, edges = np.histogram(vals, bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1)
    out = [
        f'<g transform="translate({ox},{oy})">',
        f'<text x="{left}" y="12" class="h">{escape(concept)} · {escape(space)}</text>',
    ]
    bw = iw / bins
    for i, n in enumerate(counts):
        if not n:
            continue
        bh = n / peak * ih
        above = thr is not None and edges[i] >= thr - 1e-9
        out.append(
            f'<rect x="{left + i * bw:.1f}" y="{top + ih - bh:.1f}" width="{max(bw - 1, 0.5):.1f}" '
            f'height="{bh:.1f}" fill="{"#D55E00" if above else "#0072B2"}"/>'
        )
    out.append(f'<line x1="{left}" y1="{top + ih}" x2="{left + iw}" y2="{top + ih}" stroke="#888"/>')
    out.append(
        f'<text x="{left}" y="{h - 8}" class="t">{lo:.2f}</text>'
        f'<text x="{left + iw}" y="{h - 8}" class="t" text-anchor="end">{hi:.2f}</text>'
        f'<text x="{left - 4}" y="{top + 8}" class="t" text-anchor="end">{peak}</text>'
    )
    if thr is not None:
        tx = left + (thr - lo) / (hi - lo) * iw
        n_above = int((vals >= thr).sum())
        out.append(
            f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{top + ih}" stroke="#000" '
            f'stroke-dasharray="3,2"/><text x="{left}" y="25" class="t">'
            f"threshold {thr:.3f}: {n_above} of {len(vals)} at or above</text>"
        )
    out.append("</g>")
    return "".join(out)


def _head(width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        "<style>.t{font:10px system-ui,sans-serif;fill:#444}.h{font:bold 11px system-ui,sans-serif;fill:#222}"
        '</style><rect width="100%" height="100%" fill="#fff"/>'
    )
