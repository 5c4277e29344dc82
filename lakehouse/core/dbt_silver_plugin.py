"""dbt-duckdb plugin: dbt sources read silver Delta tables through deltalake.

DuckDB cannot download its own `delta` extension on machines without internet access, so dbt
reads silver the way the rest of the platform does: a DeltaTable located from the lake root
(local or S3, with the same storage options), exposed to DuckDB as an Arrow dataset. The source
table's name is the silver table's name.

`LAKEHOUSE_EVENT_DATES` (`<start>..<end>`, set by the daily gold asset) restricts a run to a date
range: tables partitioned by `_event_date` are read from those partitions only, and the DuckDB
macro `lakehouse_in_event_dates(d)` (behind dbt's `event_dates_filter`) tests a date against it.
So a one-day gold run reads one day of silver.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable

from lakehouse.core.lake import Lake

EVENT_DATE = "_event_date"
EVENT_DATES_ENV = "LAKEHOUSE_EVENT_DATES"


def parse_event_dates(value: str | None) -> tuple[str, str] | None:
    """`2024-01-01..2024-01-31` -> (start, end); empty -> None."""
    if not value:
        return None
    start, _, end = value.partition("..")
    end = end or start
    date.fromisoformat(start), date.fromisoformat(end)  # ISO dates only: they enter SQL below
    return start, end


class Plugin(BasePlugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.lake = Lake.from_env()
        self.event_dates = parse_event_dates(os.environ.get(EVENT_DATES_ENV))

    def configure_cursor(self, cursor: Any) -> None:
        # temp macros live per connection, and dbt-duckdb runs SQL on cursors copied from one
        if self.event_dates is None:
            cursor.execute("create or replace temp macro lakehouse_in_event_dates(d) as true")
        else:
            start, end = self.event_dates
            cursor.execute(
                "create or replace temp macro lakehouse_in_event_dates(d) as "
                f"d between date '{start}' and date '{end}'"
            )

    def load(self, source_config: SourceConfig) -> Any:
        uri = self.lake.table_uri("silver", source_config.identifier)
        table = DeltaTable(uri, storage_options=self.lake.storage_options or None)
        if self.event_dates and EVENT_DATE in table.metadata().partition_columns:
            start, end = self.event_dates
            return table.to_pyarrow_dataset(
                file_pruning_predicate=[(EVENT_DATE, ">=", start), (EVENT_DATE, "<=", end)]
            )
        return table.to_pyarrow_dataset()

    def default_materialization(self) -> str:
        return "view"
