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

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from lakehouse.core import delta, retention, system, vault
from lakehouse.core.contract import Contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import s3_client, split_s3_uri
from lakehouse.core.publish import CHANGES_KEY, CHANGES_THROUGH_KEY, last_change_version

log = logging.getLogger(__name__)

SAFE_RETENTION_HOURS = 1
"""Below this retention a vacuum or log expiry may delete a concurrent writer's files."""
LOG_RETENTION = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION = "interval 30 days"
"""Delta's own default, used when a table does not set `delta.logRetentionDuration`."""
MAINTENANCE_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES")
"""Commits that change no data: a follower of the table has nothing to take in from them."""
WAREHOUSE_POOL = "duckdb_warehouse"
"""The pool of every gold writer (dbt and the gold Delta tables)."""
RESTRICTED = "_restricted"
"""The restricted layer: the PII vault (`core.vault`), appended to by every PII source's silver
step, rewritten by erasures only; none of its rows expires."""


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


def compact(
    lake: Lake,
    uri: str,
    *,
    by_partition: str | None = None,
    target_size: int | None = None,
    **metadata: Any,
) -> int:
    """Bin-pack each partition's small data files into few; returns the files it removed.

    `target_size` (bytes; default delta-rs' 100 MiB): the size files are packed to; a file at
    least that big is left as it is, so compacting often rewrites the new small files only.
    `by_partition` (a partition column): each of its partitions is compacted in a commit of
    its own, so a conflict with a writer of one partition reruns that partition's rewrite only.

    Data does not change (readers following the table ignore the commit). A concurrent writer
    that removed files this compaction read makes it conflict and rerun
    (`delta.retry_conflicts`). The other way round delta-rs finds no conflict: a writer that
    decided its removals before this commit and commits them after would keep the compacted
    copy of the removed rows. Such writers commit their removals only on the snapshot they read
    them from (`delta.commit_files`) and decide again on the compacted table.
    """
    table = _table(lake, uri)
    if table is None:
        return 0
    if by_partition is None:
        return _compact(lake, uri, None, metadata, target_size)
    counts = pl.DataFrame(table.get_add_actions(flatten=True))
    key = f"partition.{by_partition}"
    if counts.is_empty() or key not in counts.columns:
        return 0
    crowded = (
        counts.group_by(pl.col(key).cast(pl.String).alias("value"))
        .len()
        .filter(pl.col("len") > 1, pl.col("value").is_not_null())
        .get_column("value")
        .sort()
        .to_list()
    )
    return sum(
        _compact(lake, uri, [(by_partition, "=", v)], metadata, target_size) for v in crowded
    )


@delta.retry_conflicts
def _compact(
    lake: Lake,
    uri: str,
    partition: list[tuple[str, str, str]] | None,
    metadata: dict[str, Any],
    target_size: int | None = None,
) -> int:
    table = _table(lake, uri)
    if table is None:
        return 0
    metrics = table.optimize.compact(
        partition_filters=partition,  # type: ignore[arg-type]
        target_size=target_size,
        commit_properties=delta.commit_properties(**metadata),
    )
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
    if standing != wanted or retention_hours < SAFE_RETENTION_HOURS:
        # The checkpoint's own commit outlives the expiry and vouches for the last version that
        # changed data, so a reader behind the expired commits knows whether it missed a change
        # (zero retention: the writers are held, this commit races nobody). Without it, a reader
        # behind an expired commit rebuilds whole (`publish.changes_since`).
        _set_log_retention(lake, uri, wanted, vouch=True)
    table = _table(lake, uri) or table
    table.create_checkpoint()
    table.cleanup_metadata()
    if standing != wanted and retention_hours < SAFE_RETENTION_HOURS:
        _set_log_retention(lake, uri, standing or DEFAULT_LOG_RETENTION, vouch=False)
    return max(0, before - _log_files(lake, uri))


@delta.retry_conflicts
def _set_log_retention(lake: Lake, uri: str, value: str, *, vouch: bool) -> None:
    """Set the table's standing log retention, on the table as it is now: delta-rs may find the
    property change in conflict with a writer's concurrent replace, and it is then set again."""
    table = _table(lake, uri)
    if table is None:
        return
    through = last_change_version(lake, uri) if vouch else None
    extra = {CHANGES_THROUGH_KEY: through} if through is not None else {}
    table.alter.set_table_properties(
        {LOG_RETENTION: value},
        commit_properties=delta.commit_properties(step="expire log", **extra),
    )


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


def restricted_history_hours(contracts: Sequence[Contract]) -> float:
    """The vault's vacuum and log retention: the shortest `retention.history` of the sources
    whose values it holds (the default history without one), never below
    `SAFE_RETENTION_HOURS`: mints append to it beside maintenance, in no single pool."""
    histories = [c.retention.history_hours for c in contracts if vault.tokenised_columns(c)]
    default = retention.DEFAULT_HISTORY.total_seconds() / 3600
    return max(min(histories, default=default), SAFE_RETENTION_HOURS)


def tables_in(lake: Lake, layer: str) -> list[str]:
    """The names of the Delta tables in `layer` (those with a `_delta_log`), sorted; a table in
    a folder is named by its path in the layer (`metrics/revenue` in gold)."""
    base = f"{lake.root}/lake/{layer}"
    if lake.is_s3:
        bucket, prefix = split_s3_uri(base + "/")
        paginator = s3_client(lake).get_paginator("list_objects_v2")
        keys = (
            obj["Key"][len(prefix) :]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )
        return sorted({k.split("/_delta_log/", 1)[0] for k in keys if "/_delta_log/" in k})
    root = Path(base)
    if not root.is_dir():
        return []
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("_delta_log") if p.is_dir())


def live_files(lake: Lake, uri: str) -> list[str]:
    """The data files the table's latest version reads, relative to the table."""
    table = _table(lake, uri)
    if table is None:
        return []
    return [str(p) for p in table.get_add_actions(flatten=True).column("path").to_pylist()]


def hours_since(timestamp_ms: int) -> float:
    """Hours from a Delta commit timestamp (milliseconds) to now."""
    return max(0.0, (time.time() * 1000 - timestamp_ms) / 3_600_000)


def partition_rows(lake: Lake, uri: str, column: str) -> dict[str, int]:
    """Rows per value of the partition `column` (ISO text), from the log alone."""
    table = _table(lake, uri)
    if table is None:
        return {}
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    key = f"partition.{column}"
    if actions.is_empty() or key not in actions.columns:
        return {}
    rows = (
        actions.select(pl.col(key).cast(pl.String).alias("value"), pl.col("num_records"))
        .drop_nulls("value")
        .group_by("value")
        .agg(pl.col("num_records").sum())
    )
    return {str(v): int(n or 0) for v, n in rows.iter_rows()}


def gold_log_floor(lake: Lake, source: str) -> int | None:
    """The oldest silver version of `source` a gold consumer has taken in (None: none follows it).

    Gold follows silver through the changes recorded in silver's commits
    (`lakehouse.core.follow`): the commits after a consumer's watermark must stay in the log
    until it has taken them in.
    """
    marks = system.read_table(lake, system.GOLD_WATERMARKS)
    if marks.is_empty():
        return None
    taken = (
        marks.filter(pl.col("source") == source)
        .group_by("consumer")
        .agg(pl.col("silver_version").max())
    )
    return None if taken.is_empty() else int(taken.get_column("silver_version").min())


@dataclass
class TablePass:
    """What one maintenance pass did (or, dry, would do) to one table."""

    table: str
    """`layer/name`."""
    expired: dict[str, int] = field(default_factory=dict)
    """Partition date -> rows deleted as expired."""
    files_before: int = 0
    live_before: int = 0
    compacted: int = 0
    vacuumed: int = 0
    log_expired: int = 0
    files_after: int = 0
    live_after: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        expired = sum(self.expired.values())
        text = (
            f"{self.table}: {expired} expired row(s) in {len(self.expired)} partition(s), "
            f"{self.compacted} small file(s) compacted, {self.vacuumed} file(s) vacuumed, "
            f"{self.log_expired} log file(s) expired; files {self.files_before} -> "
            f"{self.files_after} ({self.live_after} live) in {self.seconds:.1f}s"
        )
        return "; ".join([text, *self.notes])


def maintain_table(
    lake: Lake,
    layer: str,
    name: str,
    *,
    keep: timedelta | None,
    history_hours: float,
    today: date,
    writers_held: bool = False,
    dry_run: bool = False,
    progress: Callable[[str], None] = log.info,
    run_id: str = "",
) -> TablePass:
    """One maintenance pass over `layer/name`: expired partitions deleted, small files compacted,
    a checkpoint written, then vacuum and log expiry at `history_hours`.

    `keep` is the layer's retention (None: nothing expires). Expired silver partitions are
    deleted in a commit that records the dates it changed, as every silver publish does, so gold
    rebuilds them (empty). Silver's log keeps the commits a gold consumer has not taken in.
    With `dry_run` nothing is written: the pass lists what expires and counts the files.
    """
    started = time.monotonic()
    uri = lake.table_uri(layer, name)  # type: ignore[arg-type]
    report = TablePass(f"{layer}/{name}")
    if _table(lake, uri) is None:
        report.notes.append("no table yet")
        progress(f"{report.table}: no table yet")
        return report
    report.files_before = _data_files(lake, uri)
    report.live_before = len(live_files(lake, uri))
    column = retention.partition_column(layer)
    partitions = partition_rows(lake, uri, column) if keep is not None else {}
    expired = retention.expired(partitions, keep, today)
    report.expired = {d: partitions[d] for d in expired}
    if expired:
        progress(
            f"{report.table}: {'would delete' if dry_run else 'deleting'} {len(expired)} expired "
            f"partition(s) {expired[0]} .. {expired[-1]} ({sum(report.expired.values())} rows)"
        )
    if dry_run:
        report.files_after, report.live_after = report.files_before, report.live_before
        report.seconds = time.monotonic() - started
        return report
    if expired:
        metadata: dict[str, Any] = {"step": "retention", "run_id": run_id}
        if layer == "silver":
            changes = {d: [0, 0, n] for d, n in report.expired.items()}
            metadata[CHANGES_KEY] = json.dumps(changes, sort_keys=True)
        delete_partitions(lake, uri, column, expired, **metadata)
    progress(f"{report.table}: compacting small files")
    # Bronze date by date: a compaction that conflicts with a load reruns that date only.
    column = retention.partition_column(layer) if layer == "bronze" else None
    report.compacted = compact(lake, uri, by_partition=column, step="compact", run_id=run_id)
    checkpoint(lake, uri)
    progress(f"{report.table}: vacuum at {history_hours:g} h")
    present = _data_files(lake, uri)
    vacuum(lake, uri, retention_hours=history_hours, writers_held=writers_held)
    report.vacuumed = present - _data_files(lake, uri)
    floor = gold_log_floor(lake, name) if layer == "silver" else None
    if floor is not None and _unread_older_than(lake, uri, floor, history_hours):
        report.notes.append(f"log kept: gold has not taken in the versions after {floor}")
        history_hours = -1
    if history_hours >= 0:
        report.log_expired = expire_log(
            lake, uri, retention_hours=history_hours, writers_held=writers_held
        )
    report.files_after = _data_files(lake, uri)
    report.live_after = len(live_files(lake, uri))
    report.seconds = time.monotonic() - started
    progress(report.summary())
    return report


def _unread_older_than(lake: Lake, uri: str, floor: int, hours: float) -> bool:
    """Whether a commit after version `floor` is older than `hours` (a log expiry would drop it)."""
    table = _table(lake, uri)
    if table is None or floor >= table.version():
        return False
    unread = [
        c
        for c in table.history(table.version() - floor)
        if c.get("version", floor + 1) > floor and c.get("operation") not in MAINTENANCE_OPERATIONS
    ]
    stamps = [int(c["timestamp"]) for c in unread if c.get("timestamp") is not None]
    return bool(stamps) and hours_since(min(stamps)) >= hours


def _data_files(lake: Lake, uri: str) -> int:
    return sum(1 for p in delta_files(lake, uri) if not p.startswith("_delta_log"))
