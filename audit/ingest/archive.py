"""Tar and zip archives, including webdataset / img2dataset shards and nested archives.

Nothing is ever extracted to disk: member bytes are read into ``Entry.data`` one member at a
time, in blocks, never more than the member cap, so a member's path is only ever a name in
a uri. uri of a member: ``"<archive uri>!/<name>"``, named by ``members.MemberNamer`` (the
rule the re-reader shares): the member path with a leading "./" dropped, undecodable bytes
percent-escaped, and a later member of a name already taken told apart by ``"#<position>"``,
so every member is its own location, duplicates included.

- tar (plain, gzip, bzip2, xz) is read as a stream: members arrive in archive order and the
  first entry is yielded long before the archive is read. The TarInfo list tarfile keeps is
  cleared as we go so memory stays flat.
- zip needs its central directory (``zipfile`` reads only that list, never the whole file);
  members are then read one by one.
- webdataset / img2dataset: members sharing a key (directory + basename up to the first dot:
  ``shard/0001.jpg``, ``shard/0001.txt``, ``shard/0001.json``) form a group; ``.txt``,
  ``.json``, ``.yaml``/``.yml`` members of the group become ``Sidecar``\\ s with ``data`` of each
  image of the group. A tar stream buffers only the current group, and at most
  ``GROUP_MAX_BYTES`` of its images (webdataset writes a key's members adjacently; a sidecar
  that is not adjacent to its image is not attached). In a zip sidecars are looked up by
  name, so order does not matter. Scalar values of a ``key.json`` sidecar (caption, prompt,
  url, seed, ...) are also copied into ``Entry.fields``; a sidecar that is not valid JSON
  (or nested deeper than ``safejson.MAX_DEPTH``) costs those fields only, the reason is kept
  in ``fields["sidecar_errors"]`` and the image is audited all the same.
- Nested archives (a member whose name ends like an archive, as the folder source decides:
  ``x.TAR.GZ``, ``.tgz``, ``b.zip``) are opened in turn, to ``MAX_NESTING_DEPTH`` levels;
  their members get uris ``"<outer>!/<inner.tar>!/<member>"``. An inner tar is streamed; an
  inner zip needs random access and is held in memory, so one above the member cap is not
  opened. A nested archive that is too deep, too large, corrupt or past the expansion
  budget is an error row of its own (uri ``"<outer>!/<inner>"``) with the reason.
- Every byte a decompressor produces is charged to the top-level archive's
  ``ExpansionBudget`` (see ``members``): past it, zip members are error rows without being
  read, and a tar stream stops with an error row for the archive.
- DiffusionDB parts: a zip named ``part-NNNNNN.zip`` holding ``part-NNNNNN.json`` (image
  name -> {"p", "se", "c", "st", "sa"}) gives each image its prompt, seed, cfg, steps and
  sampler; when that JSON is missing or broken, the dataset's ``metadata.parquet`` found
  by the folder walk stands in (``iter_archive(table=...)``), and the problem is recorded
  with each image (``fields["dataset_metadata_errors"]``).
- Members with absolute paths, ``..`` components, links, devices and fifos are never
  followed or read: each becomes an error Entry whose reason starts "unsafe member path".
- A member larger than ``max_member_bytes`` (default ``DEFAULT_MAX_MEMBER_BYTES``) is an
  error Entry and is skipped without being held in memory; declared sizes are checked
  first, and reads are capped whatever a header says.
- A corrupt or truncated archive yields an error Entry with the archive's own uri after the
  members read so far, and no ``ContainerDone``, so the next crawl reads it again.
"""

from __future__ import annotations

import calendar
import io
import lzma
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterator

from audit import safejson
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
from audit.ingest.members import (
    MAX_NESTING_DEPTH,
    ExpansionBudget,
    ExpansionLimit,
    MemberNamer,
    Metered,
    tar_stream,
)
from audit.safeio import TooLarge, open_regular, read_capped

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
# Images of one webdataset key held back while its sidecars may still follow. A key has one
# image in every real shard; an archive of thousands of members sharing one key (or one
# name) must not make the reader hold all of them, so past this the images go on without
# waiting (sidecars found later attach to the key's later images only).
GROUP_MAX_BYTES = 32 << 20
# All sidecars of one image together: what the worker reads of them is far less (metadata,
# not pixels), and a key may have any number of ``key.*.txt`` members.
SIDECARS_PER_IMAGE_MAX_BYTES = SIDECAR_MAX_BYTES

_CORRUPT = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    ValueError,
    struct.error,
    NotImplementedError,
)
_MEMBER_FAILURES = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    RuntimeError,  # zipfile: encrypted member, password required
    OSError,
    ValueError,
    struct.error,
)


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
        import os

        st = os.stat(path)
        return cls(
            spec,
            safe_uri(os.path.abspath(path)),
            lambda: open_regular(path),  # swapped for a fifo since the stat: refused, not waited on
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
    table: Any = None,
) -> Iterator[Listed]:
    """The members of one archive (nested archives' members included), then
    ``ContainerDone``; or ``ContainerUnchanged`` alone when ``unchanged(uri, size,
    mtime_ns)`` says it was fully catalogued before. ``table``: the dataset's metadata
    table (``datasets.MetadataTable``) the walk found above the archive, if any."""
    if unchanged(uri, size, mtime_ns):
        yield ContainerUnchanged(uri, source)
        return
    try:
        fh = open_binary()
    except Exception as exc:  # noqa: BLE001 - a fifo, a vanished file, a backend failure: this archive's row
        yield Entry(uri=uri, source=source, size=size, mtime_ns=mtime_ns, error=f"unreadable archive: {describe(exc)}")
        return
    walk = _Walk(source, max_member_bytes, ExpansionBudget.for_archive(size), table)
    problem: str | None = None
    try:
        with fh:
            problem = yield from _reader_for(kind)(walk, uri, 1).members(fh)
    except _CORRUPT as exc:
        problem = f"corrupt or truncated archive: {describe(exc)}"
    except ExpansionLimit as exc:
        problem = str(exc)
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


def wds_key(name: str) -> str:
    """webdataset key: directory + basename up to its first dot ("a/0001.seg.png" -> "a/0001")."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 2)  # a leading dot belongs to the name
    return name if dot < 0 else name[:dot]


def member_role(base: str) -> tuple[str, str | None]:
    """What a member is, by its base name, as the folder source decides for files:
    ("image", None), ("sidecar", None), ("archive", kind) or ("other", None)."""
    ext = ext_of(base)
    if ext in IMAGE_EXTS:
        return "image", None
    if ext in SIDECAR_EXTS:
        return "sidecar", None
    kind = archive_kind(base)
    if kind:
        return "archive", kind
    return "other", None


def json_sidecar_fields(data: bytes) -> tuple[dict[str, Any], str | None]:
    """Scalar generation fields of a ``key.json`` sidecar, and the problem when it cannot
    be used (invalid, or nested deeper than ``safejson.MAX_DEPTH``: never a RecursionError)."""
    try:
        obj = safejson.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"not valid JSON ({describe(exc)})"
    if not isinstance(obj, dict):
        return {}, None
    return {
        k: obj[k]
        for k in JSON_SIDECAR_FIELDS
        if isinstance(obj.get(k), (str, int, float)) and not isinstance(obj.get(k), bool)
    }, None


@dataclass
class _Walk:
    """What one top-level archive and everything nested in it share."""

    source: str
    max_member_bytes: int
    budget: ExpansionBudget
    table: Any = None  # datasets.MetadataTable above the archive (DiffusionDB metadata.parquet)


def _reader_for(kind: str) -> type["_Reader"]:
    return _ZipReader if kind == "zip" else _TarReader


class _Reader:
    def __init__(self, walk: _Walk, uri: str, depth: int) -> None:
        self.walk = walk
        self.source = walk.source
        self.uri = uri
        self.depth = depth  # 1: the archive the crawl found
        self.max_member_bytes = walk.max_member_bytes
        self.namer = MemberNamer()

    def members(self, fh: Any) -> Iterator[Listed]:  # pragma: no cover - abstract
        raise NotImplementedError

    def member_uri(self, name: str) -> str:
        return f"{self.uri}!/{name}"

    def error(self, name: str, reason: str, size: int | None = None, mtime_ns: int | None = None) -> Entry:
        return Entry(
            uri=self.member_uri(name),
            source=self.source,
            size=size,
            mtime_ns=mtime_ns,
            error=reason,
            container=self.uri,
        )

    def too_big(self, size: int) -> str:
        return f"member too large: {size} bytes > {self.max_member_bytes} byte cap (not read)"

    def nested(
        self, name: str, kind: str, open_member: Callable[[], Any], size: int | None, mtime_ns: int | None
    ) -> Iterator[Listed]:
        """The members of an archive stored as a member of this one; an error row for it
        (uri ``<this>!/<name>``) when it is not opened or turns out damaged."""
        if self.depth >= MAX_NESTING_DEPTH:
            yield self.error(
                name, f"nested archive not opened: more than {MAX_NESTING_DEPTH} levels of archives", size, mtime_ns
            )
            return
        if self.walk.budget.exhausted:
            yield self.error(name, self.walk.budget.reason(), size, mtime_ns)
            return
        problem: str | None = None
        fh: Any = None
        try:
            fh = open_member()
            if kind == "zip":  # random access: held in memory, within the member cap
                if size is not None and size > self.max_member_bytes:
                    raise TooLarge(size, self.max_member_bytes)
                fh = io.BytesIO(read_capped(fh, self.max_member_bytes))
            inner = _reader_for(kind)(self.walk, self.member_uri(name), self.depth + 1)
            problem = yield from inner.members(fh)
        except TooLarge as exc:
            problem = f"nested zip not opened: {exc.size} bytes > {self.max_member_bytes} byte cap"
        except ExpansionLimit as exc:
            problem = str(exc)
        except (*_CORRUPT, RuntimeError) as exc:
            problem = f"corrupt or truncated nested archive: {describe(exc)}"
        finally:
            if fh is not None:
                try:
                    fh.close()
                except Exception:  # noqa: BLE001 - closing a damaged stream
                    pass
        if problem:
            yield self.error(name, problem, size, mtime_ns)


# --- tar ----------------------------------------------------------------------------------


@dataclass
class _Member:
    name: str  # uri name (MemberNamer)
    base: str  # file name, for sidecars
    size: int | None
    mtime_ns: int | None
    data: bytes | None = None
    error: str | None = None


@dataclass
class _TarGroup:
    """The members of the current webdataset key, until the key changes."""

    reader: "_TarReader"
    key: str | None = None
    images: list[_Member] = field(default_factory=list)
    image_bytes: int = 0
    sidecars: list[Sidecar] = field(default_factory=list)
    sidecar_bytes: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    sidecar_errors: list[str] = field(default_factory=list)

    def switch(self, key: str) -> Iterator[Entry]:
        if key != self.key:
            yield from self.close()
            self.key = key

    def add_image(self, member: _Member) -> Iterator[Entry]:
        size = len(member.data) if member.data is not None else 0
        if self.images and self.image_bytes + size > GROUP_MAX_BYTES:
            yield from self.flush_images()
        self.images.append(member)
        self.image_bytes += size

    def add_sidecar(self, member: _Member) -> None:
        if member.data is None:
            self.skipped.append(f"{member.base}: {member.error}")
            return
        if self.sidecar_bytes + len(member.data) > SIDECARS_PER_IMAGE_MAX_BYTES:
            self.skipped.append(
                f"{member.base}: sidecars of this image pass {SIDECARS_PER_IMAGE_MAX_BYTES} bytes (not attached)"
            )
            return
        self.sidecars.append(Sidecar(name=member.base, data=member.data))
        self.sidecar_bytes += len(member.data)
        if member.base.lower().endswith(".json"):
            found, problem = json_sidecar_fields(member.data)
            self.fields.update(found)
            if problem:
                self.sidecar_errors.append(f"{member.base}: {problem}")

    def flush_images(self) -> Iterator[Entry]:
        images, self.images, self.image_bytes = self.images, [], 0
        fields = dict(self.fields)
        if self.skipped:
            fields["sidecars_skipped"] = list(self.skipped)
        if self.sidecar_errors:
            fields["sidecar_errors"] = list(self.sidecar_errors)
        sidecars = tuple(self.sidecars)
        r = self.reader
        for m in images:
            if m.error:
                yield r.error(m.name, m.error, m.size, m.mtime_ns)
                continue
            yield Entry(
                uri=r.member_uri(m.name),
                source=r.source,
                size=m.size,
                mtime_ns=m.mtime_ns,
                data=m.data,
                sidecars=sidecars,
                fields=dict(fields),
                container=r.uri,
            )

    def close(self) -> Iterator[Entry]:
        yield from self.flush_images()
        self.key = None
        self.sidecars, self.sidecar_bytes = [], 0
        self.fields, self.skipped, self.sidecar_errors = {}, [], []


class _TarReader(_Reader):
    def members(self, fh: Any) -> Iterator[Listed]:
        """Yields entries; returns a problem text when the archive turned out damaged."""
        budget = self.walk.budget
        tf = tarfile.open(fileobj=tar_stream(fh, budget), mode="r|", tarinfo=_WatchedTarInfo)
        group = _TarGroup(self)
        try:
            while True:
                ti = tf.next()
                tf.members.clear()  # tarfile keeps every TarInfo otherwise: memory would grow
                if ti is None:
                    break
                name = self.namer.name(ti.name, is_dir=ti.isdir())
                if name is None:
                    continue
                mtime_ns = _tar_mtime_ns(ti)
                bad = unsafe_reason(ti.name)
                if bad is None and not ti.isreg():
                    bad = "unsafe member path: " + _tar_type(ti) + " (not followed)"
                if bad:
                    yield from group.close()
                    yield self.error(name, bad, ti.size, mtime_ns)
                    continue
                path = _clean(ti.name)
                base = path.rsplit("/", 1)[-1]
                role, kind = member_role(base)
                if role == "other":
                    continue
                if role == "archive":
                    yield from group.close()
                    yield from self.nested(name, kind or "tar", self._opener(tf, ti), ti.size, mtime_ns)
                    continue
                yield from group.switch(wds_key(path))
                cap = self.max_member_bytes if role == "image" else min(SIDECAR_MAX_BYTES, self.max_member_bytes)
                member = _Member(name, base, ti.size, mtime_ns)
                if ti.size > cap:
                    member.error = self.too_big(ti.size)
                else:
                    try:
                        member.data = read_capped(self._opener(tf, ti)(), cap)
                    except TooLarge as exc:
                        member.error = self.too_big(exc.size)
                if role == "image":
                    yield from group.add_image(member)
                else:
                    group.add_sidecar(member)
        except _CORRUPT as exc:
            yield from group.close()
            return f"corrupt or truncated archive: {describe(exc)}"
        except ExpansionLimit as exc:
            yield from group.close()
            return f"{exc} (members after offset {tf.offset} not listed)"
        yield from group.close()
        end = getattr(tf, "_audit_end", None)  # set by _WatchedTarInfo when a header read failed
        if end and end != "EOFHeaderError":
            return f"truncated or corrupt archive: no end-of-archive marker ({end} at offset {tf.offset})"
        return None

    def _opener(self, tf: tarfile.TarFile, ti: tarfile.TarInfo) -> Callable[[], Any]:
        def open_member() -> Any:
            if ti.issparse():  # holes are expanded by tarfile itself, past any decompressor
                self.walk.budget.charge(ti.size)
            f = tf.extractfile(ti)
            return f if f is not None else io.BytesIO(b"")

        return open_member


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _tar_mtime_ns(ti: tarfile.TarInfo) -> int | None:
    try:
        return int(ti.mtime * 1_000_000_000)
    except (TypeError, ValueError, OverflowError):  # a pax mtime of "nan" or "inf"
        return None


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


# --- zip ----------------------------------------------------------------------------------


class _ZipReader(_Reader):
    def members(self, fh: Any) -> Iterator[Listed]:
        zf = zipfile.ZipFile(fh)
        names = zf.NameToInfo
        budget = self.walk.budget
        part, part_problem = self._part_records(zf, names)
        for info in zf.infolist():
            name = self.namer.name(info.filename, is_dir=info.is_dir())
            if name is None:
                continue
            mtime_ns = _zip_mtime_ns(info)
            bad = unsafe_reason(info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix mode bits
            if bad is None and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                bad = (
                    "unsafe member path: "
                    + ("symbolic link" if stat.S_ISLNK(mode) else "special file")
                    + " (not followed)"
                )
            if bad:
                yield self.error(name, bad, info.file_size, mtime_ns)
                continue
            role, kind = member_role(info.filename.rsplit("/", 1)[-1])
            if role == "archive":
                yield from self.nested(name, kind or "zip", self._opener(zf, info), info.file_size, mtime_ns)
                continue
            if role != "image":
                continue  # sidecars are attached to their image below; other files are not entries
            if info.file_size > self.max_member_bytes:
                yield self.error(name, self.too_big(info.file_size), info.file_size, mtime_ns)
                continue
            try:
                budget.check()
                with self._opener(zf, info)() as f:
                    data = read_capped(f, self.max_member_bytes)
            except TooLarge as exc:
                yield self.error(name, self.too_big(exc.size), info.file_size, mtime_ns)
                continue
            except ExpansionLimit as exc:
                yield self.error(name, str(exc), info.file_size, mtime_ns)
                continue
            except _MEMBER_FAILURES as exc:
                yield self.error(name, f"unreadable member: {describe(exc)}", info.file_size, mtime_ns)
                continue
            sidecars, fields = self._sidecars(zf, names, info.filename)
            if part or part_problem:
                fields = {**part.get(info.filename.rsplit("/", 1)[-1], {}), **fields}
                if part_problem:
                    fields["dataset_metadata_errors"] = [part_problem]
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

    def _opener(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], Any]:
        return lambda: Metered(zf.open(info), self.walk.budget)

    def _part_records(
        self, zf: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]
    ) -> tuple[dict[str, dict[str, Any]], str | None]:
        """image name -> fields of a DiffusionDB part (``part-NNNNNN.zip`` holding
        ``part-NNNNNN.json``), the dataset's metadata table standing in when the part JSON
        is missing or broken; and the problem to record with each image, if any."""
        from audit.ingest.datasets import PART_JSON_MAX_BYTES, part_id_of, part_json_name, part_records

        archive_name = self.uri.rsplit("!/", 1)[-1].rsplit("/", 1)[-1]
        json_name = part_json_name(archive_name)
        if json_name is None:
            return {}, None
        info = names.get(json_name)
        problem = None
        if info is not None:
            try:
                if info.file_size > PART_JSON_MAX_BYTES:
                    raise TooLarge(info.file_size, PART_JSON_MAX_BYTES)
                with self._opener(zf, info)() as f:
                    records, problem = part_records(read_capped(f, PART_JSON_MAX_BYTES))
            except TooLarge as exc:
                records, problem = {}, f"larger than {exc.limit} bytes (not read)"
            except (*_MEMBER_FAILURES, ExpansionLimit) as exc:
                records, problem = {}, f"unreadable: {describe(exc)}"
            if problem is None:
                return records, None
            problem = f"part JSON {json_name}: {problem}"
        table = self.walk.table
        if table is not None:
            records = table.part(part_id_of(archive_name))
            if table.problem:
                problem = "; ".join(p for p in (problem, table.problem) if p)
            elif records and problem:
                problem += f" (prompts taken from {table.uri.rsplit('/', 1)[-1]})"
            return records, problem
        return {}, problem

    def _sidecars(
        self, zf: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo], filename: str
    ) -> tuple[tuple[Sidecar, ...], dict[str, Any]]:
        dot = filename.rfind(".")
        stems = dict.fromkeys((wds_key(filename), filename[:dot] if dot > 0 else filename))
        sidecars: list[Sidecar] = []
        fields: dict[str, Any] = {}
        skipped: list[str] = []
        errors: list[str] = []
        total = 0
        cap = min(SIDECAR_MAX_BYTES, self.max_member_bytes)
        for stem in stems:
            for ext in ("txt", "json", "yaml", "yml"):
                info = names.get(f"{stem}.{ext}")
                if info is None or unsafe_reason(info.filename):
                    continue
                base = info.filename.rsplit("/", 1)[-1]
                if info.file_size > cap:
                    skipped.append(f"{base}: {self.too_big(info.file_size)}")
                    continue
                try:
                    with self._opener(zf, info)() as f:
                        data = read_capped(f, cap)
                except TooLarge as exc:
                    skipped.append(f"{base}: {self.too_big(exc.size)}")
                    continue
                except ExpansionLimit as exc:
                    skipped.append(f"{base}: {exc}")
                    continue
                except _MEMBER_FAILURES as exc:
                    skipped.append(f"{base}: unreadable: {describe(exc)}")
                    continue
                if total + len(data) > SIDECARS_PER_IMAGE_MAX_BYTES:
                    skipped.append(
                        f"{base}: sidecars of this image pass {SIDECARS_PER_IMAGE_MAX_BYTES} bytes (not attached)"
                    )
                    continue
                total += len(data)
                sidecars.append(Sidecar(name=base, data=data))
                if ext == "json":
                    found, problem = json_sidecar_fields(data)
                    fields.update(found)
                    if problem:
                        errors.append(f"{base}: {problem}")
        if skipped:
            fields["sidecars_skipped"] = skipped
        if errors:
            fields["sidecar_errors"] = errors
        return tuple(sidecars), fields


def _zip_mtime_ns(info: zipfile.ZipInfo) -> int | None:
    try:
        return calendar.timegm((*info.date_time, 0, 0, 0)) * 1_000_000_000
    except (ValueError, OverflowError, TypeError):
        return None
