"""Gold marts leave the DuckDB warehouse as Delta tables, readable by any engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from lakehouse.core import delta
from lakehouse.core.lake import Lake

DATE_COLUMN = "order_date"
"""The date column of daily partitioned marts: a partition run publishes only its dates."""


def publish_marts(
    lake: Lake,
    con: duckdb.DuckDBPyConnection,
    schema: str,
    marts: Sequence[str],
    *,
    run_id: str,
    dates: tuple[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write each mart's warehouse table to `<root>/lake/gold/<mart>`; returns per-mart metadata.

    Without `dates` the Delta table is overwritten. With `dates` (first, last; inclusive) only the
    rows of those dates are replaced (replace-where on `order_date`), so a one-day run of a daily
    mart does not rewrite its history.
    """
    from deltalake import write_deltalake

    published = {}
    for mart in marts:
        uri = lake.table_uri("gold", mart)
        commit = delta.commit_properties(step="gold publish", run_id=run_id)
        so = lake.storage_options or None
        if dates is None:
            table = con.sql(f'select * from "{schema}"."{mart}"').to_arrow_table()
            write_deltalake(
                uri,
                table,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=so,
                commit_properties=commit,
            )
        else:
            table = con.sql(
                f'select * from "{schema}"."{mart}" where {DATE_COLUMN} between $1 and $2',
                params=[dates[0], dates[1]],
            ).to_arrow_table()
            exists = delta.open_table(lake, uri) is not None
            write_deltalake(
                uri,
                table,
                mode="overwrite" if exists else "append",
                predicate=(
                    f"{DATE_COLUMN} >= {delta.sql_literal(dates[0])} AND "
                    f"{DATE_COLUMN} <= {delta.sql_literal(dates[1])}"
                )
                if exists
                else None,
                storage_options=so,
                commit_properties=commit,
            )
        rows, version = delta.table_stats(lake, uri) or (0, 0)
        published[mart] = {
            "dagster/row_count": rows,
            "delta_version": version,
            "dagster/uri": uri,
            "warehouse_table": f"{schema}.{mart}",
        }
    return published
