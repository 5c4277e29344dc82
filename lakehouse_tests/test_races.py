"""Concurrent writers are safe: processes racing to create the same new table (silver MERGE, gold
publish) land every row once, and concurrent replace-wheres of different dates both land.

Each writer is its own process (`spawn`: fork panics deltalake's runtime), started together at a
barrier, with no Dagster instance: the core writers directly, as separate runs would call them.
Also here: what `publish_marts` replaces for a set of dates (not a race, fast).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from lakehouse.core import delta
from lakehouse.core import publish as silver_publish
from lakehouse.core.contract import Contract, parse_contract
from lakehouse.core.gold import publish_marts
from lakehouse.core.lake import Lake

WRITERS = 4
ROUNDS = 5
KEYS = 100
EVENT_DATES = ["2024-01-01", "2024-01-02", "2024-01-03"]
MART = "daily_store_revenue"
MART_DATES = ["2024-01-03", "2024-02-10"]
"""Sparse on purpose: the days between are not published."""
JOIN_SECONDS = 120
BARRIER_SECONDS = 60
"""A writer that waits longer for the others fails (one crashed): no test hangs on it."""


def race_contract(n: int) -> Contract:
    return parse_contract(
        {
            "name": f"race_{n}",
            "description": "Racing writers.",
            "owner": "team:test",
            "primary_key": ["id"],
            "event_time": "at",
            "columns": [
                {"name": "id", "type": "int64", "nullable": False},
                {"name": "at", "type": "datetime", "nullable": False},
                {"name": "value", "type": "string"},
            ],
        }
    )


def silver_rows() -> pl.DataFrame:
    """A batch as silver's publish receives it: typed columns plus lineage."""
    return pl.DataFrame(
        {
            "id": list(range(KEYS)),
            "at": [datetime.fromisoformat(EVENT_DATES[i % len(EVENT_DATES)]) for i in range(KEYS)],
            "value": [f"v{i}" for i in range(KEYS)],
            "_source_file": ["race/2024-01-01/race.csv"] * KEYS,
            "_row_number": list(range(1, KEYS + 1)),
            "_landing_date": ["2024-01-01"] * KEYS,
        }
    )


def merge_writer(root: str, barrier: Any) -> None:
    """Each round, publish the same keys into that round's new silver table `race_<round>`."""
    lake = Lake(root)
    for n in range(ROUNDS):
        contract = race_contract(n)
        rows = silver_publish.prepare(lake, contract, silver_rows())
        barrier.wait(BARRIER_SECONDS)
        silver_publish.publish(
            lake,
            contract,
            rows,
            ["2024-01-01"],
            fallback=lambda keys: pl.DataFrame(),
            run_id="race",
        )


def write_warehouse(path: str, rows: Sequence[tuple[int, str, int, int]]) -> None:
    with duckdb.connect(path) as con:
        con.execute("create schema if not exists gold")
        con.execute(
            f"create or replace table gold.{MART} "
            "(store_id varchar, order_date date, order_count bigint, revenue hugeint)"
        )
        con.executemany(f"insert into gold.{MART} values (?, ?, ?, ?)", rows)


def mart_rows(dates: Sequence[str]) -> list[tuple[str, str, int, int]]:
    return [(f"s{s}", d, s + 1, 100 * (s + 1)) for d in dates for s in range(3)]


def publish_writer(root: str, warehouse: str, barrier: Any) -> None:
    """Each round, publish this writer's warehouse into that round's new lake `<root>_<round>`."""
    with duckdb.connect(warehouse, read_only=True) as con:
        for n in range(ROUNDS):
            lake = Lake(f"{root}_{n}", warehouse_path=warehouse)
            barrier.wait(BARRIER_SECONDS)
            publish_marts(lake, con, "gold", [MART], run_id="race", dates=MART_DATES)


def replace_writer(root: str, day: str, barrier: Any) -> None:
    """Each round, replace the rows of `day` in that round's table `replaced_<round>`."""
    lake = Lake(root)
    rows = pl.DataFrame({"day": [day] * 10, "i": list(range(10)), "value": [f"new {day}"] * 10})
    for n in range(ROUNDS):
        barrier.wait(BARRIER_SECONDS)
        uri = lake.table_uri("silver", f"replaced_{n}")
        delta.replace_where(lake, uri, rows, f"day = '{day}'", step="race")


def race(target: Callable[..., None], args: Sequence[tuple]) -> None:
    """Run `target(*a, barrier)` for each `a` in its own spawned process; each round of the
    writers starts at `barrier`, all at once."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(args))
    processes = [context.Process(target=target, args=(*a, barrier)) for a in args]
    for process in processes:
        process.start()
    deadline = time.monotonic() + JOIN_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
    assert [p.exitcode for p in processes] == [0] * len(processes)


@pytest.mark.slow
def test_racing_first_merges_land_every_key_once(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    race(merge_writer, [(lake.root,)] * WRITERS)
    for n in range(ROUNDS):
        uri = lake.table_uri("silver", f"race_{n}")
        frame = pl.read_delta(uri)
        assert frame.height == KEYS, f"round {n}"
        assert frame.get_column("id").sort().to_list() == list(range(KEYS))
        dt = DeltaTable(uri)
        assert dt.metadata().partition_columns == ["_event_date"]
        assert dt.metadata().configuration == delta.TABLE_PROPERTIES


@pytest.mark.slow
def test_racing_first_gold_publishes_land_one_row_per_store_and_date(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    warehouses = []
    for w in range(WRITERS):
        path = str(tmp_path / f"warehouse_{w}.duckdb")
        write_warehouse(path, mart_rows(MART_DATES))
        warehouses.append(path)
    race(publish_writer, [(lake.root, w) for w in warehouses])
    for n in range(ROUNDS):
        frame = pl.read_delta(Lake(f"{lake.root}_{n}").table_uri("gold", MART))
        assert frame.height == len(mart_rows(MART_DATES)), f"round {n}"
        assert frame.select("store_id", "order_date").is_unique().all()
        assert sorted(frame.get_column("order_date").cast(str).unique()) == MART_DATES


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True], ids=["new table", "existing table"])
def test_concurrent_replace_wheres_of_different_dates_both_land(
    tmp_path: Path, existing: bool
) -> None:
    days = ["2024-01-01", "2024-01-02"]
    lake = Lake(str(tmp_path))
    if existing:
        # one data file holds both days: both writers remove it, so their commits conflict
        old = pl.DataFrame({"day": days, "i": [0, 0], "value": ["old", "old"]})
        for n in range(ROUNDS):
            delta.append(lake, lake.table_uri("silver", f"replaced_{n}"), old, step="seed")
    race(replace_writer, [(lake.root, day) for day in days])
    for n in range(ROUNDS):
        frame = pl.read_delta(lake.table_uri("silver", f"replaced_{n}"))
        assert frame.height == 20, f"round {n}"
        by_day = frame.group_by("day").agg(pl.col("value").unique()).sort("day")
        assert by_day.rows() == [(d, [f"new {d}"]) for d in days]


def publish(lake: Lake, rows: list, dates: Sequence[str] | None) -> dict:
    write_warehouse(lake.warehouse_path, rows)
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        return publish_marts(lake, con, "gold", [MART], run_id="test", dates=dates)[MART]


def gold(lake: Lake) -> list[tuple]:
    frame = pl.read_delta(lake.table_uri("gold", MART))
    return frame.with_columns(pl.col("order_date").cast(str)).sort(frame.columns).rows()


def test_publish_replaces_exactly_the_given_dates(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    history = ["2024-01-01", "2024-01-03", "2024-01-04", "2024-02-10"]
    first = publish(lake, mart_rows(history), history)
    assert first["published"] and first["dagster/row_count"] == 12
    dt = DeltaTable(lake.table_uri("gold", MART))
    assert pl.read_delta(lake.table_uri("gold", MART)).schema["order_date"] == pl.Date
    assert dt.metadata().configuration == delta.TABLE_PROPERTIES

    # the warehouse changes every day; only the sparse dates given are published, and
    # 2024-02-10, gone from the warehouse, ends with no rows
    changed = [(s, d, n, r + 1) for s, d, n, r in mart_rows(["2024-01-01", "2024-01-03"])]
    changed += [(s, d, n, r + 1) for s, d, n, r in mart_rows(["2024-01-04"])]
    meta = publish(lake, changed, ["2024-01-03", "2024-02-10"])
    assert meta["published"]
    expected = sorted(
        [r for r in mart_rows(history) if r[1] in ("2024-01-01", "2024-01-04")]
        + [r for r in changed if r[1] == "2024-01-03"]
    )
    assert gold(lake) == expected

    # unchanged content: no new Delta version
    version = dt.version() + 1
    meta = publish(lake, changed, ["2024-01-03", "2024-02-10"])
    assert not meta["published"]
    assert meta["delta_version"] == version
    assert gold(lake) == expected

    # no dates: the whole table
    meta = publish(lake, changed, None)
    assert meta["published"] and gold(lake) == sorted(changed)
    assert not publish(lake, changed, None)["published"]
