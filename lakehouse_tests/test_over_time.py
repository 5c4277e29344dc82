"""Correct over time: a feed that corrects itself, arrives late and breaks, played step by step.

After every delivery the lake is materialized the way users do (`materialize_landed`) and every
table is compared with an independent computation made here, in plain Python, from the landing
files present at that moment: for every key, the latest valid version (by `ordered_at`, then
landing date, file and row) among the landed rows, the rows of a blocked landing date held
back. Then the same materialize runs again and must change nothing.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from lakehouse.core import delta, system
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.seed import deliver_late, redeliver, seed
from lakehouse.defs.gold import SILVER_CHANGES, TRIGGER_TAG
from lakehouse_tests.conftest import materialize_all

pytestmark = pytest.mark.slow

DAYS = 30
FIRST = date(2018, 9, 1)


def day(n: int) -> str:
    """The landing date of feed day `n` (1-based)."""
    return (FIRST + timedelta(days=n - 1)).isoformat()


def landed(lake: Lake, source: str, skip_dates: set[str] = frozenset()) -> list[dict]:
    """Every landed row of `source` with its landing position, read with the csv module."""
    rows = []
    for file in list_landing_files(lake, source):
        if file.landing_date in skip_dates:
            continue
        with open(file.uri, newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=1):
                rows.append({**row, "_pos": (file.landing_date, file.relative_path, number)})
    return rows


def latest(rows: list[dict], key: str, ordering: str | None) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for row in rows:
        rank = ((row[ordering] if ordering else ""), row["_pos"])
        if row[key] not in best or rank >= best[row[key]]["_rank"]:
            best[row[key]] = {**row, "_rank": rank}
    return best


def valid_order(row: dict) -> bool:
    return all(int(row[c]) >= 0 for c in ("subtotal", "tax_paid", "order_total"))


def expected(lake: Lake, held_dates: set[str]) -> dict[str, dict]:
    """Orders and items silver must hold, computed from the landing files alone."""
    orders = latest(
        [r for r in landed(lake, "orders", held_dates) if valid_order(r)], "id", "ordered_at"
    )
    items = latest(landed(lake, "items", held_dates), "id", None)
    items = {k: v for k, v in items.items() if v["order_id"] in orders}
    return {"orders": orders, "items": items}


def silver(lake: Lake, table: str) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri("silver", table))


def versions(lake: Lake) -> dict[str, int | None]:
    out = {}
    for layer in ("bronze", "silver", "quarantine", "gold", "_system"):
        folder = Path(lake.root) / "lake" / layer
        for table in sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []:
            out[f"{layer}/{table}"] = delta.table_version(lake, lake.table_uri(layer, table))
    return out


def check_lake(lake: Lake, held_dates: set[str] = frozenset()) -> None:
    """Silver and gold equal the independent computation, for every key and every date."""
    want = expected(lake, held_dates)
    orders = silver(lake, "orders")
    assert orders.get_column("id").is_unique().all()
    got = {
        r["id"]: r
        for r in orders.select(
            "id", "customer_id", "store_id", "ordered_at", "order_total", "_event_date"
        ).iter_rows(named=True)
    }
    assert set(got) == set(want["orders"])
    for oid, row in want["orders"].items():
        assert got[oid]["order_total"] == int(row["order_total"]), oid
        assert got[oid]["ordered_at"].isoformat() == row["ordered_at"].replace(" ", "T"), oid
        assert got[oid]["_event_date"] == row["ordered_at"][:10], oid
    items = silver(lake, "items")
    assert items.get_column("id").is_unique().all()
    assert set(items.get_column("id")) == set(want["items"])

    revenue: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in want["orders"].values():
        cell = revenue[(row["store_id"], row["ordered_at"][:10])]
        cell[0] += 1
        cell[1] += int(row["order_total"])
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        mart = con.sql(
            "select store_id, cast(order_date as varchar), order_count, revenue "
            "from gold.daily_store_revenue"
        ).fetchall()
        gold_orders = con.sql(
            "select order_id, order_total, item_count, food_subtotal, drink_subtotal "
            "from gold.orders"
        ).fetchall()
        fact = con.sql(
            "select order_item_id, order_id, cast(order_date as varchar), product_id, "
            "product_price from gold.fct_order_items"
        ).fetchall()
    assert {(s, d): [n, r] for s, d, n, r in mart} == dict(revenue)
    published = pl.read_delta(lake.table_uri("gold", "daily_store_revenue"))
    assert published.height == len(revenue)
    assert published.select("order_date").n_unique() == len({d for _, d in revenue})
    products = latest(landed(lake, "products"), "sku", None)
    item_count: dict[str, int] = defaultdict(int)
    subtotals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # food, drink
    for row in want["items"].values():
        item_count[row["order_id"]] += 1
        product = products[row["sku"]]
        subtotals[row["order_id"]][product["type"] == "beverage"] += int(product["price"])
    assert {o: (t, n, f, d) for o, t, n, f, d in gold_orders} == {
        oid: (int(row["order_total"]), item_count[oid], *subtotals[oid])
        for oid, row in want["orders"].items()
    }
    published_orders = pl.read_delta(lake.table_uri("gold", "orders"))
    assert dict(published_orders.select("order_id", "item_count").iter_rows()) == {
        oid: item_count[oid] for oid in want["orders"]
    }
    # every item once, on its order's day, in the warehouse and in the published Delta table
    item_rows = {
        iid: (
            row["order_id"],
            want["orders"][row["order_id"]]["ordered_at"][:10],
            row["sku"],
            int(products[row["sku"]]["price"]),
        )
        for iid, row in want["items"].items()
    }
    assert len(fact) == len(item_rows)
    assert {i: tuple(rest) for i, *rest in fact} == item_rows
    published_items = pl.read_delta(lake.table_uri("gold", "fct_order_items")).select(
        "order_item_id",
        "order_id",
        pl.col("order_date").cast(pl.String),
        "product_id",
        "product_price",
    )
    assert published_items.height == len(item_rows)
    assert {i: tuple(rest) for i, *rest in published_items.iter_rows()} == item_rows


def materialize(lake: Lake, instance: dg.DagsterInstance) -> list[dg.ExecuteInProcessResult]:
    return materialize_all(lake, instance)


def rerun_changes_nothing(lake: Lake, instance: dg.DagsterInstance) -> None:
    before = versions(lake)
    dq = system.read_table(lake, system.DQ_RESULTS).height
    results = materialize(lake, instance)
    assert versions(lake) == before
    assert system.read_table(lake, system.DQ_RESULTS).height == dq
    # no run at all: nothing changed since the last one
    assert results == []


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory, jaffle_raw: Path):
    lake = Lake(str(tmp_path_factory.mktemp("over_time")))
    instance = dg.DagsterInstance.ephemeral()
    seed(lake, days=DAYS, raw_dir=jaffle_raw, start=FIRST)
    results = materialize(lake, instance)
    assert all(r.success for r in results)
    return lake, instance


def test_1_thirty_days(feed) -> None:
    lake, instance = feed
    check_lake(lake)
    rerun_changes_nothing(lake, instance)


def test_2_corrected_redelivery_with_a_moved_key(feed) -> None:
    lake, instance = feed
    before = silver(lake, "orders")
    fix = redeliver(lake, day(10))
    assert fix.removed and fix.changed and fix.added and fix.moved
    results = materialize(lake, instance)
    assert all(r.success for r in results)
    check_lake(lake)
    after = silver(lake, "orders")
    assert not after.filter(pl.col("id").is_in(list(fix.removed))).height
    moved = after.filter(pl.col("id") == fix.moved)
    assert moved.get_column("_event_date").to_list() == [fix.moved_to.isoformat()]
    assert after.height == before.height - len(fix.removed) + len(fix.added)
    rerun_changes_nothing(lake, instance)


def test_3_late_file_over_three_event_dates(feed) -> None:
    lake, instance = feed
    late = deliver_late(lake, day(DAYS))
    assert len(late.event_dates) >= 3
    results = materialize(lake, instance)
    assert all(r.success for r in results)
    check_lake(lake)
    rerun_changes_nothing(lake, instance)


def test_4_blocked_date_in_a_range_run_holds_back_only_itself(feed, jaffle_raw: Path) -> None:
    lake, instance = feed
    seed(lake, days=DAYS + 3, raw_dir=jaffle_raw, start=FIRST)
    blocked = day(DAYS + 2)
    path = Path(lake.landing_uri("orders")) / blocked / "orders.csv"
    lines = path.read_text().splitlines()
    header, first = lines[0], lines[1].split(",")
    bad = [
        ",".join([f"bad-{i}", *first[1:4], "-1", "0", "-1"]) for i in range(max(2, len(lines) // 4))
    ]
    path.write_text("\n".join([*lines, *bad]) + "\n")
    assert header.startswith("id,customer")

    results = materialize(lake, instance)
    assert not all(r.success for r in results) or system.held_partitions(lake).height
    held = system.held_partitions(lake)
    assert set(held.filter(pl.col("source") == "orders").get_column("landing_date")) == {blocked}
    assert set(held.filter(pl.col("source") == "items").get_column("landing_date")) == {blocked}
    orders = silver(lake, "orders")
    assert orders.filter(pl.col("_landing_date") == blocked).height == 0
    assert orders.filter(pl.col("_landing_date") == day(DAYS + 1)).height > 0
    assert orders.filter(pl.col("_landing_date") == day(DAYS + 3)).height > 0
    items = silver(lake, "items")
    assert items.filter(pl.col("_landing_date") == day(DAYS + 3)).height > 0
    check_lake(lake, held_dates={blocked})
    # the blocked partition is not materialized; its neighbours are
    materialized = instance.get_materialized_partitions(dg.AssetKey(["silver", "orders"]))
    assert day(DAYS + 1) in materialized and day(DAYS + 3) in materialized
    assert blocked not in materialized

    # The fix: a corrected redelivery of the same file.
    path.write_text("\n".join(lines) + "\n")
    results = materialize(lake, instance)
    assert all(r.success for r in results)
    assert system.held_partitions(lake).is_empty()
    check_lake(lake)
    rerun_changes_nothing(lake, instance)


def test_5_a_late_item_and_an_item_moved_to_an_order_of_another_day(feed) -> None:
    # Items are dated by their order (contract `dated_by`): a late item, or one moved to another
    # order, rebuilds its orders' days in the daily facts, and only those.
    lake, instance = feed
    orders = silver(lake, "orders")
    items = silver(lake, "items").join(
        orders.select(pl.col("id").alias("order_id"), "_event_date"), on="order_id"
    )
    late_order = orders.filter(pl.col("_event_date") == day(5)).get_column("id")[0]
    moved = items.filter(pl.col("_event_date") == day(7)).row(0, named=True)
    to_order = orders.filter(pl.col("_event_date") == day(12)).get_column("id")[0]
    landing = day(DAYS + 4)
    folder = Path(lake.landing_uri("items")) / landing
    folder.mkdir(parents=True)
    (folder / "items.csv").write_text(
        "id,order_id,sku\n"
        f"late-item-1,{late_order},{moved['sku']}\n"
        f"{moved['id']},{to_order},{moved['sku']}\n"
    )
    results = materialize(lake, instance)
    assert all(r.success for r in results)
    check_lake(lake)
    # the daily facts replaced exactly those three days
    for mart in ("fct_order_items", "orders"):
        commit = delta.open_table(lake, lake.table_uri("gold", mart)).history(1)[0]
        predicate = commit["operationParameters"]["predicate"]
        assert set(re.findall(r"\d{4}-\d{2}-\d{2}", predicate)) == {day(5), day(7), day(12)}
    rerun_changes_nothing(lake, instance)


def test_6_a_product_price_change_rebuilds_every_day_silver_holds(feed) -> None:
    # A product's price is on every item of it, any day: the daily marts rebuild every date,
    # and the run marks the days silver holds materialized, not every partition since 2018.
    lake, instance = feed
    landing = day(DAYS + 5)
    path = Path(lake.landing_uri("products")) / landing / "products.csv"
    first = sorted(Path(lake.landing_uri("products")).glob("*/products.csv"))[0]
    lines = first.read_text().splitlines()
    changed = lines[1].split(",")
    assert changed[3] != "1250"
    changed[3] = "1250"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join([lines[0], ",".join(changed), *lines[2:]]) + "\n")
    results = materialize(lake, instance)
    assert all(r.success for r in results)
    check_lake(lake)
    held = silver(lake, "orders").get_column("_event_date")
    ranges = [
        (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
        for tags in (r.dagster_run.tags for r in results)
        if tags.get(TRIGGER_TAG) == SILVER_CHANGES
    ]
    assert ranges == [(held.min(), held.max())]
    rerun_changes_nothing(lake, instance)
