"""Local directories (walked recursively) and single local files.

This is the hot path of a rescan: per image file exactly one ``DirEntry.stat()`` call (an
``lstat``, or a ``stat`` for a symlink), no ``Path`` objects, no existence checks for
sidecars (they are found in the same ``scandir`` listing). Other files cost nothing beyond
the directory listing itself.

- uri = the absolute path (``os.path.abspath``: symlinks are not resolved), passed through
  ``safe_uri`` so that names which are not UTF-8 stay storable; ``Entry.path`` keeps the real
  path for the worker that reads the file.
- Images: png, jpg, jpeg, jpe, jfif, webp, gif, bmp, tif, tiff, avif, heic, heif, hif, jxl (any case). Other files
  are not entries, except sidecars: ``stem.txt``/``.json``/``.yaml``/``.yml`` (or
  ``name.png.txt`` and so on) in the same directory are attached as ``Sidecar(path=...)``.
- Archives found in the walk (names ending .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .tar.zst, .zip in
  any case, ``archive_kind``; archive members are judged by the same rule) are read as
  containers by ``archive.iter_archive``: ``unchanged()`` is asked first, members get uris
  ``"<archive path>!/<member>"``, which lie under the walked root, so deletions inside them
  are seen too. An archive is opened with ``safeio.open_regular``: one replaced by a fifo
  after the listing is an error row, never a hang. ``FolderSource(open_archives=False)``
  ignores them instead.
- Public dataset layouts (``audit.ingest.datasets``): a ``metadata.parquet`` /
  ``metadata-large.parquet`` with an ``image_name`` column is DiffusionDB's table, used for
  the parts below it; a ``part-NNNNNN/`` directory's images get their fields from its
  ``part-NNNNNN.json`` (read here, at most ``PART_JSON_MAX_BYTES``), or from that table when
  the JSON is missing or broken (the problem lands in each image's metadata errors; the
  pixels are audited all the same); ``part-NNNNNN.zip`` archives likewise (in ``archive``).
  Any other ``*.parquet`` whose rows hold image bytes (Hugging Face ``datasets`` shards) is
  a container of rows ``"<shard>#row=N"``; a Parquet file without images is ignored.
- Symlinks are followed (files and directories); every directory's ``(st_dev, st_ino)`` is
  remembered, so a symlink loop or a second route into a directory already walked becomes
  one error Entry ("directory already walked ...") instead of an endless walk.
- Bad input becomes an Entry with ``error``: unreadable directory, broken symlink, symlink
  loop (ELOOP), an image name that is a fifo/socket/device (never opened: a fifo would block
  a worker forever). An unreadable *file* is found by the worker that opens it (checking
  here would cost a syscall per file).
- Memory: per directory the listing is held up to 65,536 image entries; a larger directory
  is listed a second time for the rest, so memory stays bounded however many files it holds
  (sidecar names of that directory are kept as a set).
"""

from __future__ import annotations

import errno
import os
import stat as _stat
from typing import Any, Iterator

from audit.ingest._common import (
    ARCHIVE_SUFFIXES,
    DEFAULT_MAX_MEMBER_BYTES,
    IMAGE_EXTS,
    SIDECAR_EXTS,
    archive_kind,
    describe,
    safe_uri,
)
from audit.ingest.archive import iter_archive
from audit.ingest.datasets import (
    METADATA_TABLE_NAMES,
    PART_JSON_MAX_BYTES,
    PART_NAME,
    MetadataTable,
    iter_parquet_shard,
    part_id_of,
    part_json_name,
    part_records,
)
from audit.ingest.base import (
    DirectoryListed,
    DirectoryUnchanged,
    Entry,
    FilesUnchanged,
    KnownFiles,
    Listed,
    Sidecar,
    UnchangedCheck,
)
from audit.safeio import TooLarge, open_regular, read_regular

CHUNK = 65536
# Last characters of the archive suffixes: most names (images) are ruled out by one look.
_ARCHIVE_LAST_CHARS = frozenset("".join(x[-1] + x[-1].upper() for x in ARCHIVE_SUFFIXES))
_NO_SIDECARS: tuple[Sidecar, ...] = ()
_SIDECAR_ORDER = ("txt", "json", "yaml", "yml")


class FolderSource:
    """A local directory, walked recursively, or one local file."""

    complete = True
    accepts_known_files = True  # ``entries(unchanged, known_files=...)``: see ``FilesUnchanged``

    def __init__(
        self,
        spec: str,
        path: str | None = None,
        *,
        open_archives: bool = True,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
        trust_dir_mtime: bool = False,
    ) -> None:
        self.spec = spec
        self.trust_dir_mtime = trust_dir_mtime
        self.root = os.path.abspath(spec if path is None else path)
        self.root_uri = safe_uri(self.root)
        self.open_archives = open_archives
        self.max_member_bytes = max_member_bytes
        self._known_files: KnownFiles | None = None
        self._tables: dict[str, dict[str, Any]] = {}  # directory -> {name: datasets.MetadataTable} found in it

    def entries(self, unchanged: UnchangedCheck, known_files: KnownFiles | None = None) -> Iterator[Listed]:
        """``known_files``: the catalogued files of a directory; image files matching it by
        size and mtime are reported together as ``FilesUnchanged`` instead of one Entry each."""
        self._known_files = known_files
        try:
            st = os.stat(self.root)
        except OSError as exc:
            yield Entry(uri=self.root_uri, source=self.spec, path=self.root, error=_stat_problem(exc, self.root))
            return
        if not _stat.S_ISDIR(st.st_mode):
            yield from self._single(st, unchanged)
            return
        # The walk: depth first; the stack holds directory paths still to list.
        visited: dict[tuple[int, int], str] = {(st.st_dev, st.st_ino): self.root}
        stack = [self.root]
        while stack:
            yield from self._directory(stack.pop(), stack, visited, unchanged)

    # --- one file
    def _single(self, st: os.stat_result, unchanged: UnchangedCheck) -> Iterator[Listed]:
        path = self.root
        kind = archive_kind(path)
        if kind and self.open_archives and _stat.S_ISREG(st.st_mode):
            yield from self._archive(path, st, kind, unchanged)
            return
        if not _stat.S_ISREG(st.st_mode):
            yield Entry(uri=self.root_uri, source=self.spec, path=path, error=_not_regular(st.st_mode))
            return
        directory, name = os.path.split(path)
        sidecars = []
        for stem in dict.fromkeys((_stem(name), name)):
            for ext in _SIDECAR_ORDER:
                candidate = os.path.join(directory, f"{stem}.{ext}")
                if candidate != path and os.path.isfile(candidate):
                    sidecars.append(Sidecar(name=f"{stem}.{ext}", path=candidate))
        yield Entry(
            uri=self.root_uri,
            source=self.spec,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            path=path,
            sidecars=tuple(sidecars),
        )

    # --- a tree
    def _directory(
        self, dirpath: str, stack: list[str], visited: dict[tuple[int, int], str], unchanged: UnchangedCheck
    ) -> Iterator[Listed]:
        spec = self.spec
        prefix = dirpath if dirpath.endswith(os.sep) else dirpath + os.sep
        files_unchanged = False
        if self.trust_dir_mtime:
            # One stat per directory instead of one per file: an unchanged directory mtime
            # means no file was added, removed or renamed in it since it was listed.
            try:
                dir_mtime = os.stat(dirpath).st_mtime_ns
            except OSError:
                dir_mtime = None
            if dir_mtime is not None:
                dir_uri = safe_uri(prefix[:-1] or os.sep)
                if unchanged(dir_uri + "/", 0, dir_mtime):
                    files_unchanged = True
                    yield DirectoryUnchanged(dir_uri, spec)
                else:
                    yield DirectoryListed(dir_uri, spec, dir_mtime)
        images: list[os.DirEntry[str]] = []
        sidecars: dict[str, list[str]] = {}
        subdirs: list[os.DirEntry[str]] = []
        others: list[os.DirEntry[str]] = []  # archives, and symlinks that may be broken
        parquets: list[os.DirEntry[str]] = []  # dataset tables and shards (``datasets``)
        overflow = False
        try:
            with os.scandir(dirpath) as it:
                if files_unchanged:  # only what may hold more: subdirectories and archives
                    for de in it:
                        try:
                            is_dir = de.is_dir()
                        except OSError:
                            is_dir = False
                        if is_dir:
                            subdirs.append(de)
                        elif de.name[-1:] in _ARCHIVE_LAST_CHARS and de.name.lower().endswith(ARCHIVE_SUFFIXES):
                            others.append(de)
                        elif de.name[-8:].lower() == ".parquet":
                            parquets.append(de)
                for de in it:
                    name = de.name
                    dot = name.rfind(".")
                    ext = name[dot + 1 :].lower() if dot > 0 else ""
                    if ext in IMAGE_EXTS:
                        if len(images) < CHUNK:
                            images.append(de)
                        else:
                            overflow = True
                    elif ext in SIDECAR_EXTS:
                        stem = name[:dot]
                        if stem in sidecars:
                            sidecars[stem].append(name)
                        else:
                            sidecars[stem] = [name]
                    elif ext == "parquet":
                        parquets.append(de)
                    elif _is_dir(de):
                        subdirs.append(de)
                    elif name.lower().endswith(ARCHIVE_SUFFIXES) or (not ext and de.is_symlink()):
                        others.append(de)  # archives by ``archive_kind``'s rule: "x.TAR.GZ", ".tgz" too
        except OSError as exc:
            yield Entry(uri=safe_uri(dirpath), source=spec, error=f"unreadable directory: {describe(exc)}")
            return

        found_dirs: list[str] = []
        shards = self._dataset_files(dirpath, prefix, parquets) if parquets else ()
        part = (
            self._part_records(dirpath, prefix, sidecars)
            if images and _PART_DIR.match(os.path.basename(dirpath))
            else None
        )
        image = self._image
        known_files = self._known_files
        if known_files is not None and images:
            images = yield from self._settle_unchanged(images, safe_uri(prefix)[:-1], known_files)
        for de in images:
            entry = image(de, prefix, sidecars, found_dirs)
            if entry is not None:
                if part is not None and entry.error is None:
                    _add_part_fields(entry, de.name, part)
                yield entry
        if overflow:
            seen = {de.name for de in images}
            images.clear()
            try:
                with os.scandir(dirpath) as it:
                    for de in it:
                        name = de.name
                        dot = name.rfind(".")
                        if dot > 0 and name[dot + 1 :].lower() in IMAGE_EXTS and name not in seen:
                            entry = image(de, prefix, sidecars, found_dirs)
                            if entry is not None:
                                yield entry
            except OSError as exc:
                yield Entry(uri=safe_uri(dirpath), source=spec, error=f"unreadable directory: {describe(exc)}")
        for de in others:
            path = prefix + de.name
            try:
                st = de.stat()
            except OSError as exc:
                yield Entry(uri=safe_uri(path), source=spec, path=path, error=_stat_problem(exc, path))
                continue
            if _stat.S_ISDIR(st.st_mode):
                found_dirs.append(path)  # e.g. a directory named x.tar: walk it
                continue
            kind = archive_kind(de.name)
            if kind and self.open_archives:
                if _stat.S_ISREG(st.st_mode):
                    yield from self._archive(path, st, kind, unchanged)
                else:  # a fifo named like an archive: recorded, never opened
                    yield Entry(uri=safe_uri(path), source=spec, path=path, error=_not_regular(st.st_mode))
        for path, st in shards:
            yield from iter_parquet_shard(
                self.spec,
                safe_uri(path),
                path,
                unchanged,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                local_path=path,
                max_member_bytes=self.max_member_bytes,
            )
        for de in subdirs:
            found_dirs.append(prefix + de.name)
        # Depth first, in name order: deterministic, and the stack holds one level's names.
        for path in sorted(found_dirs, reverse=True):
            try:
                st = os.stat(path)
            except OSError as exc:
                yield Entry(uri=safe_uri(path), source=spec, error=_stat_problem(exc, path))
                continue
            key = (st.st_dev, st.st_ino)
            first = visited.get(key)
            if first is not None:
                yield Entry(
                    uri=safe_uri(path),
                    source=spec,
                    error=f"directory already walked (symlink loop or second route to {safe_uri(first)}): skipped",
                )
                continue
            visited[key] = path
            stack.append(path)

    @staticmethod
    def _settle_unchanged(images: list[os.DirEntry[str]], dir_uri: str, known_files: KnownFiles) -> Iterator[Listed]:
        """Yields one ``FilesUnchanged`` for the images the catalogued listing of ``dir_uri``
        matches (one stat each, kept in the DirEntry); returns the rest, to become Entries."""
        listing = known_files(dir_uri)
        if not listing:
            return images
        rest: list[os.DirEntry[str]] = []
        rowids: list[int] = []
        is_reg = _stat.S_ISREG
        for de in images:
            name = de.name
            known = listing.get(name if name.isascii() else safe_uri(name))
            if known is not None:
                try:
                    st = de.stat()
                except OSError:
                    rest.append(de)  # the Entry path reports why
                    continue
                mtime = st.st_mtime_ns
                if mtime and st.st_size == known[0] and mtime == known[1] and is_reg(st.st_mode):
                    rowids.append(known[2])
                    continue
            rest.append(de)
        if rowids:
            yield FilesUnchanged(dir_uri, rowids)
        return rest

    def _image(
        self, de: os.DirEntry[str], prefix: str, sidecars: dict[str, list[str]], found_dirs: list[str]
    ) -> Entry | None:
        """The Entry of one image-named directory entry (a plain function, not a generator:
        this runs once per file on every rescan)."""
        name = de.name
        path = prefix + name
        try:
            st = de.stat()
        except OSError as exc:
            return Entry(uri=safe_uri(path), source=self.spec, path=path, error=_stat_problem(exc, path))
        if not _stat.S_ISREG(st.st_mode):
            if _stat.S_ISDIR(st.st_mode):
                found_dirs.append(path)
                return None
            return Entry(uri=safe_uri(path), source=self.spec, path=path, error=_not_regular(st.st_mode))
        found = _NO_SIDECARS
        if sidecars:
            by_stem = sidecars.get(name[: name.rfind(".")])
            by_name = sidecars.get(name)  # "a.png.txt" beside "a.png"
            if by_stem or by_name:
                found = tuple(Sidecar(name=n, path=prefix + n) for n in (by_stem or []) + (by_name or []))
        return Entry(
            uri=safe_uri(path),
            source=self.spec,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            path=path,
            sidecars=found,
        )

    def _archive(self, path: str, st: os.stat_result, kind: str, unchanged: UnchangedCheck) -> Iterator[Listed]:
        yield from iter_archive(
            self.spec,
            safe_uri(path),
            lambda: open_regular(path),  # swapped for a fifo since the listing: refused, not waited on
            unchanged,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            kind=kind,
            max_member_bytes=self.max_member_bytes,
            table=self._table_for(os.path.dirname(path))
            if _PART_DIR.match(_stem(_stem(os.path.basename(path))))
            else None,
        )

    # --- dataset layouts (``audit.ingest.datasets``)
    def _dataset_files(
        self, dirpath: str, prefix: str, parquets: list[os.DirEntry[str]]
    ) -> list[tuple[str, os.stat_result]]:
        """Registers a DiffusionDB-style metadata table of this directory; returns the other
        Parquet files (shards, when they hold images) with their stat."""
        shards = []
        for de in sorted(parquets, key=lambda d: d.name):
            path = prefix + de.name
            try:
                st = de.stat()
            except OSError:
                continue
            if not _stat.S_ISREG(st.st_mode):
                continue
            if de.name.lower() in METADATA_TABLE_NAMES:
                tables = self._tables.setdefault(dirpath, {})
                tables[de.name.lower()] = MetadataTable(safe_uri(path), lambda p=path: open_regular(p))
                continue
            shards.append((path, st))
        return shards

    def _table_for(self, dirpath: str) -> Any:
        """The metadata table of ``dirpath`` or the nearest directory above it (within the root)."""
        # DiffusionDB keeps 2M's parts under images/ and Large's under diffusiondb-large-part-*/,
        # numbered alike: a part below a "large" folder takes metadata-large.parquet.
        large = "large" in dirpath[len(self.root) :].lower()
        path = dirpath
        while True:
            tables = self._tables.get(path)
            if tables:
                first, second = ("metadata-large.parquet", "metadata.parquet")[:: 1 if large else -1]
                return tables.get(first) or tables.get(second)
            if path == self.root or len(path) <= len(self.root):
                return None
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent

    def _part_records(self, dirpath: str, prefix: str, sidecars: dict[str, list[str]]) -> dict[str, Any]:
        """Fields per image name of a DiffusionDB part folder (``part-NNNNNN/`` holding
        ``part-NNNNNN.json``), the dataset's metadata table standing in when the part JSON
        is missing or broken; ``"__problem__"`` holds what went wrong, for every image."""
        base = os.path.basename(dirpath)
        json_name = part_json_name(base)
        problem = None
        records: dict[str, Any] = {}
        if json_name is not None and json_name in sidecars.get(base, ()):
            try:
                data = read_regular(prefix + json_name, PART_JSON_MAX_BYTES)
                records, problem = part_records(data)
            except TooLarge as exc:
                problem = f"larger than {exc.limit} bytes (not read)"
            except OSError as exc:
                problem = f"unreadable: {describe(exc)}"
            if problem is None:
                return records
            problem = f"part JSON {json_name}: {problem}"
        table = self._table_for(dirpath)
        if table is not None:
            records = dict(table.part(part_id_of(base)))
            if table.problem:
                problem = "; ".join(p for p in (problem, table.problem) if p)
        if problem:
            records["__problem__"] = problem
        return records


def _add_part_fields(entry: Entry, name: str, part: dict[str, Any]) -> None:
    found = part.get(name)
    problem = part.get("__problem__")
    if found is None and problem is None:
        return
    fields = dict(found or {})
    if problem:
        fields["dataset_metadata_errors"] = [problem]
    entry.fields = fields


_PART_DIR = PART_NAME


def _is_dir(de: os.DirEntry[str]) -> bool:
    try:
        return de.is_dir()
    except OSError:
        return False


def _stem(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def _stat_problem(exc: OSError, path: str) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        try:
            target = safe_uri(os.readlink(path))
        except OSError:
            target = "?"
        return f"broken symlink (target {target!r} does not exist)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"unreadable: {describe(exc)}"
    return describe(exc)


def _not_regular(mode: int) -> str:
    if _stat.S_ISFIFO(mode):
        what = "fifo"
    elif _stat.S_ISSOCK(mode):
        what = "socket"
    elif _stat.S_ISCHR(mode) or _stat.S_ISBLK(mode):
        what = "device file"
    else:
        what = "special file"
    return f"not a regular file ({what}): not read"
