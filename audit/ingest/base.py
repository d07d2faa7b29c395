"""The seam between where generations are stored and the crawler.

A ``Source`` lists ``Entry`` objects. The crawler decides what to read: a local file is
read by a worker process from ``path``; an archive member or remote object whose bytes
only the source can reach arrives with ``data`` filled in by ``Source.load``. Sources
never raise for one bad file: they yield an ``Entry`` with ``error`` set, which becomes a
catalog row with status ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

# Asked by a source before it opens a container (archive) or downloads a remote object:
# True when a container or location of that uri, size and mtime was fully catalogued
# before, so the source may skip reading it (and list the object without bytes).
UnchangedCheck = Callable[[str, int, int], bool]


@dataclass(frozen=True)
class Sidecar:
    """Text that travels with an image: ``key.txt``/``key.json``/``key.yaml`` beside it."""

    name: str  # file or member name, e.g. "0001.json"
    path: str | None = None  # local path, read by the worker
    data: bytes | None = None  # bytes, when only the source can read them


@dataclass(slots=True)
class Entry:
    """One stored generation as a source sees it, before anything is read.

    Not frozen: a rescan creates one per file, and a frozen dataclass costs three times
    as much to build. Treat it as read-only all the same."""

    uri: str  # absolute path for local files; "<archive uri>!/<member path>" for members
    source: str  # the SOURCE argument it came from, as given
    size: int | None = None
    mtime_ns: int | None = None
    path: str | None = None  # local file a worker can open itself
    data: bytes | None = None  # the bytes, when only the source can read them
    sidecars: tuple[Sidecar, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)  # manifest columns: prompt, seed, model, ...
    error: str | None = None  # a problem found while listing: unreadable, symlink loop, unsafe path
    container: str | None = None  # uri of the archive/manifest this entry was listed from


@dataclass(frozen=True)
class ContainerUnchanged:
    """Yielded instead of the members of an archive that is unchanged since the last crawl:
    the crawler marks every catalogued location under ``uri`` as seen without reading."""

    uri: str
    source: str
    # what follows ``uri`` in its members' uris: "!/" for archives, "#row=" for the rows of
    # a Parquet shard with embedded images
    members: str = "!/"


@dataclass(frozen=True)
class ContainerDone:
    """Yielded after the last member of a container; lets the crawler remember its
    size and mtime once (and only once) all its members are safely catalogued."""

    uri: str
    source: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class DirectoryListed:
    """Yielded before the files of a directory whose mtime the source read first (only
    with ``trust_dir_mtime``): the crawler remembers that mtime with the directory."""

    uri: str
    source: str
    mtime_ns: int


@dataclass(frozen=True)
class DirectoryUnchanged:
    """Yielded instead of the files of a directory whose mtime is what it was when it was
    last listed in full (only with ``trust_dir_mtime``): no file was added, removed or
    renamed in it, so the crawler counts its catalogued files as seen without a stat each.
    A file rewritten in place is not noticed this way."""

    uri: str
    source: str


@dataclass(frozen=True)
class FilesUnchanged:
    """Yielded by a source given ``known_files`` (the crawler's cached directory listing):
    the catalogued rowids of files in ``uri`` (a directory) whose size and mtime, just
    stat'ed, match the listing. A rescan then builds no Entry for an unchanged file."""

    uri: str
    rowids: list[int]


Listed = Entry | ContainerUnchanged | ContainerDone | DirectoryListed | DirectoryUnchanged | FilesUnchanged
# directory uri -> {name: (size, mtime_ns, rowid)} of its catalogued files, or None
KnownFiles = Callable[[str], "dict[str, tuple[int, int, int]] | None"]


@runtime_checkable
class Source(Protocol):
    """Lists the generations stored at one place."""

    spec: str  # the SOURCE argument as the user gave it
    # True when ``entries`` walks everything under ``root_uri``: catalogued locations under
    # it that were not listed have been deleted (or moved).
    complete: bool
    root_uri: str

    def entries(self, unchanged: UnchangedCheck) -> Iterator[Listed]: ...
