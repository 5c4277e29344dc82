"""System tables beside the layers: what was loaded from where, and every check's counts.

_system/ingest_ledger    one row per landed file loaded into bronze (path, size, sha256, rows)
_system/rejected_files   one row per landed file that could not be read at all, with the reason
_system/dq_results       one row per evaluation x partition x check whose outcome was new, with
                         its counts and the partition's row counts (landed, bronze, accepted, ...)
_system/partition_state  one row per new outcome of a (layer, source, landing date): the
                         fingerprint of its inputs, its status (published | held | blocked) and
                         counts; what lets a rerun skip what nothing changed for
_system/gold_watermarks  one row per gold build that followed silver: the silver version of each
                         source it has taken in
_system/erasure_log      one row per erasure of a data subject (`core.erasure`): request id, time,
                         tables, rows and versions; never the subject's values or tokens
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from lakehouse.core import delta
from lakehouse.core.checks import COUNTS
from lakehouse.core.lake import Lake

INGEST_LEDGER = "ingest_ledger"
REJECTED_FILES = "rejected_files"
DQ_RESULTS = "dq_results"
PARTITION_STATE = "partition_state"
GOLD_WATERMARKS = "gold_watermarks"
ERASURE_LOG = "erasure_log"

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
    "reader": pl.String,
}
_COUNT_COLUMNS = dict.fromkeys(COUNTS, pl.Int64)
"""A landing date's row counts (`PartitionAudit.counts()`), in every table that reports them."""
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
    **_COUNT_COLUMNS,
    "detail": pl.String,
    "checked_at": pl.Datetime("us"),
}
_STATE_SCHEMA = {
    "layer": pl.String,
    "source": pl.String,
    "landing_date": pl.String,
    "fingerprint": pl.String,
    "status": pl.String,
    "outcome": pl.String,
    **_COUNT_COLUMNS,
    "detail": pl.String,
    "run_id": pl.String,
    "recorded_at": pl.Datetime("us"),
}
_WATERMARK_SCHEMA = {
    "consumer": pl.String,
    "source": pl.String,
    "silver_version": pl.Int64,
    "run_id": pl.String,
    "recorded_at": pl.Datetime("us"),
}

_ERASURE_SCHEMA = {
    "request_id": pl.String,
    "subject": pl.String,
    "erased_at": pl.Datetime("us"),
    "tables": pl.List(pl.String),
    "rows": pl.Int64,
    "versions": pl.List(pl.String),
    "landing_files": pl.Int64,
}

SCHEMAS = {
    INGEST_LEDGER: _LEDGER_SCHEMA,
    REJECTED_FILES: _LEDGER_SCHEMA,
    DQ_RESULTS: _DQ_SCHEMA,
    PARTITION_STATE: _STATE_SCHEMA,
    GOLD_WATERMARKS: _WATERMARK_SCHEMA,
    ERASURE_LOG: _ERASURE_SCHEMA,
}
"""Each system table this module keeps, and its columns (for the catalog)."""


COMPACT_FILES = 32
"""A system table gains one small file per run; past this many, the next append compacts it, so
reading it (the ledger is read by every silver load and landing-sensor tick) stays flat."""


def _append(lake: Lake, table: str, frame: pl.DataFrame) -> None:
    uri = lake.table_uri("_system", table)
    delta.append(lake, uri, frame, step=f"record {table}")
    delta.compact(lake, uri, max_files=COMPACT_FILES, step=f"compact {table}")


def append_rows(lake: Lake, table: str, frame: pl.DataFrame) -> None:
    """Append to a system table kept by another module (e.g. `alerts`), compacting as above."""
    _append(lake, table, frame)


def record_ingest(lake: Lake, loaded: Sequence[dict], rejected: Sequence[dict]) -> None:
    """Append the files of one bronze load to the ingest ledger and the rejected-files table."""
    for table, rows in ((INGEST_LEDGER, loaded), (REJECTED_FILES, rejected)):
        if rows:
            _append(lake, table, pl.DataFrame(list(rows), schema=_LEDGER_SCHEMA))


def latest_outcomes(lake: Lake, source: str, landing_dates: Sequence[str]) -> dict[str, dict]:
    """Per landed file of `source` on `landing_dates`: its last ledger or rejection row."""
    frames = []
    for table in (INGEST_LEDGER, REJECTED_FILES):
        frame = delta.scan(lake, lake.table_uri("_system", table))
        if frame is None:
            continue
        if "reader" not in frame.collect_schema().names():
            frame = frame.with_columns(pl.lit(None, pl.String).alias("reader"))
        frames.append(
            frame.filter(
                pl.col("source") == source, pl.col("landing_date").is_in(list(landing_dates))
            ).select(
                "path",
                "landing_date",
                "size",
                "version",
                "sha256",
                "reader",
                "ingested_at",
                "reason",
                pl.lit(table == REJECTED_FILES).alias("rejected"),
            )
        )
    if not frames:
        return {}
    rows = pl.concat(frames).sort("ingested_at").group_by("path").last().collect()
    return {row["path"]: row for row in rows.iter_rows(named=True)}


def rejected_now(lake: Lake, source: str, landing_dates: Sequence[str]) -> dict[str, list[dict]]:
    """Per landing date: the files of `source` whose latest outcome is a rejection."""
    out: dict[str, list[dict]] = {}
    for row in latest_outcomes(lake, source, landing_dates).values():
        if row["rejected"]:
            out.setdefault(row["landing_date"], []).append(row)
    return out


def record_dq_results(lake: Lake, rows: Sequence[dict]) -> None:
    """Append check results (one row per run x partition x check)."""
    if rows:
        _append(lake, DQ_RESULTS, pl.DataFrame(list(rows), schema=_DQ_SCHEMA))


def record_states(lake: Lake, rows: Sequence[dict]) -> None:
    """Append new partition outcomes (one row per layer x source x landing date x outcome)."""
    if rows:
        _append(lake, PARTITION_STATE, pl.DataFrame(list(rows), schema=_STATE_SCHEMA))


def _states(lake: Lake, layer: str, source: str) -> pl.LazyFrame | None:
    frame = delta.scan(lake, lake.table_uri("_system", PARTITION_STATE))
    if frame is None:
        return None
    return (
        frame.filter(pl.col("layer") == layer, pl.col("source") == source)
        .sort("recorded_at")
        .group_by("landing_date")
        .last()
    )


def latest_states(
    lake: Lake, layer: str, source: str, landing_dates: Sequence[str]
) -> dict[str, dict]:
    """The latest recorded outcome of each of `landing_dates` that has one."""
    frame = _states(lake, layer, source)
    if frame is None:
        return {}
    rows = frame.filter(pl.col("landing_date").is_in(list(landing_dates))).collect()
    return {row["landing_date"]: row for row in rows.iter_rows(named=True)}


def blocked_dates(lake: Lake, layer: str, source: str) -> set[str]:
    """Landing dates of `source` whose latest outcome in `layer` is blocked."""
    frame = _states(lake, layer, source)
    if frame is None:
        return set()
    rows = frame.filter(pl.col("status") == "blocked").select("landing_date").collect()
    return set(rows.to_series().to_list())


def held_partitions(lake: Lake, layer: str = "silver") -> pl.DataFrame:
    """Every (source, landing date) whose latest outcome is held or blocked, with the reason."""
    frame = delta.scan(lake, lake.table_uri("_system", PARTITION_STATE))
    if frame is None:
        return pl.DataFrame(schema=_STATE_SCHEMA)
    return (
        frame.filter(pl.col("layer") == layer)
        .sort("recorded_at")
        .group_by("source", "landing_date")
        .last()
        .filter(pl.col("status") != "published")
        .sort("source", "landing_date")
        .collect()
    )


def record_watermarks(lake: Lake, consumer: str, versions: dict[str, int], run_id: str) -> None:
    """`consumer` has taken in silver up to `versions` (source -> silver version)."""
    if versions:
        _append(
            lake,
            GOLD_WATERMARKS,
            pl.DataFrame(
                [
                    {
                        "consumer": consumer,
                        "source": source,
                        "silver_version": version,
                        "run_id": run_id,
                        "recorded_at": datetime.now(UTC).replace(tzinfo=None),
                    }
                    for source, version in sorted(versions.items())
                ],
                schema=_WATERMARK_SCHEMA,
            ),
        )


def watermarks(lake: Lake, consumer: str) -> dict[str, int]:
    """The silver version of each source `consumer` has taken in (absent: none yet)."""
    frame = delta.scan(lake, lake.table_uri("_system", GOLD_WATERMARKS))
    if frame is None:
        return {}
    rows = (
        frame.filter(pl.col("consumer") == consumer)
        .group_by("source")
        .agg(pl.col("silver_version").max())
        .collect()
    )
    return dict(rows.iter_rows())


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
