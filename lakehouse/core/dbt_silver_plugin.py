"""dbt-duckdb plugin: dbt sources read silver Delta tables through deltalake.

DuckDB cannot download its own `delta` extension on machines without internet access, so dbt
reads silver the way the rest of the platform does: a DeltaTable located from the lake root
(local or S3, with the same storage options), exposed to DuckDB as an Arrow dataset. The source
table's name is the silver table's name.

`LAKEHOUSE_EVENT_DATES` (comma-separated ISO dates, set by the daily gold asset: the event dates
silver changed) restricts a run to those dates: tables partitioned by `_event_date` are read from
those partitions only, and the DuckDB macro `lakehouse_in_event_dates(d)` (behind dbt's
`event_dates_filter`) tests a date against them. So a one-day gold run reads one day of silver.
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


def parse_event_dates(value: str | None) -> list[str] | None:
    """`2024-01-01,2024-01-03` -> the sorted dates; empty -> None (every date)."""
    if not value:
        return None
    dates = sorted({part.strip() for part in value.split(",") if part.strip()})
    for day in dates:
        date.fromisoformat(day)  # ISO dates only: they enter SQL below
    return dates


class Plugin(BasePlugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.lake = Lake.from_env()
        self.event_dates = parse_event_dates(os.environ.get(EVENT_DATES_ENV))

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
        uri = self.lake.table_uri("silver", source_config.identifier)
        table = DeltaTable(uri, storage_options=self.lake.storage_options or None)
        if self.event_dates and EVENT_DATE in table.metadata().partition_columns:
            return table.to_pyarrow_dataset(
                file_pruning_predicate=[(EVENT_DATE, "in", self.event_dates)]
            )
        return table.to_pyarrow_dataset()

    def default_materialization(self) -> str:
        return "view"
