"""The library's front door: ``audit.open(DIR)`` returns an ``Audit``.

Every CLI command is one method here, so a notebook and a shell use the same verbs.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from audit._lazy import LazyModule

if TYPE_CHECKING:  # pragma: no cover
    from audit.ingest.base import Source

from audit.catalog.lock import IndexLock
from audit.catalog.runs import RunRecord, recorded_run
from audit.errors import UsageError
from audit.catalog.schema import ITEM_COLUMNS, LOCATION_COLUMNS
from audit.catalog.store import Catalog
from audit.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED

if TYPE_CHECKING:
    import polars as pl

    from audit.frames import SqlQuery
else:  # polars loads on the first frame asked for, not for a crawl
    pl = LazyModule("polars")
_frames = LazyModule("audit.frames")

_LOCATION_FIRST = ("uri", "source", "container", "size", "mtime_ns", "status", "error", "first_seen", "last_seen")
_ITEM_ONLY = [n for n, _ in ITEM_COLUMNS if n not in ("item_id", "size", "status", "error", "first_seen", "last_seen")]


class Audit:
    """One index directory: its catalog and the stages built on it.

    Opens an existing index, never makes one, unless ``create`` (the crawl and scan entry
    points): then a new index is made where none exists. Where the index cannot be written
    (a read-only copy of evidence), or with ``read_only=True``, it is opened read-only:
    ``read_only`` is True, ``read_only_reason`` says why, reading works and every command
    that writes refuses with ``IndexReadOnly``."""

    def __init__(self, index_dir: str | os.PathLike, *, create: bool = False, read_only: bool = False):
        self.index_dir = Path(index_dir).expanduser().absolute()
        self.catalog = Catalog(self.index_dir, create=create, read_only=read_only)

    @property
    def read_only(self) -> bool:
        return self.catalog.read_only

    @property
    def read_only_reason(self) -> str | None:
        return self.catalog.read_only_reason

    def __repr__(self) -> str:
        return f"audit.open({str(self.index_dir)!r}{', read_only=True' if self.read_only else ''})"

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
        trust_dir_mtime: bool = False,
        executor: str = "local",
        reread: str | None = None,
    ):
        """Catalog every generation under ``sources``; returns a ``CrawlSummary``.

        ``reread="stale"``: also read again the unchanged files whose rows an older reader
        wrote (before provenance, animation frames and video hashes: ``READER_VERSION``) or
        that failed to decode; ``reread="all"``: every file (after a parser fix).

        ``executor="ray"``: reads run as Ray tasks on the cluster named by ``RAY_ADDRESS``
        (a local Ray instance when unset); every node must see the sources as this
        process does (checked before any work). This process commits, as locally.

        ``trust_dir_mtime``: in local folders, skip the files of a directory whose mtime is
        unchanged since its last full listing (much faster rescans of huge trees; a file
        rewritten in place without a rename is then not noticed until a normal crawl)."""
        from audit.crawler.runner import Crawler
        from audit.ingest import open_source
        from audit.ingest.base import Source

        self.catalog.require_writable("crawl")
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        opened = [s if isinstance(s, Source) else open_source(str(s), trust_dir_mtime=trust_dir_mtime) for s in sources]
        from contextlib import ExitStack

        from audit.onray import EXECUTORS

        if executor not in EXECUTORS:
            raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
        with ExitStack() as stack:
            pool = None
            if executor == "ray":
                from audit.onray.session import require_ray

                require_ray()  # one line naming the extra, before the index is touched
            stack.enter_context(IndexLock(self.index_dir, wait=wait))
            if executor == "ray":
                from audit.onray.crawl import RayReadPool
                from audit.onray.nodes import check_visible
                from audit.onray.session import ray_session

                ray = stack.enter_context(ray_session())
                check_visible(ray, [s.root_uri for s in opened], what="source")  # before any work
                pool = RayReadPool(ray)
            run = stack.enter_context(self.recorded_run("crawl", argv))
            crawler = Crawler(
                self.catalog, run_id=run.run_id, workers=workers, progress=progress, pool=pool, reread=reread
            )
            run.summary = crawler.summary  # recorded as far as it got, also when interrupted
            return crawler.crawl(opened)

    def scan(
        self,
        sources,
        *,
        policy=None,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        checkpoint=None,
        device: str = "cpu",
        batch_size: int | None = None,
        workers: int | None = None,
        report: bool = False,
        out=None,
        fail_on: str | None = None,
        wait: bool = False,
        progress=None,
        argv: Sequence[str] | None = None,
        trust_dir_mtime: bool = False,
        mark: bool = True,
        full: bool = False,
        executor: str = "local",
    ):
        """crawl -> embed -> index -> flag (-> report) under one hold of the index lock;
        returns a ``ScanSummary`` whose ``exit_code`` is 1 when a new finding is at or above
        ``fail_on``. ``progress``: a function stage -> context manager yielding a callback.
        ``mark=False``: leave the new findings new until ``audit.scan.mark_reported`` is
        called (once the caller has delivered the summary). ``full``: the flag stage
        recomputes everything (see ``flag``)."""
        from audit.scan import run_scan

        return run_scan(
            self,
            sources,
            policy=policy,
            model=model,
            pretrained=pretrained,
            checkpoint=checkpoint,
            device=device,
            batch_size=batch_size,
            workers=workers,
            report=report,
            out=out,
            fail_on=fail_on,
            wait=wait,
            progress=progress,
            argv=argv,
            trust_dir_mtime=trust_dir_mtime,
            mark=mark,
            full=full,
            executor=executor,
        )

    # --- notebook helpers (audit/notebook.py)
    def show(self, ids, *, limit: int = 24, blur: bool = True, grayscale: bool = False):
        """A grid of small blurred thumbnails of ``ids`` (item ids or a DataFrame with
        ``item_id``) with prompts and scores; never an image for a ``no_view`` category."""
        from audit.notebook import show

        return show(self, ids, limit=limit, blur=blur, grayscale=grayscale)

    def embedding_map(self, *, model: str | None = None, max_points: int = 2000):
        """A 2-D map (PCA) of at most ``max_points`` image embeddings, sampled as the vector
        store streams them, flagged clusters in colour: SVG points, never images."""
        from audit.plots import embedding_map

        return embedding_map(self, model=model, max_points=max_points)

    def score_histograms(self, policy=None, *, model: str | None = None, bins: int = 30):
        """Per concept of ``policy``, histograms of the items' image and prompt scores with
        the thresholds a flag run would use now (SVG)."""
        from audit.flag.runner import concept_scores
        from audit.plots import score_histograms

        return score_histograms(concept_scores(self, policy, model=model), bins=bins)

    def cluster(self, cluster_id: str) -> pl.DataFrame:
        """The members of one cluster with their prompts, models, resources and findings."""
        return self.cluster_members(cluster_id)

    def cluster_members(self, cluster_id: str, *, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
        """The items of one cluster or near-duplicate group (item_id, uri, prompt,
        negative_prompt, model, resources, generator, categories: the categories of their
        active findings under the cluster's policy), sorted by item_id. Answered by
        indexed SQL: neither the catalog nor the findings are read whole."""
        from audit.errors import InputError
        from audit.findings.store import cluster_member_ids_sql

        self._findings_store()
        row = self.catalog.conn.execute(
            "SELECT policy_hash FROM clusters WHERE cluster_id = ?", (cluster_id,)
        ).fetchone()
        if row is None:
            raise InputError(f"no cluster {cluster_id!r} in this index")
        members_sql, params = cluster_member_ids_sql(self.catalog.conn, cluster_id)
        columns = {
            "item_id": "m.item_id",
            "uri": "(SELECT min(uri) FROM locations l WHERE l.item_id = m.item_id AND l.present = 1)",
            "prompt": "i.prompt",
            "negative_prompt": "i.negative_prompt",
            "model": "i.model",
            "resources": "i.resources",
            "generator": "i.generator",
            "categories": "(SELECT json_group_array(category) FROM (SELECT DISTINCT category FROM findings f "
            "WHERE f.item_id = m.item_id AND +f.policy_hash = ? AND f.active = 1 ORDER BY category))",
        }
        schema = {
            "item_id": pl.Utf8,
            "uri": pl.Utf8,
            "prompt": pl.Utf8,
            "negative_prompt": pl.Utf8,
            "model": pl.Utf8,
            "resources": pl.Utf8,
            "generator": pl.Utf8,
            "categories": pl.Utf8,
        }
        # the correlated subquery's parameter comes first: it sits in the SELECT list; its
        # unary + keeps SQLite on the item index (the policy index would scan every finding)
        q = _frames.SqlQuery(
            columns,
            schema,
            f"FROM (SELECT DISTINCT item_id FROM ({members_sql})) m JOIN items i ON i.item_id = m.item_id",
            (row[0], *params),
            "m.item_id",
            page_key="m.item_id",
            decode={"resources": _frames.RESOURCES_TYPE, "categories": _frames.IDS_TYPE},
        )
        lf = _frames.lazy_query(self.catalog.conn, q, name="cluster_members")
        lf = lf.with_columns(
            pl.when(pl.col("categories").list.len() > 0).then(pl.col("categories")).alias("categories")
        )
        return lf if lazy else lf.collect()

    @contextmanager
    def recorded_run(self, command: str, argv: Sequence[str] | None = None) -> Iterator["RunRecord"]:
        """Record one run of ``command`` in the catalog: ``audit.catalog.runs.recorded_run``."""
        with recorded_run(self.catalog, command, argv) as run:
            yield run

    # --- investigation
    def items(
        self,
        *,
        include_missing: bool = False,
        lazy: bool = False,
        item_ids: Iterable[str] | str | None = None,
        uri_prefix: str | None = None,
        generator: str | Iterable[str] | None = None,
        status: str | Iterable[str] | None = None,
    ) -> pl.DataFrame | pl.LazyFrame:
        """The catalog, one row per location, with the content's facts and metadata.

        Filters run in SQLite: ``item_ids`` (one id or many; uses the item index),
        ``uri_prefix`` (locations whose uri starts with it; uses the uri index),
        ``generator``/``status`` (one value or many). ``lazy=True``: a polars LazyFrame
        that reads the catalog in batches only when collected, selecting only the columns
        the query uses and stopping once ``head(n)`` has its rows."""
        q = self._items_query(
            include_missing=include_missing,
            item_ids=item_ids,
            uri_prefix=uri_prefix,
            generator=generator,
            status=status,
        )
        if lazy:
            return _frames.lazy_query(self.catalog.conn, q, name="items")
        return _frames.collect_query(self.catalog.conn, q)

    def _items_query(self, *, include_missing: bool, item_ids, uri_prefix, generator, status) -> SqlQuery:
        from audit.findings.store import _where_in

        loc_types = dict(LOCATION_COLUMNS)
        item_types = dict(ITEM_COLUMNS)
        columns = {"item_id": "l.item_id"}
        # Unchanged locations of a completely scanned root are not rewritten by a rescan:
        # their last_seen is the time of that root's latest complete scan.
        last_seen = "CASE WHEN l.present = 1 AND s.at > l.last_seen THEN s.at ELSE l.last_seen END"
        columns.update({c: last_seen if c == "last_seen" else f"l.{c}" for c in _LOCATION_FIRST})
        columns.update({c: f"i.{c}" for c in _ITEM_ONLY})
        schema = {"item_id": pl.Utf8}
        schema.update({c: _frames.polars_type(loc_types[c]) for c in _LOCATION_FIRST})
        schema.update({c: _frames.polars_type(item_types[c]) for c in _ITEM_ONLY})
        casts = {}
        if include_missing:
            columns.update({"present": "l.present", "missing_since": "l.missing_since"})
            schema.update({"present": pl.Int64, "missing_since": pl.Utf8})
            casts["present"] = pl.Boolean
        where: list[str] = [] if include_missing else ["l.present = 1"]
        params: list[Any] = []
        if isinstance(item_ids, str):
            item_ids = [item_ids]
        if item_ids is not None:
            _where_in(where, params, "l.item_id", list(item_ids))
        if uri_prefix:
            # a range on the uri key (BINARY order of UTF-8 is code point order), made exact by substr
            where.append("l.uri >= ? AND l.uri < ? AND substr(l.uri, 1, ?) = ?")
            params += [uri_prefix, uri_prefix + "\U0010ffff", len(uri_prefix), uri_prefix]
        _where_in(where, params, "i.generator", generator)
        _where_in(where, params, "i.status", status)
        source = (
            "FROM locations l LEFT JOIN items i ON i.item_id = l.item_id "
            "LEFT JOIN scans s ON s.root_uri = l.root" + (f" WHERE {' AND '.join(where)}" if where else "")
        )
        decode = {"resources": _frames.RESOURCES_TYPE} if "resources" in columns else {}
        return _frames.SqlQuery(columns, schema, source, tuple(params), "l.uri", casts, page_key="l.uri", decode=decode)

    def runs(self) -> pl.DataFrame:
        schema = {
            "run_id": pl.Int64,
            "command": pl.Utf8,
            "argv": pl.Utf8,
            "tool_version": pl.Utf8,
            "user": pl.Utf8,
            "host": pl.Utf8,
            "started": pl.Utf8,
            "finished": pl.Utf8,
            "status": pl.Utf8,
            "summary": pl.Utf8,
        }
        return _frames.frame(self.catalog.conn, f"SELECT {', '.join(schema)} FROM runs ORDER BY run_id", (), schema)

    # --- embeddings (audit/embed)
    def embed(
        self,
        *,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        checkpoint: str | os.PathLike | None = None,
        device: str = "cpu",
        precision: str = "auto",
        batch_size: int | None = None,
        workers: int | None = None,
        images: bool = True,
        prompts: bool = True,
        retry_skipped: bool = False,
        wait: bool = False,
        progress=None,
        argv: Sequence[str] | None = None,
        embedder=None,
        executor: str = "local",
    ):
        """Embed the images and prompts of ok items that have no vector for this model yet;
        returns an ``EmbedSummary``. ``pretrained=None`` (no checkpoint) means random weights.
        ``embedder``: an already loaded ``OpenClipEmbedder`` (skips loading; notebooks)."""
        from audit.embed.api import EmbedOptions, run_embed

        options = EmbedOptions(
            model=model,
            pretrained=pretrained,
            checkpoint=checkpoint,
            device=device,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            images=images,
            prompts=prompts,
            retry_skipped=retry_skipped,
            executor=executor,
        )
        return run_embed(self.catalog, options, wait=wait, progress=progress, argv=argv, embedder=embedder)

    def import_embeddings(
        self,
        folder: str | os.PathLike,
        *,
        model: str,
        pretrained: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        path_prefix: str = "",
        base: str | os.PathLike | None = None,
        batch: int | None = None,
        wait: bool = False,
        progress=None,
        argv: Sequence[str] | None = None,
    ):
        """Store precomputed vectors (clip-retrieval output: ``img_emb/``, ``text_emb/``,
        ``metadata/``) for catalogued items under the stated model identity, matched by
        ``image_path``; resumable. Returns an ``ImportSummary`` (see ``audit.embed.imported``)."""
        from audit.embed.imported import BATCH, import_embeddings

        return import_embeddings(
            self,
            folder,
            model=model,
            pretrained=pretrained,
            checkpoint=checkpoint,
            path_prefix=path_prefix,
            base=base,
            batch=batch or BATCH,
            wait=wait,
            progress=progress,
            argv=argv,
        )

    # --- FAISS indexes and search (audit/index)
    def index(
        self,
        *,
        model: str | None = None,
        memory_budget: str | int | None = None,
        index_type: str | None = None,
        rebuild: bool = False,
        verify: bool = False,
        wait: bool = False,
        progress=None,
        argv: Sequence[str] | None = None,
        **options,
    ):
        """Build or update the image and prompt FAISS indexes of every model (or ``model``);
        returns an ``IndexSummary``. ``memory_budget``/``index_type`` default to what each
        index was built with (else 4 GiB, automatic). ``options`` go to ``IndexBuilder``."""
        from audit.index.build import IndexBuilder, build_all
        from audit.index.prompts import PromptRefs
        from audit.index.search import resolve_model

        self.catalog.require_writable("index")
        vs = self._vectors()
        models = [resolve_model(vs, model)] if model else vs.models()
        with IndexLock(self.index_dir, wait=wait):
            with self.recorded_run("index", argv) as run:
                PromptRefs(self.catalog.conn).refresh()
                builder = IndexBuilder(
                    self.index_dir,
                    vs,
                    memory_budget=memory_budget,
                    index_type=index_type,
                    rebuild=rebuild,
                    verify=verify,
                    progress=progress,
                    **options,
                )
                run.summary = build_all(builder, models)
                return run.summary

    def search(
        self,
        text: str | None = None,
        image=None,
        item: str | None = None,
        *,
        k: int = 10,
        model: str | None = None,
        space: str = "image",
        checkpoint: str | None = None,
        device: str = "cpu",
    ) -> pl.DataFrame:
        """Nearest items to a text, an image (path or PIL image) or an item id: rank, item_id,
        score (cosine), uri (a present location), present, prompt_excerpt, match."""
        from audit.embed.device import check_device
        from audit.errors import UsageError
        from audit.index.search import resolve_model

        device = check_device(device)
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
    def report(
        self,
        out: str | os.PathLike | None = None,
        formats=None,
        *,
        policy: str | os.PathLike | None = None,
        blur: bool = True,
        grayscale: bool = False,
        force: bool = False,
        html_limit: int | None = None,
        argv: Sequence[str] | None = None,
        progress=None,
    ):
        """Write an evidence report of the current findings; returns a ``ReportSummary``.

        ``out``: default ``reports/<index name>/<UTC timestamp>/`` under the current directory;
        ``formats``: any of html, jsonl, parquet, csv (default all); ``policy``: the policy
        file whose findings to report (default: that of the latest flag run)."""
        from audit.report import build_report

        return build_report(
            self.catalog,
            out,
            formats,
            policy=policy,
            blur=blur,
            grayscale=grayscale,
            force=force,
            html_limit=html_limit,
            argv=argv,
            progress=progress,
        )

    def _vectors(self):
        from audit.catalog.vectors import VectorStore

        return VectorStore(self.catalog.conn)

    def _searcher(self):
        from audit.index.search import Searcher

        if getattr(self, "_search_cache", None) is None:
            self._search_cache = Searcher(self.index_dir, self.catalog.conn)
        return self._search_cache

    # --- flag and review (audit/flag, audit/cluster.py, audit/review.py)
    def flag(
        self,
        policy: "str | os.PathLike | None" = None,
        *,
        model: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str = "cpu",
        full: bool = False,
        embedder=None,
        wait: bool = False,
        progress=None,
        argv: Sequence[str] | None = None,
        **options,
    ):
        """Signals, clusters and findings under ``policy`` (a file, a loaded ``Policy``, or
        ``None`` for the packaged default); returns a ``FlagSummary``. Incremental: only items
        new or changed (``items.seq``) since the last run of this policy and model, and items
        whose image vector arrived since; ``full`` (or a changed policy or model, or clusters
        outgrown by ``recluster_factor``) recomputes everything. ``options``: fields of
        ``audit.flag.runner.FlagOptions`` (n_clusters, cluster_size, cluster_max_k,
        cluster_share, cluster_min_flagged, cluster_min_size, cluster_margin, cluster_candidates,
        dup_pdq_distance, dup_min_cosine, seed_k, seed_min_cosine, batch_size, cluster_sample,
        recluster_factor, block, dup_exact_max, dup_probes, learn)."""
        from audit.flag.runner import FlagOptions, run_flag

        return run_flag(
            self.catalog,
            policy,
            model=model,
            checkpoint=checkpoint,
            device=device,
            embedder=embedder,
            options=FlagOptions(full=full, **options),
            wait=wait,
            progress=progress,
            argv=argv,
        )

    def _findings_store(self):
        from audit.findings.store import FindingsStore

        return FindingsStore(self.catalog.conn)

    def _current_policy_hash(self) -> str | None:
        self._findings_store()
        row = self.catalog.conn.execute("SELECT policy_hash FROM flag_runs ORDER BY run_id DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def findings(
        self,
        *,
        policy_hash: str | None = None,
        all_policies: bool = False,
        active_only: bool = True,
        lazy: bool = False,
        category=None,
        severity=None,
        status=None,
        cluster_id=None,
        item_id=None,
        member_of: str | None = None,
    ) -> pl.DataFrame | pl.LazyFrame:
        """Findings (design.md fields; ``signals`` a list of structs {kind, name, score,
        threshold, margin, detail}, ``detail`` as JSON text: ``explode("signals")``) of the latest flag run's policy
        (or ``policy_hash``, or every policy with ``all_policies``).

        Filters run in SQLite (each one value or a list): ``category``, ``severity``,
        ``status``, ``cluster_id`` (the finding's cluster; indexed), ``item_id`` (indexed),
        ``member_of`` (findings of every item in that cluster or near-duplicate group).
        ``lazy=True``: a LazyFrame read in batches when collected."""
        store = self._findings_store()
        ph = None if all_policies else (policy_hash or self._current_policy_hash())
        return store.findings(
            policy_hash=ph,
            active_only=active_only,
            lazy=lazy,
            category=category,
            severity=severity,
            status=status,
            cluster_id=cluster_id,
            item_id=item_id,
            member_of=member_of,
        )

    def clusters(
        self,
        *,
        policy_hash: str | None = None,
        kind: str | None = None,
        flagged_only: bool = False,
        cluster_id=None,
        lazy: bool = False,
    ) -> pl.DataFrame | pl.LazyFrame:
        """Semantic clusters and near-duplicate groups of the latest flag run's policy,
        largest first (a lazy frame: in storage order); ``kind`` ("semantic", "near_duplicate"), ``flagged_only`` and
        ``cluster_id`` filter in SQLite; ``lazy=True``: a LazyFrame (leave ``members`` out
        of a ``select`` and the member lists are never read). ``members``, ``medoids`` and
        ``categories`` are lists of strings, ``flagged`` a boolean; ``top_terms``,
        ``concept_scores`` and ``review`` stay JSON text (shapes keyed by term and concept)."""
        return self._findings_store().clusters(
            policy_hash=policy_hash or self._current_policy_hash(),
            kind=kind,
            flagged_only=flagged_only,
            cluster_id=cluster_id,
            lazy=lazy,
        )

    def decisions(self) -> pl.DataFrame:
        """The review log, oldest first (append-only; the latest decision on a target wins)."""
        return self._findings_store().decisions()

    def review(
        self,
        item: str | None = None,
        *,
        cluster: str | None = None,
        finding: str | None = None,
        decision: str,
        note: str | None = None,
        by: str | None = None,
        category: str | None = None,
    ) -> int:
        """Record a decision (confirm, dismiss, escalate) on an item, a cluster or a finding;
        returns the decision id. Applied by the next ``flag`` run."""
        from audit.review import record

        return record(
            self.catalog.conn,
            item=item,
            cluster=cluster,
            finding=finding,
            decision=decision,
            note=note,
            by=by,
            category=category,
        )

    def import_decisions(self, path: str | os.PathLike, *, by: str | None = None) -> list[int]:
        """Append the decisions of a JSON file (all or nothing); returns their ids."""
        from audit.review import import_decisions

        return import_decisions(self.catalog.conn, path, by=by)

    def export_bank(self, path: str | os.PathLike) -> int:
        """Write confirmed items as a hash list CSV (hash_type,hash,label); returns rows written."""
        from audit.review import export_bank

        return export_bank(self.catalog.conn, path)
