"""The star schema: keys and relationships hold, every landed order and item is in its fact once,
and dim_customers keeps history (SCD2) when a new delivery changes a customer."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from lakehouse.core.lake import Lake
from lakehouse.core.seed import seed
from lakehouse.core.vault import lookup
from lakehouse_tests.conftest import materialize_all

pytestmark = pytest.mark.slow

STAR = ["fct_orders", "fct_order_items", "dim_customers", "dim_products", "dim_stores", "dim_dates"]
RELATIONSHIPS = [
    ("fct_orders", "customer_sk", "dim_customers", "customer_sk"),
    ("fct_orders", "customer_id", "dim_customers", "customer_id"),
    ("fct_orders", "store_id", "dim_stores", "store_id"),
    ("fct_orders", "order_date", "dim_dates", "date_day"),
    ("fct_order_items", "order_id", "fct_orders", "order_id"),
    ("fct_order_items", "product_id", "dim_products", "product_id"),
    ("fct_order_items", "order_date", "dim_dates", "date_day"),
]


def landed(root: str, source: str) -> pl.DataFrame:
    files = sorted(Path(root, "landing", source).glob("*/*.csv"))
    return pl.concat(
        pl.read_csv(f, infer_schema=False).with_columns(pl.lit(f.parent.name).alias("landed"))
        for f in files
    )


def gold(lake: Lake, sql: str) -> pl.DataFrame:
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        return con.sql(sql).pl()


@pytest.fixture(scope="module")
def star_lake(tmp_path_factory: pytest.TempPathFactory, jaffle_raw: Path):
    lake = Lake(str(tmp_path_factory.mktemp("star")))
    seeded = seed(lake, days=3, raw_dir=jaffle_raw)
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_all(lake, instance)
    assert all(r.success for r in results)
    return lake, seeded, instance, results


def test_star_keys_and_relationships_hold(star_lake) -> None:
    lake, _, _, results = star_lake
    evaluations = [e for r in results for e in r.get_asset_check_evaluations()]
    star_checks = [e for e in evaluations if e.asset_key.path[-1] in STAR]
    checked = {(e.asset_key.path[-1], e.check_name.split("_")[0]) for e in star_checks}
    for table in STAR:
        assert (table, "unique") in checked, f"{table} has no unique check evaluated"
        assert (table, "not") in checked, f"{table} has no not_null check evaluated"
    assert {t for t, kind in checked if kind == "relationships"} >= {
        "fct_orders",
        "fct_order_items",
    }
    assert all(e.passed for e in star_checks)
    # the same relationships, counted here: no fact row points at a missing dimension row
    for fact, column, dim, key in RELATIONSHIPS:
        orphans = gold(
            lake,
            f"select count(*) as n from gold.{fact} f where f.{column} is null or not exists "
            f"(select 1 from gold.{dim} d where d.{key} = f.{column})",
        )["n"][0]
        assert orphans == 0, f"{fact}.{column} -> {dim}.{key}: {orphans} orphan(s)"


def test_every_landed_order_and_item_is_in_its_fact_once(star_lake) -> None:
    lake, _, _, _ = star_lake
    orders = landed(lake.root, "orders")
    items = landed(lake.root, "items")
    facts = gold(lake, "select order_id, order_total, order_date from gold.fct_orders")
    assert sorted(facts["order_id"]) == sorted(orders["id"])
    by_id = dict(zip(orders["id"], orders["order_total"].cast(pl.Int64), strict=True))
    assert all(by_id[o] == t for o, t in zip(facts["order_id"], facts["order_total"], strict=True))
    assert sorted(
        gold(lake, "select order_item_id from gold.fct_order_items")["order_item_id"]
    ) == (sorted(items["id"]))
    days = gold(lake, "select date_day from gold.dim_dates order by 1")["date_day"].to_list()
    first, last = min(facts["order_date"]), max(facts["order_date"])
    assert days == [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    # the marts built on the star agree with it
    assert gold(lake, "select count(*) as n from gold.orders")["n"][0] == len(orders)
    revenue = gold(lake, "select sum(revenue) as r from gold.daily_store_revenue")["r"][0]
    assert revenue == sum(by_id.values())


def test_the_build_writes_the_mart_catalog_offline(star_lake) -> None:
    """`dbt docs generate` ran with the whole marts: the catalog has every star model's columns
    as the warehouse holds them, the manifest their descriptions and lineage, in one page."""
    lake, _, _, _ = star_lake
    target = Path(lake.warehouse_path).parent / "dbt_target"
    catalog = json.loads((target / "catalog.json").read_text())["nodes"]
    manifest = json.loads((target / "manifest.json").read_text())["nodes"]
    for table in STAR:
        node = f"model.lakehouse.{table}"
        in_warehouse = gold(lake, f"describe gold.{table}")["column_name"].to_list()
        assert sorted(c.lower() for c in catalog[node]["columns"]) == sorted(in_warehouse)
        assert manifest[node]["description"], f"{table} has no description"
    assert (
        "model.lakehouse.dim_customers"
        in manifest["model.lakehouse.fct_orders"]["depends_on"]["nodes"]
    )
    page = (target / "static_index.html").read_text()
    assert "fct_order_items" in page and "catalog" in page


def test_a_changed_customer_gets_a_second_version(star_lake) -> None:
    lake, seeded, instance, _ = star_lake
    customers = landed(lake.root, "customers")
    first_day = min(customers["landed"])
    changed = customers.filter(pl.col("landed") == first_day)["id"][0]
    before = gold(lake, "select * from gold.dim_customers")
    assert before.height == customers.height and before["is_current"].all()
    # a new delivery, the day after the last one, says the customer's name changed
    next_day = (seeded.last_day + dt.timedelta(days=1)).isoformat()
    folder = Path(lake.root, "landing", "customers", next_day)
    folder.mkdir(parents=True)
    (folder / "customers.csv").write_text(f"id,name\n{changed},Renamed Customer\n")
    results = materialize_all(lake, instance)
    assert results and all(r.success for r in results)

    after = gold(lake, "select * from gold.dim_customers order by customer_id, valid_from")
    changed = lookup(lake, "subject:customers", [changed])[changed]  # gold holds its token
    versions = after.filter(pl.col("customer_id") == changed)
    assert versions.height == 2
    old, new = versions.rows(named=True)
    assert old["valid_from"] == dt.datetime.fromisoformat(first_day)
    assert old["valid_to"] == new["valid_from"] == dt.datetime.fromisoformat(next_day)  # no gap
    assert new["valid_to"] is None
    assert [old["is_current"], new["is_current"]] == [False, True]
    assert old["customer_name_pseudonym"] != new["customer_name_pseudonym"]
    assert old["customer_sk"] != new["customer_sk"]
    # every other customer keeps its one current version; keys stay unique
    others = after.filter(pl.col("customer_id") != changed)
    assert others.height == customers.height - 1 and others["is_current"].all()
    assert after["customer_sk"].n_unique() == after.height
    # no overlaps: per customer, each version ends where the next begins
    for _, rows in after.group_by("customer_id"):
        rows = rows.sort("valid_from")
        assert rows["valid_to"][:-1].to_list() == rows["valid_from"][1:].to_list()
        assert rows["is_current"].sum() == 1
    # the orders placed before the change keep the version of their time; the mart shows today's
    sks = gold(
        lake, f"select distinct customer_sk from gold.fct_orders where customer_id = '{changed}'"
    )
    assert sks["customer_sk"].to_list() == [old["customer_sk"]]
    current = gold(lake, f"select * from gold.customers where customer_id = '{changed}'")
    assert current["customer_name_pseudonym"].to_list() == [new["customer_name_pseudonym"]]

    # nothing new: the next materialize changes nothing, the history stays as it is
    assert materialize_all(lake, instance) == []
    assert gold(lake, "select count(*) as n from gold.dim_customers")["n"][0] == after.height
