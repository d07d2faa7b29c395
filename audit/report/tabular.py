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
from audit.report.files import write_private


def _finite(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _sanitize(obj):
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return _finite(obj)


class JsonlWriter:
    name = "jsonl"

    def write(self, data: ReportData, out_dir: Path) -> list[Path]:
        lines = [dumps(_sanitize(finding_record(data, f))) + "\n" for f in data.findings]
        clusters = [dumps(_sanitize(cluster_record(c))) + "\n" for c in data.clusters]
        return [write_private(out_dir / "findings.jsonl", "".join(lines)),
                write_private(out_dir / "clusters.jsonl", "".join(clusters))]  # fmt: skip


_NESTED = ("signals", "resources", "locations", "decision")


class CsvWriter:
    name = "csv"

    def write(self, data: ReportData, out_dir: Path) -> list[Path]:
        buf = io.StringIO()
        fields = FINDING_FIELDS + EVIDENCE_FIELDS
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for f in data.findings:
            rec = _sanitize(finding_record(data, f))
            w.writerow({k: (dumps(rec[k]) if k in _NESTED else _csv_cell(rec[k])) for k in fields})
        return [write_private(out_dir / "findings.csv", buf.getvalue())]


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


class ParquetWriter:
    name = "parquet"

    def write(self, data: ReportData, out_dir: Path) -> list[Path]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        signal_t = pa.struct([("kind", pa.string()), ("name", pa.string()), ("score", pa.float64()),
                              ("threshold", pa.float64()), ("margin", pa.float64()), ("detail", pa.string())])  # fmt: skip
        loc_t = pa.struct([("uri", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
                           ("present", pa.bool_()), ("missing_since", pa.string())])  # fmt: skip
        types = {
            "signals": pa.list_(signal_t), "locations": pa.list_(loc_t), "resources": pa.string(),
            "decision": pa.string(), "new_since_last_report": pa.bool_(), "review_candidate": pa.bool_(), "no_view": pa.bool_(), "missing": pa.bool_(),
            "verified_at_report": pa.bool_(), "size": pa.int64(), "width": pa.int64(), "height": pa.int64(),
        }  # fmt: skip
        fields = FINDING_FIELDS + EVIDENCE_FIELDS
        schema = pa.schema([(k, types.get(k, pa.string())) for k in fields])
        cols: dict[str, list] = {k: [] for k in fields}
        for f in data.findings:
            rec = _sanitize(finding_record(data, f))
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
                    v = None if v is None else (v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                cols[k].append(v)
        table = pa.table({k: pa.array(cols[k], type=schema.field(k).type) for k in fields}, schema=schema)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        return [write_private(out_dir / "findings.parquet", buf.getvalue().to_pybytes())]
