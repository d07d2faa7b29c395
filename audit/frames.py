"""SQLite query results as polars frames with stable, explicit column types.

``frame`` runs one query into a DataFrame (in chunks). ``SqlQuery`` describes a query by
its output columns (name -> SQL expression), so the same query gives an eager DataFrame
(``collect_query``) or a ``LazyFrame`` (``lazy_query``) that reads nothing until it is
collected, and then reads SQLite in batches: only the columns the plan uses are selected
(projection pushdown), reading stops once ``head(n)``/``limit`` has its rows (n_rows), and
a filter is applied to each batch as it arrives, so at most one batch of unfiltered rows
is in memory. Filters SQLite can answer from an index are keyword arguments of the
``Audit`` methods (pushed into the ``WHERE`` clause); a polars ``filter`` on a lazy frame
streams through the whole table instead (bounded memory, time proportional to its size).

Columns SQLite holds as JSON text (a finding's ``signals``, an item's ``resources``, a
cluster's ``members``/``categories``) are decoded into polars types per batch (``decode``),
so eager and lazy frames show the same nested columns: ``findings().explode("signals")``.
"""

from __future__ import annotations

import atexit
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import polars as pl

_SQL_TO_POLARS = {"TEXT": pl.Utf8, "INTEGER": pl.Int64, "REAL": pl.Float64, "BLOB": pl.Binary}
TIMESTAMP_COLUMNS = {"first_seen", "last_seen", "missing_since", "item_first_seen", "started", "finished", "decided_at"}
_STAMP = pl.Datetime(time_unit="us", time_zone="UTC")
# A signal as the frames show it. ``detail`` differs by kind (a span, a bank label, a
# cluster summary...): one struct would be the union of every kind's keys, mostly null, and
# change whenever a detector adds one; so it stays JSON text (``json.loads`` it, or
# ``pl.col("detail").str.json_path_match("$.label")``).
SIGNAL_TYPE = pl.Struct(
    {
        "kind": pl.Utf8,
        "name": pl.Utf8,
        "score": pl.Float64,
        "threshold": pl.Float64,
        "margin": pl.Float64,
        "detail": pl.Utf8,
    }
)
SIGNALS_TYPE = pl.List(SIGNAL_TYPE)
RESOURCES_TYPE = pl.List(pl.Struct({"kind": pl.Utf8, "name": pl.Utf8, "hash": pl.Utf8, "weight": pl.Float64}))
IDS_TYPE = pl.List(pl.Utf8)


def signals_sql(column: str) -> str:
    """SQL turning a stored JSON list of signal dicts into the same list with each ``detail``
    as JSON text (``|| ''`` drops SQLite's JSON subtype, so ``json_set`` stores a string)."""
    return (
        f"(CASE WHEN json_valid({column}) THEN (SELECT json_group_array(json_set(value, '$.detail', "
        f"json_extract(value, '$.detail') || '')) FROM json_each({column})) END)"
    )


BATCH_ROWS = 10_000  # rows per batch: ~50 MB of Python rows at 50k, ~10 MB here
FIRST_LAZY_ROWS = 1_000  # a lazy frame's first batch; later ones double up to BATCH_ROWS


def polars_type(sql_type: str) -> pl.DataType:
    return _SQL_TO_POLARS.get(sql_type.split()[0].upper(), pl.Utf8)


def frame(conn: sqlite3.Connection, sql: str, params: Sequence[Any], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Run ``sql`` and build a DataFrame in chunks (bounded Python-object overhead)."""
    cur = conn.execute(sql, params)
    parts = []
    while rows := cur.fetchmany(BATCH_ROWS):
        parts.append(pl.DataFrame(rows, schema=schema, orient="row"))
    df = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
    return _stamps(df)


def _stamps(df: pl.DataFrame) -> pl.DataFrame:
    stamps = [c for c in df.columns if c in TIMESTAMP_COLUMNS]
    if stamps:
        df = df.with_columns(
            pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC") for c in stamps
        )
    return df


@dataclass(frozen=True)
class SqlQuery:
    """``SELECT <columns> <source> ORDER BY <order_by>`` with its parameters.

    ``columns``: output name -> SQL expression; ``schema``: output name -> polars type as
    read from SQLite; ``casts``: output name -> the type the frame shows (e.g. Boolean)."""

    columns: dict[str, str]
    schema: dict[str, pl.DataType]
    source: str  # FROM ... [WHERE ...]
    params: tuple = ()
    order_by: str = ""
    casts: dict[str, pl.DataType] = field(default_factory=dict)
    # output name -> the polars type its JSON text is decoded into (``SIGNALS_TYPE``, ...)
    decode: dict[str, pl.DataType] = field(default_factory=dict)
    # A unique, indexed expression (a rowid, a primary key) by which a lazy frame reads the
    # result in pages: each page is its own short statement, so a frame that polars stops
    # reading early (a head()) leaves no statement open on the catalog connection.
    page_key: str | None = None

    def page_sql(self, names: Sequence[str]) -> str:
        cols = ", ".join(f"{self.columns[n]} AS {n}" for n in names)
        return (
            f"SELECT * FROM (SELECT {cols}, {self.page_key} AS _page {self.source}) "
            "WHERE _page > ? ORDER BY _page LIMIT ?"
        )

    def pages(
        self,
        conn: sqlite3.Connection,
        names: Sequence[str],
        batch_rows: int = BATCH_ROWS,
        first_rows: int | None = None,
    ) -> Iterator[pl.DataFrame]:
        """The result in ``page_key`` order, one statement per page (see ``page_key``)."""
        schema = {n: self.schema[n] for n in names}
        sql = self.page_sql(names)
        size = min(first_rows or batch_rows, batch_rows)
        last: Any = -(2**63)  # below every key: SQLite orders every number before any text
        while True:
            with _READS:
                if _READS.stopping:
                    return
                _READS.active += 1
            try:
                rows = conn.execute(sql, (*self.params, last, size)).fetchall()
                # building and decoding the page (polars work with the GIL released) is inside
                # the guard too: the thread must not come back to Python during shutdown
                page = self._finish(pl.DataFrame([r[:-1] for r in rows], schema=schema, orient="row")) if rows else None
            finally:
                with _READS:
                    _READS.active -= 1
                    _READS.notify_all()
            if page is None:
                return
            last = rows[-1][-1]
            yield page
            if len(rows) < size:
                return
            size = min(size * 2, batch_rows)

    def sql(self, names: Sequence[str] | None = None) -> str:
        names = list(self.columns) if names is None else list(names)
        cols = ", ".join(f"{self.columns[n]} AS {n}" if self.columns[n] != n else n for n in names)
        order = f" ORDER BY {self.order_by}" if self.order_by else ""
        return f"SELECT {cols} {self.source}{order}"

    def output_schema(self) -> dict[str, pl.DataType]:
        out = {}
        for name, dtype in self.schema.items():
            out[name] = self.decode.get(name) or self.casts.get(name, _STAMP if name in TIMESTAMP_COLUMNS else dtype)
        return out

    def batches(
        self,
        conn: sqlite3.Connection,
        names: Sequence[str] | None = None,
        batch_rows: int = BATCH_ROWS,
        first_rows: int | None = None,
    ) -> Iterator[pl.DataFrame]:
        """The result in DataFrames of at most ``batch_rows`` rows, read as they are asked for
        (from ``first_rows`` rows, doubling: a ``head(5)`` reads a small first batch).
        One statement: SQLite keeps its read snapshot until the last row (or until the
        generator is closed), so the batches are one consistent view."""
        names = list(self.columns) if names is None else list(names)
        schema = {n: self.schema[n] for n in names}
        size = min(first_rows or batch_rows, batch_rows)
        cur = conn.execute(self.sql(names), self.params)
        try:
            while rows := cur.fetchmany(size):
                size = min(size * 2, batch_rows)
                yield self._finish(pl.DataFrame(rows, schema=schema, orient="row"))
        finally:
            try:
                cur.close()
            except sqlite3.ProgrammingError:  # the connection was closed first: nothing left to end
                pass

    def _finish(self, df: pl.DataFrame) -> pl.DataFrame:
        df = _stamps(df)
        decode = {n: t for n, t in self.decode.items() if n in df.columns}
        if decode:
            df = df.with_columns(decode_json(df[n], t) for n, t in decode.items())
        casts = {n: t for n, t in self.casts.items() if n in df.columns}
        return df.with_columns(pl.col(n).cast(t) for n, t in casts.items()) if casts else df


def decode_json(texts: pl.Series, dtype: pl.DataType) -> pl.Series:
    """JSON text -> ``dtype``, vectorised; a batch polars cannot decode (a value of another
    shape, written by hand or by an old release) is decoded row by row, and a row that does
    not fit becomes null rather than failing the whole frame."""
    try:
        return texts.str.json_decode(dtype)
    except pl.exceptions.PolarsError:
        pass
    out = []
    for text in texts:
        try:
            out.append(pl.Series([text], dtype=pl.Utf8).str.json_decode(dtype)[0] if text is not None else None)
        except pl.exceptions.PolarsError:
            out.append(None)
    return pl.Series(texts.name, out, dtype=dtype)


def collect_query(conn: sqlite3.Connection, q: SqlQuery) -> pl.DataFrame:
    parts = list(q.batches(conn))
    if not parts:
        return pl.DataFrame(schema=q.output_schema())
    return pl.concat(parts)


def lazy_query(
    conn: sqlite3.Connection, q: SqlQuery, *, name: str = "sqlite", batch_rows: int = BATCH_ROWS
) -> pl.LazyFrame:
    """A LazyFrame over ``q`` that reads SQLite in batches when collected (see module doc):
    in ``q.page_key`` order, a page per statement, when ``q`` has one.

    Polars may stop pulling a source early without closing it (a filter pushed into the
    source, then ``head``): paging by key is what keeps such an abandoned read harmless."""
    from polars.io.plugins import register_io_source

    out_schema = q.output_schema()

    def source(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        # the predicate may use columns the projection leaves out: read both, project after
        names = list(q.columns) if with_columns is None or predicate is not None else list(with_columns)
        left = n_rows
        if left is not None and left <= 0:
            return
        rows = min(batch_rows, batch_size or batch_rows)
        first = min(rows, FIRST_LAZY_ROWS if left is None else max(left, 1))
        gen = q.pages(conn, names, rows, first) if q.page_key else q.batches(conn, names, rows, first)
        try:
            for df in gen:
                if predicate is not None:
                    df = df.filter(predicate)
                if with_columns is not None:
                    df = df.select(with_columns)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                if df.height:
                    yield df
                if left is not None and left <= 0:
                    return
        finally:
            gen.close()

    return register_io_source(source, schema=out_schema, explain_name=name, explain_detail=q.source[:120])


# Polars runs a lazy source on its own threads and may read a page ahead after ``collect``
# returns. A process that exits while such a read is inside SQLite (the GIL released) would
# be aborted when the thread comes back to Python during interpreter shutdown; so at exit,
# no new page starts and the reads under way are waited for.
_READS = threading.Condition()
_READS.active = 0
_READS.stopping = False


@atexit.register
def _finish_reads() -> None:
    with _READS:
        _READS.stopping = True
        _READS.wait_for(lambda: _READS.active == 0, timeout=30)
