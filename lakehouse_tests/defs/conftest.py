"""A small lake and the Dagster instance that built it, shared by the catalog and lineage tests:
a day that publishes through gold, then one range run of two landing dates (one blocked, one
with a quarantined row and a duplicate) and an alerts tick delivered to a webhook, so every kind
of table the platform writes exists and the instance holds per-partition events to read back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.core import alerts, system
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse_tests.conftest import resources_for
from lakehouse_tests.servers import free_port
from lakehouse_tests.small_lake import (
    GOOD,
    deliver,
    deliver_reference_data,
    order,
    orders_file,
    text,
)
from lakehouse_tests.test_blocking import DAY1, DAY2, run_day
from lakehouse_tests.webhook import Hook

DAY3 = "2024-04-03"


@dataclass
class SmallLake:
    lake: Lake
    instance: dg.DagsterInstance
    range_run: dg.ExecuteInProcessResult


def run_range(lake: Lake, instance: dg.DagsterInstance, first: str, last: str, keys: list[str]):
    """One single-run range of `keys` over the landing dates `first`..`last`."""
    from lakehouse.definitions import defs

    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    return dg.materialize(
        assets,
        selection=[dg.AssetKey.from_user_string(k) for k in keys],
        resources=resources_for(lake),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )


@pytest.fixture(scope="package")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> SmallLake:
    root: Path = tmp_path_factory.mktemp("catalog")
    the_lake = Lake(str(root))
    instance = dg.DagsterInstance.ephemeral()
    deliver_reference_data(root, DAY1)
    deliver(root, "orders", DAY1, "orders.csv", orders_file(DAY1))
    deliver(root, "items", DAY1, "items.csv", text(["id,order_id,sku", f"i1,{DAY1}-0,JAF-001"]))
    run_day(the_lake, instance, DAY1)  # gold's success is not this test's business
    assert system.latest_states(the_lake, "silver", "orders", [DAY1])[DAY1]["status"] == "published"
    bad = [order(f"{DAY2}-bad{i}", DAY2, order_total="-1") for i in range(GOOD // 4)]
    deliver(root, "orders", DAY2, "orders.csv", orders_file(DAY2, *bad))
    deliver(root, "orders", DAY2, "empty.csv", b"")
    day3 = [order(f"{DAY3}-0", DAY3), order(f"{DAY3}-bad", DAY3, order_total="-1")]
    deliver(root, "orders", DAY3, "orders.csv", orders_file(DAY3, *day3))
    ranged = run_range(the_lake, instance, DAY2, DAY3, ["bronze/orders", "silver/orders"])
    assert ranged.success  # a blocked date in a range run does not fail the step
    port = free_port()
    with Hook(port).running() as hook:
        raised = alerts.sync(
            the_lake,
            alerts.lake_alerts(the_lake, load_contracts()),
            covers=alerts.covered_by_lake,
        )
        alerts.deliver(the_lake, [alerts.WebhookSink(f"http://127.0.0.1:{port}/")])
    assert raised and len(hook.bodies) == len(raised)
    return SmallLake(the_lake, instance, ranged)
