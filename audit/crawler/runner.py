"""Drives a crawl: lists sources, skips what is unchanged, reads the rest in worker
processes, and commits results to the catalog in small transactions.

Crash safety comes from the order of writes: a location is committed together with its
item, and a container (archive) is remembered as done only after all of its members are
committed. Whatever a SIGKILL interrupts is simply read again by the next crawl.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from audit.catalog.store import Catalog
from audit.ingest.base import (
    ContainerDone,
    ContainerUnchanged,
    DirectoryListed,
    DirectoryUnchanged,
    Entry,
    FilesUnchanged,
    Source,
)
from audit.timeutil import utc_now

if TYPE_CHECKING:
    from audit.crawler.worker import ReadResult

_UNLOADED = object()
# Entries per task sent to a worker: enough to amortise inter-process overhead, small
# enough that both cores stay busy on small archives.
TASK_ENTRIES = 16
# Bytes carried (``Entry.data`` and sidecar data: archive members, remote objects) per task;
# a listing chunk holding this much is dispatched at once instead of waiting for
# ``LISTING_CHUNK`` entries.
TASK_BYTES = 32 << 20
# Entries looked up in the catalog at once to decide what changed.
LISTING_CHUNK = 2048
# Carried bytes the crawler holds at once: listed but not yet dispatched, plus in flight to
# workers (each in-flight byte also exists once in a worker, and once more while it is being
# pickled). The crawler asks its source for the next entry only below this, and submits a
# task only while in-flight bytes stay within it (one task may always run), so the bytes
# held stay under this budget plus one member, however large or many the members are.
# 128 MiB keeps both workers fed with typical images (a few MiB each) and the crawl's peak
# memory far below a gigabyte for any archive.
CRAWL_DATA_BUDGET = 128 << 20
COMMIT_EVERY = 256
COMMIT_SECONDS = 2.0


@dataclass
class CrawlSummary:
    listed: int = 0
    read: int = 0
    unchanged: int = 0
    new_items: int = 0
    new_locations: int = 0
    changed: int = 0
    moved: int = 0
    missing: int = 0
    errors: int = 0
    containers_skipped: int = 0
    reread: int = 0  # unchanged files read again (``reread``)
    bytes_read: int = 0
    duration_s: float = 0.0
    error_reasons: Counter = field(default_factory=Counter)
    error_examples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_reasons"] = dict(self.error_reasons.most_common())
        return out


ProgressFn = Callable[[str, int], None]  # (event, count): "listed", "done", "total"


class Crawler:
    def __init__(
        self,
        catalog: Catalog,
        *,
        run_id: int,
        workers: int | None = None,
        progress: ProgressFn | None = None,
        pool=None,
        reread: str | None = None,
    ):
        """``pool``: where reads run instead of a local process pool, an object with
        ``workers``, ``submit(fn, task) -> Future`` and ``shutdown`` (``audit.onray.crawl``).

        ``reread``: read unchanged files again, ``"stale"``: those whose catalog row an older
        reader wrote (``READER_VERSION``: rows from before provenance, frames and video
        hashes) or that failed to decode; ``"all"``: every file. Archives and directories
        are then listed in full (their unchanged shortcuts are off), and each re-read row
        is upserted as a changed file's would be (its place in the change sequence moves
        only when what the later stages read changed)."""
        if reread not in (None, "stale", "all"):
            raise ValueError(f"reread must be None, 'stale' or 'all', not {reread!r}")
        self.reread = reread
        self.catalog = catalog
        self.run_id = run_id
        self.workers = pool.workers if pool is not None else (os.cpu_count() or 1) if workers is None else workers
        self.progress = progress or (lambda event, n: None)
        self.summary = CrawlSummary()
        self._pending_items: list[dict[str, Any]] = []
        self._pending_locations: list[dict[str, Any]] = []
        self._last_commit = time.monotonic()
        self._pool: ProcessPoolExecutor | None = pool
        self._inflight: set[Future] = set()
        self._inflight_bytes = 0

    # --- public
    def crawl(self, sources: Iterable[Source]) -> CrawlSummary:
        started = time.monotonic()
        try:
            for source in sources:
                self._crawl_source(source)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self.summary.duration_s = round(time.monotonic() - started, 3)
        return self.summary

    # --- listing
    def _crawl_source(self, source: Source) -> None:
        # Unchanged locations of a complete source are not rewritten (a rescan of a large,
        # unchanged tree then writes almost nothing); their rowids are marked here instead,
        # and whatever is left unmarked afterwards has gone missing.
        self._root = source.root_uri if source.complete else None
        # A byte per catalogued rowid (a bytearray, not numpy: a rescan imports only what it uses).
        self._seen = bytearray(self.catalog.max_location_rowid() + 1 if source.complete else 0)
        self._seen_count = 0
        self._listings: dict[str, Any] = {}
        self._rebuild: set[str] = set()
        self._dir_mtimes: dict[str, int] = {}
        self._unchanged_dir: tuple[str, Any] | None = None  # (directory, listing) of the last check
        chunk: list[Entry] = []
        chunk_bytes = 0
        # A complete local tree compares unchanged files against the cached listing itself:
        # no Entry, chunk or lookup per file on a rescan (not when re-reading: then every file
        # is looked at one by one in _dispatch).
        if self._root is not None and not self.reread and getattr(source, "accepts_known_files", False):
            listed_iter = source.entries(self._unchanged, known_files=self._known_files)
        else:
            listed_iter = source.entries(self._unchanged)
        for listed in listed_iter:
            if isinstance(listed, Entry):
                chunk.append(listed)
                chunk_bytes += carried_bytes(listed)
                del listed  # the chunk holds it; this name must not keep it alive past dispatch
                if len(chunk) >= LISTING_CHUNK or chunk_bytes >= TASK_BYTES:
                    self._dispatch(chunk)
                    chunk, chunk_bytes = [], 0
                self._wait_for_room(chunk_bytes)
            elif isinstance(listed, ContainerUnchanged):
                self._dispatch(chunk)
                chunk, chunk_bytes = [], 0
                self._container_unchanged(listed.uri, listed.members)
            elif isinstance(listed, DirectoryListed):
                self._dir_mtimes[listed.uri] = listed.mtime_ns
                self._rebuild.add(listed.uri)
            elif isinstance(listed, FilesUnchanged):
                self._mark_seen(listed.rowids)
                self._count_unlisted_unchanged(len(listed.rowids))
            elif isinstance(listed, DirectoryUnchanged):
                self._directory_unchanged(listed.uri)
            elif isinstance(listed, ContainerDone):
                self._dispatch(chunk)
                chunk, chunk_bytes = [], 0
                self._drain()  # every member committed before the container counts as done
                self.catalog.container_done(listed.uri, listed.size, listed.mtime_ns, now=utc_now())
        self._dispatch(chunk)
        self._drain()
        if source.complete:
            self._record_missing(source.root_uri)
            # Listings are rebuilt from the committed location rows, after the last write.
            self.catalog.build_dir_listings(sorted(self._rebuild), self._dir_mtimes)

    def _unchanged(self, uri: str, size: int, mtime_ns: int) -> bool:
        if self.reread:  # every file is looked at one by one in _dispatch
            return False
        if uri.endswith("/"):  # a directory (trust_dir_mtime): keep its listing for what follows
            if self._root is None:
                return False
            self._unchanged_dir = (uri[:-1], self.catalog.dir_listing_if_unchanged(uri[:-1], mtime_ns))
            return self._unchanged_dir[1] is not None
        return self.catalog.container_unchanged(uri, size, mtime_ns) or self.catalog.location_unchanged(
            uri, size, mtime_ns
        )

    def _directory_unchanged(self, directory: str) -> None:
        kept = self._unchanged_dir
        listing = kept[1] if kept and kept[0] == directory else self.catalog.dir_listing(directory)
        listing = listing or {}
        self._mark_seen(k[2] for k in listing.values())
        self._count_unlisted_unchanged(len(listing))

    def _mark_seen(self, rowids: Iterable[int]) -> None:
        seen = self._seen
        limit = len(seen)
        fresh = 0
        for i in rowids:
            if i < limit and not seen[i]:
                seen[i] = 1
                fresh += 1
        self._seen_count += fresh

    def _container_unchanged(self, uri: str, members: str = "!/") -> None:
        if self._root is not None:
            rowids = self.catalog.rowids_under(uri + members)
            self._mark_seen(rowids)
            n = len(rowids)
        else:
            n = self.catalog.touch_container(uri, run_id=self.run_id, now=utc_now(), members=members)
        self.summary.containers_skipped += 1
        self._count_unlisted_unchanged(n)

    def _count_unlisted_unchanged(self, n: int) -> None:
        """Count catalogued locations settled without the source listing them one by one."""
        self.summary.listed += n
        self.summary.unchanged += n
        self.progress("listed", n)
        self.progress("done", n)

    def _known_files(self, directory: str) -> dict[str, tuple[int, int, int]] | None:
        """The cached listing of ``directory`` (kept for its remaining entries)."""
        listings = self._listings
        if len(listings) > 256:
            listings.clear()
        listing = listings.get(directory, _UNLOADED)
        if listing is _UNLOADED:
            listing = listings[directory] = self.catalog.dir_listing(directory)
            if listing is None:
                self._rebuild.add(directory)
        return listing

    def _unchanged_by_listing(self, entries: list[Entry]) -> list[Entry]:
        """Settle the unchanged files of cached directory listings without a lookup per
        file; returns the entries still to be looked up."""
        listings = self._listings
        if len(listings) > 256:
            listings.clear()
        rest: list[Entry] = []
        rowids: list[int] = []
        for e in entries:
            directory, _, name = e.uri.rpartition("/")
            listing = listings.get(directory, _UNLOADED)
            if listing is _UNLOADED:
                listing = listings[directory] = self.catalog.dir_listing(directory)
                if listing is None:
                    self._rebuild.add(directory)
            known = listing.get(name) if listing else None
            if known is not None and e.error is None and known[0] == e.size and known[1] == e.mtime_ns and e.mtime_ns:
                rowids.append(known[2])
            else:
                rest.append(e)
        if rowids:
            self._mark_seen(rowids)
            self.summary.unchanged += len(rowids)
            self.progress("done", len(rowids))
        return rest

    def _dispatch(self, chunk: list[Entry]) -> None:
        """Settle the unchanged entries of ``chunk`` and send the rest to be read. Takes the
        entries out of ``chunk``: once a task's results are back, nothing here keeps its
        bytes alive."""
        if not chunk:
            return
        entries = chunk[:]
        chunk.clear()
        self.summary.listed += len(entries)
        self.progress("listed", len(entries))
        if self._root is not None and not self.reread:
            entries = self._unchanged_by_listing(entries)
            if not entries:
                return
        known = self.catalog.known_locations([e.uri for e in entries])
        unchanged: list[Any] = []
        todo = []
        for e in entries:
            k = known.get(e.uri)
            if (
                k is not None
                and e.error is None
                and k[2] != "missing"
                and k[3] is not None  # an item was read: errors without bytes are retried
                and e.mtime_ns
                and k[0] == e.size
                and k[1] == e.mtime_ns
            ):
                unchanged.append((e, k))
            else:
                todo.append(e)
        if unchanged and self.reread:
            from audit.crawler.worker import READER_VERSION

            stale = (
                None if self.reread == "all" else self.catalog.stale_items([k[3] for _, k in unchanged], READER_VERSION)
            )
            again = [(e, k) for e, k in unchanged if stale is None or k[3] in stale]
            if again:
                todo += [e for e, _ in again]
                self.summary.reread += len(again)
                chosen = {id(e) for e, _ in again}
                unchanged = [(e, k) for e, k in unchanged if id(e) not in chosen]
        unchanged = [k[4] if self._root is not None else e.uri for e, k in unchanged]
        if unchanged:
            if self._root is not None:
                self._mark_seen(unchanged)
            else:
                self.catalog.touch_locations(unchanged, run_id=self.run_id, now=utc_now())
            self.summary.unchanged += len(unchanged)
            self.progress("done", len(unchanged))
        del entries
        queue = deque(todo)
        del todo
        for task in _tasks(queue):
            self._submit(task, {e.uri: known.get(e.uri) for e in task})
            del task

    # --- reading
    def _start_pool(self) -> ProcessPoolExecutor | None:
        # Started on the first file that must be read: a rescan with nothing new pays nothing.
        if self._pool is None and self.workers > 1:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["audit.crawler.worker", "audit.meta", "PIL.Image", "numpy"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def _wait_for_room(self, pending_bytes: int) -> None:
        """Before the source reads more: collect results until what is held (``pending_bytes``
        not dispatched, plus in flight) is below ``CRAWL_DATA_BUDGET``."""
        while self._inflight and self._inflight_bytes + pending_bytes >= CRAWL_DATA_BUDGET:
            self._collect(block=True)

    def _submit(self, task: list[Entry], known: dict[str, Any]) -> None:
        from audit.crawler.worker import read_entries  # numpy, PIL, pdqhash: only once a file is read

        if self._start_pool() is None:
            self._absorb(read_entries(task), known)
            return
        size = sum(carried_bytes(e) for e in task)
        while self._inflight and (
            len(self._inflight) >= self.workers * 3 or self._inflight_bytes + size > CRAWL_DATA_BUDGET
        ):
            self._collect(block=True)
        fut = self._pool.submit(read_entries, task)
        fut.known = known  # type: ignore[attr-defined]
        fut.carried = size  # type: ignore[attr-defined]
        self._inflight.add(fut)
        self._inflight_bytes += size
        self._collect(block=False)

    def _collect(self, *, block: bool) -> None:
        if not self._inflight:
            return
        done, _ = wait(self._inflight, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for fut in done:
            self._inflight.discard(fut)
            self._inflight_bytes -= fut.carried  # type: ignore[attr-defined]
            self._absorb(fut.result(), fut.known)  # type: ignore[attr-defined]

    def _drain(self) -> None:
        while self._inflight:
            self._collect(block=True)
        self._commit()

    def _absorb(self, results: list[ReadResult], known: dict[str, Any]) -> None:
        now = utc_now()
        s = self.summary
        for r in results:
            prev = known.get(r.uri)
            loc = r.location
            loc.update(
                present=1, first_seen=now, last_seen=now, missing_since=None, seen_run=self.run_id, root=self._root
            )
            if self._root is not None:
                self._rebuild.add(r.uri.rpartition("/")[0])
            self._pending_locations.append(loc)
            if r.item is not None:
                r.item.update(first_seen=now, last_seen=now)
                self._pending_items.append(r.item)
                s.read += 1
                s.bytes_read += r.bytes_read
            if prev is None:
                s.new_locations += 1
            elif prev[3] is not None and prev[3] != loc["item_id"]:
                s.changed += 1
            if loc["status"] == "error":
                s.errors += 1
                reason = (loc["error"] or "error").split(":")[0]
                s.error_reasons[reason] += 1
                if len(s.error_examples) < 20:
                    s.error_examples.append({"uri": r.uri, "error": loc["error"] or ""})
        self.progress("done", len(results))
        if len(self._pending_locations) >= COMMIT_EVERY or time.monotonic() - self._last_commit > COMMIT_SECONDS:
            self._commit()

    def _commit(self) -> None:
        if not self._pending_locations and not self._pending_items:
            return
        new_ids = {it["item_id"] for it in self._pending_items}
        already = self.catalog.existing_items(list(new_ids))
        self.summary.new_items += len(new_ids - already)
        self.catalog.record(self._pending_items, self._pending_locations)
        self._pending_items, self._pending_locations = [], []
        self._last_commit = time.monotonic()

    def _record_missing(self, root_uri: str) -> None:
        gone = self.catalog.mark_missing(
            root_uri, run_id=self.run_id, now=utc_now(), seen=self._seen, seen_count=self._seen_count
        )
        if not gone:
            return
        still_present = self.catalog.items_written_in(self.run_id, [g[1] for g in gone if g[1]])
        moved = sum(1 for _, item_id in gone if item_id in still_present)
        self._rebuild.update(uri.rpartition("/")[0] for uri, _ in gone)
        self.summary.moved += moved
        self.summary.missing += len(gone) - moved


def carried_bytes(e: Entry) -> int:
    """Bytes an entry carries in memory (its data and its sidecars' data)."""
    n = len(e.data) if e.data is not None else 0
    for sc in e.sidecars:
        if sc.data is not None:
            n += len(sc.data)
    return n


def _tasks(queue: deque[Entry]) -> Iterable[list[Entry]]:
    """Tasks of up to ``TASK_ENTRIES`` entries or ``TASK_BYTES`` carried bytes, taken off
    ``queue`` as they are handed out."""
    task: list[Entry] = []
    size = 0
    while queue:
        e = queue.popleft()
        task.append(e)
        size += carried_bytes(e)
        if len(task) >= TASK_ENTRIES or size >= TASK_BYTES:
            yield task
            task, size = [], 0
    if task:
        yield task
