"""The catalog is complete: every Delta table under the lake root is an asset, and the catalog
sensor observes the quarantine, _system and landing assets with figures read back from disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_aws.s3 import S3Resource

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.defs.catalog import build_catalog_sensor
from lakehouse.defs.resources import LakeResource
from lakehouse_tests.defs.conftest import DAY3, SmallLake
from lakehouse_tests.small_lake import GOOD, deliver
from lakehouse_tests.test_blocking import DAY2


@pytest.fixture(scope="module")
def lake(small_lake: SmallLake) -> Lake:
    return small_lake.lake


def delta_tables(lake: Lake) -> list[tuple[str, str]]:
    """(layer, table) of every Delta table under the lake root, found on disk."""
    base = Path(lake.root, "lake")
    return sorted((p.parent.parent.name, p.parent.name) for p in base.glob("*/*/_delta_log"))


def test_every_table_under_the_lake_root_is_an_asset(lake: Lake) -> None:
    from lakehouse.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    tables = delta_tables(lake)
    layers = {layer for layer, _ in tables}
    assert {"bronze", "silver", "quarantine", "gold", "_system"} <= layers
    assert ("_system", "alerts") in tables and ("_system", "alert_deliveries") in tables
    missing = [f"{layer}/{table}" for layer, table in tables if f"{layer}/{table}" not in keys]
    assert missing == []
    for source in ("orders", "customers"):
        assert f"landing/{source}" in keys


def landing_figures(lake: Lake, source: str) -> tuple[int, int]:
    files = [p for p in Path(lake.landing_uri(source)).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_the_catalog_sensor_observes_what_is_on_disk(lake: Lake) -> None:
    contracts = load_contracts()
    sensor = build_catalog_sensor(contracts)

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            cursor=cursor, resources={"lake": LakeResource(root=lake.root), "s3": S3Resource()}
        )
        return sensor(context)

    first = tick(None)
    seen = {e.asset_key.to_user_string(): e.metadata for e in first.asset_events}
    for layer, table in delta_tables(lake):
        if layer not in ("quarantine", "_system"):
            continue
        meta = seen[f"{layer}/{table}"]
        assert meta["dagster/row_count"].value == pl.read_delta(lake.table_uri(layer, table)).height
        names = [c.name for c in meta["dagster/column_schema"].schema.columns]
        assert names == pl.read_delta(lake.table_uri(layer, table)).columns
    quarantine = pl.read_delta(lake.table_uri("quarantine", "orders"))
    assert quarantine.height == GOOD // 4 + 1
    files, size = landing_figures(lake, "orders")
    orders = seen["landing/orders"]
    assert (orders["files"].value, orders["bytes"].value) == (files, size) == (4, size)
    assert orders["latest_landing_date"].value == DAY3
    assert orders["latest_date_files"].value == 1
    day3 = Path(lake.landing_uri("orders"), DAY3, "orders.csv").stat()
    arrived = datetime.fromtimestamp(day3.st_mtime_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f"| {DAY3} | 1 | {day3.st_size} | {arrived} UTC |" in orders["recent_dates"].value
    # nothing changed: nothing observed again
    second = tick(first.cursor)
    assert second.asset_events == []
    # a delivery: only its landing folder is observed again
    deliver(Path(lake.root), "items", DAY2, "items.csv", b"id,order_id,sku\ni9,x,JAF-001\n")
    third = tick(second.cursor)
    assert [e.asset_key.to_user_string() for e in third.asset_events] == ["landing/items"]
    assert third.asset_events[0].metadata["files"].value == landing_figures(lake, "items")[0]


def test_gold_shows_its_warehouse_types_and_real_storage(small_lake: SmallLake) -> None:
    from lakehouse.definitions import defs

    lake, instance = small_lake.lake, small_lake.instance
    key = dg.AssetKey(["gold", "orders"])
    static = defs.resolve_asset_graph().get(key).metadata
    assert static["dagster/table_name"] == f"{Path(lake.warehouse_path).stem}.gold.orders"
    assert not str(static["dagster/table_name"]).startswith("parse.")
    record = instance.fetch_materializations(key, limit=1).records[0]
    assert record.asset_materialization is not None
    meta = record.asset_materialization.metadata
    assert meta["dagster/uri"].value == lake.table_uri("gold", "orders")
    delta = pl.read_delta(meta["dagster/uri"].value)
    assert meta["dagster/row_count"].value == delta.height
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        described = con.sql("describe gold.orders").fetchall()
    columns = meta["dagster/column_schema"].value.columns
    assert [(c.name, c.type) for c in columns] == [(n, t.lower()) for n, t, *_ in described]
    assert [c.name for c in columns] == delta.columns
    declared = {c.name: c.description for c in static["dagster/column_schema"].columns}
    assert all(c.description == declared[c.name] for c in columns if c.name in declared)
