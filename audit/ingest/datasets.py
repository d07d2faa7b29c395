"""What public generation datasets say about their images, in their own files.

The readers (folder, archive, manifest, fsspec) ask this module; it never lists files itself.

- DiffusionDB (poloclub/diffusiondb): ``images/part-NNNNNN.zip`` (or a ``part-NNNNNN/``
  folder) holds the images and ``part-NNNNNN.json``, a mapping image name ->
  ``{"p": prompt, "se": seed, "c": cfg, "st": steps, "sa": sampler}``. ``part_records``
  turns it into manifest fields (prompt, seed, cfg_scale, steps, sampler). The dataset's
  root ``metadata.parquet`` / ``metadata-large.parquet`` (image_name, prompt, part_id, seed,
  step, cfg, sampler, width, height, user_name, timestamp, ...) is the fallback when a part
  JSON is missing or broken: ``MetadataTable`` reads only the rows of the part asked for
  (row groups whose part_id statistics cannot hold it are not read).
- Hugging Face ``datasets`` Parquet shards: an image column is a struct ``{bytes, path}``
  (or plain binary); ``embedded_image_column`` finds it, so a folder or URL prefix of such
  shards is crawled row by row (``ManifestSource``) as containers.
- Civitai API image exports (``{"items": [{id, url, meta: {...}, nsfwLevel, username}]}``)
  with the images saved beside the document: ``civitai_row`` flattens one item and names
  the files it may have been saved as (``<id>.<ext>``, the url's basename).

A dataset file that does not parse costs the metadata it would have given, never the images:
the problem is returned for the caller to record in the images' fields.
"""

from __future__ import annotations

import posixpath
import re
from typing import IO, Any, Callable, Iterable

from audit import safejson
from audit.ingest._common import describe

PART_NAME = re.compile(r"^part-(\d+)$")
# A part JSON of DiffusionDB holds 1000 prompts (about 0.5 MB); past this it is not read.
PART_JSON_MAX_BYTES = 64 << 20
METADATA_TABLE_NAMES = ("metadata.parquet", "metadata-large.parquet")
# Rows of one part kept from a metadata table (DiffusionDB parts hold 1000 images).
PART_ROWS_MAX = 100_000

DIFFUSIONDB_KEYS = {"p": "prompt", "se": "seed", "c": "cfg_scale", "st": "steps", "sa": "sampler"}
# metadata.parquet column -> manifest field (others keep their own names)
TABLE_COLUMNS = {"prompt": "prompt", "seed": "seed", "step": "steps", "cfg": "cfg_scale", "sampler": "sampler"}
_IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")


def part_id_of(name: str) -> int | None:
    """The number of a DiffusionDB part from a folder or archive name ("part-000042.zip" -> 42)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".zip", ".tar", ".tar.gz", ".tgz"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    m = PART_NAME.match(base)
    return int(m.group(1)) if m else None


def part_json_name(container_name: str) -> str | None:
    """ "part-000042.json" for a part archive or folder, None for any other name."""
    pid = part_id_of(container_name)
    if pid is None:
        return None
    base = container_name.rstrip("/").rsplit("/", 1)[-1]
    return base.split(".", 1)[0] + ".json"


def part_records(data: bytes) -> tuple[dict[str, dict[str, Any]], str | None]:
    """image name -> fields of a DiffusionDB part JSON, and the problem when it cannot be used."""
    try:
        obj = safejson.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"not valid JSON ({describe(exc)})"
    if not isinstance(obj, dict):
        return {}, f"a JSON {type(obj).__name__}, not an object of image names"
    out = {str(name): part_fields(rec) for name, rec in obj.items() if isinstance(rec, dict)}
    if obj and not out:
        return {}, "no image records in it"
    return out, None


def part_fields(record: dict[str, Any]) -> dict[str, Any]:
    """One DiffusionDB record ({"p", "se", "c", "st", "sa"}) as manifest fields."""
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if value is None or value == "":
            continue
        name = DIFFUSIONDB_KEYS.get(key, key)
        fields[name] = (
            str(value) if name == "seed" and isinstance(value, (int, float)) and not isinstance(value, bool) else value
        )
    return fields


class MetadataTable:
    """A dataset's root metadata table (DiffusionDB ``metadata.parquet``), read part by part.

    Opened lazily on first use; a table that cannot be read answers nothing and keeps its
    problem (``problem``) for the caller to record."""

    def __init__(self, uri: str, opener: Callable[[], IO[bytes]]) -> None:
        self.uri = uri
        self._opener = opener
        self._pf: Any = None
        self._fh: Any = None
        self.problem: str | None = None
        self._cached: tuple[int | None, dict[str, dict[str, Any]]] | None = None

    def _file(self) -> Any:
        if self._pf is None and self.problem is None:
            try:
                import pyarrow.parquet as pq

                self._fh = self._opener()
                self._pf = pq.ParquetFile(self._fh, pre_buffer=False, buffer_size=1 << 20)
                names = set(self._pf.schema_arrow.names)
                if "image_name" not in names:
                    self.problem = f"metadata table {self.uri}: no image_name column"
                    self._pf = None
            except Exception as exc:  # noqa: BLE001 - a damaged table costs prompts, never images
                self.problem = f"metadata table {self.uri} unreadable: {describe(exc)}"
                self._pf = None
        return self._pf

    def part(self, part_id: int | None, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """image name -> fields for one part (by ``part_id``; or, without one, the rows of ``names``)."""
        wanted = None if names is None else set(names)
        if self._cached is not None and self._cached[0] == part_id and part_id is not None:
            return self._cached[1]
        pf = self._file()
        if pf is None:
            return {}
        out: dict[str, dict[str, Any]] = {}
        try:
            has_part = "part_id" in pf.schema_arrow.names
            if part_id is not None and not has_part:
                part_id = None
            if part_id is None and wanted is None:
                return {}
            col = pf.schema_arrow.names.index("part_id") if has_part else -1
            for g in range(pf.num_row_groups):
                if part_id is not None and not _group_may_hold(pf.metadata.row_group(g), col, part_id):
                    continue
                for batch in pf.iter_batches(batch_size=4096, row_groups=[g]):
                    for row in batch.to_pylist():
                        if part_id is not None and row.get("part_id") != part_id:
                            continue
                        name = row.get("image_name")
                        if not isinstance(name, str) or (wanted is not None and name not in wanted):
                            continue
                        out[name] = table_fields(row)
                        if len(out) >= PART_ROWS_MAX:
                            break
        except Exception as exc:  # noqa: BLE001
            self.problem = f"metadata table {self.uri} unreadable: {describe(exc)}"
            return out
        if part_id is not None:
            self._cached = (part_id, out)
        return out

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except Exception:  # noqa: BLE001
                pass
        self._fh = self._pf = None


def _group_may_hold(meta: Any, col: int, part_id: int) -> bool:
    """False only when the row group's statistics rule the part out."""
    try:
        stats = meta.column(col).statistics
        if stats is None or not stats.has_min_max:
            return True
        return stats.min <= part_id <= stats.max
    except Exception:  # noqa: BLE001 - no statistics: read it
        return True


def table_fields(row: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in row.items():
        if key == "image_name" or value is None or value == "":
            continue
        if isinstance(value, float) and value != value:
            continue
        name = TABLE_COLUMNS.get(key, key)
        if name == "seed" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(int(value))
        elif not isinstance(value, (str, int, float, bool)):
            value = str(value)  # timestamps
        fields[name] = value
    return fields


def embedded_image_column(schema: Any) -> str | None:
    """The column of a Parquet schema (pyarrow) that holds image bytes: a struct with a
    binary ``bytes`` field (Hugging Face ``datasets.Image``), or a binary column with an
    image-like name. None when the rows only name files."""
    import pyarrow as pa

    binary = []
    for fld in schema:
        t = fld.type
        if pa.types.is_struct(t):
            idx = t.get_field_index("bytes")
            if idx >= 0 and (pa.types.is_binary(t.field(idx).type) or pa.types.is_large_binary(t.field(idx).type)):
                return fld.name
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            binary.append(fld.name)
    for name in binary:
        if name.lower() in _IMAGE_COLUMN_NAMES:
            return name
    return None


# --- Civitai API image exports --------------------------------------------------------------

_CIVITAI_TOP = ("nsfwLevel", "nsfw", "username", "width", "height", "baseModel", "createdAt", "postId", "hash", "url")


def is_civitai_item(obj: Any) -> bool:
    return isinstance(obj, dict) and "id" in obj and ("meta" in obj or "url" in obj)


def civitai_row(item: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(manifest row, file names the image may have been saved under) for one Civitai item.

    The row's generation fields come from ``meta`` (prompt, negativePrompt, seed, steps,
    sampler, cfgScale, Model, resources, civitaiResources, ...); the item's own facts keep
    their names, the id as ``civitai_id``."""
    row: dict[str, Any] = {}
    meta = item.get("meta")
    if isinstance(meta, dict):
        for key, value in meta.items():
            row.setdefault(str(key), value)
    for key in _CIVITAI_TOP:
        if item.get(key) not in (None, ""):
            row[key] = item[key]
    row["civitai_id"] = item.get("id")
    names: list[str] = []
    ident = item.get("id")
    if isinstance(ident, (int, str)) and str(ident).strip():
        names.append(str(ident).strip())
    url = item.get("url")
    if isinstance(url, str) and url.strip():
        base = posixpath.basename(url.split("?", 1)[0].rstrip("/"))
        if base:
            names.append(base)
    name = item.get("name")
    if isinstance(name, str) and name.strip():
        names.append(posixpath.basename(name.strip()))
    return row, list(dict.fromkeys(names))


# --- Parquet shards inside folders and URL prefixes -------------------------------------------

SHARD_MEMBERS = "#row="  # a shard row's uri: "<shard uri>#row=N" (as for a Parquet SOURCE)


def iter_parquet_shard(
    source: str,
    uri: str,
    spec: str,
    unchanged: Callable[[str, int, int], bool],
    *,
    size: int,
    mtime_ns: int,
    local_path: str | None,
    max_member_bytes: int,
) -> Iterable[Any]:
    """The rows of one Parquet file found by a folder or prefix walk, as a container, when
    it holds image bytes (a Hugging Face ``datasets`` shard); nothing for any other Parquet
    file (a table of prompts, a manifest naming files the walk finds on its own).

    ``unchanged`` is asked first: a shard catalogued before at this size and mtime is not
    opened (``ContainerUnchanged``). ``spec`` is what ``ManifestSource`` opens (the local
    path, or the object's URL)."""
    from audit.errors import InputError
    from audit.ingest.base import ContainerUnchanged, Entry
    from audit.ingest.manifest import ManifestSource

    if unchanged(uri, size, mtime_ns):
        yield ContainerUnchanged(uri, source, members=SHARD_MEMBERS)
        return
    try:
        shard = ManifestSource(spec, path=local_path, max_member_bytes=max_member_bytes, source=source)
    except InputError as exc:
        if "no path column" in str(exc):
            return  # a table without images or file names: not ours to crawl
        yield Entry(uri=uri, source=source, size=size, mtime_ns=mtime_ns, error=f"unreadable Parquet file: {exc}")
        return
    if shard.embedded_column is None:
        return
    yield from shard.entries(unchanged)  # a container: ContainerDone after its last row
