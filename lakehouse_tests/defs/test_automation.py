"""Automation: a bronze update, even for an old date, pulls silver and gold after it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.seed import seed
from lakehouse.definitions import defs
from lakehouse.defs.sources import bronze_asset
from lakehouse_tests.conftest import materialize_all, resources_for

pytestmark = pytest.mark.slow


def test_old_bronze_partition_update_requests_silver_then_gold(
    tmp_path: Path, jaffle_raw: Path
) -> None:
    lake = Lake(str(tmp_path))
    seeded = seed(lake, days=3, raw_dir=jaffle_raw)
    days = [str(seeded.first_day)]  # not the latest landing date
    instance = dg.DagsterInstance.ephemeral()
    assert all(r.success for r in materialize_all(lake, instance))
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert settled.total_requested == 0

    # a late reload of the first (not the latest) landing date of orders
    orders = next(c for c in load_contracts() if c.name == "orders")
    done = dg.materialize(
        [bronze_asset(orders)],
        partition_key=days[0],
        resources=resources_for(lake),
        instance=instance,
    )
    assert done.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    requested = {
        key.to_user_string(): sorted(result.get_requested_partitions(key))
        for key in (
            dg.AssetKey(["silver", "orders"]),
            dg.AssetKey(["silver", "items"]),  # checks its references against silver orders
            dg.AssetKey(["gold", "daily_store_revenue"]),
        )
    }
    assert requested == {
        "silver/orders": days,
        "silver/items": days,
        "gold/daily_store_revenue": days,
    }
    # unpartitioned marts cannot share a run with daily partitions: they follow on the next tick
    assert result.get_num_requested(dg.AssetKey(["gold", "orders"])) == 0
    assert result.get_num_requested(dg.AssetKey(["silver", "products"])) == 0
    chain = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def]
    done = dg.materialize(
        chain,
        selection=[
            dg.AssetKey(["silver", "orders"]),
            dg.AssetKey(["silver", "items"]),
            dg.AssetKey(["gold", "daily_store_revenue"]),
        ],
        partition_key=days[0],
        resources=resources_for(lake),
        instance=instance,
    )
    assert done.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_num_requested(dg.AssetKey(["gold", "orders"])) == 1
    assert result.get_num_requested(dg.AssetKey(["gold", "customers"])) == 1
    assert result.get_num_requested(dg.AssetKey(["silver", "orders"])) == 0
    assert result.total_requested == 2
