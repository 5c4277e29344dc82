"""The landing sensor's runs, executed: a landed file goes through bronze, silver and the gold it
reaches in ONE run. Afterwards automation and the gold sensor have nothing left to do, also after
a blocked date (a bad batch is not published, not retried, and gold does not show it)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster_aws.s3 import S3Resource

from lakehouse.core import delta
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.definitions import defs
from lakehouse.defs.gold import GOLD_TAG, SILVER_CHANGES
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.sensors import build_landing_sensor, gold_sensor
from lakehouse_tests.conftest import expected_revenue, resources_for
from lakehouse_tests.small_lake import (
    GOOD,
    deliver,
    deliver_reference_data,
    order,
    orders_file,
    text,
)

pytestmark = pytest.mark.slow

DAY1, DAY2 = "2024-05-01", "2024-05-02"
SENSOR = build_landing_sensor(load_contracts())
REVENUE = dg.AssetKey(["gold", "daily_store_revenue"])


def tick(lake: Lake, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"lake": LakeResource(root=lake.root), "s3": S3Resource()}
    )
    return SENSOR(context)


def execute(lake: Lake, instance: dg.DagsterInstance, request: dg.RunRequest):
    """The requested run, as the daemon would launch it: its assets, checks, partition, tags."""
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    selection = dg.AssetSelection.assets(*request.asset_selection).without_checks()
    selection |= dg.AssetSelection.checks(*request.asset_check_keys or ())
    return dg.materialize(
        assets,
        selection=selection,
        partition_key=request.partition_key,
        tags=request.tags,
        resources=resources_for(lake),
        instance=instance,
        raise_on_error=False,
    )


def gold_revenue(lake: Lake) -> pl.DataFrame:
    frame = pl.read_delta(lake.table_uri("gold", "daily_store_revenue"))
    return frame.select("store_id", "order_date", "order_count", "revenue").sort(
        "store_id", "order_date"
    )


def nothing_left(
    lake: Lake, instance: dg.DagsterInstance, cursor, follows: tuple[str, ...] = ()
) -> object:
    """Automation requests nothing more but the silver tables `follows` (referencing a loaded
    source that was not in the run), and the gold sensor starts no run; the new cursor."""
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = [
        key.to_user_string()
        for key in defs.resolve_asset_graph().get_all_asset_keys()
        if settled.get_num_requested(key)
    ]
    assert sorted(requested) == sorted(follows)
    context = dg.build_sensor_context(instance=instance, resources=resources_for(lake))
    assert list(gold_sensor(context).run_requests or []) == []
    return settled.cursor


def test_a_landing_run_takes_its_files_to_gold_and_leaves_nothing_to_follow(
    tmp_path: Path,
) -> None:
    lake = Lake(str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    automation = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    deliver_reference_data(tmp_path, DAY1)
    deliver(tmp_path, "orders", DAY1, "orders.csv", orders_file(DAY1))
    deliver(tmp_path, "items", DAY1, "items.csv", text(["id,order_id,sku", f"i1,{DAY1}-0,JAF-001"]))
    first = tick(lake, None)
    [request] = first.run_requests or []
    selected = {k.to_user_string() for k in request.asset_selection}
    sources = {"stores", "customers", "products", "orders", "items"}
    assert {f"bronze/{s}" for s in sources} | {f"silver/{s}" for s in sources} <= selected
    assert {"gold/daily_store_revenue", "gold/customers", "gold/metrics/revenue"} <= selected
    assert request.tags[GOLD_TAG] == SILVER_CHANGES
    # the run selects silver's checks; gold records its dbt tests as evaluations of its checks
    assert {k.asset_key.path[0] for k in request.asset_check_keys or ()} == {"silver"}
    done = execute(lake, instance, request)
    assert done.success
    gold_checks = {k for a in defs.assets or [] for k in getattr(a, "check_keys", ())}
    gold_checks = {k for k in gold_checks if k.asset_key in request.asset_selection}
    evaluated = {e.asset_check_key: e.passed for e in done.get_asset_check_evaluations()}
    unique = dg.AssetCheckKey(dg.AssetKey(["gold", "fct_orders"]), "unique_fct_orders_order_id")
    assert evaluated.get(unique) is True
    assert {k for k in gold_checks if k.asset_key.path[0] == "gold"} <= set(evaluated)
    # one run: the landed orders are in gold, every one of them
    assert gold_revenue(lake).equals(expected_revenue(lake, [DAY1]))
    assert gold_revenue(lake)["order_count"].sum() == GOOD
    automation = nothing_left(lake, instance, automation)

    # the same orders again in other bytes (CRLF line ends): bronze loads the new version, silver
    # changes nothing, so the run's gold builds nothing and gold keeps its versions
    gold_version = delta.table_version(lake, lake.table_uri("gold", "customers"))
    crlf = orders_file(DAY1).replace(b"\n", b"\r\n")
    deliver(tmp_path, "orders", DAY1, "orders.csv", crlf)
    second = tick(lake, first.cursor)
    [same] = second.run_requests or []
    done = execute(lake, instance, same)
    assert done.success
    assert not done.asset_materializations_for_node("gold_marts")
    assert delta.table_version(lake, lake.table_uri("gold", "customers")) == gold_version
    assert gold_revenue(lake).equals(expected_revenue(lake, [DAY1]))
    # items reference orders, and only orders were in the run: silver items checks them again
    automation = nothing_left(lake, instance, automation, follows=("silver/items",))

    # a bad batch for day 2 (a quarter of its rows invalid) blocks the date: the run publishes
    # nothing of it, gold still shows day 1 only, and nobody retries the date
    bad = [order(f"{DAY2}-bad{i}", DAY2, order_total="-1") for i in range(GOOD // 4)]
    deliver(tmp_path, "orders", DAY2, "orders.csv", orders_file(DAY2, *bad))
    [blocked] = tick(lake, second.cursor).run_requests or []
    assert {k.to_user_string() for k in blocked.asset_selection} >= {"silver/orders"}
    execute(lake, instance, blocked)
    assert gold_revenue(lake).equals(expected_revenue(lake, [DAY1]))
    held = pl.read_delta(lake.table_uri("silver", "orders"))
    assert held.filter(pl.col("_landing_date") == DAY2).is_empty()
    nothing_left(lake, instance, automation)
