"""Gold checks are recorded on every run: a one-partition run of the daily marts evaluates the
dbt tests of the marts it builds, also when the run's check selection leaves them out (as an
automation run that selects the mart beside other assets' checks does)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from lakehouse.core.lake import Lake
from lakehouse.core.seed import seed
from lakehouse.definitions import defs
from lakehouse_tests.conftest import materialize_all, resources_for

pytestmark = pytest.mark.slow

DAILY_MART = dg.AssetKey(["gold", "daily_store_revenue"])


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory, jaffle_raw: Path):
    lake = Lake(str(tmp_path_factory.mktemp("gold_checks")))
    seeded = seed(lake, days=3, raw_dir=jaffle_raw)
    instance = dg.DagsterInstance.ephemeral()
    assert all(r.success for r in materialize_all(lake, instance))
    return lake, str(seeded.last_day), instance


def daily_marts() -> dg.AssetsDefinition:
    return next(
        a
        for a in defs.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.node_def.name == "gold_daily_marts"
    )


@pytest.mark.parametrize(
    "selection",
    [None, dg.AssetSelection.assets(DAILY_MART).without_checks()],
    ids=["mart and its checks", "mart without its checks"],
)
def test_one_partition_run_evaluates_the_marts_dbt_tests(small_lake, selection) -> None:
    lake, day, instance = small_lake
    marts = daily_marts()
    result = dg.materialize(
        [marts],
        selection=selection,
        partition_key=day,
        resources=resources_for(lake),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    evaluated = {e.asset_check_key for e in result.get_asset_check_evaluations()}
    expected = {k for k in marts.check_keys if k.asset_key == DAILY_MART}
    assert expected, "the daily mart has dbt tests"
    assert expected <= evaluated
    assert all(e.passed for e in result.get_asset_check_evaluations())
    observed = [
        e.asset_key
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION" and e.asset_key == DAILY_MART
    ]
    assert not observed, "a dbt test of the mart was logged as an observation"


def test_a_gold_run_reads_its_own_lake_and_writes_no_environment(
    small_lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt runs in the run's process and gets its lake there, not from the environment: with
    `LAKEHOUSE_ROOT` naming another lake, the run builds its own lake's marts, and it never
    writes the environment (glibc's `setenv` beside another thread's `getenv` is a crash)."""
    lake, day, instance = small_lake
    elsewhere = tmp_path / "another_lake"
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(elsewhere))
    monkeypatch.delenv("LAKEHOUSE_WAREHOUSE", raising=False)  # the root's own warehouse
    writes: list[tuple] = []
    monkeypatch.setattr(os, "putenv", lambda *a: writes.append(("putenv", *a)))
    monkeypatch.setattr(os, "unsetenv", lambda *a: writes.append(("unsetenv", *a)))
    result = dg.materialize(
        [daily_marts()],
        partition_key=day,
        resources=resources_for(lake),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    assert writes == []
    assert not elsewhere.exists()
    orders = pl.read_delta(lake.table_uri("silver", "orders")).filter(
        pl.col("ordered_at").dt.date() == date.fromisoformat(day)
    )
    want = {
        (r["store_id"], r["n"], r["total"])
        for r in orders.group_by("store_id")
        .agg(n=pl.len(), total=pl.col("order_total").sum())
        .iter_rows(named=True)
    }
    assert want, "the day has orders"
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        got = set(
            con.execute(
                "select store_id, order_count, revenue from gold.daily_store_revenue "
                "where order_date = ?",
                [date.fromisoformat(day)],
            ).fetchall()
        )
    assert got == want
