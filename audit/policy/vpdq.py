"""vPDQ entries of hash lists (known videos) and the matching of a video's vPDQ against them.

A ``vpdq`` row of a hash list names one video; its ``hash`` cell holds the video's vPDQ
features in one of two JSON forms (the cell is quoted CSV, quotes doubled):

- ThreatExchange / HMA's signal string: ``["PDQHEX,QUALITY,TIMESTAMP", ...]``;
- the catalog's ``items.video_hash`` as it is: ``[[PDQHEX, QUALITY, FRAME, TIMESTAMP], ...]``.

Matching is the reference brute matcher of vpdq (ThreatExchange
``python-threatexchange/.../vpdq/vpdq_brute_matcher.py``): both feature lists are deduplicated
(same PDQ hex once) and frames under the quality threshold are dropped; a frame of one video
matches when some frame of the other is within ``max_distance`` bits (``<=``, as the Python
matcher); the query match percentage is the share of the query's frames that match the listed
video, the compared percentage the share of the listed video's frames that match the query.
A video matches when query% >= ``query_percent`` (80 in ThreatExchange) and compared% >=
``compared_percent`` (0). The pairwise work goes through ``match_pdq`` (faiss range search
on large inputs), so a list of many videos costs one search per query video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

_HEX = frozenset("0123456789abcdef")
QUERY_MATCH_PERCENT = 80.0  # VPDQ_QUERY_MATCH_THRESHOLD_PERCENT
COMPARED_MATCH_PERCENT = 0.0  # VPDQ_INDEX_MATCH_THRESHOLD_PERCENT


@dataclass(frozen=True)
class VpdqVideo:
    """One listed video: its frames' PDQ hex and quality, in list order."""

    label: str
    line: int
    pdq_hex: tuple[str, ...]
    quality: tuple[int, ...]


class VpdqMatch(NamedTuple):
    video: int  # index into the bank's videos
    query_percent: float
    compared_percent: float
    query_frames: int  # query frames compared (deduplicated, over the quality threshold)
    compared_frames: int
    first_query_ms: int | None  # time of the first query frame that matched (ms)


def parse_vpdq_cell(text: str) -> list[tuple[str, int]]:
    """``[(pdq hex, quality)]`` of a ``vpdq`` hash cell; ``ValueError`` saying what is wrong."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ValueError(
            'a vpdq hash must be a JSON list: ["PDQHEX,QUALITY,TIMESTAMP", ...] (ThreatExchange) '
            "or [[PDQHEX, QUALITY, FRAME, TIMESTAMP], ...] (a catalog video_hash)"
        ) from None
    if not isinstance(doc, list) or not doc:
        raise ValueError("a vpdq hash must be a non-empty JSON list of frame features")
    out = []
    for n, feature in enumerate(doc, 1):
        parts = feature.split(",") if isinstance(feature, str) else feature
        if not isinstance(parts, list) or len(parts) not in (3, 4):
            raise ValueError(
                f'vpdq feature {n}: expected "PDQHEX,QUALITY,TIMESTAMP" or '
                f"[PDQHEX, QUALITY, FRAME, TIMESTAMP], got {json.dumps(feature)[:80]}"
            )
        value = str(parts[0]).strip().lower()
        if len(value) != 64 or not set(value) <= _HEX:
            raise ValueError(f"vpdq feature {n}: PDQ must be 64 hex digits, got {str(parts[0])[:80]!r}")
        try:
            quality = int(str(parts[1]).strip())
        except ValueError:
            raise ValueError(f"vpdq feature {n}: quality must be an integer 0-100, got {parts[1]!r}") from None
        if not 0 <= quality <= 100:
            raise ValueError(f"vpdq feature {n}: quality must be 0-100, got {quality}")
        out.append((value, quality))
    return out


def features_of_video_hash(text: str | None) -> list[tuple[str, int, float]]:
    """``[(pdq hex, quality, timestamp s)]`` of a catalog ``video_hash``; [] when absent or
    unreadable (a hand-edited catalog: the item just has no video hash to match)."""
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    out = []
    for feature in doc if isinstance(doc, list) else []:
        try:
            value, quality, ts = str(feature[0]).lower(), int(feature[1]), float(feature[-1])
        except (TypeError, ValueError, IndexError):
            continue
        if len(value) == 64 and set(value) <= _HEX:
            out.append((value, quality, ts))
    return out


def _prepared(hexes: Sequence[str], qualities: Sequence[int], min_quality: int) -> list[int]:
    """Indices kept by the reference's ``quality_filter(dedupe(...))``."""
    seen: set[str] = set()
    keep = []
    for i, value in enumerate(hexes):
        if value in seen:
            continue
        seen.add(value)
        if qualities[i] >= min_quality:
            keep.append(i)
    return keep


class VpdqIndex:
    """The listed videos of one bank, flattened for ``match_pdq`` under one quality threshold."""

    def __init__(self, videos: Sequence[VpdqVideo], min_quality: int) -> None:
        from audit.policy.hashlists import pdq_hex_to_array

        self.videos = list(videos)
        hexes: list[str] = []
        owner: list[int] = []
        self.sizes = np.zeros(len(self.videos), dtype=np.int64)
        for v, video in enumerate(self.videos):
            keep = _prepared(video.pdq_hex, video.quality, min_quality)
            hexes.extend(video.pdq_hex[i] for i in keep)
            owner.extend([v] * len(keep))
            self.sizes[v] = len(keep)
        self.array = pdq_hex_to_array(hexes)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.min_quality = min_quality

    def match(self, features: Sequence[tuple[str, int, float]], max_distance: int) -> list[VpdqMatch]:
        """Every listed video sharing a frame with the query video, with both percentages
        (thresholds are the caller's), best query percentage first."""
        from audit.policy.hashlists import match_pdq, pdq_hex_to_array

        keep = _prepared([f[0] for f in features], [f[1] for f in features], self.min_quality)
        if not keep or len(self.array) == 0:
            return []
        query = pdq_hex_to_array([features[i][0] for i in keep])
        hits = match_pdq(self.array, query, max_distance=max_distance, min_quality=0)
        if len(hits.rows) == 0:
            return []
        video = self.owner[hits.bank_index]
        out = []
        for v in np.unique(video).tolist():
            mine = video == v
            rows = np.unique(hits.rows[mine])
            compared = np.unique(hits.bank_index[mine])
            first_ms = round(features[keep[int(rows.min())]][2] * 1000)
            out.append(
                VpdqMatch(
                    int(v),
                    100.0 * len(rows) / len(keep),
                    100.0 * len(compared) / int(self.sizes[v]),
                    len(keep),
                    int(self.sizes[v]),
                    first_ms,
                )
            )
        out.sort(key=lambda m: (-m.query_percent, -m.compared_percent, m.video))
        return out
