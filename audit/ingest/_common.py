"""Small helpers shared by the readers: file kinds, safe uris, bounded prefetch."""

from __future__ import annotations

import datetime as _dt
import os
import re
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

IMAGE_EXTS = frozenset(
    {
        "png",
        "jpg",
        "jpeg",
        "jpe",
        "jfif",
        "webp",
        "gif",
        "bmp",
        "tif",
        "tiff",
        "avif",
        "heic",
        "heif",
        "hif",
        "jxl",
        "mp4",
        "m4v",
        "mov",
        "webm",
    }
)
SIDECAR_EXTS = frozenset({"txt", "json", "yaml", "yml"})
MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet", ".json")
# tarfile's "r|*" detects gzip, bzip2 and xz (zstd: ``members.tar_stream``); anything ending
# like this is read as an archive.
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

# Archive members and remote objects above this are not read (an error row says so). Their
# bytes travel through the crawler's memory: held in the crawl process, pickled to a
# worker, unpickled there, so one member costs about three to five times its size at
# peak. 256 MiB still holds any image a generator writes (an 8192x8192 RGBA PNG upscale is
# well under it) while keeping one member's cost a fraction of a small machine's memory;
# pass ``max_member_bytes`` to ``open_source`` for more.
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024
SIDECAR_MAX_BYTES = 16 * 1024 * 1024  # a sidecar bigger than this is not attached (recorded in fields)
# Bytes of remote objects fetched ahead of the crawler (``FetchWindow``), all fetches
# together: room for 16 typical images in flight, never 16 capped objects at once.
FETCH_DATA_BUDGET = 64 * 1024 * 1024
FETCH_BLOCK = 1024 * 1024  # remote objects are read in blocks of this size

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def ext_of(name: str) -> str:
    """Lower-case extension without the dot ("" when none)."""
    dot = name.rfind(".")
    return name[dot + 1 :].lower() if dot > 0 else ""


def is_image_name(name: str) -> bool:
    return ext_of(name) in IMAGE_EXTS


def archive_kind(name: str) -> str | None:
    """ "tar" or "zip" when ``name`` looks like an archive, else None."""
    low = name.lower()
    if low.endswith(ZIP_SUFFIXES):
        return "zip"
    if low.endswith(TAR_SUFFIXES):
        return "tar"
    return None


def is_manifest_name(name: str) -> bool:
    return name.lower().endswith(MANIFEST_SUFFIXES)


def is_url(spec: str) -> bool:
    return bool(_SCHEME.match(spec))


def stem_of(name: str) -> str:
    """Name without its last extension ("0001.png" -> "0001")."""
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def safe_uri(text: str) -> str:
    """Make ``text`` storable as UTF-8 (SQLite, JSON, Parquet) without losing information.

    On Linux a file name is bytes; ``os.fsdecode`` turns bytes that are not UTF-8 into lone
    surrogates (U+DC80..U+DCFF, "surrogateescape"), which every UTF-8 encoder rejects. This
    replaces each such surrogate by the percent-escape of the original byte (``b"\\xff"`` ->
    ``"%FF"``), and any other lone surrogate by the percent-escapes of its UTF-8
    ("surrogatepass") bytes. Valid text is returned unchanged, so ordinary uris stay equal to
    their paths. The real path (with its surrogates) stays in ``Entry.path`` for reading.
    A name that literally contains "%FF" could look like an escaped one; that is the one
    ambiguity, and ``Entry.path`` is always exact.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append("%%%02X" % (code - 0xDC00))
        elif 0xD800 <= code <= 0xDFFF:
            out.append("".join("%%%02X" % b for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


_ESCAPED_HIGH_BYTE = re.compile(r"%([89A-F][0-9A-F])")


def path_of_safe_uri(uri: str) -> str:
    """The file system path a ``safe_uri`` stands for: percent-escaped bytes >= 0x80 turned
    back into the raw bytes of a name that is not UTF-8 (as ``os.fsdecode`` gives them)."""
    if "%" not in uri:
        return uri
    raw = _ESCAPED_HIGH_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), uri)
    return os.fsdecode(raw.encode("utf-8", "surrogateescape"))


def to_mtime_ns(value: Any) -> int | None:
    """An mtime as fsspec backends report it (float seconds, datetime, ISO text) in ns."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value * 1_000_000_000)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return int(value.timestamp() * 1_000_000) * 1000
    if isinstance(value, str):
        try:
            return to_mtime_ns(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


class FetchCancelled(Exception):
    """The window was closed while a fetch waited for room in its byte budget."""


class FetchTicket:
    """What one fetch running on a ``FetchWindow`` reads its bytes through: every block it
    holds is counted against the window's byte budget until its result is handed back."""

    def __init__(self, window: "FetchWindow", seq: int) -> None:
        self.window = window
        self.seq = seq
        self.held = 0

    def read(self, fh: Any, limit: int) -> bytes:
        """Everything ``fh`` yields, in blocks; ``safeio.TooLarge`` past ``limit`` bytes."""
        from audit.safeio import TooLarge

        parts: list[bytes] = []
        total = 0
        while True:
            block = fh.read(min(FETCH_BLOCK, limit + 1 - total))
            if not block:
                return b"".join(parts)
            total += len(block)
            if total > limit:
                raise TooLarge(total, limit)
            self.window._take(self, len(block))
            parts.append(block)


class FetchWindow:
    """Runs I/O-bound fetches (remote reads) on a small thread pool, at most ``window``
    ahead of the consumer, and hands results back in submission order.

    Memory is bounded by bytes, not by the count alone: the fetched bytes not yet handed
    back (read through the ``FetchTicket`` each fetch gets as its ``ticket`` keyword) stay
    within ``budget_bytes``, except that the oldest fetch, the one the consumer waits for,
    never waits for room (so the window cannot deadlock): at most budget + one object.
    ``fetch`` functions must not raise: they return an error Entry."""

    def __init__(self, workers: int = 4, window: int = 16, budget_bytes: int | None = None) -> None:
        self.window = window
        self.budget_bytes = FETCH_DATA_BUDGET if budget_bytes is None else budget_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit-fetch")
        self._pending: deque[tuple[Future[Any], FetchTicket]] = deque()
        self._room = threading.Condition()
        self._held = 0
        self._next_seq = 0
        self._oldest = 0  # seq of the oldest result not handed back yet
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
        """Queue one fetch; yields the oldest results while the window is full."""
        ticket = FetchTicket(self, self._next_seq)
        self._next_seq += 1
        self._pending.append((self._pool.submit(fn, *args, ticket=ticket), ticket))
        while len(self._pending) >= self.window:
            yield self._hand_back()

    def ready(self) -> Iterator[Any]:
        """Results already finished, oldest first (never blocks)."""
        while self._pending and self._pending[0][0].done():
            yield self._hand_back()

    def drain(self) -> Iterator[Any]:
        while self._pending:
            yield self._hand_back()

    def _hand_back(self) -> Any:
        fut, ticket = self._pending.popleft()
        try:
            return fut.result()
        finally:
            with self._room:
                self._held -= ticket.held
                ticket.held = 0
                self._oldest = ticket.seq + 1
                self._room.notify_all()

    def _take(self, ticket: FetchTicket, n: int) -> None:
        with self._room:
            while not self._closed and ticket.seq != self._oldest and self._held + n > self.budget_bytes:
                self._room.wait()
            if self._closed:
                raise FetchCancelled("fetch window closed")
            self._held += n
            ticket.held += n

    def close(self) -> None:
        with self._room:
            self._closed = True
            self._room.notify_all()
        for fut, _ in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "FetchWindow":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "timeCreated", "created")
_ETAG_KEYS = ("ETag", "etag", "md5Hash", "md5", "checksum", "crc32c")


def info_mtime_ns(info: dict[str, Any]) -> int | None:
    """Modification time of an fsspec ``info()`` dict in ns, None when the backend has none."""
    for key in _MTIME_KEYS:
        if key in info:
            ns = to_mtime_ns(info[key])
            if ns is not None:
                return ns
    return None


def info_etag(info: dict[str, Any]) -> str | None:
    for key in _ETAG_KEYS:
        value = info.get(key)
        if isinstance(value, (str, int)) and value != "":
            return str(value).strip('"')
    return None


def describe(exc: BaseException) -> str:
    """One line for an OS error: "Permission denied" rather than "[Errno 13] ...: '/x'"."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
