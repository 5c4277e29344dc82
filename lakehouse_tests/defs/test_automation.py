"""Automation: a bronze update, even for an old date, pulls silver after it; the gold sensor then
requests gold for exactly the event dates silver changed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.seed import redeliver, seed
from lakehouse.definitions import defs
from lakehouse.defs.gold import SILVER_CHANGES, TRIGGER_TAG
from lakehouse.defs.sensors import gold_sensor
from lakehouse.defs.sources import bronze_asset
from lakehouse_tests.conftest import materialize_all, resources_for

pytestmark = pytest.mark.slow


def gold_requests(lake: Lake, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    context = dg.build_sensor_context(instance=instance, resources=resources_for(lake))
    return list(gold_sensor(context).run_requests or [])


def test_old_bronze_partition_update_requests_silver_then_gold(
    tmp_path: Path, jaffle_raw: Path
) -> None:
    lake = Lake(str(tmp_path))
    seeded = seed(lake, days=3, raw_dir=jaffle_raw)
    first = str(seeded.first_day)
    second = str(seeded.first_day.replace(day=seeded.first_day.day + 1))
    instance = dg.DagsterInstance.ephemeral()
    assert all(r.success for r in materialize_all(lake, instance))
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert settled.total_requested == 0
    assert gold_requests(lake, instance) == []

    # a corrected redelivery of the second (not the latest) landing date of orders; one of its
    # orders moves to the first day
    fix = redeliver(lake, second)
    assert fix.moved_to.isoformat() == first
    orders = next(c for c in load_contracts() if c.name == "orders")
    done = dg.materialize(
        [bronze_asset(orders)],
        partition_key=second,
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
        )
    }
    assert requested == {"silver/orders": [second], "silver/items": [second]}
    # gold has no automation condition: it follows silver's changes, not landing dates
    assert result.get_num_requested(dg.AssetKey(["gold", "daily_store_revenue"])) == 0
    assert result.get_num_requested(dg.AssetKey(["silver", "products"])) == 0
    chain = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def]
    done = dg.materialize(
        chain,
        selection=[dg.AssetKey(["silver", "orders"]), dg.AssetKey(["silver", "items"])],
        partition_key=second,
        resources=resources_for(lake),
        instance=instance,
    )
    assert done.success

    # the gold sensor asks for ONE run: the daily marts over the event dates silver changed (the
    # moved order's old and new day), the whole marts those sources reach, and the metrics; the
    # dimensions no changed source reaches are not rebuilt
    requests = gold_requests(lake, instance)
    [run] = requests
    assert run.tags[TRIGGER_TAG] == SILVER_CHANGES
    assert run.tags["dagster/asset_partition_range_start"] == first
    assert run.tags["dagster/asset_partition_range_end"] == second
    selected = {k.to_user_string() for k in run.asset_selection}
    assert {"gold/daily_store_revenue", "gold/fct_orders", "gold/orders"} <= selected
    assert {"gold/fct_order_items", "gold/dim_dates", "gold/metrics/revenue"} <= selected
    assert not selected & {"gold/dim_customers", "gold/dim_products", "gold/dim_stores"}
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    for request in requests:
        run = dg.materialize(
            assets,
            selection=request.asset_selection,
            resources=resources_for(lake),
            instance=instance,
            tags=request.tags,
        )
        assert run.success
    # taken in: nothing more to request, and the same run keys would not run twice
    assert gold_requests(lake, instance) == []
