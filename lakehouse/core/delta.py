"""Delta Lake I/O shared by every layer: existence, versions, pruned scans, race-safe creation,
replace-where, appends, and commits of data files a layer wrote itself (silver's MERGE is in
`lakehouse.core.publish`)."""

from __future__ import annotations

import functools
import io
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Field, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)

from lakehouse.core.lake import Lake
from lakehouse.core.landing import s3_client, split_s3_uri

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
    """Rerun `write` when delta-rs rejects its commit for a conflicting concurrent transaction."""

    @functools.wraps(write)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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


def commit_properties(claims: Sequence[str] = (), **metadata: Any) -> CommitProperties:
    """Commit properties carrying `metadata` (run id, step) into the Delta log.

    Each of `claims` is recorded as an application transaction: two concurrent commits that
    claim one name conflict (CommitFailedError) instead of both landing. delta-rs' OPTIMIZE
    keeps only the custom metadata of its properties: a compaction claims nothing.
    """
    version = time.time_ns()
    return CommitProperties(
        custom_metadata={k: str(v) for k, v in metadata.items()},
        max_commit_retries=COMMIT_RETRIES,
        app_transactions=[Transaction(claim, version) for claim in claims] or None,
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


def create_table(
    lake: Lake,
    uri: str,
    schema: pa.Schema,
    *,
    partition_by: Sequence[str] | None = None,
    **metadata: Any,
) -> DeltaTable:
    """The table at `uri`, created empty with `schema` first if there is none: safe to race.

    Writers that find no table create it this way, then write to it as to any table (MERGE,
    replace-where), so concurrent first writers of one table conflict and retry like any other
    concurrent writers instead of each committing its rows as a new table. The creating commit
    is not retried by delta-rs (a retried create would land as a second version over the
    winner's); whoever loses the race finds the winner's table and uses it.
    """
    table = open_table(lake, uri)
    if table is not None:
        return table
    properties = commit_properties(**metadata)
    properties.max_commit_retries = 0
    try:
        write_deltalake(
            uri,
            schema.empty_table(),
            mode="error",
            partition_by=list(partition_by) if partition_by else None,
            storage_options=lake.storage_options or None,
            commit_properties=properties,
            configuration=TABLE_PROPERTIES,
        )
    except DeltaError:
        # "already exists", or a lost race for version 0 (CommitFailedError): fine if it exists.
        if open_table(lake, uri) is None:
            raise
    table = open_table(lake, uri)
    if table is None:
        msg = f"{uri}: no Delta table after creating it"
        raise DeltaError(msg)
    return table


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
    data: pl.DataFrame | pl.LazyFrame,
    predicate: str,
    *,
    partition_by: Sequence[str] | None = None,
    evolve_schema: bool = True,
    **metadata: Any,
) -> None:
    """Atomically replace the rows matching `predicate` with `data` (creating the table if needed).

    Every row of `data` must satisfy `predicate`; replaying the same data is idempotent. A
    concurrent write of the same rows conflicts and this one reruns (`retry_conflicts`).
    """
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
    target = open_table(lake, uri)
    if target is None:
        schema = data.collect_schema() if isinstance(data, pl.LazyFrame) else data.schema
        empty = pl.DataFrame(schema=schema).to_arrow().schema
        target = create_table(lake, uri, empty, partition_by=partition_by, **metadata)
    if isinstance(data, pl.LazyFrame):
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


DATA_FILE_COMPRESSION = "zstd"
WRITER_THREADS = 4


def write_data_files(
    lake: Lake,
    uri: str,
    parts: Sequence[tuple[dict[str, str], pl.DataFrame]],
    *,
    stats_columns: Sequence[str],
) -> list[AddAction]:
    """Write each (partition values, rows) part as one Parquet data file of the table at `uri`.

    For writers that know their files better than a generic writer does (bronze: one data file
    per landed file). The files stay invisible until `commit_files` adds them; `discard_files`
    deletes them if that commit never happens. Each file's statistics (row count; null count,
    minimum and maximum of `stats_columns`) go into its action, as readers skip files by them.
    """
    client = s3_client(lake) if lake.is_s3 else None
    now = int(time.time() * 1000)

    def write(part: tuple[dict[str, str], pl.DataFrame]) -> AddAction:
        partition, frame = part
        data = frame.drop(list(partition))
        relative = "/".join(f"{k}={quote(v, safe='')}" for k, v in partition.items())
        relative = f"{relative}/part-{uuid.uuid4()}.{DATA_FILE_COMPRESSION}.parquet".lstrip("/")
        if client is None:
            path = Path(uri) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            data.write_parquet(path, compression=DATA_FILE_COMPRESSION)
            size = path.stat().st_size
        else:
            buffer = io.BytesIO()
            data.write_parquet(buffer, compression=DATA_FILE_COMPRESSION)
            bucket, key = split_s3_uri(f"{uri}/{relative}")
            client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
            size = buffer.tell()
        return AddAction(
            relative, size, dict(partition), now, True, _file_stats(data, stats_columns)
        )

    # Small files cost more in per-call overhead than in encoding: writers overlap on threads.
    with ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
        return list(pool.map(write, parts))


def _file_stats(data: pl.DataFrame, columns: Sequence[str]) -> str:
    """A data file's statistics in Delta's JSON format (PROTOCOL.md, "Per-file Statistics").

    Integers and decimals are JSON numbers (decimals with their exact digits), dates
    `YYYY-MM-DD`, timestamps ISO 8601 at millisecond precision (`Z` when zoned: UTC; the
    minimum rounded down, the maximum up, so each still bounds the file's values), strings as
    they are. Booleans, binary and floats holding NaN or infinities get their null count only
    (no bounds a reader could trust: a wrong bound makes it skip a file that holds a match),
    nested columns no statistics.
    """
    minimum: dict[str, str] = {}
    maximum: dict[str, str] = {}
    nulls: dict[str, str] = {}
    for name in columns:
        column = data.get_column(name)
        if column.dtype.is_nested():
            continue
        nulls[name] = str(column.null_count())
        bounds = _stat_bounds(column) if column.null_count() < data.height else None
        if bounds is not None:
            minimum[name], maximum[name] = bounds

    def obj(values: dict[str, str]) -> str:
        return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in values.items()) + "}"

    return (
        f'{{"numRecords":{data.height},"minValues":{obj(minimum)},'
        f'"maxValues":{obj(maximum)},"nullCount":{obj(nulls)}}}'
    )


def _stat_bounds(column: pl.Series) -> tuple[str, str] | None:
    """(minimum, maximum) of a column with a value, as JSON text (None: no usable bounds)."""
    dtype = column.dtype
    if dtype.is_integer():
        return str(int(column.min())), str(int(column.max()))  # type: ignore[arg-type]
    if dtype.is_decimal():
        low, high = column.min(), column.max()
        return format(low, "f"), format(high, "f")
    if dtype.is_float():
        if column.is_nan().any() or column.is_infinite().any():
            return None
        return json.dumps(float(column.min())), json.dumps(float(column.max()))  # type: ignore[arg-type]
    if dtype == pl.String or dtype == pl.Categorical or dtype == pl.Enum:
        values = column.cast(pl.String)
        return json.dumps(values.min()), json.dumps(values.max())
    if dtype == pl.Date:
        return json.dumps(column.min().isoformat()), json.dumps(column.max().isoformat())  # type: ignore[union-attr]
    if isinstance(dtype, pl.Datetime):
        zoned = dtype.time_zone is not None
        utc = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if zoned else column
        truncated = utc.dt.truncate("1ms")
        low, high = truncated.min(), truncated.max()
        if (utc > high).any():
            high += timedelta(milliseconds=1)  # type: ignore[operator]
        suffix = "Z" if zoned else ""

        def text(value: Any) -> str:
            return json.dumps(value.isoformat(timespec="milliseconds") + suffix)

        return text(low), text(high)
    return None


def discard_files(lake: Lake, uri: str, actions: Sequence[AddAction]) -> None:
    """Delete data files written for a commit that failed, once the table shows it did not land.

    A commit can fail after its version was written (a post-commit checkpoint, a lost reply):
    files the table holds are kept, whatever the error said.
    """
    table = open_table(lake, uri)
    if table is not None:
        held = set(pl.DataFrame(table.get_add_actions(flatten=True)).get_column("path"))
        actions = [a for a in actions if a.path not in held]
    if lake.is_s3:
        client = s3_client(lake)
        for action in actions:
            bucket, key = split_s3_uri(f"{uri}/{action.path}")
            client.delete_object(Bucket=bucket, Key=key)
    else:
        for action in actions:
            (Path(uri) / action.path).unlink(missing_ok=True)


def add_columns(lake: Lake, uri: str, schema: pa.Schema, **metadata: Any) -> None:
    """Add the columns of `schema` the table lacks (nullable), in a commit of their own."""
    table = open_table(lake, uri)
    if table is None:
        return
    known = {f.name for f in table.schema().fields}
    new_fields = [f for f in DeltaSchema.from_arrow(schema).fields if f.name not in known]
    if new_fields:
        table.alter.add_columns(
            [Field(f.name, f.type, nullable=True) for f in new_fields],
            commit_properties=commit_properties(**metadata, step="add columns"),
        )


def commit_files(
    lake: Lake,
    uri: str,
    snapshot: DeltaTable | None,
    adds: Sequence[AddAction],
    removes: Sequence[RemoveAction],
    schema: pa.Schema,
    *,
    partition_by: Sequence[str],
    claims: Sequence[str],
    **metadata: Any,
) -> None:
    """Commit written data files and removals as one version on top of `snapshot`.

    `snapshot` is the table as read to decide the removals (None: the table does not exist
    yet, and the commit creates it with `schema`); it must not have been brought up to date
    since, or a concurrent commit between that read and this one would go unseen. Its schema
    must already hold the files' columns (`add_columns`). `claims` name what the commit
    replaces (bronze: its landing dates; see `commit_properties`): removals alone would not make
    two concurrent first loads of the same data conflict.

    A commit with removals lands as the version right after `snapshot` or not at all
    (CommitFailedError, and the caller decides again on the table as it is now:
    `retry_conflicts`). delta-rs would otherwise rebase it over the commits in between, and its
    conflict checker lets it pass a compaction (OPTIMIZE) that rewrote the files it removes:
    OPTIMIZE's own removals change no data, so they are not held against this commit's, and
    OPTIMIZE carries no application transaction for a claim to meet. The removed rows would
    then stay in the compacted file beside their replacements. A commit that only adds files
    is rebased as usual.
    """
    properties = commit_properties(claims, **metadata)
    if removes:
        properties.max_commit_retries = 0
    if snapshot is None:
        try:
            create_table_with_add_actions(
                uri,
                DeltaSchema.from_arrow(schema),
                list(adds),
                mode="error",
                partition_by=list(partition_by),
                configuration=TABLE_PROPERTIES,
                storage_options=lake.storage_options or None,
                commit_properties=properties,
            )
        except DeltaError as exc:
            if open_table(lake, uri) is None:
                raise
            # Another writer created the table first: rerun against what it committed.
            raise CommitFailedError(f"{uri}: created concurrently ({exc})") from exc
        return
    try:
        snapshot.create_write_transaction(
            [*adds, *removes],
            mode="append",
            schema=snapshot.schema(),
            partition_by=list(partition_by),
            commit_properties=properties,
        )
    except CommitFailedError as exc:
        if not removes:
            raise
        moved = f"{uri}: committed to since version {snapshot.version()}, where removals were read"
        raise CommitFailedError(f"{moved} ({exc})") from exc


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


def _record_counts(table: DeltaTable) -> list[int | None]:
    """Each live file's row count in the log (None: the file was written without statistics)."""
    return table.get_add_actions(flatten=True).column("num_records").to_pylist()


def logged_row_count(table: DeltaTable) -> int | None:
    """The table's row count from its log alone, or None when a file's count is not logged."""
    counts = _record_counts(table)
    known = [count for count in counts if count is not None]
    return sum(known) if len(known) == len(counts) else None


def table_stats(lake: Lake, uri: str) -> tuple[int, int] | None:
    """(row count, version) of the table from its log alone (no data file is read)."""
    table = open_table(lake, uri)
    if table is None:
        return None
    rows = sum(v for v in _record_counts(table) if v is not None)
    return int(rows), table.version()
