"""Gold marts leave the DuckDB warehouse as Delta tables, readable by any engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from lakehouse.core import delta
from lakehouse.core.lake import Lake


def publish_marts(
    lake: Lake, con: duckdb.DuckDBPyConnection, schema: str, marts: Sequence[str], *, run_id: str
) -> dict[str, dict[str, Any]]:
    """Overwrite `<root>/lake/gold/<mart>` with each mart's table; returns per-mart metadata."""
    from deltalake import write_deltalake

    published = {}
    for mart in marts:
        table = con.sql(f'select * from "{schema}"."{mart}"').to_arrow_table()
        uri = lake.table_uri("gold", mart)
        write_deltalake(
            uri,
            table,
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=lake.storage_options or None,
            commit_properties=delta.commit_properties(step="gold publish", run_id=run_id),
        )
        rows, version = delta.table_stats(lake, uri) or (0, 0)
        published[mart] = {
            "dagster/row_count": rows,
            "delta_version": version,
            "dagster/uri": uri,
            "warehouse_table": f"{schema}.{mart}",
        }
    return published
