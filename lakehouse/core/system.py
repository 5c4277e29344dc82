"""System tables beside the layers: what was loaded from where, and every check's counts.

_system/ingest_ledger    one row per landed file loaded into bronze (path, size, sha256, rows)
_system/rejected_files   one row per landed file that could not be read at all, with the reason
_system/dq_results       one row per run x partition x check, with its counts and the
                         partition's row counts (landed, bronze, accepted, quarantined, ...)
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from lakehouse.core import delta
from lakehouse.core.lake import Lake

INGEST_LEDGER = "ingest_ledger"
REJECTED_FILES = "rejected_files"
DQ_RESULTS = "dq_results"

_LEDGER_SCHEMA = {
    "source": pl.String,
    "path": pl.String,
    "landing_date": pl.String,
    "size": pl.Int64,
    "version": pl.String,
    "sha256": pl.String,
    "rows": pl.Int64,
    "columns": pl.List(pl.String),
    "run_id": pl.String,
    "ingested_at": pl.Datetime("us"),
    "reason": pl.String,
}
_DQ_SCHEMA = {
    "run_id": pl.String,
    "source": pl.String,
    "layer": pl.String,
    "partition": pl.String,
    "check": pl.String,
    "passed": pl.Boolean,
    "blocking": pl.Boolean,
    "rows_checked": pl.Int64,
    "rows_failed": pl.Int64,
    "landed": pl.Int64,
    "bronze_rows": pl.Int64,
    "accepted": pl.Int64,
    "quarantined": pl.Int64,
    "duplicates": pl.Int64,
    "held": pl.Int64,
    "detail": pl.String,
    "checked_at": pl.Datetime("us"),
}


COMPACT_FILES = 32
"""A system table gains one small file per run; past this many, the next append compacts it, so
reading it (the ledger is read by every silver load and landing-sensor tick) stays flat."""


def _append(lake: Lake, table: str, frame: pl.DataFrame) -> None:
    uri = lake.table_uri("_system", table)
    delta.append(lake, uri, frame, step=f"record {table}")
    delta.compact(lake, uri, max_files=COMPACT_FILES, step=f"compact {table}")


def record_ingest(lake: Lake, loaded: Sequence[dict], rejected: Sequence[dict]) -> None:
    """Append the files of one bronze load to the ingest ledger and the rejected-files table."""
    for table, rows in ((INGEST_LEDGER, loaded), (REJECTED_FILES, rejected)):
        if rows:
            _append(lake, table, pl.DataFrame(list(rows), schema=_LEDGER_SCHEMA))


def record_dq_results(lake: Lake, rows: Sequence[dict]) -> None:
    """Append check results (one row per run x partition x check)."""
    if rows:
        _append(lake, DQ_RESULTS, pl.DataFrame(list(rows), schema=_DQ_SCHEMA))


def read_table(lake: Lake, table: str) -> pl.DataFrame:
    """A whole system table (empty with no columns if it was never written)."""
    frame = delta.scan(lake, lake.table_uri("_system", table))
    return pl.DataFrame() if frame is None else frame.collect()


def latest_ledger(lake: Lake, source: str, landing_dates: Sequence[str]) -> pl.DataFrame:
    """The most recent ledger row of every file of `source` landed on `landing_dates`."""
    frame = delta.scan(lake, lake.table_uri("_system", INGEST_LEDGER))
    if frame is None:
        return pl.DataFrame(schema=_LEDGER_SCHEMA)
    return (
        frame.filter(pl.col("source") == source, pl.col("landing_date").is_in(list(landing_dates)))
        .sort("ingested_at")
        .group_by("path")
        .last()
        .collect()
    )
