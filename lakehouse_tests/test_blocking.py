"""A batch over the quarantine threshold is blocked: silver keeps its Delta version, gold does not
run from it, the check fails as blocking, and another source in the same run still publishes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.core import delta, system
from lakehouse.core.lake import Lake
from lakehouse_tests.conftest import resources_for
from lakehouse_tests.small_lake import (
    GOOD,
    deliver,
    deliver_reference_data,
    order,
    orders_file,
    text,
)

DAY1, DAY2 = "2024-04-01", "2024-04-02"


def run_day(lake: Lake, instance: dg.DagsterInstance, day: str) -> dg.ExecuteInProcessResult:
    """One Dagster run of bronze, silver and gold for one landing date."""
    from lakehouse.definitions import defs

    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    return dg.materialize(
        assets,
        resources=resources_for(lake),
        instance=instance,
        partition_key=day,
        raise_on_error=False,
    )


def version(lake: Lake, layer: str, table: str) -> int | None:
    return delta.table_version(lake, lake.table_uri(layer, table))


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root: Path = tmp_path_factory.mktemp("blocking")
    lake = Lake(str(root))
    instance = dg.DagsterInstance.ephemeral()
    deliver_reference_data(root, DAY1)
    deliver(root, "orders", DAY1, "orders.csv", orders_file(DAY1))
    deliver(root, "items", DAY1, "items.csv", text(["id,order_id,sku", f"i1,{DAY1}-0,JAF-001"]))
    first = run_day(lake, instance, DAY1)
    assert first.success
    before = {
        (layer, t): version(lake, layer, t)
        for layer, t in [("silver", "orders"), ("silver", "customers"), ("gold", "orders")]
    }
    # Day 2: a quarter of the orders fail a rule (limit 5%); a new customer arrives too.
    bad = [order(f"{DAY2}-bad{i}", DAY2, order_total="-1") for i in range(GOOD // 4)]
    deliver(root, "orders", DAY2, "orders.csv", orders_file(DAY2, *bad))
    deliver(root, "customers", DAY2, "customers.csv", text(["id,name", "c3,Grace Hopper"]))
    second = run_day(lake, instance, DAY2)
    return {
        "lake": lake,
        "first": first,
        "second": second,
        "before": before,
        "instance": instance,
    }


def test_silver_keeps_its_delta_version(blocked: dict) -> None:
    lake = blocked["lake"]
    assert version(lake, "silver", "orders") == blocked["before"][("silver", "orders")]
    silver = pl.read_delta(lake.table_uri("silver", "orders"))
    assert silver.filter(pl.col("_landing_date") == DAY2).height == 0
    assert silver.height == GOOD


def test_the_bad_rows_are_quarantined_and_the_good_ones_held(blocked: dict) -> None:
    lake = blocked["lake"]
    quarantine = pl.read_delta(lake.table_uri("quarantine", "orders"))
    day2 = quarantine.filter(pl.col("_landing_date") == DAY2)
    assert sorted(day2.get_column("id").to_list()) == sorted(
        f"{DAY2}-bad{i}" for i in range(GOOD // 4)
    )
    dq = system.read_table(lake, "dq_results").filter(
        pl.col("source") == "orders", pl.col("partition") == DAY2
    )
    by_check = {r["check"]: r for r in dq.to_dicts()}
    assert by_check["quarantine_ratio"]["passed"] is False
    assert by_check["quarantine_ratio"]["blocking"] is True
    assert by_check["reconciliation"]["passed"] is True
    assert f"held {GOOD}" in by_check["reconciliation"]["detail"]


def test_the_check_fails_as_blocking_in_dagster(blocked: dict) -> None:
    second = blocked["second"]
    assert not second.success
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in second.get_asset_check_evaluations()
    }
    ratio = evaluations[("silver/orders", "quarantine_ratio")]
    assert not ratio.passed
    assert ratio.severity == dg.AssetCheckSeverity.ERROR
    assert ratio.blocking
    meta = ratio.metadata
    assert meta["rows_checked"].value == GOOD + GOOD // 4
    assert meta["rows_failed"].value == GOOD // 4
    assert meta["failure_rate"].value == pytest.approx(0.2)
    assert "order_total" in str(meta["sample"].value)
    assert evaluations[("silver/customers", "quarantine_ratio")].passed


def test_gold_does_not_run_from_the_blocked_batch(blocked: dict) -> None:
    lake, second = blocked["lake"], blocked["second"]
    materialized = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert not {k for k in materialized if k.startswith("gold/")}
    # The blocked partition is not materialized: its blocking check fails the step.
    assert "silver/orders" not in materialized
    assert DAY2 not in blocked["instance"].get_materialized_partitions(
        dg.AssetKey(["silver", "orders"])
    )
    state = system.latest_states(lake, "silver", "orders", [DAY2])[DAY2]
    assert state["status"] == "blocked" and state["held"] == GOOD
    assert version(lake, "gold", "orders") == blocked["before"][("gold", "orders")]
    first_gold = {
        e.asset_key.to_user_string() for e in blocked["first"].get_asset_materialization_events()
    }
    assert "gold/orders" in first_gold  # gold did run when the checks passed


def test_another_source_in_the_same_run_publishes(blocked: dict) -> None:
    lake, second = blocked["lake"], blocked["second"]
    assert version(lake, "silver", "customers") > blocked["before"][("silver", "customers")]
    customers = pl.read_delta(lake.table_uri("silver", "customers"))
    assert customers.height == 3
    materialized = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert {"silver/customers", "silver/stores", "bronze/orders"} <= materialized
