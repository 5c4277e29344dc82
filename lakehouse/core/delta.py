"""Delta Lake I/O shared by every layer: existence, versions, pruned scans, replace-where, MERGE."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from lakehouse.core.lake import Lake

log = logging.getLogger(__name__)

# Concurrent runs may commit to the same table; delta-rs retries conflicting commits this often.
COMMIT_RETRIES = 25
# Set on every table the platform creates. A checkpoint every 10 commits (default 100) keeps
# opening a table that is written daily cheap: at most 10 JSON commits to replay, not 100.
TABLE_PROPERTIES = {"delta.checkpointInterval": "10"}
CONFLICT_ATTEMPTS = 8
"""A write whose commit conflicts (a concurrent writer replaced or merged the same data) is
rerun from scratch this many times: every write here is idempotent, so rerunning is safe."""

P = ParamSpec("P")
R = TypeVar("R")


def retry_conflicts(write: Callable[P, R]) -> Callable[P, R]:
    """Rerun `write` when delta-rs rejects its commit for a conflicting concurrent transaction.

    A write fed an Arrow stream is not rerun (the stream is spent): pass a function returning a
    fresh stream instead (see `replace_where`).
    """

    @functools.wraps(write)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if any(isinstance(a, pa.RecordBatchReader) for a in (*args, *kwargs.values())):
            return write(*args, **kwargs)
        for attempt in range(1, CONFLICT_ATTEMPTS):
            try:
                return write(*args, **kwargs)
            except CommitFailedError as exc:
                pause = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning(
                    "%s: commit conflict (%s); retry %d in %.2fs",
                    write.__name__,
                    str(exc).splitlines()[0],
                    attempt,
                    pause,
                )
                time.sleep(pause)
        return write(*args, **kwargs)

    return wrapper


def commit_properties(**metadata: Any) -> CommitProperties:
    """Commit properties carrying `metadata` (run id, step) into the Delta log."""
    return CommitProperties(
        custom_metadata={k: str(v) for k, v in metadata.items()}, max_commit_retries=COMMIT_RETRIES
    )


_reused: ContextVar[dict[str, DeltaTable] | None] = ContextVar("reused_tables", default=None)


@contextmanager
def reusing_tables() -> Iterator[None]:
    """Within the block, every table is loaded once and then brought up to date on each use.

    Loading a table replays its log and lists every active file, which grows with the table;
    `update_incremental()` reads only the commits since. One load (one layer, some dates) opens
    the same tables many times. Nested blocks share the outermost one's tables.
    """
    token = _reused.set({}) if _reused.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _reused.reset(token)


def open_table(lake: Lake, uri: str) -> DeltaTable | None:
    """The Delta table at `uri` at its latest version, or None if none has been written there yet."""
    tables = _reused.get()
    if tables is not None and uri in tables:
        table = tables[uri]
        table.update_incremental()
        return table
    try:
        table = DeltaTable(uri, storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return None
    if tables is not None:
        tables[uri] = table
    return table


def _target(lake: Lake, uri: str) -> DeltaTable | str:
    """What a write goes to: the open table when there is one (no second log load), else the URI."""
    return open_table(lake, uri) or uri


def table_version(lake: Lake, uri: str) -> int | None:
    table = open_table(lake, uri)
    return None if table is None else table.version()


def scan(
    lake: Lake,
    uri: str,
    *,
    partition_column: str | None = None,
    partitions: Sequence[str] | None = None,
) -> pl.LazyFrame | None:
    """A lazy scan of the table, pruned to `partitions` of `partition_column` when given."""
    table = open_table(lake, uri)
    if table is None:
        return None
    frame = pl.scan_delta(table)
    if partition_column is not None and partitions is not None:
        frame = frame.filter(pl.col(partition_column).is_in(list(partitions)))
    return frame


def sql_literal(value: str) -> str:
    """A single-quoted SQL string literal for a Delta predicate (quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def in_predicate(column: str, values: Sequence[str]) -> str:
    """`column IN ('a', 'b')` with every value quoted as a literal."""
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


@retry_conflicts
def replace_where(
    lake: Lake,
    uri: str,
    data: pl.DataFrame | pl.LazyFrame | pa.RecordBatchReader | Callable[[], pa.RecordBatchReader],
    predicate: str,
    *,
    partition_by: Sequence[str] | None = None,
    evolve_schema: bool = True,
    **metadata: Any,
) -> None:
    """Atomically replace the rows matching `predicate` with `data` (creating the table if needed).

    Every row of `data` must satisfy `predicate`; replaying the same data is idempotent. A
    function returning an Arrow stream is called once per attempt, so a conflicting commit is
    retried with a fresh stream.
    """
    if callable(data):
        data = data()
    options: dict[str, Any] = {
        "predicate": predicate,
        "commit_properties": commit_properties(**metadata),
        "configuration": TABLE_PROPERTIES,
    }
    if evolve_schema:
        options["schema_mode"] = "merge"
    if partition_by:
        options["partition_by"] = list(partition_by)
    so = lake.storage_options or None
    target = _target(lake, uri)
    if isinstance(data, pa.RecordBatchReader):
        write_deltalake(target, data, mode="overwrite", storage_options=so, **options)
    elif isinstance(data, pl.LazyFrame):
        data.sink_delta(target, mode="overwrite", storage_options=so, delta_write_options=options)
    else:
        data.write_delta(target, mode="overwrite", storage_options=so, delta_write_options=options)


@retry_conflicts
def append(
    lake: Lake,
    uri: str,
    data: pl.DataFrame,
    *,
    partition_by: Sequence[str] | None = None,
    **metadata: Any,
) -> None:
    """Append rows (system tables); the schema may grow."""
    if data.is_empty():
        return
    write_deltalake(
        _target(lake, uri),
        data.to_arrow(),
        mode="append",
        schema_mode="merge",
        partition_by=list(partition_by) if partition_by else None,
        storage_options=lake.storage_options or None,
        commit_properties=commit_properties(**metadata),
        configuration=TABLE_PROPERTIES,
    )


@retry_conflicts
def merge(
    lake: Lake,
    uri: str,
    data: pl.DataFrame,
    *,
    predicate: str,
    update_predicate: str | None = None,
    partition_by: Sequence[str] | None = None,
    evolve_schema: bool = False,
    **metadata: Any,
) -> dict[str, Any]:
    """Upsert `data` (alias `s`) into the table (alias `t`): update matches, insert the rest.

    Creates the table on the first write. Returns delta-rs's merge metrics.
    """
    table = open_table(lake, uri)
    if table is None:
        write_deltalake(
            uri,
            data.to_arrow(),
            mode="append",
            partition_by=list(partition_by) if partition_by else None,
            storage_options=lake.storage_options or None,
            commit_properties=commit_properties(**metadata),
            configuration=TABLE_PROPERTIES,
        )
        return {"num_target_rows_inserted": data.height, "num_target_rows_updated": 0}
    return (
        table.merge(
            data.to_arrow(),
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            merge_schema=evolve_schema,
            commit_properties=commit_properties(**metadata),
        )
        .when_matched_update_all(predicate=update_predicate)
        .when_not_matched_insert_all()
        .execute()
    )


@retry_conflicts
def compact(lake: Lake, uri: str, *, max_files: int, **metadata: Any) -> bool:
    """Bin-pack the table's data files into few once it holds more than `max_files` of them.

    For append-only tables that gain one small file per commit: every read opens every file, so
    left alone a read slows with the number of runs. Returns whether it compacted.
    """
    table = open_table(lake, uri)
    if table is None or len(table.file_uris()) <= max_files:
        return False
    table.optimize.compact(commit_properties=commit_properties(**metadata))
    return True


def table_stats(lake: Lake, uri: str) -> tuple[int, int] | None:
    """(row count, version) of the table from its log alone (no data file is read)."""
    table = open_table(lake, uri)
    if table is None:
        return None
    actions = table.get_add_actions(flatten=True)
    rows = sum(v for v in actions.column("num_records").to_pylist() if v is not None)
    return int(rows), table.version()
