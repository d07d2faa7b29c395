"""What archive members are called, and how far archives are opened.

Shared by the crawl-time readers (``archive.py``) and the re-reader (``reader.py``): a uri a
crawl wrote must name exactly one member when embed, report or a notebook reads it again,
so both sides name members with the same ``MemberNamer`` and open nested archives to the
same depth.

Naming rule (the uri of a member is ``"<archive uri>!/<name>"``):

- ``<name>`` is the member's path with leading ``./`` dropped, undecodable bytes
  percent-escaped (``safe_uri``) and every ``"!/"`` inside it written ``"%21/"``: ``"!/"``
  only ever separates an archive from its members, so the members of a nested archive
  (``"<outer>!/<inner.tar>!/<member>"``) can never be confused with an outer member whose
  name happens to contain ``"!/"``.
- Tar and zip allow two members with the same name. The first keeps the plain name (so
  existing indexes keep their uris); a later one whose name is taken gets ``"#<n>"``
  appended, n being its position in the archive listing (1 = first entry; directories
  count). Should that be taken too (a member may literally be named ``"a.png#5"``),
  ``"#<n>"`` is appended again until the name is free. Names are claimed in archive order,
  so the rule is deterministic; and no two members of one archive ever share a name,
  whatever names an adversary chooses.

Limits on opening (per top-level archive, i.e. the file the crawl found):

- ``MAX_NESTING_DEPTH`` levels of archives are opened; a deeper one is an error row.
- ``ExpansionBudget``: every byte a decompressor produces (the decompressed stream of a
  tar.gz/bz2/xz, each zip member read, and the expanded size of sparse tar members) is
  charged to the archive it came from. Past the budget nothing more is decompressed: the
  members not read are error rows (or the archive's own row says where reading stopped).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from typing import IO, Any

from audit.ingest._common import safe_uri

# An archive inside an archive inside the archive found on disk: deeper nesting is not how
# generations are stored, and each level multiplies what one small file can expand to.
MAX_NESTING_DEPTH = 3
# Bytes one top-level archive may expand to, nested archives included: the larger of a
# floor and a ratio of its size on disk. Stored images barely compress (ratio ~1), so an
# honest archive stays far below 20x its size; the floor admits small archives of
# uncompressed formats (BMP, TIFF). A zip or tar.gz bomb (1000:1 and more) stops here instead
# of costing hours of decompression on every crawl.
MAX_EXPANDED_BYTES = 4 << 30
MAX_EXPANSION_RATIO = 20
# Reads from member streams are made in blocks of this size (never one read of a whole,
# possibly huge, member).
READ_BLOCK = 1 << 20

DUPLICATE_MARK = "#"
NESTING_SEPARATOR = "!/"


def member_name(raw: str) -> str:
    """The uri form of a member path (before duplicates are told apart)."""
    while raw.startswith("./"):
        raw = raw[2:]
    name = safe_uri(raw)
    return name.replace(NESTING_SEPARATOR, "%21/") if NESTING_SEPARATOR in name else name


class MemberNamer:
    """Names the members of one archive, fed in archive order (see the module docstring).

    Remembers an 8-byte digest per name claimed, not the name: a member name can be
    megabytes long (GNU long names), and memory must not follow that."""

    def __init__(self) -> None:
        self.position = 0
        self._claimed: set[int] = set()

    def name(self, raw: str, *, is_dir: bool = False) -> str | None:
        """The uri name of the next member; None for a directory (it has no row, but it
        counts in the positions)."""
        self.position += 1
        if is_dir:
            return None
        candidate = member_name(raw)
        while not self._claim(candidate):
            candidate = f"{candidate}{DUPLICATE_MARK}{self.position}"
        return candidate

    def _claim(self, name: str) -> bool:
        key = int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
        if key in self._claimed:
            return False
        self._claimed.add(key)
        return True


# --- expansion budget -----------------------------------------------------------------------


class ExpansionLimit(Exception):
    """An archive expanded past its budget. Deliberately not an OSError or ValueError: the
    readers' "corrupt archive" handlers must not swallow it."""


class ExpansionBudget:
    """Decompressed bytes one top-level archive (with everything nested in it) may produce."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @classmethod
    def for_archive(cls, size_on_disk: int) -> "ExpansionBudget":
        return cls(max(MAX_EXPANDED_BYTES, MAX_EXPANSION_RATIO * max(0, size_on_disk or 0)))

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def reason(self) -> str:
        return (
            f"archive expands past {self.limit} bytes ({MAX_EXPANSION_RATIO}x its size, at least "
            f"{MAX_EXPANDED_BYTES}): decompression bomb? not read further"
        )

    def charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ExpansionLimit(self.reason())

    def check(self) -> None:
        if self.exhausted:
            raise ExpansionLimit(self.reason())


class Metered:
    """A read-only stream whose bytes are charged to an ``ExpansionBudget``."""

    def __init__(self, fh: Any, budget: ExpansionBudget) -> None:
        self._fh = fh
        self._budget = budget

    def read(self, n: int | None = -1) -> bytes:
        self._budget.check()
        if n is None or n < 0:
            parts = []
            while block := self.read(READ_BLOCK):
                parts.append(block)
            return b"".join(parts)
        data = self._fh.read(n)
        self._budget.charge(len(data))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Metered":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Prefixed:
    """A stream whose first bytes were already read (to detect the compression)."""

    def __init__(self, head: bytes, fh: Any) -> None:
        self._head = head
        self._fh = fh

    def read(self, n: int | None = -1) -> bytes:
        head = self._head
        if not head:
            return self._fh.read(n)
        self._head = b""
        if n is None or n < 0:
            return head + self._fh.read()
        if len(head) > n:
            self._head = head[n:]
            return head[:n]
        return head + self._fh.read(n - len(head)) if len(head) < n else head

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()


def _read_head(fh: Any, n: int) -> bytes:
    parts = []
    got = 0
    while got < n:
        block = fh.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def compression_of(head: bytes) -> str | None:
    """ "gz", "bz2" or "xz" from a stream's first bytes (tarfile's own detection), else None."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "gz"
    if head[0:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bz2"
    if head.startswith((b"\x5d\x00\x00\x80", b"\xfd7zXZ")):
        return "xz"
    if head.startswith(_ZSTD_MAGIC):
        return "zst"
    return None


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def tar_stream(fh: Any, budget: ExpansionBudget) -> IO[bytes]:
    """The tar bytes of ``fh``, decompressed (gzip, bzip2, xz, zstd) when compressed; what a
    decompressor produces is charged to ``budget``. Reads forward only (works on pipes,
    member streams, remote files)."""
    head = _read_head(fh, 10)
    stream = _Prefixed(head, fh)
    kind = compression_of(head)
    if kind == "gz":
        return Metered(gzip.GzipFile(fileobj=stream, mode="rb"), budget)  # type: ignore[arg-type]
    if kind == "bz2":
        return Metered(bz2.BZ2File(stream, "rb"), budget)  # type: ignore[arg-type]
    if kind == "xz":
        return Metered(lzma.LZMAFile(stream, "rb"), budget)  # type: ignore[arg-type]
    if kind == "zst":
        return Metered(_ZstdReader(stream), budget)
    return stream  # type: ignore[return-value]


class _ZstdReader:
    """A zstd stream read forward (``.tar.zst``, e.g. webdataset shards); the decompressor's
    own errors become ``OSError`` like the other decompressors' (a damaged archive is an
    error row, not a crash). ``zstandard`` is imported on first use (``audit[formats]``)."""

    def __init__(self, fh: Any) -> None:
        try:
            import zstandard
        except ImportError:
            raise OSError(
                "zstd-compressed archive: no decompressor installed (install audit[formats]: zstandard)"
            ) from None
        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)

    def read(self, n: int = -1) -> bytes:
        try:
            return self._reader.read(n)
        except self._error as exc:
            raise OSError(f"zstd data corrupt: {exc}") from None

    def close(self) -> None:
        self._reader.close()
