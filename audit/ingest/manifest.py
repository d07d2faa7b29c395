"""Manifests: JSONL, CSV, Parquet and JSON generation logs, one row per image.

- The path column is the first of ``path``, ``uri``, ``file``, ``image``, ``filepath`` (then
  ``file_path``, ``image_path``, ``filename``, ``file_name``, ``url``) present, matched
  case-insensitively. A manifest without one is an ``InputError`` (raised by the
  constructor, so ``open_source`` fails before any crawl) naming the columns it has.
- prompt, negative_prompt, seed, model, steps, sampler, cfg_scale (and a few common
  spellings: "negative prompt", cfg, guidance_scale, sampler_name, checkpoint, ...) go into
  ``Entry.fields`` under those names, typed: seed as text (seeds exceed int64), steps int,
  cfg_scale float. Every other non-empty column goes into ``fields`` under its own name.
- Rows stream: JSONL line by line, CSV through ``csv.DictReader``, Parquet batch by batch
  (``ParquetFile.iter_batches``: one row group at a time, never the whole table, batches of
  about ``PARQUET_BATCH_BYTES``, column chunks read buffered).
- Hostile rows cost one row: a JSONL line over ``MAX_ROW_BYTES`` or a CSV record over
  ``MAX_CSV_RECORD_BYTES`` is an error row and is skipped in blocks (never read whole; the
  rest of an over-long CSV record is skipped to where its quotes balance); JSON is parsed with ``safejson`` (a row
  nested 100,000 levels deep is "invalid JSON", not a RecursionError); a Parquet cell
  larger than ``MAX_ROW_BYTES`` or nested deeper than ``safejson.MAX_DEPTH`` is left out of
  ``fields`` (named in ``fields["fields_skipped"]``) and the image is audited all the same;
  embedded image bytes over the member cap are an error row.
- The manifest itself and every local file a row names are opened only when they are
  regular files (``safeio.open_regular``; a row naming a fifo, device or socket is an
  error row and is never opened).
- A row's uri is the file it names: a relative path resolves against the manifest's
  directory (for a manifest at a URL, against the URL's directory); a local path gives an
  absolute path (``Entry.path``, read by a worker, one ``stat`` per row); a URL gives that
  URL, read here through fsspec on a small prefetching thread pool (``Entry.data``).
- An ``image`` column holding bytes (or ``{"bytes": ..., "path": ...}``, as Hugging Face
  datasets store images) gives entries with ``data`` and uri ``"<manifest uri>#row=N"``.
- Bad rows (broken JSON, not an object, empty path) are error entries with uri
  ``"<manifest uri>#row=N"`` (N: the line number for JSONL and CSV, the 1-based row for
  Parquet). A named file that does not exist: error "file not found" at the file's uri.
- ``complete`` is False, ``root_uri`` is the manifest's uri: a manifest lists files but owns
  no tree, so a row removed from it says nothing about the file, and nothing is marked
  deleted because of it. Every rescan re-lists every row (cheap: one stat per local row);
  unchanged files are then skipped by the crawler by uri, size and mtime. A manifest naming
  files is not a container: ``unchanged()`` is never asked, because files it names change
  on their own (a Parquet file holding the images is one: see below).
- Sidecars are not looked up for manifest rows (the manifest's columns are the metadata).
- Parquet with image bytes (Hugging Face ``datasets`` shards: a struct column with a binary
  ``bytes`` field, whatever its name, or a binary ``image``/``jpg``/``png`` column) is read
  row by row from that column, which wins over any column naming files; such a file IS a
  container: ``unchanged(uri, size, mtime)`` is asked first (``ContainerUnchanged`` with
  ``members="#row="``), and ``ContainerDone`` follows its last row (not when reading stopped
  early), so a rescan of unchanged shards reads nothing. Prompt columns are recognised by the
  aliases above (DiffusionDB's ``step``/``cfg`` included).
- A row naming ``<archive>!/<member>`` (a local tar/zip, relative to the manifest or
  absolute) gives that member's bytes; a member the archive does not hold is an error row
  "member not found in the archive" at its uri.
- ``*.json``: one JSON document (at most ``MAX_DOCUMENT_BYTES``, parsed whole): a list of
  rows; ``{"items": [...]}`` (a Civitai ``/api/v1/images`` export: each item's ``meta``
  becomes its fields, the image is the file saved beside the document, or in its
  ``images/`` folder, as ``<id>.<ext>`` or under the url's basename; an item whose image is
  not there is an error row "image not found beside the export (looked for ...)"); or a
  mapping image name -> record (a DiffusionDB part JSON). A ``.json`` SOURCE is always
  read as a manifest, never as an image. JourneyDB's JSONL names its images in ``img_path``.
"""

from __future__ import annotations

import csv
import os
import posixpath
import stat as _stat
import sys
from collections import deque
from typing import IO, Any, Callable, Iterator

from audit import safejson
from audit.errors import InputError
from audit.ingest._common import (
    DEFAULT_MAX_MEMBER_BYTES,
    FetchTicket,
    FetchWindow,
    describe,
    is_url,
    safe_uri,
)
from audit.ingest.base import ContainerDone, ContainerUnchanged, Entry, Listed, UnchangedCheck
from audit.safeio import kind_of, open_regular

# A JSONL line or CSV record longer than this is an error row, skipped in blocks without
# ever being held whole: a row is a path plus generation text (a ComfyUI workflow is tens
# of kilobytes), and a sidecar may carry no more either.
MAX_ROW_BYTES = 16 * 1024 * 1024
# A CSV record may be this long: csv holds the field being parsed as 4-byte characters (and
# grows that buffer by doubling), so a record costs up to eight times its length while it
# is parsed; prompts and settings fit many times over.
MAX_CSV_RECORD_BYTES = 4 * 1024 * 1024
# Parquet rows are read in batches of about this many (uncompressed) bytes, from the row
# group's own statistics: a batch of 1024 rows of embedded images must not be gigabytes.
PARQUET_BATCH_BYTES = 32 * 1024 * 1024
_LINE_BLOCK = 1 << 16
# A JSON document (not JSONL) is parsed whole: a Civitai export of 100,000 items is about
# 200 MB; bigger exports are better written as JSONL, which streams.
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024

PATH_COLUMNS = (
    "path",
    "uri",
    "file",
    "image",
    "filepath",
    "file_path",
    "image_path",
    "img_path",
    "filename",
    "file_name",
    "url",
)  # img_path: JourneyDB

# canonical field <- accepted spellings (lower case)
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "positive_prompt"),
    "negative_prompt": ("negative_prompt", "negative prompt", "negativeprompt", "neg_prompt", "negative"),
    "seed": ("seed",),
    "model": ("model", "model_name", "checkpoint", "ckpt"),
    "steps": ("steps", "step", "num_inference_steps"),
    "sampler": ("sampler", "sampler_name"),
    "cfg_scale": ("cfg_scale", "cfg scale", "cfgscale", "cfg", "guidance_scale", "guidance"),
}
_ALIAS_TO_FIELD = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}

try:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # prompts and workflows can be long
except OverflowError:  # pragma: no cover
    pass


def manifest_format(name: str) -> str | None:
    low = name.lower()
    for fmt in ("jsonl", "csv", "parquet", "json"):
        if low.endswith("." + fmt):
            return fmt
    return None


class ManifestSource:
    """One manifest file, local or at an fsspec URL."""

    complete = False

    def __init__(
        self,
        spec: str,
        *,
        path: str | None = None,
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
        workers: int = 4,
        window: int = 16,
        source: str | None = None,
    ) -> None:
        self.spec = spec
        self.source = spec if source is None else source  # what entries name as their SOURCE
        self._doc: list[Any] | None = None  # the rows of a JSON document (format "json")
        self._doc_files: dict[str, str] | None = None  # file name and stem -> name, beside a JSON document
        self.embedded_column: str | None = None
        self._stopped = False  # reading stopped early (the file turned out damaged)
        self.format = manifest_format((path or spec).split("?", 1)[0]) or "jsonl"
        self.max_member_bytes = max_member_bytes
        self.workers = workers
        self.window = window
        if is_url(spec):
            from audit.ingest.fsspec_source import object_uri, url_to_fs

            fs, path = url_to_fs(path or spec)
            self._fs: Any = fs
            self._path = path
            self.root_uri = object_uri(fs, path)
            self._base_url = self.root_uri.rsplit("/", 1)[0] + "/"
            self._base_dir: str | None = None
            from audit.ingest.fsspec_source import open_object

            self._open: Callable[[], IO[bytes]] = lambda: open_object(fs, path)
        else:
            path = os.path.abspath(path or spec)
            self._fs = None
            self._path = path
            self.root_uri = safe_uri(path)
            self._base_url = None
            self._base_dir = os.path.dirname(path)
            self._open = lambda: open_regular(path)
        self.columns = self._read_columns()
        lower = {c.lower().strip(): c for c in reversed(self.columns)}
        # A column of image bytes (Hugging Face datasets) wins over any that names files.
        self.path_column = self.embedded_column or next((lower[c] for c in PATH_COLUMNS if c in lower), None)
        if self.path_column is None and self.columns:
            raise InputError(
                f"manifest {spec} has no path column (one of {', '.join(PATH_COLUMNS[:5])}); "
                f"columns found: {', '.join(map(str, self.columns)) or 'none'}"
            )

    # --- columns, checked up front
    def _read_columns(self) -> list[str]:
        try:
            with self._open() as fh:
                if self.format == "parquet":
                    from audit.ingest.datasets import embedded_image_column

                    schema = _parquet_file(fh).schema_arrow
                    self.embedded_column = embedded_image_column(schema)
                    return list(schema.names)
                if self.format == "json":
                    return self._read_document(fh)
                lines = LineReader(fh, MAX_CSV_RECORD_BYTES if self.format == "csv" else MAX_ROW_BYTES)
                if self.format == "csv":
                    try:
                        header = next(csv.reader(_CsvLines(lines)), None)
                    except RowTooLong:
                        raise InputError(
                            f"manifest {self.spec}: CSV header longer than {MAX_CSV_RECORD_BYTES} bytes"
                        ) from None
                    if header is None:
                        raise InputError(f"manifest {self.spec} is empty: no CSV header")
                    return header
                while (line := lines.next()) is not None:  # JSONL: the keys of the first row that parses
                    if line is TOO_LONG or not line.strip():
                        continue
                    try:
                        obj = safejson.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        return list(obj)
                return []
        except InputError:
            raise
        except FileNotFoundError:
            raise InputError(f"source not found: {self.spec}") from None
        except Exception as exc:  # noqa: BLE001 - unreadable or not this format
            raise InputError(f"cannot read manifest {self.spec}: {describe(exc)}") from None

    # --- rows
    def entries(self, unchanged: UnchangedCheck) -> Iterator[Listed]:
        stamp = self._shard_stamp()
        if stamp is not None and unchanged(self.root_uri, *stamp):
            yield ContainerUnchanged(self.root_uri, self.source, members="#row=")
            return
        try:
            fh = self._open()
        except Exception as exc:  # noqa: BLE001 - replaced by a fifo, vanished, unreachable: one row
            yield Entry(uri=self.root_uri, source=self.source, error=f"unreadable manifest: {describe(exc)}")
            return
        self._stopped = False
        with FetchWindow(self.workers, self.window) as window, fh:
            for row_no, row, problem in self._rows(fh):
                if problem is not None:
                    yield self._bad(row_no, problem)
                    yield from window.ready()
                    continue
                item = self._entry(row_no, row)
                if isinstance(item, Entry):
                    yield item
                else:  # a URL: read on the pool
                    yield from window.submit(*item)
                yield from window.ready()
            yield from window.drain()
        if stamp is not None and not self._stopped:
            yield ContainerDone(self.root_uri, self.source, *stamp)

    def _shard_stamp(self) -> tuple[int, int] | None:
        """(size, mtime_ns) of a Parquet file whose rows hold the images: such a file is a
        container (its rows are not files that change on their own), skipped whole by the
        next crawl while it is unchanged. None for every other manifest, or when unknown."""
        if self.embedded_column is None or self.path_column != self.embedded_column:
            return None
        try:
            if self._fs is None:
                st = os.stat(self._path)
                return st.st_size, st.st_mtime_ns
            from audit.ingest._common import info_mtime_ns

            info = self._fs.info(self._path)
            size, mtime_ns = info.get("size"), info_mtime_ns(info)
            return (int(size), mtime_ns) if isinstance(size, int) and mtime_ns else None
        except Exception:  # noqa: BLE001 - unknown: read it every time, as any manifest
            return None

    def _rows(self, fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """(row number, row, problem) for every row; a manifest that cannot be read on ends
        with one problem row where reading stopped."""
        rows = {"jsonl": self._jsonl_rows, "csv": self._csv_rows, "json": self._document_rows}.get(
            self.format, self._parquet_rows
        )
        last = 0
        try:
            for row_no, row, problem in rows(fh):
                last = row_no
                yield row_no, row, problem
        except Exception as exc:  # noqa: BLE001 - I/O or decoder failure mid-file: the rest is not read
            self._stopped = True  # a shard read in part is not remembered as done
            yield last + 1, {}, f"manifest unreadable from here on: {describe(exc)}"

    def _jsonl_rows(self, fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        lines = LineReader(fh, MAX_ROW_BYTES)
        while (line := lines.next()) is not None:
            line_no = lines.number
            if line is TOO_LONG:
                yield line_no, {}, f"bad row: line longer than {MAX_ROW_BYTES} bytes (not read)"
                continue
            if not line.strip():
                continue
            try:
                obj = safejson.loads(line)
            except ValueError as exc:
                yield line_no, {}, f"bad row: invalid JSON ({describe(exc)})"
                continue
            if not isinstance(obj, dict):
                yield line_no, {}, f"bad row: a JSON {type(obj).__name__}, not an object"
                continue
            yield line_no, obj, None

    # --- JSON documents: Civitai API exports, lists of rows, DiffusionDB part JSON
    def _read_document(self, fh: IO[bytes]) -> list[str]:
        """Parse a whole JSON document (at most ``MAX_DOCUMENT_BYTES``) into rows; the
        columns are the keys of its first row."""
        from audit.ingest.datasets import is_civitai_item, part_fields
        from audit.safeio import TooLarge, read_capped

        try:
            data = read_capped(fh, MAX_DOCUMENT_BYTES)
        except TooLarge:
            raise InputError(
                f"manifest {self.spec}: JSON document larger than {MAX_DOCUMENT_BYTES} bytes; write it as JSONL"
            ) from None
        try:
            doc = safejson.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"manifest {self.spec} is not valid JSON: {describe(exc)}") from None
        del data
        rows: list[Any]
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):  # Civitai /api/v1/images
            rows = doc["items"]
        elif isinstance(doc, list):
            rows = doc
        elif (
            isinstance(doc, dict)
            and doc
            and all(isinstance(v, dict) for v in doc.values())
            and not (set(map(str, doc)) & set(PATH_COLUMNS))
        ):  # image name -> record (a DiffusionDB part JSON)
            rows = [{"path": name, **part_fields(rec)} for name, rec in doc.items()]
        elif isinstance(doc, dict):
            rows = [doc]
        else:
            raise InputError(f"manifest {self.spec}: a JSON {type(doc).__name__}, not rows")
        self._doc = rows
        first = next((r for r in rows if isinstance(r, dict)), None)
        if first is None:
            return []
        if is_civitai_item(first):
            return ["path", *first.keys()]  # the path is found beside the document (``_civitai``)
        return list(first)

    def _document_rows(self, fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        from audit.ingest.datasets import is_civitai_item

        if self._doc is None:  # listed before: parse the document again
            self._read_document(fh)
        rows, self._doc = self._doc or [], None  # handed over: the rows are not held twice
        for row_no, obj in enumerate(rows, 1):
            rows[row_no - 1] = None
            if not isinstance(obj, dict):
                yield row_no, {}, f"bad row: a JSON {type(obj).__name__}, not an object"
                continue
            if is_civitai_item(obj):
                row, problem = self._civitai(obj)
                yield row_no, row, problem
                continue
            yield row_no, obj, None

    def _civitai(self, item: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A Civitai item as a manifest row whose path is the image saved beside the export
        (``<id>.<ext>`` or the url's basename, in the document's folder or its ``images/``)."""
        from audit.ingest.datasets import civitai_row

        row, names = civitai_row(item)
        if self._base_dir is None:  # a document at a URL: the image under the url's name beside it
            if len(names) > 1:
                row["path"] = names[1]
                return row, None
            return row, f"bad row: item {item.get('id')!r} has no url to name its image"
        files = self._files_beside()
        for name in names:
            found = files.get(name) or files.get(name.rsplit(".", 1)[0] if "." in name else name)
            if found:
                row["path"] = found
                return row, None
        looked = ", ".join(f"{n}.*" if "." not in n else n for n in names) or "nothing to look for"
        return row, f"image not found beside the export (looked for {looked})"

    def _files_beside(self) -> dict[str, str]:
        """Image file names (and stems) in the document's folder and its ``images/``
        subfolder, listed once."""
        if self._doc_files is None:
            from audit.ingest._common import is_image_name

            files: dict[str, str] = {}
            for sub in ("", "images"):
                try:
                    with os.scandir(os.path.join(self._base_dir or "", sub)) as it:
                        for de in it:
                            if is_image_name(de.name):
                                rel = os.path.join(sub, de.name) if sub else de.name
                                files.setdefault(de.name, rel)
                                files.setdefault(de.name.rsplit(".", 1)[0], rel)
                except OSError:
                    continue
            self._doc_files = files
        return self._doc_files

    def _csv_rows(self, fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        lines = LineReader(fh, MAX_CSV_RECORD_BYTES)
        text = _CsvLines(lines)
        reader = csv.DictReader(text)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except RowTooLong as exc:
                yield exc.line_no, {}, f"bad row: record longer than {MAX_CSV_RECORD_BYTES} bytes (not read)"
                continue
            except csv.Error as exc:
                text.record_done()
                yield lines.number, {}, f"bad row: {describe(exc)}"
                continue
            text.record_done()
            extra = row.pop(None, None)  # type: ignore[call-overload]
            if extra:
                row["extra_values"] = extra
            yield lines.number, row, None

    def _parquet_rows(self, fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        pf = _parquet_file(fh)
        row_no = 0
        for group in range(pf.num_row_groups):
            meta = pf.metadata.row_group(group)
            per_row = meta.total_byte_size / max(1, meta.num_rows)
            batch_size = int(max(1, min(1024, PARQUET_BATCH_BYTES // max(1.0, per_row))))
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=[group]):
                for row in batch.to_pylist():
                    row_no += 1
                    skipped = _drop_hostile_cells(row, self.path_column)
                    if skipped:
                        row["fields_skipped"] = skipped
                    yield row_no, row, None

    def _bad(self, row_no: int, problem: str) -> Entry:
        return Entry(uri=f"{self.root_uri}#row={row_no}", source=self.source, error=problem, container=self.root_uri)

    def _entry(self, row_no: int, row: dict[str, Any]) -> Entry | tuple[Any, ...]:
        column = self.path_column
        if column is None or column not in row:  # JSONL rows need not share their keys
            lower = {str(k).lower().strip(): k for k in reversed(list(row))}
            column = next((lower[c] for c in PATH_COLUMNS if c in lower), column)
        value = row.get(column) if column is not None else None
        fields = _fields(row, column)
        data: bytes | None = None
        if isinstance(value, dict):  # {"bytes": ..., "path": ...} (Hugging Face image feature)
            data = value.get("bytes") if isinstance(value.get("bytes"), (bytes, bytearray)) else None
            value = value.get("path") if data is None else value.get("path") or None
        elif isinstance(value, (bytes, bytearray)):
            data, value = bytes(value), None
        if data is not None:
            if value:
                fields.setdefault("original_path", str(value))
            if len(data) > self.max_member_bytes:
                return self._bad(
                    row_no, f"image bytes too large: {len(data)} bytes > {self.max_member_bytes} byte cap (not read)"
                )
            return Entry(
                uri=f"{self.root_uri}#row={row_no}",
                source=self.source,
                size=len(data),
                data=bytes(data),
                fields=fields,
                container=self.root_uri,
            )
        if value is None or (isinstance(value, float) and value != value) or not str(value).strip():
            return self._bad(row_no, f"bad row: empty path (column {column or self.path_column!r})")
        target = str(value).strip()
        if is_url(target) or (self._base_url is not None and not os.path.isabs(target)):
            url = target if is_url(target) else _join_url(self._base_url or "", target)
            return (self._fetch, url, fields)
        path = os.path.abspath(os.path.join(self._base_dir or "", os.path.expanduser(target)))
        uri = safe_uri(path)
        if "!/" in target:  # a member of an archive: "shards/00001.tar!/0001.jpg"
            from audit.ingest.reader import split_member

            archive, member = split_member(uri)
            if archive is not None:
                return (self._member, archive, member, fields)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return Entry(
                uri=uri, source=self.source, path=path, error="file not found", fields=fields, container=self.root_uri
            )
        except OSError as exc:
            return Entry(
                uri=uri,
                source=self.source,
                path=path,
                error=f"unreadable: {describe(exc)}",
                fields=fields,
                container=self.root_uri,
            )
        if not _stat.S_ISREG(st.st_mode):  # never opened: a fifo would block a worker forever
            what = "a directory" if _stat.S_ISDIR(st.st_mode) else f"not a regular file ({kind_of(st.st_mode)})"
            return Entry(
                uri=uri,
                source=self.source,
                path=path,
                error=f"{what}: not read",
                fields=fields,
                container=self.root_uri,
            )
        return Entry(
            uri=uri,
            source=self.source,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            path=path,
            fields=fields,
            container=self.root_uri,
        )

    def _member(self, archive: str, member: str, fields: dict[str, Any], ticket: FetchTicket | None = None) -> Entry:
        """A row naming an archive member (``<archive>!/<member>``): read through the
        re-reader (archives opened once and indexed); a member that is not there, or an
        archive that is missing or damaged, is an error row at the member's uri."""
        from audit.ingest.reader import ReadError, read_uri

        uri = f"{archive}!/{member}"
        if not os.path.lexists(archive):
            return Entry(uri=uri, source=self.source, error="archive not found", fields=fields, container=self.root_uri)
        try:
            data = read_uri(uri, max_bytes=self.max_member_bytes)
        except ReadError as exc:
            reason = str(exc)
            if reason.startswith("archive member not found"):
                reason = "member not found in the archive"
            return Entry(uri=uri, source=self.source, error=reason, fields=fields, container=self.root_uri)
        return Entry(uri=uri, source=self.source, size=len(data), data=data, fields=fields, container=self.root_uri)

    def _fetch(self, url: str, fields: dict[str, Any], ticket: FetchTicket | None = None) -> Entry:
        from audit.ingest.fsspec_source import fetch_object, object_uri, url_to_fs

        try:
            fs, path = url_to_fs(url)
            uri = object_uri(fs, path)
        except Exception as exc:  # noqa: BLE001
            return Entry(
                uri=safe_uri(url),
                source=self.source,
                error=f"unusable URL: {describe(exc)}",
                fields=fields,
                container=self.root_uri,
            )
        return fetch_object(
            fs,
            path,
            uri,
            self.source,
            fields=fields,
            container=self.root_uri,
            max_bytes=self.max_member_bytes,
            ticket=ticket,
        )


TOO_LONG = b"\x00too long"  # LineReader's answer for a line over its limit (an identity, not a value)


class RowTooLong(Exception):
    """A CSV record over ``MAX_CSV_RECORD_BYTES``; raised through ``csv`` by ``_CsvLines``."""

    def __init__(self, line_no: int) -> None:
        super().__init__(f"line {line_no}")
        self.line_no = line_no


class LineReader:
    """Physical lines of a binary stream, read in blocks: a line over ``limit`` bytes is
    skipped without being held (``next()`` answers ``TOO_LONG``), so one line of hundreds
    of megabytes costs one block of memory, not its length. ``number`` is the 1-based
    number of the line last returned, ``quotes`` how many ``"`` it held (skipped parts
    included: CSV uses it to find the end of a record it does not keep)."""

    def __init__(self, fh: Any, limit: int, block: int = _LINE_BLOCK) -> None:
        self._fh = fh
        self.limit = limit
        self._block = block
        self._buf = b""
        self._pos = 0
        self.number = 0
        self.quotes = 0

    def next(self) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        quotes = 0
        while True:
            if self._pos >= len(self._buf):
                self._buf, self._pos = self._fh.read(self._block), 0
                if not self._buf:
                    if size == 0:
                        return None
                    self.number += 1
                    self.quotes = quotes
                    return TOO_LONG if size > self.limit else b"".join(parts)
            newline = self._buf.find(b"\n", self._pos)
            end = len(self._buf) if newline < 0 else newline + 1
            size += end - self._pos
            quotes += self._buf.count(b'"', self._pos, end)
            if size <= self.limit:
                parts.append(self._buf[self._pos : end])
            else:
                parts.clear()  # over the limit: what follows of this line is only counted
            self._pos = end
            if newline >= 0:
                self.number += 1
                self.quotes = quotes
                return TOO_LONG if size > self.limit else b"".join(parts)


class _CsvLines:
    """Text lines for ``csv``: each physical line decoded (a leading BOM dropped, lone CR
    line ends split as universal newlines would), and ``RowTooLong`` raised, through the csv
    reader, for a line or a multi-line record over ``MAX_CSV_RECORD_BYTES``. Before raising, the
    rest of that record is skipped unread (up to the line end where its quotes balance), so
    the next record starts where the writer meant it to. The caller calls ``record_done()``
    after each row."""

    def __init__(self, lines: LineReader) -> None:
        self.lines = lines
        self.record_bytes = 0
        self._quotes = 0  # quote characters in the current record so far
        self._first = True
        self._queued: deque[str] = deque()

    def record_done(self) -> None:
        self.record_bytes = 0
        self._quotes = 0

    def __iter__(self) -> "_CsvLines":
        return self

    def __next__(self) -> str:
        if self._queued:
            return self._queued.popleft()
        line = self.lines.next()
        if line is None:
            raise StopIteration
        self._quotes += self.lines.quotes
        if line is TOO_LONG or self.record_bytes + len(line) > MAX_CSV_RECORD_BYTES:
            first = self.lines.number
            while self._quotes % 2 and self.lines.next() is not None:  # inside a quoted field
                self._quotes += self.lines.quotes
            self.record_done()
            raise RowTooLong(first)
        self.record_bytes += len(line)
        text = line.decode("utf-8", "surrogateescape")
        if self._first:
            self._first = False
            text = text.removeprefix("\ufeff")
        if "\r" in text.rstrip("\r\n") or text.endswith("\r"):
            pieces = text.encode("utf-8", "surrogateescape").splitlines(keepends=True)
            self._queued.extend(p.decode("utf-8", "surrogateescape") for p in pieces[1:])
            return pieces[0].decode("utf-8", "surrogateescape")
        return text


def _parquet_file(fh: Any) -> Any:
    import pyarrow.parquet as pq

    # Buffered reads of column chunks, not a whole chunk (one row group's images) at once.
    return pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)


def _drop_hostile_cells(row: dict[str, Any], path_column: str | None) -> list[str]:
    """Leave out of a Parquet row every cell (but the path/image one) that is larger than
    ``MAX_ROW_BYTES`` or nested deeper than ``safejson.MAX_DEPTH``; returns why, per cell."""
    skipped = []
    for key in list(row):
        if key == path_column:
            continue
        problem = _cell_problem(row[key])
        if problem:
            del row[key]
            skipped.append(f"{key}: {problem}")
    return skipped


def _cell_problem(value: Any) -> str | None:
    if isinstance(value, (str, bytes, bytearray)):
        return f"{len(value)} bytes > {MAX_ROW_BYTES} (left out)" if len(value) > MAX_ROW_BYTES else None
    if not isinstance(value, (list, tuple, dict)):
        return None
    size = 0
    stack: list[tuple[Any, int]] = [(value, 1)]  # iterative: no recursion however deep
    while stack:
        item, depth = stack.pop()
        if depth > safejson.MAX_DEPTH:
            return f"nested more than {safejson.MAX_DEPTH} levels deep (left out)"
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (list, tuple, dict)):
                stack.append((child, depth + 1))
            elif isinstance(child, (str, bytes, bytearray)):
                size += len(child)
            else:
                size += 8
            if size > MAX_ROW_BYTES:
                return f"more than {MAX_ROW_BYTES} bytes (left out)"
    return None


def _join_url(base: str, rel: str) -> str:
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, rel))}"


def _fields(row: dict[str, Any], path_column: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in row.items():
        if key == path_column or value is None or value == "":
            continue
        if isinstance(value, float) and value != value:  # NaN from Parquet/pandas exports
            continue
        canonical = _ALIAS_TO_FIELD.get(str(key).strip().lower())
        if canonical is None:
            fields.setdefault(str(key), value)
        elif canonical not in fields:
            fields[canonical] = _typed(canonical, value)
    return fields


def _typed(name: str, value: Any) -> Any:
    try:
        if name == "seed":
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            if isinstance(value, str):
                value = value.strip()
                return str(int(value)) if value.lstrip("-").isdigit() else value
            return str(value)
        if name == "steps":
            return int(float(value)) if not isinstance(value, bool) else value
        if name == "cfg_scale":
            return float(value) if not isinstance(value, bool) else value
    except (TypeError, ValueError):
        return value  # kept as given; the crawler records what it can
    return value
