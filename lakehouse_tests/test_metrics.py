"""The semantic layer: every metric equals an independent computation from the landed files, per
store and week (new customers per week), and `lakehouse metrics` prints it and its errors."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lakehouse.cli import main
from lakehouse.core.metrics import HEADLINE, MetricsError, semantic_layer
from lakehouse_tests.conftest import Materialized

pytestmark = pytest.mark.slow

BY_STORE = ["revenue", "order_count", "average_order_value", "items_sold", "drink_revenue_share"]


def landed(root: str, source: str) -> pl.DataFrame:
    """Every landed file of `source`, as strings, with its landing date."""
    files = sorted(Path(root, "landing", source).glob("*/*.csv"))
    assert files, f"no landed {source} files"
    return pl.concat(
        pl.read_csv(f, infer_schema=False).with_columns(pl.lit(f.parent.name).alias("landed"))
        for f in files
    )


@pytest.fixture(scope="module")
def expected(materialized: Materialized) -> dict[str, pl.DataFrame]:
    """The metrics computed from the landing files alone (polars, no warehouse, no dbt)."""
    root = materialized.lake.root
    orders = (
        landed(root, "orders")
        .with_columns(
            pl.col("ordered_at").str.to_datetime(),
            pl.col("order_total").cast(pl.Int64),
        )
        .sort("ordered_at", "landed")
        .unique("id", keep="last")
        .with_columns(week=pl.col("ordered_at").dt.truncate("1w").dt.date())
    )
    stores = landed(root, "stores").unique("id", keep="last").select("id", store="name")
    products = landed(root, "products").unique("sku", keep="last")
    items = (
        landed(root, "items")
        .unique("id", keep="last")
        .join(orders.select(pl.col("id").alias("order_id"), "store_id", "week"), on="order_id")
        .join(products.select("sku", "type", pl.col("price").cast(pl.Int64)), on="sku")
    )
    order_metrics = (
        orders.join(stores, left_on="store_id", right_on="id")
        .group_by("week", "store")
        .agg(revenue=pl.col("order_total").sum(), order_count=pl.len())
        .with_columns(average_order_value=pl.col("revenue") / pl.col("order_count"))
    )
    item_metrics = (
        items.join(stores, left_on="store_id", right_on="id")
        .group_by("week", "store")
        .agg(
            items_sold=pl.len(),
            drink_revenue_share=pl.col("price").filter(pl.col("type") == "beverage").sum()
            / pl.col("price").sum(),
        )
    )
    by_store = order_metrics.join(item_metrics, on=["week", "store"], how="full", coalesce=True)
    customers = landed(root, "customers").unique("id", keep="last")
    first_orders = orders.group_by("customer").agg(pl.col("week").min())
    new_customers = (
        customers.join(first_orders, left_on="id", right_on="customer")
        .group_by("week")
        .agg(new_customers=pl.len())
    )
    return {
        "by_store": by_store.select("week", "store", *BY_STORE).sort("week", "store"),
        "new_customers": new_customers.sort("week"),
        "orders": orders,
    }


def test_every_metric_equals_the_landed_files_per_store_and_week(materialized, expected) -> None:
    layer = semantic_layer(materialized.lake.warehouse_path)
    got = layer.query(BY_STORE, by=["store"], grain="week").frame
    assert got.height == expected["by_store"].height > 1
    assert_frame_equal(got, expected["by_store"], check_dtypes=False, rel_tol=1e-9)
    customers = layer.query(["new_customers"], grain="week").frame
    assert_frame_equal(customers, expected["new_customers"], check_dtypes=False)
    assert set(HEADLINE) == {*BY_STORE, "new_customers"}


def test_totals_reconcile_across_grains(materialized, expected) -> None:
    """Each order is counted once whatever the grain: days, weeks and months sum to all orders."""
    layer = semantic_layer(materialized.lake.warehouse_path)
    total = expected["orders"]["order_total"].sum()
    for grain in ("day", "week", "month"):
        frame = layer.query(["revenue", "order_count"], grain=grain).frame
        assert frame["revenue"].sum() == total
        assert frame["order_count"].sum() == expected["orders"].height


def test_since_and_until_keep_the_periods_in_range(materialized, expected) -> None:
    days = sorted(expected["orders"]["ordered_at"].dt.date().unique())
    since, until = days[2], days[-2]
    layer = semantic_layer(materialized.lake.warehouse_path)
    frame = layer.query(["order_count"], grain="day", since=since, until=until).frame
    inside = expected["orders"].filter(pl.col("ordered_at").dt.date().is_between(since, until))
    assert frame["day"].to_list() == [d for d in days if since <= d <= until]
    assert frame["order_count"].sum() == inside.height


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """`lakehouse --root ROOT metrics ARGS` in this process: exit code, stdout, stderr."""
    monkeypatch.delenv("LAKEHOUSE_WAREHOUSE", raising=False)  # the root's own warehouse

    def run(root: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setenv("LAKEHOUSE_ROOT", root)  # what `--root` sets; undone after the test
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--root", root, "metrics", *args])
        return code, out.getvalue(), err.getvalue()

    return run


def test_cli_query_prints_the_metrics_as_csv_json_and_table(materialized, expected, cli) -> None:
    root = materialized.lake.root
    want = expected["by_store"].select("week", "store", "revenue", "order_count")
    args = ["query", "revenue,order_count", "--by", "store", "--grain", "week"]
    code, out, _ = cli(root, *args, "--format", "csv")
    assert code == 0
    got = pl.read_csv(io.StringIO(out), try_parse_dates=True)
    assert_frame_equal(got, want, check_dtypes=False)
    code, out, _ = cli(root, *args, "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["week"], r["store"], r["revenue"]) for r in rows] == [
        (str(w), s, r) for w, s, r in want.select("week", "store", "revenue").iter_rows()
    ]
    code, out, _ = cli(root, *args)
    lines = out.splitlines()
    assert lines[0].split() == ["week", "store", "revenue", "order_count"]
    assert len(lines) == 2 + want.height
    assert str(want["revenue"][0]) in lines[2]


def test_cli_list_shows_every_metric_with_owner_and_dimensions(materialized, cli) -> None:
    code, out, _ = cli(materialized.lake.root, "list")
    assert code == 0
    for name in HEADLINE:
        line = next(line for line in out.splitlines() if line.startswith(f"{name} ("))
        assert "owner team:" in line
    assert "dimensions: store, product_type, customer_cohort" in out  # items_sold
    assert "dimensions: customer_cohort;" in out  # new_customers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "revnue"], "no metric `revnue`; metrics are `average_order_value`"),
        (
            ["query", "revenue", "--by", "product_type"],
            "metric `revenue` has no dimension `product_type`; valid for `revenue`: "
            "`customer_cohort`, `store`",
        ),
        (["query", "revenue", "--by", "city"], "no dimension `city`; dimensions are `store`"),
        (["query", "revenue", "--grain", "year"], "no grain `year`; grains are `day`"),
        (["query", "revenue", "--since", "last week"], "--since `last week` is not a date"),
    ],
)
def test_cli_errors_list_the_valid_names(materialized, args, message, cli) -> None:
    code, out, err = cli(materialized.lake.root, *args)
    assert code == 2
    assert message in err
    assert not out


def test_a_lake_without_gold_says_so(tmp_path) -> None:
    layer = semantic_layer(str(tmp_path / "warehouse.duckdb"))
    with pytest.raises(MetricsError, match=r"no warehouse at .*materialize gold first"):
        layer.query(["revenue"])
    duckdb.connect(layer.warehouse).close()  # a warehouse without the star
    with pytest.raises(MetricsError, match=r"lacks a gold table .*fct_orders.*materialize gold"):
        layer.query(["revenue"])
