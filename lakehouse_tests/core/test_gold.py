"""Publishing marts as Delta over a sequence of deliveries: after every publish, the gold Delta
table holds exactly the warehouse table's rows (and what the test computes from the deliveries
itself), a mart whose rows did not change gets no new Delta version, and a dated publish of a
daily mart replaces only its dates (a date left with no rows leaves the table)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from lakehouse.core.gold import publish_marts, warehouse_columns
from lakehouse.core.lake import Lake

SCHEMA = "gold"
D1, D2, D3, D4 = (dt.date(2026, 11, d) for d in (1, 2, 3, 4))

Order = tuple[str, dt.date, str, int]
"""(order id, order date, store, amount in cents), as a delivery holds it."""


def _daily(orders: list[Order]) -> pl.DataFrame:
    """Revenue per order date and store, computed in Python from the orders."""
    sums: dict[tuple[dt.date, str], list[int]] = defaultdict(lambda: [0, 0])
    for _, day, store, amount in orders:
        sums[day, store][0] += amount
        sums[day, store][1] += 1
    return pl.DataFrame(
        [(day, store, s, n) for (day, store), (s, n) in sums.items()],
        schema={"order_date": pl.Date, "store": pl.String, "revenue": pl.Int64, "orders": pl.Int64},
        orient="row",
    )


def _whole(orders: list[Order]) -> pl.DataFrame:
    """Revenue per store over all days, computed in Python from the orders."""
    sums: dict[str, int] = defaultdict(int)
    for _, _, store, amount in orders:
        sums[store] += amount
    return pl.DataFrame(
        list(sums.items()), schema={"store": pl.String, "revenue": pl.Int64}, orient="row"
    )


class Warehouse:
    """A DuckDB warehouse built from the deliveries the way the dbt project builds gold: the
    daily mart deletes and re-inserts the dates a build covers, the whole mart is rebuilt."""

    def __init__(self, path: str) -> None:
        self.con = duckdb.connect(path)
        self.con.execute(f"create schema {SCHEMA}")
        self.con.execute(
            "create table orders (order_id varchar, order_date date, store varchar, amount bigint)"
        )
        self.con.execute(
            f"create table {SCHEMA}.daily (order_date date, store varchar, revenue bigint, "
            "orders bigint)"
        )

    def land(self, orders: list[Order], days: list[dt.date]) -> None:
        """A delivery replacing everything known for `days` (a correction retracts too)."""
        self.con.execute("delete from orders where list_contains($1::date[], order_date)", [days])
        if orders:
            self.con.executemany("insert into orders values (?, ?, ?, ?)", orders)
        self.con.execute(
            f"delete from {SCHEMA}.daily where list_contains($1::date[], order_date)", [days]
        )
        self.con.execute(
            f"insert into {SCHEMA}.daily select order_date, store, sum(amount)::bigint, "
            "count(*) from orders where list_contains($1::date[], order_date) group by all",
            [days],
        )
        # a whole rebuild stores rows in whatever order the engine likes
        self.con.execute(
            f"create or replace table {SCHEMA}.whole as select store, sum(amount)::bigint as "
            "revenue from orders group by all order by random()"
        )
        self.con.commit()

    def rows(self, mart: str) -> pl.DataFrame:
        return self.con.sql(f"select * from {SCHEMA}.{mart}").pl()


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns)


def _delta(lake: Lake, mart: str) -> tuple[pl.DataFrame, int]:
    table = DeltaTable(lake.table_uri("gold", mart))
    return pl.read_delta(table), table.version()


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path))


def test_published_marts_equal_the_warehouse_after_every_delivery(lake: Lake) -> None:
    warehouse = Warehouse(lake.warehouse_path)
    landed: dict[str, Order] = {}
    versions: dict[str, int] = {}

    def deliver(orders: list[Order], days: list[dt.date], *, changes: set[str]) -> None:
        """Land a delivery, publish both marts, compare, and check which got a new version."""
        for key in [k for k, o in landed.items() if o[1] in days]:
            del landed[key]
        landed.update({o[0]: o for o in orders})
        warehouse.land(orders, days)
        whole = publish_marts(lake, warehouse.con, SCHEMA, ["whole"], run_id="test")
        daily = publish_marts(
            lake, warehouse.con, SCHEMA, ["daily"], run_id="test", dates=[str(d) for d in days]
        )
        expected = {
            "daily": _daily(list(landed.values())),
            "whole": _whole(list(landed.values())),
        }
        for mart, published in (("whole", whole), ("daily", daily)):
            rows, version = _delta(lake, mart)
            assert _sorted(rows).equals(_sorted(warehouse.rows(mart))), mart
            assert _sorted(rows).equals(_sorted(expected[mart])), mart
            assert published[mart]["dagster/row_count"] == rows.height
            assert published[mart]["published"] is (mart in changes), mart
            if mart in versions:  # a first publish may create the table, then fill it
                assert version == versions[mart] + (mart in changes), mart
            versions[mart] = version

    # two days, then a new one
    deliver(
        [("o1", D1, "a", 100), ("o2", D1, "b", 250), ("o3", D2, "a", 70)],
        [D1, D2],
        changes={"daily", "whole"},
    )
    deliver([("o4", D3, "b", 30), ("o5", D3, "c", 5)], [D3], changes={"daily", "whole"})
    # a correction of an old day: o1's amount changes, store b's only order of D1 is retracted
    deliver([("o1", D1, "a", 120)], [D1], changes={"daily", "whole"})
    # the same day delivered again, identical: nothing changes, no new version anywhere
    deliver([("o1", D1, "a", 120)], [D1], changes=set())
    # a day with nothing for the marts (no orders on D4), then a day whose every order is
    # retracted: D2 leaves the daily mart, and store a's total drops
    deliver([], [D4], changes=set())
    deliver([], [D2], changes={"daily", "whole"})
    rows, _ = _delta(lake, "daily")
    assert sorted(set(rows["order_date"])) == [D1, D3]
    # an order moving between stores on an old day changes both stores, not the row count
    deliver([("o4", D3, "c", 30), ("o5", D3, "c", 5)], [D3], changes={"daily", "whole"})


def test_a_dated_publish_leaves_other_dates_untouched(lake: Lake) -> None:
    """Only the dates published are read and replaced: rows of other dates stay as they were,
    even where the warehouse has moved on (the next build of those dates publishes them)."""
    warehouse = Warehouse(lake.warehouse_path)
    warehouse.land([("o1", D1, "a", 100), ("o2", D2, "a", 70)], [D1, D2])
    publish_marts(lake, warehouse.con, SCHEMA, ["daily"], run_id="test", dates=[str(D1), str(D2)])
    _, first = _delta(lake, "daily")
    warehouse.land([("o1", D1, "a", 999)], [D1])
    warehouse.land([("o3", D2, "b", 1)], [D2])
    published = publish_marts(
        lake, warehouse.con, SCHEMA, ["daily"], run_id="test", dates=[str(D2)]
    )
    rows, version = _delta(lake, "daily")
    assert published["daily"]["published"] and version == first + 1
    assert _sorted(rows).equals(_sorted(_daily([("o1", D1, "a", 100), ("o3", D2, "b", 1)]))), (
        "D1 keeps its first publish; D2 is the warehouse's"
    )


def test_warehouse_columns_of_several_marts_in_one_query(lake: Lake) -> None:
    warehouse = Warehouse(lake.warehouse_path)
    warehouse.land([("o1", D1, "a", 100)], [D1])
    assert warehouse_columns(warehouse.con, SCHEMA, ["whole", "daily", "absent"]) == {
        "whole": {"store": "VARCHAR", "revenue": "BIGINT"},
        "daily": {
            "order_date": "DATE",
            "store": "VARCHAR",
            "revenue": "BIGINT",
            "orders": "BIGINT",
        },
        "absent": {},
    }
