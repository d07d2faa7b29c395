"""Any fsspec URL: memory://, file://, s3://, gs://, https://, ... (a prefix or one object).

- Listing streams directory by directory (``fs.walk``); nothing builds the whole tree.
- Bytes are read here, in the crawler's process, into ``Entry.data`` (a worker process
  cannot see e.g. the parent's ``memory://`` filesystem, nor reuse its connections). A small
  thread pool reads up to 16 objects ahead of the consumer (``FetchWindow``), so remote
  latency overlaps; memory is bounded by that window's byte budget (``FETCH_DATA_BUDGET``).
  Reads are made in blocks and capped, whatever size the listing reported.
- Local paths (``file://``) are opened with ``safeio.open_regular``: a fifo, device or
  socket is an error row, never a blocked read.
- uri = the full URL as fsspec writes it (``fs.unstrip_protocol``): ``memory:///data/a.png``,
  ``file:///abs/a.png``, ``s3://bucket/key.png``. ``root_uri`` uses the same form.
- size and mtime come from the listing's info. Some backends (plain HTTP) report no mtime:
  then ``mtime_ns`` is 0 and change detection rests on size plus the ETag / checksum, kept
  in ``Entry.fields["etag"]`` when the backend reports one. ``memory://`` reports only a
  creation time, used as mtime.
- Sidecars (``stem.txt``/``.json``/``.yaml``/``.yml`` beside an image) are read with the
  image and attached with ``data``.
- Archives in the listing (.tar*, .zip) are containers: ``unchanged()`` is asked first, then
  members stream from ``fs.open`` (tar as a stream; zip reads its central directory and
  seeks member by member). Objects over ``max_member_bytes`` are error entries, not read.
- Parquet objects whose rows hold image bytes (Hugging Face ``datasets`` shards under
  ``hf://``, ``s3://`` ... prefixes) are containers of rows ``"<object url>#row=N"``
  (``datasets.iter_parquet_shard``); other Parquet objects are ignored.
- A listing error (permission, vanished prefix) becomes an error Entry; the walk goes on.
"""

from __future__ import annotations

import posixpath
from typing import Any, Iterator

from audit.errors import InputError
from audit.ingest._common import (
    DEFAULT_MAX_MEMBER_BYTES,
    IMAGE_EXTS,
    SIDECAR_EXTS,
    SIDECAR_MAX_BYTES,
    FetchTicket,
    FetchWindow,
    archive_kind,
    describe,
    ext_of,
    info_etag,
    info_mtime_ns,
    safe_uri,
    stem_of,
)
from audit.ingest.archive import iter_archive
from audit.ingest.datasets import iter_parquet_shard
from audit.ingest.base import Entry, Listed, Sidecar, UnchangedCheck
from audit.safeio import NotRegularFile, TooLarge, open_regular, read_capped

_SIDECAR_ORDER = ("txt", "json", "yaml", "yml")


def url_to_fs(spec: str) -> tuple[Any, str]:
    """``fsspec.core.url_to_fs`` with its failures turned into one-line ``InputError``\\ s."""
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec is a dependency
        raise InputError(f"{spec}: URLs need the fsspec package ({exc})") from None
    try:
        return fsspec.core.url_to_fs(spec)
    except ImportError as exc:
        raise InputError(f"{spec}: no filesystem for this URL scheme is installed ({describe(exc)})") from None
    except ValueError as exc:
        raise InputError(f"{spec}: {describe(exc)}") from None


def object_uri(fs: Any, path: str) -> str:
    return safe_uri(fs.unstrip_protocol(path))


def is_local(fs: Any) -> bool:
    try:
        from fsspec.implementations.local import LocalFileSystem
    except ImportError:  # pragma: no cover - fsspec is a dependency
        return False
    return isinstance(fs, LocalFileSystem)


def open_object(fs: Any, path: str) -> Any:
    """``fs.open(path, "rb")``, except that a local path (``file://``) is opened with
    ``safeio.open_regular``: a fifo, device or socket is refused at once instead of
    blocking (or reading forever)."""
    if is_local(fs):
        return open_regular(path)
    return fs.open(path, "rb")


def fetch_object(
    fs: Any,
    path: str,
    uri: str,
    source: str,
    *,
    info: dict[str, Any] | None = None,
    sidecars: tuple[tuple[str, str], ...] = (),
    fields: dict[str, Any] | None = None,
    container: str | None = None,
    max_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ticket: FetchTicket | None = None,
) -> Entry:
    """One object's Entry with its bytes (and its sidecars' bytes). Never raises: a failure
    is an error Entry. ``info`` is the listing's info dict when the caller has it. Bytes
    are read in blocks, capped at ``max_bytes`` whatever size the listing reported, and
    counted against the ``FetchWindow`` budget when a ``ticket`` is given."""
    fields = dict(fields or {})
    read = ticket.read if ticket is not None else read_capped
    try:
        if info is None:
            info = fs.info(path)
        if info.get("type") == "directory":
            return Entry(uri=uri, source=source, error="is a directory, not a file", container=container, fields=fields)
        if info.get("type") == "other":  # fsspec's word for a local fifo, socket or device
            return Entry(
                uri=uri, source=source, error="not a regular file: not read", container=container, fields=fields
            )
        size = info.get("size")
        mtime_ns = info_mtime_ns(info) or 0
        etag = info_etag(info)
        if etag:
            fields["etag"] = etag
        if isinstance(size, int) and size > max_bytes:
            return Entry(
                uri=uri,
                source=source,
                size=size,
                mtime_ns=mtime_ns,
                error=f"object too large: {size} bytes > {max_bytes} byte cap (not read)",
                container=container,
                fields=fields,
            )
        try:
            with open_object(fs, path) as fh:
                data = read(fh, max_bytes)
        except TooLarge:
            return Entry(
                uri=uri,
                source=source,
                mtime_ns=mtime_ns,
                error=f"object too large: more than {max_bytes} byte cap (not read)",
                container=container,
                fields=fields,
            )
    except NotRegularFile as exc:
        return Entry(
            uri=uri,
            source=source,
            error=exc.strerror or "not a regular file: not read",
            container=container,
            fields=fields,
        )
    except FileNotFoundError:
        return Entry(uri=uri, source=source, error="file not found", container=container, fields=fields)
    except Exception as exc:  # noqa: BLE001 - any backend failure is this object's error
        return Entry(uri=uri, source=source, error=f"unreadable: {describe(exc)}", container=container, fields=fields)
    found: list[Sidecar] = []
    for name, side_path in sidecars:
        try:
            with open_object(fs, side_path) as fh:
                found.append(Sidecar(name=name, data=read(fh, SIDECAR_MAX_BYTES)))
        except TooLarge:
            fields.setdefault("sidecars_skipped", []).append(
                f"{name}: larger than {SIDECAR_MAX_BYTES} bytes (not attached)"
            )
        except Exception as exc:  # noqa: BLE001
            fields.setdefault("sidecars_skipped", []).append(f"{name}: unreadable: {describe(exc)}")
    return Entry(
        uri=uri,
        source=source,
        size=len(data),
        mtime_ns=mtime_ns,
        data=data,
        sidecars=tuple(found),
        fields=fields,
        container=container,
    )


class FsspecSource:
    """Everything under an fsspec URL prefix, or one object at a URL."""

    complete = True

    def __init__(
        self,
        spec: str,
        *,
        fs: Any = None,
        path: str | None = None,
        open_archives: bool = True,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
        workers: int = 4,
        window: int = 16,
    ) -> None:
        if fs is None or path is None:
            fs, path = url_to_fs(spec)
        self.spec = spec
        self.fs = fs
        self.path = path
        try:
            self.info = fs.info(path)
        except FileNotFoundError:
            raise InputError(f"source not found: {spec}") from None
        except Exception as exc:  # noqa: BLE001 - a backend's failure to reach the source
            raise InputError(f"cannot use source {spec}: {describe(exc)}") from None
        self.is_dir = self.info.get("type") == "directory"
        uri = object_uri(fs, path)
        self.root_uri = uri.rstrip("/") if self.is_dir and not uri.endswith(":///") else uri
        self.open_archives = open_archives
        self.max_member_bytes = max_member_bytes
        self.workers = workers
        self.window = window

    def entries(self, unchanged: UnchangedCheck) -> Iterator[Listed]:
        with FetchWindow(self.workers, self.window) as window:
            if self.is_dir:
                yield from self._walk(window, unchanged)
            else:
                yield from self._single(window, unchanged)

    def _single(self, window: FetchWindow, unchanged: UnchangedCheck) -> Iterator[Listed]:
        kind = archive_kind(self.path)
        if kind and self.open_archives:
            yield from self._archive(self.path, self.info, kind, unchanged)
            return
        directory = posixpath.dirname(self.path)
        name = posixpath.basename(self.path)
        sidecars = []
        for stem in dict.fromkeys((stem_of(name), name)):
            for ext in _SIDECAR_ORDER:
                candidate = posixpath.join(directory, f"{stem}.{ext}")
                try:
                    if candidate != self.path and self.fs.isfile(candidate):
                        sidecars.append((f"{stem}.{ext}", candidate))
                except Exception:  # noqa: BLE001 - a sidecar probe failing is no reason to stop
                    pass
        known = self._listed_if_unchanged(self.path, self.info, unchanged)
        if known is not None:
            yield known
            return
        yield from window.submit(self._fetch, self.path, self.info, tuple(sidecars))
        yield from window.drain()

    def _walk(self, window: FetchWindow, unchanged: UnchangedCheck) -> Iterator[Listed]:
        # Our own walk rather than fs.walk: fs.walk drops listing errors below the top level
        # (its on_error is not passed down), and an audit records every skip.
        fs = self.fs
        stack = [self.path.rstrip("/") or "/"]
        while stack:
            dirpath = stack.pop()
            try:
                listing = fs.ls(dirpath, detail=True)
            except Exception as exc:  # noqa: BLE001 - any backend failure: record, go on
                yield Entry(
                    uri=object_uri(fs, dirpath), source=self.spec, error=f"unreadable directory: {describe(exc)}"
                )
                continue
            sidecars: dict[str, list[str]] = {}
            images: list[tuple[str, str, dict[str, Any]]] = []
            archives: list[tuple[str, dict[str, Any], str]] = []
            shards: list[tuple[str, dict[str, Any]]] = []  # Parquet: read as shards when they hold images
            subdirs: list[str] = []
            for info in listing:
                path = info["name"].rstrip("/")
                if path == dirpath:
                    continue
                name = path.rsplit("/", 1)[-1]
                if info.get("type") == "directory":
                    if info.get("islink"):
                        yield Entry(
                            uri=object_uri(fs, path),
                            source=self.spec,
                            error="symlinked directory not followed (could loop); crawl it as its own SOURCE",
                        )
                    else:
                        subdirs.append(path)
                    continue
                ext = ext_of(name)
                if ext in IMAGE_EXTS:
                    images.append((name, path, info))
                elif ext in SIDECAR_EXTS:
                    sidecars.setdefault(stem_of(name), []).append(name)
                elif self.open_archives and (kind := archive_kind(name)):
                    archives.append((path, info, kind))
                elif ext == "parquet":
                    shards.append((path, info))
            del listing
            try:  # s3fs & co. cache every listing: drop it, or memory grows with the bucket
                fs.invalidate_cache(dirpath)
            except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
                pass
            prefix = dirpath.rstrip("/") + "/"
            images.sort()
            for name, path, info in images:
                known = self._listed_if_unchanged(path, info, unchanged)
                if known is not None:
                    yield known
                    continue
                found = tuple((n, prefix + n) for n in sidecars.get(stem_of(name), []) + sidecars.get(name, []))
                yield from window.submit(self._fetch, path, info, found)
                yield from window.ready()
            for path, info, kind in sorted(archives):
                yield from window.drain()
                yield from self._archive(path, info, kind, unchanged)
            for path, info in sorted(shards):
                yield from window.drain()
                uri = object_uri(fs, path)
                size = info.get("size")
                yield from iter_parquet_shard(
                    self.spec,
                    uri,
                    uri,
                    unchanged,
                    size=int(size) if isinstance(size, int) else 0,
                    mtime_ns=info_mtime_ns(info) or 0,
                    local_path=None,
                    max_member_bytes=self.max_member_bytes,
                )
            stack.extend(sorted(subdirs, reverse=True))
        yield from window.drain()

    def _listed_if_unchanged(self, path: str, info: dict[str, Any], unchanged: UnchangedCheck) -> Entry | None:
        """An Entry without bytes for an object the catalog already holds at this size and
        mtime: the crawler skips it, and the object is not downloaded again."""
        size = info.get("size")
        mtime_ns = info_mtime_ns(info) or 0
        uri = object_uri(self.fs, path)
        if isinstance(size, int) and mtime_ns and unchanged(uri, size, mtime_ns):
            return Entry(uri=uri, source=self.spec, size=size, mtime_ns=mtime_ns)
        return None

    def _fetch(
        self, path: str, info: dict[str, Any], sidecars: tuple[tuple[str, str], ...], ticket: FetchTicket | None = None
    ) -> Entry:
        return fetch_object(
            self.fs,
            path,
            object_uri(self.fs, path),
            self.spec,
            info=info,
            sidecars=sidecars,
            max_bytes=self.max_member_bytes,
            ticket=ticket,
        )

    def _archive(self, path: str, info: dict[str, Any], kind: str, unchanged: UnchangedCheck) -> Iterator[Listed]:
        fs = self.fs
        size = info.get("size")
        yield from iter_archive(
            self.spec,
            object_uri(fs, path),
            lambda: open_object(fs, path),
            unchanged,
            size=int(size) if isinstance(size, int) else 0,
            mtime_ns=info_mtime_ns(info) or 0,
            kind=kind,
            max_member_bytes=self.max_member_bytes,
        )
