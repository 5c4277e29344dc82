"""dbt-duckdb plugin: dbt sources read silver Delta tables through deltalake.

DuckDB cannot download its own `delta` extension on machines without internet access, so dbt
reads silver the way the rest of the platform does: a DeltaTable located from the lake root
(local or S3, with the same storage options), exposed to DuckDB as an Arrow dataset. The source
table's name is the silver table's name. A table read whole (every date) and smaller than
`IN_MEMORY_BYTES` is read into memory once per dbt invocation by Polars' Delta reader (the
platform's reader everywhere else; a year of daily partitions in a third of the time pyarrow's
dataset takes), so the several models reading it do not each open its files again: the whole
marts' time stays flat as history grows.

Event dates (given by the daily gold asset: the event dates silver changed) restrict a run to
those dates: tables partitioned by `_event_date` are read from those partitions only, and the
DuckDB macro `lakehouse_in_event_dates(d)` (behind dbt's `event_dates_filter`) tests a date
against them. So a one-day gold run reads one day of silver.

The platform runs dbt in its own process and hands the plugin the lake and the dates there
(`serving`; `dbt_build` says why never through the environment). A dbt run from a shell takes
them from the environment instead: `LAKEHOUSE_ROOT` (with the `AWS_*` settings) and
`LAKEHOUSE_EVENT_DATES` (comma-separated ISO dates; empty or unset: every date).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
import pyarrow.fs as pa_fs
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable
from deltalake.fs import DeltaStorageHandler

from lakehouse.core.lake import Lake

EVENT_DATE = "_event_date"
EVENT_DATES_ENV = "LAKEHOUSE_EVENT_DATES"


def event_dates(dates: Iterable[str]) -> list[str] | None:
    """The sorted distinct ISO dates of `dates`; none -> None (every date)."""
    days = sorted({day.strip() for day in dates if day.strip()})
    for day in days:
        date.fromisoformat(day)  # ISO dates only: they enter SQL below
    return days or None


def parse_event_dates(value: str | None) -> list[str] | None:
    """`2024-01-01,2024-01-03` -> the sorted dates; empty -> None (every date)."""
    return event_dates((value or "").split(","))


_SERVED: tuple[Lake, list[str] | None] | None = None
"""The lake and event dates of the dbt invocation running in this process, if one is."""


@contextmanager
def serving(lake: Lake, dates: Iterable[str] | None) -> Iterator[None]:
    """dbt invoked in this process meanwhile reads silver from `lake`, restricted to `dates`
    (None: every date). One invocation at a time (the caller holds dbt's lock)."""
    global _SERVED
    _SERVED = (lake, event_dates(dates or ()))
    try:
        yield
    finally:
        _SERVED = None


class Plugin(BasePlugin):
    def initialize(self, config: dict[str, Any]) -> None:
        if _SERVED is not None:
            self.lake, self.event_dates = _SERVED
        else:  # dbt run from a shell
            self.lake = Lake.from_env()
            self.event_dates = parse_event_dates(os.environ.get(EVENT_DATES_ENV))
        self.loaded: dict[str, Any] = {}
        """Source -> what `load` gave: dbt-duckdb asks again each time a model's SQL names the
        source (every model reading an ephemeral staging model over it), and one dbt
        invocation reads one snapshot of each silver table."""

    def configure_cursor(self, cursor: Any) -> None:
        # temp macros live per connection, and dbt-duckdb runs SQL on cursors copied from one
        if self.event_dates is None:
            cursor.execute("create or replace temp macro lakehouse_in_event_dates(d) as true")
        else:
            listed = ", ".join(f"date '{day}'" for day in self.event_dates)
            cursor.execute(
                f"create or replace temp macro lakehouse_in_event_dates(d) as d in ({listed})"
            )

    def load(self, source_config: SourceConfig) -> Any:
        if source_config.identifier not in self.loaded:
            self.loaded[source_config.identifier] = self._read(source_config.identifier)
        return self.loaded[source_config.identifier]

    def _read(self, name: str) -> Any:
        uri = self.lake.table_uri("silver", name)
        table = DeltaTable(uri, storage_options=self.lake.storage_options or None)
        if self.event_dates and EVENT_DATE in table.metadata().partition_columns:
            return table.to_pyarrow_dataset(
                file_pruning_predicate=[(EVENT_DATE, "in", self.event_dates)]
            )
        if sum(table._table.get_add_file_sizes().values()) < IN_MEMORY_BYTES:
            # Arrow string views: the frame's strings as they are, not copied into offsets
            return pl.scan_delta(table).collect().to_arrow(compat_level=pl.CompatLevel.newest())
        return whole_table(table)

    def default_materialization(self) -> str:
        return "view"


IN_MEMORY_BYTES = 256 * 2**20
"""A silver table read whole whose files add up to less than this is read into memory once per
dbt invocation: each model reading it scans memory, not the table's files again (a year of a
daily partitioned table is hundreds of small files, about 1 ms each per scan)."""


PYARROW_READS = {"timestampNtz"}
"""Delta reader features a plain pyarrow dataset reads correctly (timestamps without a zone)."""


def whole_table(table: DeltaTable) -> pa_ds.Dataset:
    """Every file of `table` as a pyarrow dataset, each fragment knowing its partition values.

    `DeltaTable.to_pyarrow_dataset` also attaches every file's column statistics to its
    fragment (for pruning filters): about 1.3 ms a file, half a second for a year of daily
    partitions, and a whole read prunes nothing. Tables with reader features pyarrow cannot
    honour (deletion vectors, column mapping) go through it, which refuses them.
    """
    columns = table.metadata().partition_columns
    if set(table.protocol().reader_features or ()) - PYARROW_READS or not columns:
        return table.to_pyarrow_dataset()
    schema = pa.schema(table.schema().to_arrow())
    filesystem = _filesystem(table)
    file_format = pa_ds.ParquetFileFormat(
        default_fragment_scan_options=pa_ds.ParquetFragmentScanOptions(pre_buffer=True)
    )
    adds = pa.table(table.get_add_actions(flatten=True))
    fragments = [
        file_format.make_fragment(
            add["path"],
            filesystem=filesystem,
            partition_expression=_partition_expression(schema, columns, add),
        )
        for add in adds.select(["path", *(f"partition.{c}" for c in columns)]).to_pylist()
    ]
    return pa_ds.FileSystemDataset(fragments, schema, file_format, filesystem)


def _partition_expression(schema: pa.Schema, columns: list[str], add: dict[str, Any]) -> Any:
    expression = None
    for column in columns:
        value = add[f"partition.{column}"]
        field = pc.field(column)
        term = (
            field.is_null()
            if value is None
            else field == pa.scalar(value).cast(schema.field(column).type)
        )
        expression = term if expression is None else expression & term
    return expression


def _filesystem(table: DeltaTable) -> pa_fs.FileSystem:
    """The table's files: pyarrow's own local filesystem for a table on disk (no Python in the
    read path), deltalake's object store (S3, with the lake's storage options) otherwise."""
    root = table.table_uri
    if "://" not in root or root.startswith("file://"):
        local = unquote(root.removeprefix("file://"))
        return pa_fs.SubTreeFileSystem(local, pa_fs.LocalFileSystem())
    return pa_fs.PyFileSystem(
        DeltaStorageHandler.from_table(
            table._table,
            table._storage_options,
            table._table.get_add_file_sizes(),
        )
    )
