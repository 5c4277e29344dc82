"""Delta table maintenance: delete partitions, compact small files, checkpoint, vacuum, expire log.

Each primitive works on one table (its URI from `Lake.table_uri`), on local disk and on S3 alike
(the lake's storage options). What they make unrecoverable:

- `vacuum` deletes data files the log no longer references (removed by a delete, a MERGE, a
  compaction) once they are older than the retention, and unreferenced files a crashed writer
  left behind once their modification time is older than the retention.
- `expire_log` deletes JSON commits and checkpoints older than the retention that precede the
  latest checkpoint: the per-file statistics and delete predicates they hold are gone, and so is
  time travel to those versions.

Writers. Every writer of a platform table runs in the table's Dagster concurrency pool
(`writer_pool`, limit 1: `delta_bronze_<source>`, `delta_silver_<source>`, and the warehouse pool
for gold), and a writer writes its data files before the commit that makes them visible. A
vacuum at a retention of hours or more leaves such in-flight files alone (they are newer than
the retention), so it is safe beside a running writer. A vacuum or log expiry below
`SAFE_RETENTION_HOURS` (an erasure's zero) is safe only while no writer of the table runs: the
caller must hold the table's pool (a Dagster op with `pool=writer_pool(...)`), or otherwise know
that nothing writes, and says so with `writers_held=True`; without it the call is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lakehouse.core import delta
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import s3_client, split_s3_uri

log = logging.getLogger(__name__)

SAFE_RETENTION_HOURS = 1
"""Below this retention a vacuum or log expiry may delete a concurrent writer's files."""
LOG_RETENTION = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION = "interval 30 days"
"""Delta's own default, used when a table does not set `delta.logRetentionDuration`."""
WAREHOUSE_POOL = "duckdb_warehouse"
"""The pool of every gold writer (dbt and the gold Delta tables)."""


def writer_pool(layer: str, table: str) -> str | None:
    """The Dagster concurrency pool every writer of `layer/table` runs in (None: no single pool).

    Quarantine is written by its source's silver step, gold by the warehouse writers; `_system`
    tables are appended to by many steps (appends commit without conflicts).
    """
    if layer == "bronze":
        return f"delta_bronze_{table}"
    if layer in ("silver", "quarantine"):
        return f"delta_silver_{table}"
    if layer == "gold":
        return WAREHOUSE_POOL
    return None


def _table(lake: Lake, uri: str) -> DeltaTable | None:
    # A fresh load, not a reused one: maintenance must see every concurrent commit.
    try:
        return DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return None


def _check_retention(uri: str, retention_hours: float, writers_held: bool, what: str) -> None:
    if retention_hours < 0:
        msg = f"{uri}: {what} retention must be zero or more hours, got {retention_hours}"
        raise ConfigError(msg)
    if retention_hours < SAFE_RETENTION_HOURS and not writers_held:
        msg = (
            f"{uri}: {what} at {retention_hours} h may delete a concurrent writer's files; hold "
            "the table's writer pool and pass writers_held=True"
        )
        raise ConfigError(msg)


@delta.retry_conflicts
def delete_partitions(
    lake: Lake, uri: str, column: str, values: Sequence[str], **metadata: Any
) -> int:
    """Delete the rows whose partition `column` is one of `values`; returns the rows deleted.

    Only the files of those partitions are removed (nothing is rewritten); their bytes stay on
    disk until `vacuum`. `metadata` goes into the commit (silver: the changed dates, so gold
    follows).
    """
    table = _table(lake, uri)
    if table is None or not values:
        return 0
    result = table.delete(
        delta.in_predicate(column, list(values)),
        commit_properties=delta.commit_properties(**metadata),
    )
    return int(result.get("num_deleted_rows") or 0)


@delta.retry_conflicts
def compact(lake: Lake, uri: str, **metadata: Any) -> int:
    """Bin-pack each partition's small data files into few; returns the files it removed.

    Data does not change (readers following the table ignore the commit). A concurrent writer
    that replaces the same partitions makes the commit conflict; it is then rerun.
    """
    table = _table(lake, uri)
    if table is None:
        return 0
    metrics = table.optimize.compact(commit_properties=delta.commit_properties(**metadata))
    return int(metrics.get("numFilesRemoved") or 0)


def checkpoint(lake: Lake, uri: str) -> int | None:
    """Write a checkpoint at the table's latest version; returns that version (None: no table)."""
    table = _table(lake, uri)
    if table is None:
        return None
    table.create_checkpoint()
    return table.version()


def vacuum(
    lake: Lake, uri: str, *, retention_hours: float, writers_held: bool = False
) -> list[str]:
    """Delete the data files no version within `retention_hours` reads; returns their paths.

    Also deletes files no version references at all (a crashed writer's) once older than the
    retention. Below `SAFE_RETENTION_HOURS` the caller must hold the table's writers off (see
    the module docstring) and pass `writers_held=True`.
    """
    _check_retention(uri, retention_hours, writers_held, "vacuum")
    table = _table(lake, uri)
    if table is None:
        return []
    return table.vacuum(
        retention_hours=int(retention_hours),
        dry_run=False,
        enforce_retention_duration=False,
        full=True,
    )


def expire_log(lake: Lake, uri: str, *, retention_hours: float, writers_held: bool = False) -> int:
    """Delete the log's JSON commits and checkpoints older than `retention_hours`; returns how many.

    A checkpoint is written first, so every commit before it and older than the retention goes
    (their per-file statistics and predicates with them). The retention becomes the table's
    standing `delta.logRetentionDuration` (the automatic checkpoints expire at it too), except
    below `SAFE_RETENTION_HOURS`: the previous standing value is then restored after the expiry.
    Below `SAFE_RETENTION_HOURS` the caller must hold the writers off (`writers_held=True`).
    """
    _check_retention(uri, retention_hours, writers_held, "log expiry")
    table = _table(lake, uri)
    if table is None:
        return 0
    before = _log_files(lake, uri)
    standing = table.metadata().configuration.get(LOG_RETENTION)
    wanted = f"interval {int(retention_hours)} hours"
    if standing != wanted:
        table.alter.set_table_properties(
            {LOG_RETENTION: wanted}, commit_properties=delta.commit_properties(step="expire log")
        )
    table.create_checkpoint()
    table.cleanup_metadata()
    if standing != wanted and retention_hours < SAFE_RETENTION_HOURS:
        table.alter.set_table_properties(
            {LOG_RETENTION: standing or DEFAULT_LOG_RETENTION},
            commit_properties=delta.commit_properties(step="expire log"),
        )
    return max(0, before - _log_files(lake, uri))


def _log_files(lake: Lake, uri: str) -> int:
    return sum(1 for path in delta_files(lake, uri) if "/_delta_log/" in f"/{path}")


def delta_files(lake: Lake, uri: str) -> list[str]:
    """Every file under the table's directory (data and log), relative to it."""
    if lake.is_s3:
        bucket, prefix = split_s3_uri(uri.rstrip("/") + "/")
        paginator = s3_client(lake).get_paginator("list_objects_v2")
        return [
            obj["Key"][len(prefix) :]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
    root = Path(uri)
    if not root.exists():
        return []
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def live_files(lake: Lake, uri: str) -> list[str]:
    """The data files the table's latest version reads, relative to the table."""
    table = _table(lake, uri)
    if table is None:
        return []
    return [str(p) for p in table.get_add_actions(flatten=True).column("path").to_pylist()]


def hours_since(timestamp_ms: int) -> float:
    """Hours from a Delta commit timestamp (milliseconds) to now."""
    return max(0.0, (time.time() * 1000 - timestamp_ms) / 3_600_000)
