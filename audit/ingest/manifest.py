"""Manifests: JSONL, CSV and Parquet generation logs, one row per image.

- The path column is the first of ``path``, ``uri``, ``file``, ``image``, ``filepath`` (then
  ``file_path``, ``image_path``, ``filename``, ``file_name``, ``url``) present, matched
  case-insensitively. A manifest without one is an ``InputError`` (raised by the
  constructor, so ``open_source`` fails before any crawl) naming the columns it has.
- prompt, negative_prompt, seed, model, steps, sampler, cfg_scale (and a few common
  spellings: "negative prompt", cfg, guidance_scale, sampler_name, checkpoint, ...) go into
  ``Entry.fields`` under those names, typed: seed as text (seeds exceed int64), steps int,
  cfg_scale float. Every other non-empty column goes into ``fields`` under its own name.
- Rows stream: JSONL line by line, CSV through ``csv.DictReader``, Parquet batch by batch
  (``ParquetFile.iter_batches``: one row group at a time, never the whole table).
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
  unchanged files are then skipped by the crawler by uri, size and mtime. A manifest is not
  a container: ``unchanged()`` is never asked, because files it names change on their own.
- Sidecars are not looked up for manifest rows (the manifest's columns are the metadata).
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import stat as _stat
import sys
from typing import IO, Any, Callable, Iterator

from audit.errors import InputError
from audit.ingest._common import (
    DEFAULT_MAX_MEMBER_BYTES,
    FetchWindow,
    describe,
    is_url,
    safe_uri,
)
from audit.ingest.base import Entry, Listed, UnchangedCheck

PATH_COLUMNS = ("path", "uri", "file", "image", "filepath", "file_path", "image_path", "filename", "file_name", "url")

# canonical field <- accepted spellings (lower case)
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "positive_prompt"),
    "negative_prompt": ("negative_prompt", "negative prompt", "negativeprompt", "neg_prompt", "negative"),
    "seed": ("seed",),
    "model": ("model", "model_name", "checkpoint", "ckpt"),
    "steps": ("steps", "num_inference_steps"),
    "sampler": ("sampler", "sampler_name"),
    "cfg_scale": ("cfg_scale", "cfg scale", "cfg", "guidance_scale", "guidance"),
}
_ALIAS_TO_FIELD = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}

try:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # prompts and workflows can be long
except OverflowError:  # pragma: no cover
    pass


def manifest_format(name: str) -> str | None:
    low = name.lower()
    for fmt in ("jsonl", "csv", "parquet"):
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
    ) -> None:
        self.spec = spec
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
            self._open: Callable[[], IO[bytes]] = lambda: fs.open(path, "rb")
        else:
            path = os.path.abspath(path or spec)
            self._fs = None
            self._path = path
            self.root_uri = safe_uri(path)
            self._base_url = None
            self._base_dir = os.path.dirname(path)
            self._open = lambda: open(path, "rb")
        self.columns = self._read_columns()
        lower = {c.lower().strip(): c for c in reversed(self.columns)}
        self.path_column = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
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
                    import pyarrow.parquet as pq

                    return list(pq.ParquetFile(fh).schema_arrow.names)
                if self.format == "csv":
                    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
                    header = next(csv.reader(text), None)
                    if header is None:
                        raise InputError(f"manifest {self.spec} is empty: no CSV header")
                    return header
                for line in fh:  # JSONL: the keys of the first row that parses
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
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
        with FetchWindow(self.workers, self.window) as window, self._open() as fh:
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

    def _rows(self, fh: IO[bytes]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        if self.format == "jsonl":
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    yield line_no, {}, f"bad row: invalid JSON ({describe(exc)})"
                    continue
                if not isinstance(obj, dict):
                    yield line_no, {}, f"bad row: a JSON {type(obj).__name__}, not an object"
                    continue
                yield line_no, obj, None
        elif self.format == "csv":
            text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.DictReader(text)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield reader.line_num, {}, f"bad row: {describe(exc)}"
                    continue
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    row["extra_values"] = extra
                yield reader.line_num, row, None
        else:
            import pyarrow.parquet as pq

            row_no = 0
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    row_no += 1
                    yield row_no, row, None

    def _bad(self, row_no: int, problem: str) -> Entry:
        return Entry(uri=f"{self.root_uri}#row={row_no}", source=self.spec, error=problem, container=self.root_uri)

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
            return Entry(
                uri=f"{self.root_uri}#row={row_no}",
                source=self.spec,
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
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return Entry(uri=uri, source=self.spec, path=path, error="file not found", fields=fields, container=self.root_uri)
        except OSError as exc:
            return Entry(uri=uri, source=self.spec, path=path, error=f"unreadable: {describe(exc)}", fields=fields, container=self.root_uri)
        if not _stat.S_ISREG(st.st_mode):
            what = "a directory" if _stat.S_ISDIR(st.st_mode) else "not a regular file"
            return Entry(uri=uri, source=self.spec, path=path, error=f"{what}: not read", fields=fields, container=self.root_uri)
        return Entry(
            uri=uri,
            source=self.spec,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            path=path,
            fields=fields,
            container=self.root_uri,
        )

    def _fetch(self, url: str, fields: dict[str, Any]) -> Entry:
        from audit.ingest.fsspec_source import fetch_object, object_uri, url_to_fs

        try:
            fs, path = url_to_fs(url)
            uri = object_uri(fs, path)
        except Exception as exc:  # noqa: BLE001
            return Entry(uri=safe_uri(url), source=self.spec, error=f"unusable URL: {describe(exc)}", fields=fields, container=self.root_uri)
        return fetch_object(
            fs, path, uri, self.spec, fields=fields, container=self.root_uri, max_bytes=self.max_member_bytes
        )


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
