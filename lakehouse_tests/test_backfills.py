"""Backfills: a range is one run and gives the same tables as day-by-day runs; overlapping
concurrent runs lose and duplicate nothing; a one-day gold run leaves other dates alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import PROJECT_DIR, Lake
from lakehouse.core.seed import seed
from lakehouse.definitions import defs
from lakehouse_tests.conftest import detokenised, resources_for

pytestmark = pytest.mark.slow

DAYS = 3
RUN_SPECIFIC = ("_ingested_at", "_run_id", "_quarantined_at")
SOURCES = [c.name for c in load_contracts()]
CHAIN = [f"bronze/{s}" for s in SOURCES] + [f"silver/{s}" for s in SOURCES]
DAILY_GOLD = "gold/daily_store_revenue"
DAILY_FACTS = ["gold/fct_orders", DAILY_GOLD]
"""The daily models: the fact and the mart built on it, one partitioned dbt step."""


def dagster_materialize(
    lake: Lake, home: Path, select: list[str], start: str, end: str
) -> subprocess.Popen:
    """`dagster asset materialize` of a partition range, as its own process (one run)."""
    env = {**os.environ, "LAKEHOUSE_ROOT": lake.root, "DAGSTER_HOME": str(home)}
    env.pop("LAKEHOUSE_WAREHOUSE", None)
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "lakehouse.definitions",
            "--select",
            ",".join(select),
            "--partition-range",
            f"{start}...{end}",
        ],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]


def snapshot(lake: Lake) -> dict[str, pl.DataFrame]:
    """Every table of the chain, run-specific columns dropped and vault tokens (random per lake)
    replaced by the clear values they stand for, so two lakes built from the same files compare."""
    tables = {}
    for layer in ("bronze", "silver", "quarantine"):
        for source in SOURCES:
            uri = lake.table_uri(layer, source)
            if Path(uri).exists():
                frame = pl.read_delta(uri)
                frame = frame.drop([c for c in RUN_SPECIFIC if c in frame.columns])
                frame = detokenised(lake, frame)
                tables[f"{layer}/{source}"] = frame.sort(frame.columns)
    return tables


def gold_revenue(lake: Lake) -> pl.DataFrame:
    frame = pl.read_delta(lake.table_uri("gold", "daily_store_revenue"))
    return frame.sort("order_date", "store_id")


def assert_same_tables(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key in left:
        assert_frame_equal(left[key], right[key], check_row_order=True)


@pytest.fixture(scope="module")
def day_by_day(tmp_path_factory: pytest.TempPathFactory, jaffle_raw: Path):
    """A lake materialized one partition at a time (one run per day), the reference."""
    lake = Lake(str(tmp_path_factory.mktemp("daily")))
    seeded = seed(lake, days=DAYS, raw_dir=jaffle_raw)
    days = pl.date_range(seeded.first_day, seeded.last_day, eager=True).cast(str).to_list()
    chain = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.partitions_def]
    instance = dg.DagsterInstance.ephemeral()
    keys = [dg.AssetKey(k.split("/")) for k in CHAIN]
    for day in days:
        done = dg.materialize(
            chain,
            selection=keys,
            partition_key=day,
            resources=resources_for(lake),
            instance=instance,
        )
        assert done.success
    build_whole_marts(lake, instance)  # the star's dimensions, read by the daily facts
    for day in days:
        done = dg.materialize(
            chain,
            selection=[dg.AssetKey(k.split("/")) for k in DAILY_FACTS],
            partition_key=day,
            resources=resources_for(lake),
            instance=instance,
        )
        assert done.success
    return lake, days, chain, instance


def build_whole_marts(lake: Lake, instance: dg.DagsterInstance) -> None:
    """The unpartitioned marts (the star's dimensions): the daily facts read them."""
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    whole = [a for a in assets if a.partitions_def is None and "gold_marts" in a.node_def.name]
    done = dg.materialize(assets, selection=whole, resources=resources_for(lake), instance=instance)
    assert done.success


def test_range_backfill_is_one_run_and_equals_day_by_day_runs(
    tmp_path: Path, jaffle_raw: Path, day_by_day
) -> None:
    reference, days, _, _ = day_by_day
    lake = Lake(str(tmp_path / "lake"))
    seed(lake, days=DAYS, raw_dir=jaffle_raw)
    home = tmp_path / "dagster_home"
    home.mkdir()
    finish(dagster_materialize(lake, home, CHAIN, days[0], days[-1]))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        build_whole_marts(lake, instance)
    finish(dagster_materialize(lake, home, DAILY_FACTS, days[0], days[-1]))
    assert len(runs) == 1
    assert runs[0].tags["dagster/asset_partition_range_start"] == days[0]
    assert runs[0].tags["dagster/asset_partition_range_end"] == days[-1]
    assert_same_tables(snapshot(lake), snapshot(reference))
    assert_frame_equal(gold_revenue(lake), gold_revenue(reference))
    assert gold_revenue(lake).get_column("order_date").cast(str).unique().sort().to_list() == days

    # two overlapping ranges at the same time, as two processes: nothing lost or duplicated
    first = dagster_materialize(lake, home, CHAIN, days[0], days[1])
    second = dagster_materialize(lake, home, CHAIN, days[1], days[2])
    finish(first)
    finish(second)
    assert_same_tables(snapshot(lake), snapshot(reference))


def test_one_day_gold_run_rebuilds_only_that_day(day_by_day) -> None:
    lake, days, chain, instance = day_by_day
    before = gold_revenue(lake)
    with duckdb.connect(lake.warehouse_path) as con:
        # mark history in the warehouse: a rebuild of other days would erase the mark
        con.execute(
            "update gold.daily_store_revenue set revenue = -1 where order_date = ?", [days[0]]
        )
        con.execute(
            "update gold.daily_store_revenue set revenue = -1 where order_date = ?", [days[-1]]
        )
    done = dg.materialize(
        chain,
        selection=[dg.AssetKey(["gold", "daily_store_revenue"])],
        partition_key=days[-1],
        resources=resources_for(lake),
        instance=instance,
    )
    assert done.success
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        marked = con.sql(
            "select cast(order_date as varchar), min(revenue), max(revenue) "
            "from gold.daily_store_revenue group by 1 order by 1"
        ).fetchall()
    assert (
        [(d, lo < 0, hi < 0) for d, lo, hi in marked]
        == [
            (days[0], True, True),  # untouched: still marked
            *[(d, False, False) for d in days[1:-1]],
            (days[-1], False, False),  # rebuilt from silver
        ]
    )
    # the Delta copy got only the rebuilt day: every date equals what it was
    assert_frame_equal(gold_revenue(lake), before)
