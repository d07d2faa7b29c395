"""Nearest items to a text, an image file or a catalogued item, from the FAISS indexes.

Queries are embedded with the model that made the index (its identity is stored with the
vectors); the index answers with ids, mapped back to item ids (image space) or prompt keys
(prompt space, expanded to the items carrying that prompt). Scores are cosine similarity:
for indexes with lossy codes (SQ8, PQ) the candidates are over-fetched and re-scored
exactly from the stored vectors, so the score column is always the true cosine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from audit.catalog.vectors import SPACES, VectorStore, prompt_key
from audit.errors import DependencyMissing, IndexMissing, InputError, UsageError, WeightsUnavailable
from audit.imaging import DecodedImage, DecodeError, decode_file, to_rgb
from audit.index.files import Manifest, load_index
from audit.index.prompts import PromptRefs

EXCERPT_CHARS = 160
RESULT_SCHEMA = {
    "rank": pl.Int64,
    "item_id": pl.Utf8,
    "score": pl.Float64,
    "uri": pl.Utf8,
    "present": pl.Boolean,
    "prompt_excerpt": pl.Utf8,
    "match": pl.Utf8,  # image | prompt | negative_prompt: what the query matched
}


def resolve_model(vs: VectorStore, model: str | None, index_dir: Path | None = None) -> dict:
    """The stored model identity named by ``model`` (a key, or a name when unambiguous)."""
    models = vs.models()
    if not models:
        raise IndexMissing("no embeddings in this index; run `audit embed` and then `audit index` first")
    if model:
        exact = [m for m in models if m["key"] == model]
        if exact:
            return exact[0]
        named = [m for m in models if m["name"] == model or m["key"].startswith(model)]
        if len(named) == 1:
            return named[0]
        known = ", ".join(m["key"] for m in models)
        if not named:
            raise UsageError(f"no embeddings of model {model!r} in this index (it has: {known})")
        raise UsageError(f"model {model!r} is ambiguous here; pass one of: {known}")
    if len(models) == 1:
        return models[0]
    if index_dir is not None:
        from audit.index.files import manifest_path

        indexed = [m for m in models if manifest_path(index_dir, m["key"], "image").exists()]
        if len(indexed) == 1:
            return indexed[0]
    known = ", ".join(m["key"] for m in models)
    raise UsageError(f"this index holds embeddings of several models; pass --model (one of: {known})")


class Searcher:
    """Loaded indexes and the query embedder of one index directory (cached between queries)."""

    def __init__(self, index_dir: Path, conn, *, embedder_factory=None):
        self.index_dir = Path(index_dir)
        self.conn = conn
        self.vs = VectorStore(conn)
        self._indexes: dict[tuple[str, str], tuple[Manifest, Any, np.ndarray]] = {}
        self._embedders: dict[tuple, Any] = {}
        self._embedder_factory = embedder_factory

    # --- indexes
    def index(self, model_key: str, space: str) -> tuple[Manifest, Any, np.ndarray]:
        cached = self._indexes.get((model_key, space))
        current = _manifest_stamp(self.index_dir, model_key, space)
        if cached is not None and cached[0].generation == current:
            return cached
        loaded = load_index(self.index_dir, model_key, space)
        if loaded is None:
            if self.vs.count(model_key, space) == 0:
                raise IndexMissing(
                    f"no {space} embeddings for model {model_key}; run `audit embed` and then `audit index`"
                )
            raise IndexMissing(f"no {space} index for model {model_key}; run `audit index`")
        manifest, index, keys = loaded
        if manifest.params:
            import faiss

            ps = faiss.ParameterSpace()
            for name, value in manifest.params.items():
                ps.set_index_parameter(index, name, value)
        self._indexes[(model_key, space)] = loaded
        return loaded

    # --- query vectors
    def embedder(self, identity: dict, *, checkpoint: str | None = None, device: str = "cpu"):
        cache_key = (identity["key"], checkpoint, device)
        if cache_key in self._embedders:
            return self._embedders[cache_key]
        factory = self._embedder_factory or load_embedder
        extra = {"precision": identity["precision"]} if identity.get("precision") else {}  # an int8 space
        emb = factory(
            identity["name"], pretrained=identity.get("pretrained"), checkpoint=checkpoint, device=device, **extra
        )
        key = getattr(getattr(emb, "identity", None), "key", None)
        if key is not None and key != identity["key"]:
            hint = (
                f"pass --checkpoint with the weights file whose SHA-256 starts {identity['checkpoint_sha256'][:16]}"
                if identity.get("checkpoint_sha256")
                else "pass the same --model/--pretrained as `audit embed`"
            )
            raise WeightsUnavailable(
                f"the index was embedded with {identity['key']} but the loaded model is {key}; {hint}"
            )
        self._embedders[cache_key] = emb
        return emb

    def text_vector(self, identity: dict, text: str, **kw) -> np.ndarray:
        if not text or not text.strip():
            raise UsageError("--text is empty")
        return _row(self.embedder(identity, **kw).embed_texts([text]))

    def image_vector(self, identity: dict, image, **kw) -> np.ndarray:
        """The query vector of a PIL image or an image file, decoded as the crawl decodes
        (``decode_image``), so a file in the catalog finds itself."""
        from PIL import Image

        if isinstance(image, Image.Image):
            img = to_rgb(image)
        else:
            img = read_query_image(image).rgb()
        return _row(self.embedder(identity, **kw).embed_images([img]))

    def resolve_item(self, item: str) -> str:
        item = item.strip()
        if not item:
            raise UsageError("--item is empty")
        row = self.conn.execute("SELECT item_id FROM items WHERE item_id = ?", (item.lower(),)).fetchone()
        if row:
            return row[0]
        if len(item) >= 4 and all(c in "0123456789abcdefABCDEF" for c in item):
            lo = item.lower()
            rows = self.conn.execute(
                "SELECT item_id FROM items WHERE item_id >= ? AND item_id < ? LIMIT 2", (lo, lo + "g")
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                raise UsageError(f"item id prefix {item!r} is ambiguous; give more characters")
        row = self.conn.execute(
            "SELECT item_id FROM locations WHERE uri = ? AND item_id IS NOT NULL", (item,)
        ).fetchone()
        if row:
            return row[0]
        raise InputError(f"no item {item!r} in this index (give an item id, a unique prefix of one, or a uri)")

    def item_vector(self, model_key: str, item_id: str, space: str) -> np.ndarray:
        if space == "prompt":
            prompt = self.conn.execute("SELECT prompt FROM items WHERE item_id=?", (item_id,)).fetchone()
            if prompt and prompt[0]:
                _, vecs = self.vs.get(model_key, "prompt", [prompt_key(prompt[0])])
                if len(vecs):
                    return _row(vecs)
        _, vecs = self.vs.get(model_key, "image", [item_id])
        if not len(vecs):
            raise InputError(f"item {item_id[:16]} has no image embedding for model {model_key}; run `audit embed`")
        return _row(vecs)

    # --- the search
    def search(
        self, model_key: str, space: str, query: np.ndarray, k: int, *, exclude: str | None = None
    ) -> pl.DataFrame:
        if space not in SPACES:
            raise UsageError(f"--space must be one of {', '.join(SPACES)}, got {space!r}")
        if k < 1:
            raise UsageError("-k must be at least 1")
        manifest, index, keys = self.index(model_key, space)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if q.shape[1] != manifest.dim:
            raise WeightsUnavailable(f"query vector has {q.shape[1]} dimensions, the index {manifest.dim}")
        exact_codes = manifest.spec.get("codec") in ("Flat",) or manifest.spec.get("kind") in ("flat", "hnsw")
        want = k + (1 if exclude else 0)
        fetch = want if exact_codes else max(4 * want, want + 32)
        if space == "prompt":
            fetch *= 2  # some prompts map to no present item
        hits: list[tuple[str, float]] = []
        while True:
            fetch = min(fetch, index.ntotal)
            scores, ids = index.search(q, fetch)
            hits = [
                (keys[i].decode() if isinstance(keys[i], bytes) else str(keys[i]), float(s))
                for s, i in zip(scores[0], ids[0])
                if i >= 0
            ]
            if not exact_codes:
                hits = self._rescore(model_key, space, q[0], hits)
            rows = self._rows(space, hits, exclude)
            if len(rows) >= k or fetch >= index.ntotal:
                break
            fetch *= 4
        rows = rows[:k]
        for r, row in enumerate(rows, 1):
            row["rank"] = r
        return self._frame(rows)

    def _rescore(self, model_key: str, space: str, q: np.ndarray, hits: list[tuple[str, float]]):
        got, vecs = self.vs.get(model_key, space, [h[0] for h in hits])
        if not got:
            return hits
        exact = dict(zip(got, (vecs @ q).tolist()))
        rescored = [(key, exact.get(key, s)) for key, s in hits]
        rescored.sort(key=lambda h: -h[1])
        return rescored

    def _rows(self, space: str, hits: list[tuple[str, float]], exclude: str | None) -> list[dict]:
        if space == "image":
            rows = [{"item_id": key, "score": s, "match": "image"} for key, s in hits if key != exclude]
        else:
            refs = PromptRefs(self.conn).items_for([h[0] for h in hits])
            rows, seen = [], set()
            for key, s in hits:
                for item_id, f in refs.get(key, ()):
                    if item_id != exclude and item_id not in seen:
                        seen.add(item_id)
                        rows.append({"item_id": item_id, "score": s, "match": f})
        return rows

    def _frame(self, rows: list[dict]) -> pl.DataFrame:
        ids = [r["item_id"] for r in rows]
        where = _locations(self.conn, ids)
        prompts = _prompts(self.conn, ids)
        for r in rows:
            uri, present = where.get(r["item_id"], (None, False))
            r["uri"], r["present"] = uri, present
            r["prompt_excerpt"] = excerpt(prompts.get(r["item_id"]))
        return pl.DataFrame([{c: r.get(c) for c in RESULT_SCHEMA} for r in rows], schema=RESULT_SCHEMA, orient="row")


def load_embedder(
    name: str,
    *,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
):
    """The query embedder for a stored model identity (``audit.embed.openclip``)."""
    try:
        from audit.embed.openclip import load_embedder as load
    except ImportError as exc:
        raise DependencyMissing(f"text and image queries need the open_clip embedder: {exc}") from None
    # one query at a time: fp32 is cheap and skips the bf16 calibration at load; an int8
    # space (``precision="int8"``) is queried with its own (cached) int8 towers
    return load(
        name,
        pretrained=pretrained,
        checkpoint=checkpoint,
        device=device,
        precision=precision,
        calibrate=precision == "fp32",
    )


def excerpt(text: str | None, n: int = EXCERPT_CHARS) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _locations(conn, ids: list[str]) -> dict[str, tuple[str, bool]]:
    out: dict[str, tuple[str, bool]] = {}
    for i in range(0, len(ids), 2000):
        chunk = ids[i : i + 2000]
        marks = ",".join("?" * len(chunk))
        for item_id, uri, present in conn.execute(
            f"SELECT item_id, uri, present FROM locations WHERE item_id IN ({marks}) "
            "ORDER BY item_id, present DESC, last_seen DESC, uri",
            chunk,
        ):
            out.setdefault(item_id, (uri, bool(present)))
    return out


def _prompts(conn, ids: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i in range(0, len(ids), 2000):
        chunk = ids[i : i + 2000]
        marks = ",".join("?" * len(chunk))
        out.update(conn.execute(f"SELECT item_id, prompt FROM items WHERE item_id IN ({marks})", chunk).fetchall())
    return out


def _manifest_stamp(index_dir: Path, model_key: str, space: str) -> int | None:
    from audit.index.files import read_manifest

    m = read_manifest(index_dir, model_key, space)
    return m.generation if m else None


def read_query_image(path) -> DecodedImage:
    """A query image file decoded as the crawl decodes, or ``InputError`` (one line)."""
    path = Path(os.fspath(path)).expanduser()
    try:
        return decode_file(path)
    except FileNotFoundError:
        raise InputError(f"no such image: {path}") from None
    except DecodeError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


def _row(vecs) -> np.ndarray:
    v = np.asarray(vecs, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
