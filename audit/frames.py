"""SQLite query results as polars DataFrames with stable, explicit column types."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

import polars as pl

_SQL_TO_POLARS = {"TEXT": pl.Utf8, "INTEGER": pl.Int64, "REAL": pl.Float64, "BLOB": pl.Binary}
TIMESTAMP_COLUMNS = {"first_seen", "last_seen", "missing_since", "item_first_seen", "started", "finished", "decided_at"}


def polars_type(sql_type: str) -> pl.DataType:
    return _SQL_TO_POLARS.get(sql_type.split()[0].upper(), pl.Utf8)


def frame(conn: sqlite3.Connection, sql: str, params: Sequence[Any], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Run ``sql`` and build a DataFrame in chunks (bounded Python-object overhead)."""
    cur = conn.execute(sql, params)
    parts = []
    while rows := cur.fetchmany(50_000):
        parts.append(pl.DataFrame(rows, schema=schema, orient="row"))
    df = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
    stamps = [c for c in df.columns if c in TIMESTAMP_COLUMNS]
    if stamps:
        df = df.with_columns(
            pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC") for c in stamps
        )
    return df
