"""PostgreSQL table or query -> Parquet in the landing zone, incrementally by a cursor or whole.

The rows are read with polars over ADBC (`adbc-driver-postgresql`), streamed in batches of
`batch_rows` into one Parquet file, and committed by landing that file (`landed.commit`).

- `mode: incremental`: rows whose cursor (e.g. `updated_at`) is at or past the last landed
  extract's cursor, minus the rows of exactly that cursor value that extract already landed (by
  primary key): a cursor shared by many rows neither loses the ones committed later nor lands the
  others twice. The cursor and those keys live in the landed file itself, so a crash before the
  commit changes nothing and the next extract starts where the last landed one ended.
- `mode: snapshot`: the whole table, one file per landing date (`snapshot.parquet`), for a
  `delivery: snapshot` contract: keys the latest snapshot lacks leave silver. A snapshot equal to
  the last landed one is not landed again; an empty result is not landed (it would retract every
  key) and is reported instead.

Columns keep their types where Parquet and polars hold them exactly (integers, floats, text,
booleans, dates, timestamps); every other type (numeric, json, uuid, arrays, ...) is cast to
text in SQL, the way PostgreSQL prints it: ADBC returns numeric as an opaque type, and bronze
keeps values as strings anyway.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import polars as pl

from lakehouse.core.contract import Contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.extract.landed import (
    CURSOR_TEXT,
    ExtractError,
    ExtractResult,
    Increment,
    finish_snapshot,
    last_snapshot,
    not_before,
    staged,
)
from lakehouse.core.extract.spec import PostgresSource
from lakehouse.core.lake import Lake

_NATIVE_TYPES = {16, 20, 21, 23, 25, 700, 701, 1043, 1082, 1114, 1184}
"""Type OIDs read as they are: bool, int8/2/4, text, float4/8, varchar, date, timestamp[tz]."""
_DRIVER = re.compile(r"^postgres(ql)?\+[a-z0-9_]+://")


def dsn_from_env(contract: Contract, spec: PostgresSource) -> str:
    """The source's DSN from its environment variable, as libpq takes it."""
    dsn = os.environ.get(spec.dsn_env, "").strip()
    if not dsn:
        msg = (
            f"source `{contract.name}`: environment variable `{spec.dsn_env}` is not set; it "
            "holds the PostgreSQL DSN, e.g. postgresql://reader:secret@db.internal:5432/shop"
        )
        raise ConfigError(msg)
    return _DRIVER.sub("postgresql://", dsn)  # a SQLAlchemy URL (`+psycopg2`) works too


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _relation(spec: PostgresSource) -> str:
    if spec.table is not None:
        return ".".join(quote_ident(p) for p in spec.table.split("."))
    return f"({spec.query}) AS src"


@dataclass(frozen=True)
class _Shape:
    columns: tuple[str, ...]
    types: dict[str, str]
    """Column -> its type as PostgreSQL names it (`timestamp with time zone`)."""
    native: frozenset[str]


def _describe(dsn: str, contract: Contract, spec: PostgresSource) -> _Shape:
    """The relation's columns and types, from a query that returns no row."""
    import psycopg2

    try:
        with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {_relation(spec)} LIMIT 0")
            described = [(d.name, d.type_code) for d in cur.description]
            cur.execute(
                "SELECT oid::int, format_type(oid, NULL) FROM pg_type WHERE oid = ANY(%s)",
                ([oid for _, oid in described],),
            )
            names = dict(cur.fetchall())
    except psycopg2.Error as exc:
        what = f"table `{spec.table}`" if spec.table else "its query"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"source `{contract.name}`: cannot read {what} from PostgreSQL: {first}"
        raise ExtractError(msg) from exc
    columns = tuple(name for name, _ in described)
    needed = [contract.column(k).name for k in contract.primary_key]
    if spec.cursor:
        needed.append(spec.cursor)
    missing = [c for c in needed if c not in columns]
    if missing:
        msg = (
            f"source `{contract.name}`: column(s) `{'`, `'.join(missing)}` (primary key or "
            f"cursor) not in the PostgreSQL result, which has `{'`, `'.join(columns)}`"
        )
        raise ExtractError(msg)
    return _Shape(
        columns,
        {name: names.get(oid, "text") for name, oid in described},
        frozenset(name for name, oid in described if oid in _NATIVE_TYPES),
    )


def _select_list(shape: _Shape) -> str:
    return ", ".join(
        quote_ident(c) if c in shape.native else f"{quote_ident(c)}::text AS {quote_ident(c)}"
        for c in shape.columns
    )


def extract_postgres(
    lake: Lake, contract: Contract, day: str, say: Callable[[str], None]
) -> ExtractResult:
    """Extract the contract's PostgreSQL source into landing date `day` (one file, or none)."""
    spec = contract.source
    assert isinstance(spec, PostgresSource)
    dsn = dsn_from_env(contract, spec)
    started = time.monotonic()
    shape = _describe(dsn, contract, spec)
    keys = [contract.column(k).name for k in contract.primary_key]
    order = ", ".join(quote_ident(k) for k in keys)
    with staged(lake, contract.name, day) as stage:
        if spec.mode == "snapshot":
            previous = last_snapshot(lake, contract.name)
            not_before(contract.name, day, previous.landing_date if previous else None)
            sql = f"SELECT {_select_list(shape)} FROM {_relation(spec)} ORDER BY {order}"
            for batch in _batches(dsn, sql, [], spec.batch_rows):
                stage.write(batch.to_arrow())
                _progress(say, contract, stage.rows, started)
            return finish_snapshot(
                lake, contract.name, spec.kind, day, stage, previous, say, started
            )

        cursor = spec.cursor
        assert cursor is not None
        increment = Increment.resume(lake, contract.name, cursor, keys, day, say)
        select = f"SELECT {_select_list(shape)}, {quote_ident(cursor)}::text AS {CURSOR_TEXT}"
        where = f"{quote_ident(cursor)} IS NOT NULL"
        params: list[Any] = []
        if increment.cursor is not None:
            where = f"{quote_ident(cursor)} >= $1::{shape.types[cursor]}"
            params = [increment.cursor]
        sql = (
            f"{select} FROM {_relation(spec)} WHERE {where} ORDER BY {quote_ident(cursor)}, {order}"
        )
        for batch in _batches(dsn, sql, params, spec.batch_rows):
            batch = increment.admit(batch, ordered=True)  # ORDER BY the cursor
            if batch.is_empty():
                continue
            stage.write(batch.drop(CURSOR_TEXT).to_arrow())
            _progress(say, contract, stage.rows, started)
        _warn_null_cursors(dsn, contract, spec, say)
        return increment.finish(lake, spec.kind, stage, say, started)


def _batches(dsn: str, sql: str, params: Sequence[Any], batch_rows: int) -> Iterator[pl.DataFrame]:
    """The query's rows in frames of at most `batch_rows`, over one ADBC connection."""
    import adbc_driver_postgresql.dbapi as adbc

    try:
        with adbc.connect(dsn) as conn:
            frames = pl.read_database(
                sql,
                conn,
                iter_batches=True,
                batch_size=batch_rows,
                execute_options={"parameters": list(params)} if params else None,
            )
            for frame in frames:  # the driver's batches are bounded in bytes, not rows
                yield from frame.iter_slices(batch_rows)
    except adbc.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExtractError(f"PostgreSQL extract failed: {first}") from exc


def _warn_null_cursors(
    dsn: str, contract: Contract, spec: PostgresSource, say: Callable[[str], None]
) -> None:
    import psycopg2

    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*) FROM {_relation(spec)} WHERE {quote_ident(spec.cursor or '')} IS NULL"
        )
        (nulls,) = cur.fetchone()
    if nulls:
        say(
            f"extract {contract.name}: {nulls} row(s) have a null `{spec.cursor}` and are never "
            "extracted: make the cursor column NOT NULL (e.g. DEFAULT now())"
        )


def _progress(say: Callable[[str], None], contract: Contract, rows: int, started: float) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    say(f"extract {contract.name}: {rows:,} rows read ({rows / elapsed:,.0f} rows/s)")
