"""Sources of stored generations: ``open_source(spec)`` picks the reader for a SOURCE.

=====================================  ==================  =====================================
SOURCE                                 reader              uri of an entry
=====================================  ==================  =====================================
local directory                        ``FolderSource``    absolute path (``safe_uri``)
local file (image or anything else)    ``FolderSource``    absolute path
``*.jsonl``/``.csv``/``.parquet``/``.json``  ``ManifestSource``  the file each row names, or
                                                           ``<manifest uri>#row=N`` (image bytes)
``*.tar[.gz|.bz2|.xz]``/``.tgz``/``.zip``  ``ArchiveSource``   ``<archive uri>!/<member name>``
``proto://...`` prefix or object       ``FsspecSource``    the full URL
``proto://.../x.jsonl`` / ``x.tar``    manifest / archive  as above, the archive uri a URL
=====================================  ==================  =====================================

Public dataset layouts (``datasets``): DiffusionDB parts (``part-NNNNNN.zip`` or folder with
``part-NNNNNN.json``, root ``metadata.parquet``), Hugging Face Parquet shards inside folders and
URL prefixes (containers; rows ``<shard uri>#row=N``), Civitai API exports (``.json``).

A SOURCE that does not exist or cannot be used raises ``InputError`` with one line; problems
with single files inside a source are error entries, never exceptions.

Member names follow ``members.MemberNamer`` (shared with the re-reader ``reader.read_uri``):
a duplicate member name gets ``#<position>``; members of nested archives are
``<archive>!/<inner archive>!/<member>``. Every source opens local files with
``safeio.open_regular`` (fifos, devices and sockets are refused, never waited on) and reads
bytes in capped blocks; the crawler bounds the bytes it holds (``crawler.runner``).

``root_uri`` semantics (for deletion detection with ``complete=True``): the locations a
source owns are ``root_uri`` itself and every uri starting with ``root_uri + "/"`` or
``root_uri + "!/"`` (the members of an archive SOURCE start with ``"<archive>!/"``).
"""

from __future__ import annotations

import os
import stat as _stat

from audit.errors import InputError
from audit.ingest._common import DEFAULT_MAX_MEMBER_BYTES, archive_kind, describe, is_url, safe_uri
from audit.ingest.archive import ArchiveSource
from audit.ingest.base import (
    ContainerDone,
    ContainerUnchanged,
    Entry,
    Listed,
    Sidecar,
    Source,
    UnchangedCheck,
)
from audit.ingest.folder import FolderSource
from audit.ingest.fsspec_source import FsspecSource, url_to_fs
from audit.ingest.manifest import ManifestSource, manifest_format

__all__ = [
    "ArchiveSource",
    "ContainerDone",
    "ContainerUnchanged",
    "Entry",
    "FolderSource",
    "FsspecSource",
    "Listed",
    "ManifestSource",
    "Sidecar",
    "Source",
    "UnchangedCheck",
    "open_source",
    "safe_uri",
]


def open_source(
    spec: str, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, trust_dir_mtime: bool = False
) -> Source:
    """The reader for one SOURCE argument (see the module docstring).

    ``max_member_bytes`` caps archive members and remote objects read into memory;
    ``trust_dir_mtime`` lets a local folder skip the files of directories whose mtime is
    unchanged since they were last listed (see ``DirectoryUnchanged``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("empty SOURCE: give a directory, file, manifest, archive or URL")
    if is_url(spec):
        return _open_url(spec, max_member_bytes)
    return _open_local(spec, max_member_bytes, trust_dir_mtime)


def _open_local(spec: str, max_member_bytes: int, trust_dir_mtime: bool = False) -> Source:
    path = os.path.expanduser(spec)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"source is a broken symlink: {spec}") from None
        raise InputError(f"source not found: {spec}") from None
    except OSError as exc:
        raise InputError(f"cannot use source {spec}: {describe(exc)}") from None
    if _stat.S_ISDIR(st.st_mode):
        try:
            os.scandir(path).close()
        except OSError as exc:
            raise InputError(f"cannot read directory {spec}: {describe(exc)}") from None
        return FolderSource(spec, path, max_member_bytes=max_member_bytes, trust_dir_mtime=trust_dir_mtime)
    if not _stat.S_ISREG(st.st_mode):
        raise InputError(f"source is neither a directory nor a regular file: {spec}")
    if manifest_format(path):
        return ManifestSource(spec, path=path, max_member_bytes=max_member_bytes)
    if archive_kind(path):
        return ArchiveSource.local(spec, path, max_member_bytes=max_member_bytes)
    return FolderSource(spec, path, max_member_bytes=max_member_bytes)


def _open_url(spec: str, max_member_bytes: int) -> Source:
    fs, path = url_to_fs(spec)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise InputError(f"source not found: {spec}") from None
    except Exception as exc:  # noqa: BLE001 - credentials, network, bad bucket: one line
        raise InputError(f"cannot use source {spec}: {describe(exc)}") from None
    if info.get("type") == "other":  # fsspec's word for a local fifo, socket or device
        raise InputError(f"source is neither a directory nor a regular file: {spec}")
    if info.get("type") != "directory":
        if manifest_format(path):
            return ManifestSource(spec, max_member_bytes=max_member_bytes)
        if archive_kind(path):
            from audit.ingest._common import info_mtime_ns
            from audit.ingest.fsspec_source import object_uri, open_object

            size = info.get("size")
            return ArchiveSource(
                spec,
                object_uri(fs, path),
                lambda: open_object(fs, path),
                size=int(size) if isinstance(size, int) else 0,
                mtime_ns=info_mtime_ns(info) or 0,
                max_member_bytes=max_member_bytes,
            )
    return FsspecSource(spec, fs=fs, path=path, max_member_bytes=max_member_bytes)
