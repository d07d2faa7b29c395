"""The library's front door: ``audit.open(DIR)`` returns an ``Audit``.

Every CLI command is one method here, so a notebook and a shell use the same verbs.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from pathlib import Path
from typing import Iterable, Sequence

import polars as pl

from audit import __version__
from audit.catalog.lock import IndexLock
from audit.catalog.schema import ITEM_COLUMNS, LOCATION_COLUMNS
from audit.catalog.store import Catalog
from audit.frames import frame, polars_type
from audit.timeutil import utc_now

_LOCATION_FIRST = ("uri", "source", "container", "size", "mtime_ns", "status", "error", "first_seen", "last_seen")
_ITEM_ONLY = [n for n, _ in ITEM_COLUMNS if n not in ("item_id", "size", "status", "error", "first_seen", "last_seen")]


class Audit:
    """One index directory: its catalog and the stages built on it."""

    def __init__(self, index_dir: str | os.PathLike, *, create: bool = False):
        self.index_dir = Path(index_dir).expanduser().absolute()
        self.catalog = Catalog(self.index_dir, create=create)

    def __repr__(self) -> str:
        return f"audit.open({str(self.index_dir)!r})"

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Audit":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- stages
    def crawl(
        self,
        sources: "Iterable[str | Source] | str",
        *,
        workers: int | None = None,
        wait: bool = False,
        progress=None,
        argv: Sequence[str] | None = None,
    ):
        """Catalog every generation under ``sources``; returns a ``CrawlSummary``."""
        from audit.crawler.runner import Crawler
        from audit.ingest import open_source
        from audit.ingest.base import Source

        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        opened = [s if isinstance(s, Source) else open_source(str(s)) for s in sources]
        with IndexLock(self.index_dir, wait=wait):
            run_id = self._begin_run("crawl", argv)
            status = "failed"
            summary = None
            try:
                crawler = Crawler(self.catalog, run_id=run_id, workers=workers, progress=progress)
                summary = crawler.crawl(opened)
                status = "ok"
                return summary
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            finally:
                self.catalog.finish_run(
                    run_id, status=status, summary=summary.to_dict() if summary else {}, now=utc_now()
                )

    def _begin_run(self, command: str, argv: Sequence[str] | None) -> int:
        return self.catalog.begin_run(
            command,
            argv=list(argv if argv is not None else sys.argv),
            tool_version=__version__,
            user=_user(),
            host=socket.gethostname(),
            now=utc_now(),
        )

    # --- investigation
    def items(self, *, include_missing: bool = False) -> pl.DataFrame:
        """The catalog, one row per location, with the content's facts and metadata."""
        loc_types = dict(LOCATION_COLUMNS)
        item_types = dict(ITEM_COLUMNS)
        # Unchanged locations of a completely scanned root are not rewritten by a rescan:
        # their last_seen is the time of that root's latest complete scan.
        last_seen = "CASE WHEN l.present = 1 AND s.at > l.last_seen THEN s.at ELSE l.last_seen END AS last_seen"
        cols = ["l.item_id"] + [last_seen if c == "last_seen" else f"l.{c}" for c in _LOCATION_FIRST]
        cols += [f"i.{c}" for c in _ITEM_ONLY]
        schema = {"item_id": pl.Utf8}
        schema.update({c: polars_type(loc_types[c]) for c in _LOCATION_FIRST})
        schema.update({c: polars_type(item_types[c]) for c in _ITEM_ONLY})
        if include_missing:
            cols += ["l.present", "l.missing_since"]
            schema.update({"present": pl.Int64, "missing_since": pl.Utf8})
        where = "" if include_missing else "WHERE l.present = 1"
        sql = (
            f"SELECT {', '.join(cols)} FROM locations l LEFT JOIN items i ON i.item_id = l.item_id "
            f"LEFT JOIN scans s ON s.root_uri = l.root {where} ORDER BY l.uri"
        )
        df = frame(self.catalog.conn, sql, (), schema)
        if include_missing:
            df = df.with_columns(pl.col("present").cast(pl.Boolean))
        return df

    def runs(self) -> pl.DataFrame:
        schema = {
            "run_id": pl.Int64, "command": pl.Utf8, "argv": pl.Utf8, "tool_version": pl.Utf8, "user": pl.Utf8,
            "host": pl.Utf8, "started": pl.Utf8, "finished": pl.Utf8, "status": pl.Utf8, "summary": pl.Utf8,
        }  # fmt: skip
        return frame(self.catalog.conn, f"SELECT {', '.join(schema)} FROM runs ORDER BY run_id", (), schema)

    # --- embeddings (audit/embed)
    def embed(self, *, model: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k",
              checkpoint: str | os.PathLike | None = None, device: str = "cpu", precision: str = "auto",
              batch_size: int | None = None, workers: int | None = None, images: bool = True,
              prompts: bool = True, retry_skipped: bool = False, wait: bool = False, progress=None,
              argv: Sequence[str] | None = None, embedder=None):  # fmt: skip
        """Embed the images and prompts of ok items that have no vector for this model yet;
        returns an ``EmbedSummary``. ``pretrained=None`` (no checkpoint) means random weights.
        ``embedder``: an already loaded ``OpenClipEmbedder`` (skips loading; notebooks)."""
        from audit.embed.api import run_embed

        return run_embed(self, model=model, pretrained=pretrained, checkpoint=checkpoint, device=device,
                         precision=precision, batch_size=batch_size, workers=workers, images=images,
                         prompts=prompts, retry_skipped=retry_skipped, wait=wait, progress=progress,
                         argv=argv, embedder=embedder)  # fmt: skip

    # --- FAISS indexes and search (audit/index)
    def index(self, *, model: str | None = None, memory_budget: str | int | None = None, index_type: str | None = None,
              rebuild: bool = False, verify: bool = False, wait: bool = False, progress=None,
              argv: Sequence[str] | None = None, **options):  # fmt: skip
        """Build or update the image and prompt FAISS indexes of every model (or ``model``);
        returns an ``IndexSummary``. ``memory_budget``/``index_type`` default to what each
        index was built with (else 4 GiB, automatic). ``options`` go to ``IndexBuilder``."""
        from audit.index.build import IndexBuilder, build_all
        from audit.index.prompts import PromptRefs
        from audit.index.search import resolve_model

        vs = self._vectors()
        models = [resolve_model(vs, model)] if model else vs.models()
        with IndexLock(self.index_dir, wait=wait):
            run_id = self._begin_run("index", argv)
            status, summary = "failed", None
            try:
                PromptRefs(self.catalog.conn).refresh()
                builder = IndexBuilder(self.index_dir, vs, memory_budget=memory_budget, index_type=index_type,
                                       rebuild=rebuild, verify=verify, progress=progress, **options)  # fmt: skip
                summary = build_all(builder, models)
                status = "ok"
                return summary
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            finally:
                self.catalog.finish_run(run_id, status=status, summary=summary.to_dict() if summary else {}, now=utc_now())

    def search(self, text: str | None = None, image=None, item: str | None = None, *, k: int = 10,
               model: str | None = None, space: str = "image", checkpoint: str | None = None,
               device: str = "cpu") -> pl.DataFrame:  # fmt: skip
        """Nearest items to a text, an image (path or PIL image) or an item id: rank, item_id,
        score (cosine), uri (a present location), present, prompt_excerpt, match."""
        from audit.errors import UsageError
        from audit.index.search import resolve_model

        given = [name for name, v in (("text", text), ("image", image), ("item", item)) if v is not None]
        if len(given) != 1:
            raise UsageError("give exactly one of --text, --image, --item")
        s = self._searcher()
        identity = resolve_model(s.vs, model, self.index_dir)
        if text is not None:
            q = s.text_vector(identity, text, checkpoint=checkpoint, device=device)
        elif image is not None:
            q = s.image_vector(identity, image, checkpoint=checkpoint, device=device)
        else:
            q = s.item_vector(identity["key"], s.resolve_item(item), space)
        return s.search(identity["key"], space, q, k)

    def neighbors(self, item_id: str, k: int = 10, *, model: str | None = None, space: str = "image") -> pl.DataFrame:
        """The ``k`` items nearest to a catalogued item, the item itself left out."""
        from audit.index.search import resolve_model

        s = self._searcher()
        identity = resolve_model(s.vs, model, self.index_dir)
        item = s.resolve_item(item_id)
        return s.search(identity["key"], space, s.item_vector(identity["key"], item, space), k, exclude=item)

    # --- evidence reports (audit/report)
    def report(self, out: str | os.PathLike | None = None, formats=None, *, policy: str | os.PathLike | None = None,
               blur: bool = True, grayscale: bool = False, force: bool = False, argv: Sequence[str] | None = None,
               progress=None):  # fmt: skip
        """Write an evidence report of the current findings; returns a ``ReportSummary``.

        ``out``: default ``reports/<index name>/<UTC timestamp>/`` under the current directory;
        ``formats``: any of html, jsonl, parquet, csv (default all); ``policy``: the policy
        file whose findings to report (default: that of the latest flag run)."""
        from audit.report import build_report

        return build_report(self, out, formats, policy=policy, blur=blur, grayscale=grayscale, force=force,
                            argv=argv, progress=progress)  # fmt: skip

    def _vectors(self):
        from audit.catalog.vectors import VectorStore

        return VectorStore(self.catalog.conn)

    def _searcher(self):
        from audit.index.search import Searcher

        if getattr(self, "_search_cache", None) is None:
            self._search_cache = Searcher(self.index_dir, self.catalog.conn)
        return self._search_cache


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
