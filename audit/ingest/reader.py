"""Read an item's bytes again from the uri the crawl recorded.

Every stage after the crawl (embed, report thumbnails, notebook grids) reads originals
through this one reader, for every uri form the crawl writes (see ``audit.ingest``):

- a local path (absolute, as catalogued), or ``file://`` URL: opened with
  ``safeio.open_regular``, so an original replaced by a fifo, device or socket since the
  crawl is a ``ReadError`` at once, never a read that blocks or never ends;
- an archive member ``"<archive uri>!/<member>"`` (tar, tar.gz/bz2/xz, zip), the archive
  itself local or an fsspec URL, members named exactly as the crawl named them
  (``members.MemberNamer``: duplicates ``"#<position>"``);
- a member of a nested archive ``"<outer>!/<inner.tar>!/<member>"``, to the crawl's
  ``MAX_NESTING_DEPTH``;
- any other fsspec URL (``s3://``, ``gs://``, ``memory://`` ...).

Archives are opened once per process and kept (a small LRU) with a name -> member index,
so the members of one archive in a shard cost one listing, not one per member. A nested
archive is held in memory (at most ``NESTED_SPOOL_BYTES``; the cache holds at most
``CACHE_SPOOL_BYTES`` of them); a larger nested tar is streamed through for each read.
Reads of a compressed tar seek within the decompressed stream (backwards means
re-decompressing from the start): the runner orders work by uri, i.e. mostly by member order.

Every read is capped (``max_bytes``) and made in blocks, whatever sizes a header declares.
Every failure raises ``ReadError`` with a one-line reason, recorded as an embed skip.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import zipfile
from collections import OrderedDict
from typing import IO, Any

from audit.ingest._common import DEFAULT_MAX_MEMBER_BYTES, archive_kind, describe, is_url, path_of_safe_uri
from audit.ingest.members import MAX_NESTING_DEPTH, ExpansionBudget, MemberNamer, tar_stream
from audit.safeio import NotRegularFile, TooLarge, open_regular, read_capped

MAX_OPEN_ARCHIVES = 4
MAX_BYTES = 512 * 1024 * 1024
# A nested archive is read into memory to be indexed; the crawl opens nested zips only up
# to the member cap, so this is the same number.
NESTED_SPOOL_BYTES = DEFAULT_MAX_MEMBER_BYTES
# Nested archives kept in memory between reads, all together.
CACHE_SPOOL_BYTES = 256 << 20


class ReadError(Exception):
    pass


def read_uri(uri: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes stored at ``uri``; ``ReadError`` with a reason when they cannot be read."""
    archive, member = split_member(uri)
    try:
        shard, row = split_parquet_row(uri)
        if shard is not None:
            return _PARQUET.read(shard, row, max_bytes)
        if archive is not None:
            return _ARCHIVES.read(archive, member, max_bytes)
        if is_url(uri) and not uri.startswith("file://"):
            return _read_url(uri, max_bytes)
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        if not os.path.lexists(path):
            path = path_of_safe_uri(path)  # a name that is not UTF-8, stored percent-escaped
        with open_regular(path) as fh:
            return read_capped(fh, max_bytes)
    except ReadError:
        raise
    except TooLarge:
        raise ReadError(f"larger than {max_bytes} bytes") from None
    except NotRegularFile as exc:
        raise ReadError(exc.strerror or "not a regular file: not read") from None
    except FileNotFoundError:
        raise ReadError("file not found (moved or deleted since the crawl)") from None
    except OSError as exc:
        raise ReadError(f"unreadable: {exc.strerror or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - archive/network libraries raise many types
        raise ReadError(f"unreadable: {describe(exc)[:200]}") from None


def split_parquet_row(uri: str) -> tuple[str | None, int]:
    """("<x.parquet uri>", N) for the uri of a Parquet row with image bytes ("...#row=N",
    N 1-based, as ``ManifestSource`` names them), else (None, 0)."""
    base, sep, row = uri.rpartition("#row=")
    if sep and row.isdigit() and base.lower().endswith(".parquet"):
        return base, int(row)
    return None, 0


class _ParquetRows:
    """Image bytes of Parquet rows, re-read by row number. Keeps the image column of the
    last row group read (rows are re-read in uri order, so mostly group by group); a group
    whose images pass ``CACHE_SPOOL_BYTES`` is not kept."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._cells: list[Any] = []

    def read(self, shard: str, row: int, max_bytes: int) -> bytes:
        import pyarrow.parquet as pq

        from audit.ingest.datasets import embedded_image_column

        with self.lock:
            stamp = None
            if not is_url(shard) or shard.startswith("file://"):
                path = shard[len("file://") :] if shard.startswith("file://") else shard
                try:
                    st = os.stat(path if os.path.lexists(path) else path_of_safe_uri(path))
                    stamp = (st.st_size, st.st_mtime_ns)
                except OSError:
                    raise ReadError("file not found (moved or deleted since the crawl)") from None
            with _open_binary(shard) as fh:
                pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
                column = embedded_image_column(pf.schema_arrow)
                if column is None:
                    raise ReadError("the Parquet file holds no image bytes (changed since the crawl?)")
                first = 1
                for group in range(pf.num_row_groups):
                    n = pf.metadata.row_group(group).num_rows
                    if row < first + n:
                        break
                    first += n
                else:
                    raise ReadError(f"row {row} not in the Parquet file (it has {first - 1} rows)")
                key = (shard, stamp, group)
                if key != self._key:
                    cells = pf.read_row_group(group, columns=[column]).column(0).to_pylist()
                    held = sum(len(c.get("bytes") or b"") if isinstance(c, dict) else len(c or b"") for c in cells)
                    self._key, self._cells = (key, cells) if held <= CACHE_SPOOL_BYTES else (None, [])
                else:
                    cells = self._cells
            cell = cells[row - first]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not isinstance(data, (bytes, bytearray)):
                raise ReadError(f"row {row} holds no image bytes")
            if len(data) > max_bytes:
                raise ReadError(f"larger than {max_bytes} bytes")
            return bytes(data)


_PARQUET = _ParquetRows()


def split_member(uri: str) -> tuple[str | None, str]:
    """("<archive>", "<member>") for an archive-member uri, else (None, uri).

    The split is at the first ``!/`` whose left side names an archive (the member part may
    itself contain ``!/``: a nested archive's members, or an old crawl's member name).
    """
    start = 0
    while (i := uri.find("!/", start)) >= 0:
        if archive_kind(uri[:i]):
            return uri[:i], uri[i + 2 :]
        start = i + 1
    return None, uri


def _read_url(uri: str, max_bytes: int) -> bytes:
    from audit.ingest.fsspec_source import open_object, url_to_fs

    fs, path = url_to_fs(uri)
    with open_object(fs, path) as fh:
        return read_capped(fh, max_bytes)


def _open_binary(archive: str) -> IO[bytes]:
    if is_url(archive) and not archive.startswith("file://"):
        from audit.ingest.fsspec_source import open_object, url_to_fs

        fs, path = url_to_fs(archive)
        return open_object(fs, path)
    path = archive[len("file://") :] if archive.startswith("file://") else archive
    if not os.path.lexists(path):
        path = path_of_safe_uri(path)
    return open_regular(path)


class _Archive:
    """One open archive and its index: member uri name -> TarInfo / ZipInfo."""

    def __init__(self, uri: str, fh: Any, kind: str, *, spooled: int = 0):
        self.uri = uri
        self.kind = kind
        self.fh = fh
        self.spooled = spooled  # bytes held in memory for a nested archive
        self.stamp: Any = None
        try:
            st = os.fstat(fh.fileno())
            self.stamp = (st.st_size, st.st_mtime_ns)
        except (OSError, AttributeError, ValueError, NotImplementedError, io.UnsupportedOperation):
            pass
        self.index: dict[str, Any] = {}
        namer = MemberNamer()
        if kind == "zip":
            self.zf = zipfile.ZipFile(fh)
            for info in self.zf.infolist():
                name = namer.name(info.filename, is_dir=info.is_dir())
                if name is not None:
                    self.index[name] = info
        else:
            self.tf = tarfile.open(fileobj=fh, mode="r:*")
            for ti in self.tf:
                name = namer.name(ti.name, is_dir=ti.isdir())
                if name is not None:
                    self.index[name] = ti
            self.tf.members = []  # the index keeps what we need

    def raw_name(self, info: Any) -> str:
        return info.filename if self.kind == "zip" else info.name

    def open_member(self, info: Any) -> Any:
        if self.kind == "zip":
            return self.zf.open(info)
        if not info.isreg():
            raise ReadError("archive member is not a regular file")
        fh = self.tf.extractfile(info)
        if fh is None:
            raise ReadError("archive member is not a regular file")
        return fh

    def read(self, info: Any, max_bytes: int) -> bytes:
        size = info.file_size if self.kind == "zip" else info.size
        if size > max_bytes:
            raise ReadError(f"larger than {max_bytes} bytes")
        with self.open_member(info) as fh:
            return read_capped(fh, max_bytes)

    def close(self) -> None:
        try:
            (self.zf if self.kind == "zip" else self.tf).close()
        finally:
            self.fh.close()


_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError)


class _ArchiveCache:
    """Open archives of this process (LRU); reopened when the file changed on disk."""

    def __init__(self, size: int = MAX_OPEN_ARCHIVES, spool_bytes: int = CACHE_SPOOL_BYTES):
        self.size = size
        self.spool_bytes = spool_bytes
        self.open: OrderedDict[str, _Archive] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, archive: str, member: str, max_bytes: int) -> bytes:
        with self.lock:
            arc = self._top(archive)
            try:
                return self._read_in(arc, member, max_bytes, depth=1)
            except TooLarge:
                raise ReadError(f"larger than {max_bytes} bytes") from None
            except _CORRUPT as exc:
                raise ReadError(f"corrupt archive member: {describe(exc)}") from None

    # --- the archive a uri starts with
    def _top(self, archive: str) -> _Archive:
        arc = self.open.get(archive)
        if arc is not None and arc.stamp is not None and not is_url(archive):
            try:
                st = os.stat(archive)
                changed = (st.st_size, st.st_mtime_ns) != arc.stamp
            except OSError:
                changed = True
            if changed:
                self._drop_tree(archive)
                arc = None
        if arc is None:
            kind = archive_kind(archive) or "tar"
            fh = _open_binary(archive)
            try:
                arc = _Archive(archive, fh, kind)
            except _CORRUPT as exc:
                fh.close()
                raise ReadError(f"corrupt or truncated archive: {describe(exc)}") from None
            self._keep(archive, arc)
        self.open.move_to_end(archive)
        return arc

    # --- a member, possibly inside nested archives
    def _read_in(self, arc: _Archive, member: str, max_bytes: int, depth: int) -> bytes:
        info = arc.index.get(member)
        if info is not None:
            return arc.read(info, max_bytes)
        start = 0
        while (i := member.find("!/", start)) >= 0:  # "<inner archive>!/<rest>"
            inner = arc.index.get(member[:i])
            if inner is not None and archive_kind(arc.raw_name(inner).rsplit("/", 1)[-1]):
                if depth >= MAX_NESTING_DEPTH:
                    raise ReadError(f"nested more than {MAX_NESTING_DEPTH} levels of archives deep")
                return self._read_nested(arc, member[:i], inner, member[i + 2 :], max_bytes, depth + 1)
            start = i + 1
        info = arc.index.get(member.replace("!/", "%21/"))  # an older crawl kept "!/" in member names
        if info is not None:
            return arc.read(info, max_bytes)
        raise ReadError("archive member not found (archive changed since the crawl)")

    def _read_nested(self, outer: _Archive, name: str, info: Any, rest: str, max_bytes: int, depth: int) -> bytes:
        uri = f"{outer.uri}!/{name}"
        kind = archive_kind(outer.raw_name(info).rsplit("/", 1)[-1]) or "tar"
        arc = self.open.get(uri)
        if arc is None:
            size = info.file_size if outer.kind == "zip" else info.size
            if size > NESTED_SPOOL_BYTES:
                if kind == "zip":
                    raise ReadError(
                        f"nested zip larger than {NESTED_SPOOL_BYTES} bytes (not opened by the crawl either)"
                    )
                return self._stream_nested(outer, info, rest, max_bytes)
            with outer.open_member(info) as fh:
                data = read_capped(fh, NESTED_SPOOL_BYTES)
            arc = _Archive(uri, io.BytesIO(data), kind, spooled=len(data))
            self._keep(uri, arc)
        self.open.move_to_end(uri)
        return self._read_in(arc, rest, max_bytes, depth)

    def _stream_nested(self, outer: _Archive, info: Any, member: str, max_bytes: int) -> bytes:
        """A member of a nested tar too large to hold: read through the tar stream to it,
        naming members as the crawl did. Only direct members (no deeper nesting)."""
        namer = MemberNamer()
        budget = ExpansionBudget.for_archive(0)
        with outer.open_member(info) as fh:
            tf = tarfile.open(fileobj=tar_stream(fh, budget), mode="r|")
            while (ti := tf.next()) is not None:
                tf.members.clear()
                if namer.name(ti.name, is_dir=ti.isdir()) == member:
                    if not ti.isreg() or ti.size > max_bytes:
                        raise ReadError(
                            "archive member is not a regular file"
                            if not ti.isreg()
                            else f"larger than {max_bytes} bytes"
                        )
                    f = tf.extractfile(ti)
                    return read_capped(f, max_bytes) if f is not None else b""
        raise ReadError("archive member not found (archive changed since the crawl)")

    # --- the cache
    def _keep(self, uri: str, arc: _Archive) -> None:
        self.open[uri] = arc
        while len(self.open) > self.size or sum(a.spooled for a in self.open.values()) > self.spool_bytes:
            oldest = next(iter(self.open))
            if oldest == uri:
                break
            self._drop(oldest)

    def _drop_tree(self, archive: str) -> None:
        """An archive and every nested archive opened from it."""
        for key in [k for k in self.open if k == archive or k.startswith(archive + "!/")]:
            self._drop(key)

    def _drop(self, archive: str) -> None:
        arc = self.open.pop(archive, None)
        if arc is not None:
            try:
                arc.close()
            except Exception:  # noqa: BLE001
                pass

    def clear(self) -> None:
        with self.lock:
            for k in list(self.open):
                self._drop(k)


_ARCHIVES = _ArchiveCache()
