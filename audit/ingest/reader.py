"""Read an item's bytes again from the uri the crawl recorded.

Every stage after the crawl (embed, report thumbnails, notebook grids) reads originals
through this one reader, for every uri form the crawl writes (see ``audit.ingest``):

- a local path (absolute, as catalogued), or ``file://`` URL;
- an archive member ``"<archive uri>!/<member path>"`` (tar, tar.gz/bz2/xz, zip), the
  archive itself local or an fsspec URL;
- any other fsspec URL (``s3://``, ``gs://``, ``memory://`` ...).

Archives are opened once per process and kept (a small LRU) with a name -> member index,
so the members of one archive in a shard cost one listing, not one per member. Reads of
a compressed tar seek within the decompressed stream (backwards means re-decompressing
from the start): the runner orders work by uri, i.e. mostly by member order.

Every failure raises ``ReadError`` with a one-line reason, recorded as an embed skip.
"""

from __future__ import annotations

import os
import tarfile
import threading
import zipfile
from collections import OrderedDict
from typing import IO, Any

from audit.ingest._common import archive_kind, is_url, path_of_safe_uri, safe_uri

MAX_OPEN_ARCHIVES = 4
MAX_BYTES = 512 * 1024 * 1024


class ReadError(Exception):
    pass


def read_uri(uri: str, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes stored at ``uri``; ``ReadError`` with a reason when they cannot be read."""
    archive, member = split_member(uri)
    try:
        if archive is not None:
            return _ARCHIVES.read(archive, member, max_bytes)
        if is_url(uri) and not uri.startswith("file://"):
            return _read_url(uri, max_bytes)
        path = uri[len("file://") :] if uri.startswith("file://") else uri
        if not os.path.lexists(path):
            path = path_of_safe_uri(path)  # a name that is not UTF-8, stored percent-escaped
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except ReadError:
        raise
    except FileNotFoundError:
        raise ReadError("file not found (moved or deleted since the crawl)") from None
    except OSError as exc:
        raise ReadError(f"unreadable: {exc.strerror or type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - archive/network libraries raise many types
        raise ReadError(f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
    if len(data) > max_bytes:
        raise ReadError(f"larger than {max_bytes} bytes")
    return data


def split_member(uri: str) -> tuple[str | None, str]:
    """("<archive>", "<member>") for an archive-member uri, else (None, uri).

    The split is at the first ``!/`` whose left side names an archive (a member may
    itself contain ``!/``).
    """
    start = 0
    while (i := uri.find("!/", start)) >= 0:
        if archive_kind(uri[:i]):
            return uri[:i], uri[i + 2 :]
        start = i + 1
    return None, uri


def _read_url(uri: str, max_bytes: int) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb") as fh:
        data = fh.read(max_bytes + 1)
    return data


def _open_binary(archive: str) -> IO[bytes]:
    if is_url(archive) and not archive.startswith("file://"):
        import fsspec

        return fsspec.open(archive, "rb").open()
    return open(archive[len("file://") :] if archive.startswith("file://") else archive, "rb")


class _Archive:
    def __init__(self, uri: str):
        self.uri = uri
        self.kind = archive_kind(uri)
        self.fh = _open_binary(uri)
        try:
            st = os.fstat(self.fh.fileno())
            self.stamp: Any = (st.st_size, st.st_mtime_ns)
        except (OSError, AttributeError, ValueError, NotImplementedError):
            self.stamp = None
        self.index: dict[str, Any] = {}
        if self.kind == "zip":
            self.zf = zipfile.ZipFile(self.fh)
            for info in self.zf.infolist():
                if not info.is_dir():
                    self.index[_member_uri_name(info.filename)] = info
        else:
            self.tf = tarfile.open(fileobj=self.fh, mode="r:*")
            for ti in self.tf:
                if ti.isfile():
                    self.index[_member_uri_name(ti.name)] = ti
            self.tf.members = []  # the index keeps what we need

    def read(self, member: str, max_bytes: int) -> bytes:
        info = self.index.get(member)
        if info is None:
            raise ReadError("archive member not found (archive changed since the crawl)")
        size = info.file_size if self.kind == "zip" else info.size
        if size > max_bytes:
            raise ReadError(f"larger than {max_bytes} bytes")
        if self.kind == "zip":
            return self.zf.read(info)
        fh = self.tf.extractfile(info)
        if fh is None:
            raise ReadError("archive member is not a regular file")
        return fh.read()

    def close(self) -> None:
        try:
            (self.zf if self.kind == "zip" else self.tf).close()
        finally:
            self.fh.close()


def _member_uri_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return safe_uri(name)


class _ArchiveCache:
    """Open archives of this process (LRU); reopened when the file changed on disk."""

    def __init__(self, size: int = MAX_OPEN_ARCHIVES):
        self.size = size
        self.open: OrderedDict[str, _Archive] = OrderedDict()
        self.lock = threading.Lock()

    def read(self, archive: str, member: str, max_bytes: int) -> bytes:
        with self.lock:
            arc = self.open.get(archive)
            if arc is not None and arc.stamp is not None and not is_url(archive):
                try:
                    st = os.stat(archive)
                    if (st.st_size, st.st_mtime_ns) != arc.stamp:
                        self._drop(archive)
                        arc = None
                except OSError:
                    self._drop(archive)
                    raise
            if arc is None:
                try:
                    arc = _Archive(archive)
                except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
                    raise ReadError(f"corrupt or truncated archive: {type(exc).__name__}") from None
                self.open[archive] = arc
                while len(self.open) > self.size:
                    self._drop(next(iter(self.open)))
            self.open.move_to_end(archive)
            try:
                return arc.read(member, max_bytes)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
                raise ReadError(f"corrupt archive member: {type(exc).__name__}") from None

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
