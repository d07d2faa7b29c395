"""The flag stage's face-likeness detector: ``face:<id>`` for each ``[[faces]]`` gallery.

Per evaluated item: (1) when the gallery has a ``gate`` concept, the item's stored image
vector must reach the gate's threshold (a cheap cosine; items without a vector are never
skipped: a missing vector must not hide a face); (2) the descriptors stored for the item
and model are used, or the original is read, decoded on a copy whose longest side is at
most ``max_side``, and described (``describe_faces``), and stored; (3) each face at least
``min_face_px`` wide is compared with the gallery: the nearest person within
``max_distance`` fires the signal (kind ``face_match``; score = distance, threshold =
max_distance, margin = max_distance - distance; detail: label, distance, face size).

Nothing here writes a face crop anywhere; a finding follows its category's ``no_view``.
Without the ``faces`` extra a policy with a non-empty gallery stops with one line naming
``pip install ".[faces]"`` (exit code 3).
"""

from __future__ import annotations

import time

import numpy as np

from audit.findings.store import Signal
from audit.flag.base import Detections, FlagContext
from audit.timeutil import utc_now

BATCH = 32  # items described between two commits of their descriptors


class FaceDetector:
    name = "faces"

    def __init__(self, conn) -> None:
        self.conn = conn

    def detect(self, ctx: FlagContext) -> Detections:
        det = Detections()
        galleries = [g for g in ctx.policy.faces if not g.empty]
        if not galleries or len(ctx) == 0:
            return det
        from audit.faces import store
        from audit.faces.gallery import load_gallery
        from audit.faces.models import load_face_model

        model = load_face_model()  # DependencyMissing (exit 3) without the extra
        max_side = max(g.max_side for g in galleries)
        model_key = f"{model.name}@{max_side}"
        loaded = {g.id: load_gallery(g, model, key=ctx.policy.content_hash) for g in galleries}
        wanted = np.zeros(len(ctx), dtype=bool)
        gated: dict[str, np.ndarray] = {}
        for g in galleries:
            mask = self._gate(ctx, g)
            gated[g.id] = mask
            wanted |= mask
        rows = np.flatnonzero(wanted).tolist()
        have = store.get(self.conn, model_key, [ctx.item_ids[r] for r in rows])
        todo = [r for r in rows if ctx.item_ids[r] not in have]
        started = time.perf_counter()
        errors = self._describe(ctx, todo, model, max_side, model_key, have)
        seconds = time.perf_counter() - started
        matches = {}
        for g in galleries:
            gallery = loaded[g.id]
            count = 0
            for r in np.flatnonzero(gated[g.id]).tolist():
                desc, sizes, _error = have.get(ctx.item_ids[r], (np.zeros((0, 128)), np.zeros(0), None))
                keep = sizes >= g.min_face_px
                if not keep.any():
                    continue
                faces = desc[keep]
                best, dist = gallery.nearest(faces)
                k = int(dist.argmin())
                if dist[k] <= g.max_distance:
                    d = float(dist[k])
                    det.add(
                        r,
                        Signal(
                            "face_match",
                            g.signal,
                            round(d, 4),
                            g.max_distance,
                            round(g.max_distance - d, 4),
                            {
                                "label": gallery.labels[int(best[k])],
                                "distance": round(d, 4),
                                "gallery": g.id,
                                "faces": int(keep.sum()),
                                "face_px": int(sizes[keep][k]),
                                "model": model_key,
                            },
                        ),
                    )
                    count += 1
            matches[g.id] = count
        det.stats = {
            "model": model_key,
            "gated_out": int(len(ctx) - wanted.sum()),
            "described": len(todo),
            "reused": len(rows) - len(todo),
            "errors": errors,
            "matches": matches,
            "ms_per_described": round(1000 * seconds / len(todo), 1) if todo else None,
        }
        return det

    def _gate(self, ctx: FlagContext, g) -> np.ndarray:
        """Rows the gallery looks at: all, or those whose image vector fires the gate concept."""
        everything = np.ones(len(ctx), dtype=bool)
        if g.gate is None or not ctx.has_image.any():
            return everything
        from audit.flag.concepts import ConceptDetector, _embed_texts
        from audit.embed.base import l2_normalize
        from audit.policy.calibrate import ensemble

        concept = ctx.policy.concept(g.gate)
        threshold = g.gate_threshold if g.gate_threshold is not None else concept.image_threshold
        if threshold is None:
            previous = ((ctx.previous_thresholds or {}).get(g.gate) or {}).get("image") or {}
            threshold = previous.get("value")
        run = ctx.concepts  # the flag run's, computed once; else computed here
        if threshold is None:
            threshold = (run or ConceptDetector().prepare(ctx)).thresholds[g.gate]["image"]["value"]
        if run is not None and g.gate in run.text:
            vector = run.text[g.gate]
        else:
            vector = l2_normalize(ensemble(_embed_texts(ctx.embedder, concept.prompts())))
        scores = ctx.image_vectors @ vector
        return np.where(ctx.has_image, scores >= float(threshold), True)

    def _describe(self, ctx, todo, model, max_side, model_key, have) -> int:
        from audit.faces import store
        from audit.faces.describe import describe_faces
        from audit.imaging import DecodeError, decode_image
        from audit.ingest.reader import ReadError, read_uri

        errors = 0
        batch = []
        for position, r in enumerate(todo):
            item_id = ctx.item_ids[r]
            uri = self._uri(item_id)
            try:
                if uri is None:
                    raise ReadError("no present location")
                decoded = decode_image(read_uri(uri), draft=(max_side, max_side), orientation=True)
                faces = describe_faces(model, decoded.oriented(decoded.rgb()), max_side=max_side)
                row = (item_id, faces.descriptors, faces.sizes, None)
            except (ReadError, DecodeError) as exc:
                errors += 1
                row = (item_id, np.zeros((0, 128), np.float32), np.zeros(0, np.int32), str(exc)[:300])
            batch.append(row)
            have[item_id] = (row[1], row[2], row[3])
            if len(batch) >= BATCH or position == len(todo) - 1:
                store.put(self.conn, model_key, batch, utc_now())
                batch = []
        return errors

    def _uri(self, item_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT uri FROM locations WHERE item_id=? AND present=1 ORDER BY uri LIMIT 1", (item_id,)
        ).fetchone()
        return row[0] if row else None
