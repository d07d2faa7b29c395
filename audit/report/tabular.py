"""findings.jsonl / findings.parquet / findings.csv, and clusters.jsonl (with jsonl).

The three hold the same records (``base.finding_record``): design.md's fields, then the
evidence fields. Parquet keeps ``signals`` as a list of structs whose ``detail`` is a JSON
string (details differ by signal kind); CSV holds every nested field as a JSON string.
Prompts are complete here (HTML truncates them for display). None holds image bytes.
CSV cells that a spreadsheet would run as a formula (leading = + - @) get a leading ``'``;
findings.jsonl is the verbatim record.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from audit.report.base import EVIDENCE_FIELDS, FINDING_FIELDS, cluster_record, dumps, finding_record
from audit.report.data import ReportData
from audit.report.files import PrivateFile


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _sanitize(obj):
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return _finite(obj)


def _records(data: ReportData):
    """Every finding's record, batch by batch (``ReportData.batches``: streamed from the
    catalog for a large report, so no writer holds more than a batch)."""
    for findings, items in data.batches():
        for f in findings:
            yield _sanitize(finding_record(data, f, items[f.item_id]))


def write_tabular(data: ReportData, out_dir: Path, writers) -> list[Path]:
    """Write several tabular formats in one pass over the findings (one read of the
    catalog, each record built once); returns every file written."""
    sinks = [w.sink(data, out_dir) for w in writers]
    # Parquet changes a record's nested fields into its column types: it takes each record last
    sinks.sort(key=lambda k: isinstance(k, _ParquetSink))
    try:
        for rec in _records(data):
            for sink in sinks:
                sink.add(rec)
    finally:
        paths = [p for sink in sinks for p in sink.close()]
    return paths


class _Writer:
    def write(self, data: ReportData, out_dir: Path) -> list[Path]:
        return write_tabular(data, out_dir, [self])


class JsonlWriter(_Writer):
    name = "jsonl"

    def sink(self, data: ReportData, out_dir: Path) -> "_JsonlSink":
        return _JsonlSink(data, out_dir)


class _JsonlSink:
    def __init__(self, data: ReportData, out_dir: Path):
        self.data, self.out_dir = data, out_dir
        self.fh = PrivateFile(out_dir / "findings.jsonl")

    def add(self, rec: dict) -> None:
        self.fh.write(dumps(rec) + "\n")

    def close(self) -> list[Path]:
        self.fh.close()
        with PrivateFile(self.out_dir / "clusters.jsonl") as cl:
            for c in self.data.cluster_rows():
                cl.write(dumps(_sanitize(cluster_record(c))) + "\n")
        return [self.fh.path, cl.path]


_NESTED = ("signals", "resources", "locations", "decision", "provenance")


class CsvWriter(_Writer):
    name = "csv"

    def sink(self, data: ReportData, out_dir: Path) -> "_CsvSink":
        return _CsvSink(out_dir)


class _CsvSink:
    fields = FINDING_FIELDS + EVIDENCE_FIELDS

    def __init__(self, out_dir: Path):
        self.buf = io.StringIO()
        self.w = csv.DictWriter(self.buf, fieldnames=self.fields, lineterminator="\n")
        self.w.writeheader()
        self.fh = PrivateFile(out_dir / "findings.csv")
        self.n = 0

    def add(self, rec: dict) -> None:
        self.w.writerow({k: (dumps(rec[k]) if k in _NESTED else _csv_cell(rec[k])) for k in self.fields})
        self.n += 1
        if self.n % 1000 == 0:
            self._flush()

    def _flush(self) -> None:
        self.fh.write(self.buf.getvalue())
        self.buf.seek(0)
        self.buf.truncate()

    def close(self) -> list[Path]:
        try:
            self._flush()
        finally:
            self.fh.close()
        return [self.fh.path]


def _csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    text = str(v)
    # a spreadsheet would run a cell starting with = + - @ as a formula: quote it as text
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class ParquetWriter(_Writer):
    name = "parquet"

    def sink(self, data: ReportData, out_dir: Path) -> "_ParquetSink":
        return _ParquetSink(out_dir)


class _ParquetSink:
    fields = FINDING_FIELDS + EVIDENCE_FIELDS

    def __init__(self, out_dir: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        signal_t = pa.struct(
            [
                ("kind", pa.string()),
                ("name", pa.string()),
                ("score", pa.float64()),
                ("threshold", pa.float64()),
                ("margin", pa.float64()),
                ("detail", pa.string()),
            ]
        )
        loc_t = pa.struct(
            [
                ("uri", pa.string()),
                ("size", pa.int64()),
                ("mtime_ns", pa.int64()),
                ("present", pa.bool_()),
                ("missing_since", pa.string()),
            ]
        )
        self.types = {
            "signals": pa.list_(signal_t),
            "locations": pa.list_(loc_t),
            "resources": pa.string(),
            "decision": pa.string(),
            "new_since_last_report": pa.bool_(),
            "review_candidate": pa.bool_(),
            "no_view": pa.bool_(),
            "missing": pa.bool_(),
            "verified_at_report": pa.bool_(),
            "size": pa.int64(),
            "width": pa.int64(),
            "height": pa.int64(),
        }
        self.schema = pa.schema([(k, self.types.get(k, pa.string())) for k in self.fields])
        self.cols: dict[str, list] = {k: [] for k in self.fields}
        self.rows = 0
        self.fh = PrivateFile(out_dir / "findings.parquet")
        self.writer = pq.ParquetWriter(self.fh, self.schema, compression="zstd")

    def _table(self):
        import pyarrow as pa

        return pa.table(
            {k: pa.array(self.cols[k], type=self.schema.field(k).type) for k in self.fields}, schema=self.schema
        )

    def add(self, rec: dict) -> None:
        _parquet_row(rec, self.fields, self.types, self.cols)
        self.rows += 1
        if len(self.cols["finding_id"]) >= ROW_GROUP:  # a row group per batch: bounded memory
            self.writer.write_table(self._table())
            self.cols = {k: [] for k in self.fields}

    def close(self) -> list[Path]:
        try:
            if self.cols["finding_id"] or not self.rows:
                self.writer.write_table(self._table())
        finally:
            self.writer.close()
            self.fh.close()
        return [self.fh.path]


ROW_GROUP = 10_000


def _parquet_row(rec: dict, fields, types: dict, cols: dict[str, list]) -> None:
    """Append one finding record to the column lists, in the Parquet schema's types."""
    import pyarrow as pa

    for s in rec["signals"]:
        s["detail"] = dumps(s["detail"])
        for k in ("score", "threshold", "margin"):
            s[k] = float(s[k]) if isinstance(s[k], (int, float)) and not isinstance(s[k], bool) else None
        for k in ("kind", "name"):
            s[k] = None if s[k] is None else str(s[k])
    rec["resources"] = dumps(rec["resources"])
    rec["decision"] = None if rec["decision"] is None else dumps(rec["decision"])
    for k in fields:
        v = rec[k]
        if types.get(k) is None or types[k] == pa.string():
            v = (
                None
                if v is None
                else (v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v))
            )
        cols[k].append(v)
