"""The walking lakehouse end to end: landing -> bronze -> silver -> gold through Dagster.

Every figure is checked against an independent computation straight from the landing files.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.vault import clear_values
from lakehouse_tests.conftest import Materialized, materialize_all

pytestmark = pytest.mark.slow

RUN_SPECIFIC = ("_ingested_at", "_run_id", "_quarantined_at")


def landing_csv(lake: Lake, source: str) -> pl.DataFrame:
    """All landed rows of a source, read with plain polars (no platform code)."""
    files = [f.uri for f in list_landing_files(lake, source)]
    return pl.concat([pl.read_csv(f, infer_schema=False) for f in files])


def read_table(lake: Lake, layer: str, table: str) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri(layer, table))


def test_every_run_succeeds(materialized: Materialized) -> None:
    # bronze + silver, then gold: one run (whole marts, daily marts, headline metrics)
    assert [r.success for r in materialized.results] == [True, True]
    failed = [
        e for r in materialized.results for e in r.get_asset_check_evaluations() if not e.passed
    ]
    assert failed == []


@pytest.mark.parametrize("source", [c.name for c in load_contracts()])
def test_rows_reconcile_from_landing_to_silver(materialized: Materialized, source: str) -> None:
    lake = materialized.lake
    contract = next(c for c in load_contracts() if c.name == source)
    landed = landing_csv(lake, source)
    bronze = read_table(lake, "bronze", source)
    silver = read_table(lake, "silver", source)
    assert bronze.height == landed.height == materialized.seeded.rows[source]
    keys = [contract.column(k).name for k in contract.primary_key]
    assert silver.height == landed.select(keys).n_unique()
    # bronze holds the values exactly as landed, row for row
    assert_frame_equal(
        bronze.sort("_source_file", "_row_number").select(landed.columns),
        landed,
        check_row_order=False,
    )


def test_daily_store_revenue_equals_landing_csvs(materialized: Materialized) -> None:
    lake = materialized.lake
    files = [f.uri for f in list_landing_files(lake, "orders")]
    expected = duckdb.sql(
        "select store_id, cast(ordered_at as date) as order_date, count(*) as order_count, "
        "sum(cast(order_total as bigint)) as revenue "
        "from read_csv($files, all_varchar = true) group by all order by all",
        params={"files": files},
    ).pl()
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        actual = con.sql(
            "select store_id, order_date, order_count, revenue "
            "from gold.daily_store_revenue order by all"
        ).pl()
    assert expected.height > 0
    assert_frame_equal(actual, expected, check_dtypes=False)
    published = read_table(lake, "gold", "daily_store_revenue").sort("store_id", "order_date")
    assert_frame_equal(published.select(actual.columns), actual, check_dtypes=False)


def test_orders_mart_counts_items_and_splits_food_and_drink(materialized: Materialized) -> None:
    lake = materialized.lake
    items = landing_csv(lake, "items")
    products = landing_csv(lake, "products").with_columns(pl.col("price").cast(pl.Int64))
    expected = (
        items.join(products, on="sku")
        .group_by(pl.col("order_id"))
        .agg(
            pl.len().alias("item_count"),
            pl.col("price").filter(pl.col("type") == "jaffle").sum().alias("food_subtotal"),
            pl.col("price").filter(pl.col("type") == "beverage").sum().alias("drink_subtotal"),
        )
        .sort("order_id")
    )
    mart = (
        read_table(lake, "gold", "orders")
        .filter(pl.col("item_count") > 0)
        .select("order_id", "item_count", "food_subtotal", "drink_subtotal")
        .sort("order_id")
    )
    assert_frame_equal(mart, expected, check_dtypes=False)


def test_customers_mart_matches_orders(materialized: Materialized) -> None:
    lake = materialized.lake
    orders = landing_csv(lake, "orders").with_columns(pl.col("order_total").cast(pl.Int64))
    expected = (
        orders.group_by(pl.col("customer").alias("customer_id"))
        .agg(pl.len().alias("order_count"), pl.col("order_total").sum().alias("lifetime_spend"))
        .sort("customer_id")
    )
    mart = read_table(lake, "gold", "customers").select(expected.columns)
    # gold holds customer ids as tokens: the vault maps them back
    clear = clear_values(lake, mart.get_column("customer_id"))
    mart = mart.with_columns(pl.col("customer_id").replace_strict(clear)).sort("customer_id")
    assert_frame_equal(mart, expected, check_dtypes=False)


def test_no_customer_name_in_silver_or_gold(materialized: Materialized) -> None:
    lake = materialized.lake
    names = set(landing_csv(lake, "customers").get_column("name").to_list())
    assert len(names) > 10
    tables = [("silver", c.name) for c in load_contracts()]
    tables += [("gold", m) for m in ("orders", "customers", "daily_store_revenue")]
    for layer, table in tables:
        frame = read_table(lake, layer, table)
        for column in frame.columns:
            values = set(frame.get_column(column).cast(pl.String).drop_nulls().to_list())
            assert not values & names, f"{layer}/{table}.{column} holds clear customer names"
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        for (table,) in con.sql(
            "select table_schema || '.' || table_name from information_schema.tables"
        ).fetchall():
            text = " ".join(
                str(v) for row in con.sql(f"select * from {table}").fetchall() for v in row
            )
            assert not any(name in text for name in names), f"warehouse {table} holds clear names"


def test_replay_leaves_every_table_unchanged(materialized: Materialized) -> None:
    lake = materialized.lake
    tables = [(layer, c.name) for c in load_contracts() for layer in ("bronze", "silver")]
    tables += [("gold", m) for m in ("orders", "customers", "daily_store_revenue")]

    def snapshot() -> dict:
        out = {}
        for layer, table in tables:
            frame = read_table(lake, layer, table)
            frame = frame.drop([c for c in RUN_SPECIFIC if c in frame.columns])
            out[(layer, table)] = frame.sort(frame.columns)
        return out

    before = snapshot()
    results = materialize_all(lake, materialized.instance)
    assert all(r.success for r in results)
    after = snapshot()
    for key in tables:
        assert_frame_equal(after[key], before[key], check_row_order=True)
