"""dbt-duckdb plugin: dbt sources read silver Delta tables through deltalake.

DuckDB cannot download its own `delta` extension on machines without internet access, so dbt
reads silver the way the rest of the platform does: a DeltaTable located from `LAKEHOUSE_ROOT`
(local or S3, with the same storage options), exposed to DuckDB as an Arrow dataset. The source
table's name is the silver table's name.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable

from lakehouse.core.lake import Lake


class Plugin(BasePlugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.lake = Lake.from_env()

    def load(self, source_config: SourceConfig) -> Any:
        uri = self.lake.table_uri("silver", source_config.identifier)
        table = DeltaTable(uri, storage_options=self.lake.storage_options or None)
        return table.to_pyarrow_dataset()

    def default_materialization(self) -> str:
        return "view"
