"""Tar and zip archives, including webdataset / img2dataset shards.

Nothing is ever extracted to disk: member bytes are read into ``Entry.data`` one member at a
time, so a member's path is only ever a name in a uri. uri of a member:
``"<archive uri>!/<member path>"`` (a leading "./" dropped; undecodable bytes percent-escaped
by ``safe_uri``).

- tar (plain, gzip, bzip2, xz) is read as a stream (``tarfile`` mode ``"r|*"``): members
  arrive in archive order and the first entry is yielded long before the archive is read.
  The TarInfo list tarfile keeps is cleared as we go so memory stays flat.
- zip needs its central directory (``zipfile`` reads only that list, never the whole file);
  members are then read one by one.
- webdataset / img2dataset: members sharing a key (directory + basename up to the first dot:
  ``shard/0001.jpg``, ``shard/0001.txt``, ``shard/0001.json``) form a group; ``.txt``,
  ``.json``, ``.yaml``/``.yml`` members of the group become ``Sidecar``\\ s with ``data`` of each
  image of the group. A tar stream buffers only the current group (webdataset writes a key's
  members adjacently; a sidecar that is not adjacent to its image is not attached). In a zip
  sidecars are looked up by name, so order does not matter. Scalar values of a ``key.json``
  sidecar (caption, prompt, url, seed, ...) are also copied into ``Entry.fields``.
- Members with absolute paths, ``..`` components, links, devices and fifos are never
  followed or read: each becomes an error Entry whose reason starts "unsafe member path".
- A member larger than ``max_member_bytes`` (default 512 MiB) is an error Entry and is
  skipped without being held in memory.
- A corrupt or truncated archive yields an error Entry with the archive's own uri after the
  members read so far, and no ``ContainerDone``, so the next crawl reads it again.
- Nested archives (a .tar inside a .zip) are not opened.
"""

from __future__ import annotations

import calendar
import json
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from typing import IO, Any, Callable, Iterator

from audit.ingest._common import (
    DEFAULT_MAX_MEMBER_BYTES,
    IMAGE_EXTS,
    SIDECAR_EXTS,
    SIDECAR_MAX_BYTES,
    archive_kind,
    describe,
    ext_of,
    safe_uri,
)
from audit.ingest.base import ContainerDone, ContainerUnchanged, Entry, Listed, Sidecar, UnchangedCheck

# Keys of a webdataset/img2dataset ``key.json`` copied into Entry.fields when scalar.
JSON_SIDECAR_FIELDS = (
    "prompt",
    "negative_prompt",
    "caption",
    "url",
    "seed",
    "steps",
    "sampler",
    "cfg_scale",
    "model",
)

_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


class ArchiveSource:
    """One tar or zip archive: as a SOURCE of its own, or as a container found by another
    source (``iter_archive``)."""

    complete = True

    def __init__(
        self,
        spec: str,
        uri: str,
        open_binary: Callable[[], IO[bytes]],
        *,
        size: int,
        mtime_ns: int,
        kind: str | None = None,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ) -> None:
        self.spec = spec
        self.root_uri = uri
        self.open_binary = open_binary
        self.size = size
        self.mtime_ns = mtime_ns
        self.kind = kind or archive_kind(uri) or "tar"
        self.max_member_bytes = max_member_bytes

    @classmethod
    def local(cls, spec: str, path: str, *, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> "ArchiveSource":
        st = os.stat(path)
        return cls(
            spec,
            safe_uri(os.path.abspath(path)),
            lambda: open(path, "rb"),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            max_member_bytes=max_member_bytes,
        )

    def entries(self, unchanged: UnchangedCheck) -> Iterator[Listed]:
        return iter_archive(
            self.spec,
            self.root_uri,
            self.open_binary,
            unchanged,
            size=self.size,
            mtime_ns=self.mtime_ns,
            kind=self.kind,
            max_member_bytes=self.max_member_bytes,
        )


def iter_archive(
    source: str,
    uri: str,
    open_binary: Callable[[], IO[bytes]],
    unchanged: UnchangedCheck,
    *,
    size: int,
    mtime_ns: int,
    kind: str,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> Iterator[Listed]:
    """The members of one archive, then ``ContainerDone``; or ``ContainerUnchanged`` alone
    when ``unchanged(uri, size, mtime_ns)`` says it was fully catalogued before."""
    if unchanged(uri, size, mtime_ns):
        yield ContainerUnchanged(uri, source)
        return
    reader = _TarReader if kind == "tar" else _ZipReader
    problem: str | None = None
    try:
        fh = open_binary()
    except OSError as exc:
        yield Entry(uri=uri, source=source, size=size, mtime_ns=mtime_ns, error=f"unreadable archive: {describe(exc)}")
        return
    try:
        with fh:
            problem = yield from reader(source, uri, max_member_bytes).members(fh)
    except _CORRUPT as exc:
        problem = f"corrupt or truncated archive: {describe(exc)}"
    if problem:
        yield Entry(uri=uri, source=source, size=size, mtime_ns=mtime_ns, error=problem)
        return
    yield ContainerDone(uri, source, size, mtime_ns)


def unsafe_reason(name: str) -> str | None:
    """Why a member name must never be used as a path, or None when it is harmless."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":" and norm[0].isalpha()):
        return "unsafe member path: absolute path"
    if ".." in norm.split("/"):
        return "unsafe member path: '..' component"
    if "\x00" in norm:
        return "unsafe member path: NUL in name"
    return None


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def wds_key(name: str) -> str:
    """webdataset key: directory + basename up to its first dot ("a/0001.seg.png" -> "a/0001")."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 2)  # a leading dot belongs to the name
    return name if dot < 0 else name[:dot]


def _json_fields(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(obj, dict):
        return {}
    return {k: obj[k] for k in JSON_SIDECAR_FIELDS if isinstance(obj.get(k), (str, int, float)) and not isinstance(obj.get(k), bool)}


class _Reader:
    def __init__(self, source: str, uri: str, max_member_bytes: int) -> None:
        self.source = source
        self.uri = uri
        self.max_member_bytes = max_member_bytes

    def member_uri(self, name: str) -> str:
        return f"{self.uri}!/{safe_uri(name)}"

    def error(self, name: str, reason: str, size: int | None = None, mtime_ns: int | None = None) -> Entry:
        return Entry(
            uri=self.member_uri(name), source=self.source, size=size, mtime_ns=mtime_ns, error=reason, container=self.uri
        )

    def too_big(self, size: int) -> str:
        return f"member too large: {size} bytes > {self.max_member_bytes} byte cap (not read)"


class _TarReader(_Reader):
    def members(self, fh: IO[bytes]) -> Iterator[Listed]:
        """Yields entries; returns a problem text when the archive turned out damaged."""
        tf = tarfile.open(fileobj=fh, mode="r|*", tarinfo=_WatchedTarInfo)
        key: str | None = None
        group: list[tuple[tarfile.TarInfo, str, bytes | None, str | None]] = []
        try:
            while True:
                ti = tf.next()
                tf.members.clear()  # tarfile keeps every TarInfo otherwise: memory would grow
                if ti is None:
                    break
                name = _clean(ti.name)
                mtime_ns = int(ti.mtime * 1_000_000_000)
                bad = unsafe_reason(ti.name)
                if bad is None and not (ti.isreg() or ti.isdir()):
                    bad = "unsafe member path: " + _tar_type(ti) + " (not followed)"
                if bad:
                    yield from self._flush(group)
                    group, key = [], None
                    yield self.error(name, bad, ti.size, mtime_ns)
                    continue
                if ti.isdir():
                    continue
                ext = ext_of(name.rsplit("/", 1)[-1])
                if ext in IMAGE_EXTS:
                    role, cap = "image", self.max_member_bytes
                elif ext in SIDECAR_EXTS:
                    role, cap = "sidecar", min(SIDECAR_MAX_BYTES, self.max_member_bytes)
                else:
                    continue
                k = wds_key(name)
                if k != key:
                    yield from self._flush(group)
                    group, key = [], k
                if ti.size > cap:
                    group.append((ti, role, None, self.too_big(ti.size)))
                    continue
                f = tf.extractfile(ti)
                data = f.read() if f is not None else b""
                group.append((ti, role, data, None))
        except _CORRUPT as exc:
            yield from self._flush(group)
            return f"corrupt or truncated archive: {describe(exc)}"
        yield from self._flush(group)
        end = getattr(tf, "_audit_end", None)  # set by _WatchedTarInfo when a header read failed
        if end and end != "EOFHeaderError":
            return f"truncated or corrupt archive: no end-of-archive marker ({end} at offset {tf.offset})"
        return None

    def _flush(self, group: list[tuple[tarfile.TarInfo, str, bytes | None, str | None]]) -> Iterator[Entry]:
        if not group:
            return
        sidecars: list[Sidecar] = []
        fields: dict[str, Any] = {}
        skipped: list[str] = []
        for ti, role, data, err in group:
            if role != "sidecar":
                continue
            base = _clean(ti.name).rsplit("/", 1)[-1]
            if data is None:
                skipped.append(f"{base}: {err}")
                continue
            sidecars.append(Sidecar(name=base, data=data))
            if base.lower().endswith(".json"):
                fields.update(_json_fields(data))
        if skipped:
            fields["sidecars_skipped"] = skipped
        for ti, role, data, err in group:
            if role != "image":
                continue
            name = _clean(ti.name)
            mtime_ns = int(ti.mtime * 1_000_000_000)
            if err:
                yield self.error(name, err, ti.size, mtime_ns)
                continue
            yield Entry(
                uri=self.member_uri(name),
                source=self.source,
                size=ti.size,
                mtime_ns=mtime_ns,
                data=data,
                sidecars=tuple(sidecars),
                fields=dict(fields),
                container=self.uri,
            )


class _WatchedTarInfo(tarfile.TarInfo):
    """Records why tarfile stopped: only a zero block (EOFHeaderError) is a proper end;
    tarfile silently treats a missing or cut header after the first member as the end."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as exc:
            tf._audit_end = type(exc).__name__  # type: ignore[attr-defined]
            raise


def _tar_type(ti: tarfile.TarInfo) -> str:
    if ti.issym():
        return f"symbolic link to {ti.linkname!r}"
    if ti.islnk():
        return f"hard link to {ti.linkname!r}"
    if ti.ischr() or ti.isblk():
        return "device file"
    if ti.isfifo():
        return "fifo"
    return "special member"


class _ZipReader(_Reader):
    def members(self, fh: IO[bytes]) -> Iterator[Listed]:
        zf = zipfile.ZipFile(fh)
        names = zf.NameToInfo
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = _clean(info.filename)
            mtime_ns = _zip_mtime_ns(info)
            bad = unsafe_reason(info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix mode bits
            if bad is None and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                bad = "unsafe member path: " + ("symbolic link" if stat.S_ISLNK(mode) else "special file") + " (not followed)"
            if bad:
                yield self.error(name, bad, info.file_size, mtime_ns)
                continue
            if ext_of(name.rsplit("/", 1)[-1]) not in IMAGE_EXTS:
                continue  # sidecars are attached to their image below; other files are not entries
            if info.file_size > self.max_member_bytes:
                yield self.error(name, self.too_big(info.file_size), info.file_size, mtime_ns)
                continue
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
                yield self.error(name, f"unreadable member: {describe(exc)}", info.file_size, mtime_ns)
                continue
            sidecars, fields = self._sidecars(zf, names, info.filename)
            yield Entry(
                uri=self.member_uri(name),
                source=self.source,
                size=info.file_size,
                mtime_ns=mtime_ns,
                data=data,
                sidecars=sidecars,
                fields=fields,
                container=self.uri,
            )
        return None

    def _sidecars(self, zf: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo], filename: str) -> tuple[tuple[Sidecar, ...], dict[str, Any]]:
        dot = filename.rfind(".")
        stems = dict.fromkeys((wds_key(filename), filename[:dot] if dot > 0 else filename))
        sidecars: list[Sidecar] = []
        fields: dict[str, Any] = {}
        skipped: list[str] = []
        for stem in stems:
            for ext in ("txt", "json", "yaml", "yml"):
                info = names.get(f"{stem}.{ext}")
                if info is None or unsafe_reason(info.filename):
                    continue
                base = info.filename.rsplit("/", 1)[-1]
                if info.file_size > min(SIDECAR_MAX_BYTES, self.max_member_bytes):
                    skipped.append(f"{base}: {self.too_big(info.file_size)}")
                    continue
                try:
                    data = zf.read(info)
                except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
                    skipped.append(f"{base}: unreadable: {describe(exc)}")
                    continue
                sidecars.append(Sidecar(name=base, data=data))
                if ext == "json":
                    fields.update(_json_fields(data))
        if skipped:
            fields["sidecars_skipped"] = skipped
        return tuple(sidecars), fields


def _zip_mtime_ns(info: zipfile.ZipInfo) -> int | None:
    try:
        return calendar.timegm((*info.date_time, 0, 0, 0)) * 1_000_000_000
    except (ValueError, OverflowError, TypeError):
        return None
