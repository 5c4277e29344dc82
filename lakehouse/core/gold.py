"""The dbt project (its manifest, its executable) and gold marts leaving the DuckDB warehouse as
Delta tables, readable by any engine."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from lakehouse.core import delta
from lakehouse.core.lake import PROJECT_DIR, Lake

DBT_DIR = PROJECT_DIR / "dbt"
MANIFEST = DBT_DIR / "target" / "manifest.json"
"""`dbt parse`'s output: the manifest the code location loads, beside `semantic_manifest.json`."""
MANIFEST_STAMP = MANIFEST.with_name("manifest.stamp")
"""The newest project file mtime the last parse read."""
DATE_COLUMN = "order_date"
"""The date column of daily partitioned marts: a partition run publishes only its dates."""
PUBLISH_THREADS = 4
"""Tables published side by side: a Delta write (and the comparison before it) runs mostly
outside Python's lock, and a one-day gold run publishes a dozen small tables."""

T = TypeVar("T")


def side_by_side(publish: Callable[[str], T], names: Sequence[str]) -> dict[str, T]:
    """`publish(name)` for every name, `PUBLISH_THREADS` at a time; the first error is raised
    once every other one has finished (each table is its own commit)."""
    with ThreadPoolExecutor(max_workers=PUBLISH_THREADS) as pool:
        return dict(zip(names, pool.map(publish, names), strict=True))


def dbt_executable() -> str:
    """The `dbt` installed beside this Python (the venv's), else the one on PATH."""
    dbt = Path(sys.executable).with_name("dbt")
    return str(dbt) if dbt.exists() else "dbt"


def ensure_manifest() -> Path:
    """Parse the dbt project if its manifest is missing or older than any project file.

    "Older" is by the project files the parse read (their newest mtime when it started, kept in
    `manifest.stamp`), not by when it wrote the manifest: a parse that read a file just before
    it was edited is stale.
    """
    newest = project_mtime()
    if not MANIFEST.exists() or _stamp() < newest:
        subprocess.run(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_DIR),
                "--profiles-dir",
                str(DBT_DIR),
            ],
            check=True,
            cwd=DBT_DIR,
        )
        MANIFEST_STAMP.write_text(repr(newest))
    return MANIFEST


PROJECT_FOLDERS = ("models", "macros", "snapshots")
"""The dbt project's source folders (its `*-paths`); `target/` and `logs/` are dbt's output."""


def project_mtime() -> float:
    """The newest mtime of the dbt project's files (its top-level YAML and source folders)."""
    files = [*DBT_DIR.glob("*.yml")]
    for folder in PROJECT_FOLDERS:
        files += (p for p in (DBT_DIR / folder).rglob("*") if p.suffix in (".sql", ".yml"))
    return max(p.stat().st_mtime for p in files)


def _stamp() -> float:
    try:
        return float(MANIFEST_STAMP.read_text())
    except (OSError, ValueError):
        return 0.0


def publish_marts(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    schema: str,
    marts: Sequence[str],
    *,
    run_id: str,
    dates: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write each mart's warehouse table to `<root>/lake/gold/<mart>`; returns per-mart metadata.

    Without `dates` the Delta table is overwritten. With `dates` (ISO dates, any set of days)
    exactly the rows of those dates are replaced (replace-where on `order_date`), so a one-day
    run of a daily mart does not rewrite its history; a date the warehouse no longer holds ends
    up with no rows. Concurrent publishers (the first ones creating the table included) conflict
    and rerun, so each row lands once. A mart whose Delta rows already equal the warehouse's
    gets no new version (`published`: False in its metadata).
    """

    def publish(mart: str) -> dict[str, Any]:
        uri = lake.table_uri("gold", mart)
        with con.cursor() as cursor:  # a DuckDB connection of this thread's own
            if dates is None:
                rows = cursor.sql(f'select * from "{schema}"."{mart}"').to_arrow_table()
                changed = _overwrite(lake, uri, rows, run_id=run_id)
            else:
                days = sorted({dt.date.fromisoformat(d) for d in dates})
                rows = cursor.sql(
                    f'select * from "{schema}"."{mart}" '
                    f"where list_contains($1::date[], {DATE_COLUMN})",
                    params=[[d.isoformat() for d in days]],
                ).to_arrow_table()
                changed = _replace_dates(lake, uri, rows, days, run_id=run_id) if days else False
        rows_total, version = delta.table_stats(lake, uri) or (0, 0)
        return {
            "dagster/row_count": rows_total,
            "delta_version": version,
            "dagster/uri": uri,
            "warehouse_table": f"{schema}.{mart}",
            "published": changed,
        }

    return side_by_side(publish, marts)


def warehouse_columns(
    con: duckdb.DuckDBPyConnection, schema: str, tables: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Each warehouse table's columns and their DuckDB types, in order (one catalog query)."""
    rows = con.execute(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = ? and list_contains(?, table_name) "
        "order by table_name, ordinal_position",
        [schema, list(tables)],
    ).fetchall()
    columns: dict[str, dict[str, str]] = {t: {} for t in tables}
    for table, column, data_type in rows:
        columns[table][column] = data_type
    return columns


def publish_table(lake: Lake, name: str, rows: pa.Table, *, run_id: str) -> dict[str, Any]:
    """Overwrite `<root>/lake/gold/<name>` with `rows` (no new version if it holds them)."""
    uri = lake.table_uri("gold", name)
    changed = _overwrite(lake, uri, rows, run_id=run_id)
    rows_total, version = delta.table_stats(lake, uri) or (0, 0)
    return {
        "dagster/row_count": rows_total,
        "delta_version": version,
        "dagster/uri": uri,
        "published": changed,
    }


@delta.retry_conflicts
def _overwrite(lake: Lake, uri: str, rows: pa.Table, *, run_id: str) -> bool:
    """Replace the whole table with `rows` (its schema too), unless it holds them already.

    A row count in the log that differs from `rows` settles it without reading the table: a
    whole mart that grew by a day (most runs) is not read and sorted only to be rewritten."""
    table = delta.open_table(lake, uri)
    if (
        table is not None
        and delta.logged_row_count(table) in (None, rows.num_rows)
        and _holds(pl.scan_delta(table), rows)
    ):
        return False
    write_deltalake(
        table if table is not None else uri,
        rows,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=lake.storage_options or None,
        commit_properties=delta.commit_properties(step="gold publish", run_id=run_id),
        configuration=delta.TABLE_PROPERTIES,
    )
    return True


@delta.retry_conflicts
def _replace_dates(
    lake: Lake, uri: str, rows: pa.Table, days: Sequence[dt.date], *, run_id: str
) -> bool:
    """Replace exactly the rows of `days` with `rows` (creating the table first if needed).

    The predicate deletes every row of those days and `rows` are added in the same commit, so a
    day absent from `rows` ends up empty.
    """
    table = delta.open_table(lake, uri)
    if table is None:
        table = delta.create_table(lake, uri, rows.schema, step="gold create", run_id=run_id)
    current = pl.scan_delta(table).filter(pl.col(DATE_COLUMN).is_in(list(days)))
    if _holds(current, rows):
        return False
    write_deltalake(
        table,
        rows,
        mode="overwrite",
        predicate=delta.in_predicate(DATE_COLUMN, [d.isoformat() for d in days]),
        schema_mode="merge",
        storage_options=lake.storage_options or None,
        commit_properties=delta.commit_properties(step="gold publish", run_id=run_id),
    )
    return True


def _holds(current: pl.LazyFrame, rows: pa.Table) -> bool:
    """Whether `current` has exactly `rows` (same columns and types, same rows in any order)."""
    new = pl.from_arrow(rows)
    assert isinstance(new, pl.DataFrame)
    try:
        old = current.collect()
        if old.schema != new.schema or old.height != new.height:
            return False
        if old.is_empty():
            return True
        return old.sort(old.columns, nulls_last=True).equals(new.sort(new.columns, nulls_last=True))
    except pl.exceptions.PolarsError:
        # a column polars cannot compare or sort: publish rather than guess
        return False
