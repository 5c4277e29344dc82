"""Erasure at the core: what it deletes, what it keeps (a value another subject shares), what an
unknown subject changes (nothing), and how a rerun finishes an erasure interrupted midway."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from lakehouse.core import delta, erasure, maintenance, system
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.erasure import erase
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver
from lakehouse.core.vault import lookup, vault_uri
from lakehouse_tests.small_lake import HEADER, deliver, order, text
from lakehouse_tests.test_erasure import Interrupted, interrupt, scan

CONTRACTS = {c.name: c for c in load_contracts()}
DAY = "2024-06-01"
SOURCES = ("stores", "customers", "orders")
SHARED_NAME = "Sam Same"


def small_lake(root: Path) -> Lake:
    deliver(
        root,
        "stores",
        DAY,
        "stores.csv",
        text(["id,name,opened_at,tax_rate", "s1,Philly,2016-09-01T00:00:00,0.06"]),
    )
    # two customers share a name: erasing one keeps the name's token for the other
    deliver(
        root,
        "customers",
        DAY,
        "customers.csv",
        text(["id,name", f"cust-a,{SHARED_NAME}", f"cust-b,{SHARED_NAME}", "cust-c,Cy Only"]),
    )
    lines = [order(f"o{i}", DAY, customer=("cust-a", "cust-b", "cust-c")[i % 3]) for i in range(30)]
    deliver(root, "orders", DAY, "orders.csv", text([HEADER, *lines]))
    lake = Lake(str(root))
    for source in SOURCES:
        load_bronze(lake, CONTRACTS[source], [DAY], run_id="t")
        load_silver(lake, CONTRACTS[source], [DAY], run_id="t")
    return lake


def versions(lake: Lake) -> dict[str, int | None]:
    uris = [lake.table_uri(layer, s) for layer in ("bronze", "silver") for s in SOURCES]
    return {uri: delta.table_version(lake, uri) for uri in [*uris, vault_uri(lake)]}


def test_an_unknown_subject_changes_nothing(tmp_path: Path) -> None:
    lake = small_lake(tmp_path)
    before = versions(lake)
    done = erase(lake, "customers", "cust-nobody", writers_held=True)
    assert not done.found and done.rows == {}
    assert versions(lake) == before
    assert delta.open_table(lake, lake.table_uri("_system", system.ERASURE_LOG)) is None
    with pytest.raises(
        ConfigError, match="`orders` is not a declared subject; subjects: customers"
    ):
        erase(lake, "orders", "o1", writers_held=True)
    with pytest.raises(ConfigError, match="writer pool"):  # zero retention needs writers held off
        erase(lake, "customers", "cust-a", writers_held=False)


def test_erasure_deletes_the_subject_and_keeps_what_others_share(tmp_path: Path) -> None:
    lake = small_lake(tmp_path)
    subject = "subject:customers"
    tokens = lookup(lake, subject, ["cust-a", "cust-b", "cust-c"])
    name_token = lookup(lake, "name", [SHARED_NAME])[SHARED_NAME]
    only_token = lookup(lake, "name", ["Cy Only"])["Cy Only"]

    done = erase(lake, "customers", "cust-c", writers_held=True)
    assert done.found
    assert done.rows == {
        "bronze/customers": 1,
        "bronze/orders": 10,
        "silver/customers": 1,
        "silver/orders": 10,
        "vault": 2,  # the id and the name only cust-c had
    }
    silver = pl.read_delta(lake.table_uri("silver", "orders"))
    assert sorted(silver.get_column("customer_id").unique()) == sorted(
        [tokens["cust-a"], tokens["cust-b"]]
    )
    assert silver.height == 20
    # the shared name keeps its token; the erased one's name and id are gone from the vault
    assert lookup(lake, "name", [SHARED_NAME, "Cy Only"]) == {SHARED_NAME: name_token}
    assert lookup(lake, subject, ["cust-c"]) == {}
    vault = pl.read_delta(vault_uri(lake))
    assert only_token not in vault.get_column("token").to_list()
    # bronze lost exactly the subject's rows
    bronze = pl.read_delta(lake.table_uri("bronze", "orders"))
    assert bronze.height == 20 and "cust-c" not in bronze.get_column("customer").to_list()
    # one log row, no value and no token in it
    log = system.read_table(lake, system.ERASURE_LOG)
    assert log.height == 1 and log.get_column("rows").item() == 24
    assert "cust-c" not in log.write_json() and tokens["cust-c"] not in log.write_json()
    # a reload of the unchanged landing files brings nothing back (the ledger knows them)
    for source in SOURCES:
        load_bronze(lake, CONTRACTS[source], [DAY], run_id="t2")
        load_silver(lake, CONTRACTS[source], [DAY], run_id="t2")
    assert pl.read_delta(lake.table_uri("silver", "orders")).height == 20
    assert done.landing_files == [f"customers/{DAY}/customers.csv", f"orders/{DAY}/orders.csv"]


def gold_customers(lake: Lake) -> pl.DataFrame:
    """gold.customers as the marts build it (a Decimal spend, dates, timestamps, a flag), computed
    here from silver, published as a Delta table and into the warehouse."""
    orders = pl.read_delta(lake.table_uri("silver", "orders"))
    gold = (
        orders.group_by("customer_id")
        .agg(
            pl.col("ordered_at").min().alias("first_ordered_at"),
            pl.col("ordered_at").min().dt.date().alias("first_order_date"),
            pl.len().cast(pl.Int64).alias("order_count"),
            pl.col("order_total").sum().cast(pl.Decimal(38, 0)).alias("lifetime_spend"),
        )
        .with_columns((pl.col("order_count") > 1).alias("is_repeat_buyer"))
        .sort("customer_id")
    )
    gold.write_delta(lake.table_uri("gold", "customers"))
    spend = orders.group_by(pl.col("ordered_at").dt.date().alias("day")).agg(
        pl.col("order_total").sum().cast(pl.Decimal(38, 2)).alias("revenue")
    )
    spend.write_delta(f"{lake.root}/lake/gold/metrics/revenue")  # nested, no subject in it
    with duckdb.connect(lake.warehouse_path) as con:
        con.execute("create schema gold")
        con.execute("create table gold.customers as select * from gold")
    return gold


@pytest.mark.parametrize(
    ("module", "name", "after"),
    [
        # after bronze/customers and silver/customers are rewritten, before anything else
        (delta, "commit_files", 2),
        # every table and the vault rewritten, the first table purged, the second vacuumed only
        (maintenance, "expire_log", 1),
    ],
    ids=["after-two-rewrites", "midway-through-the-purge"],
)
def test_an_interrupted_erasure_is_finished_by_running_it_again(
    tmp_path: Path, monkeypatch, module, name: str, after: int
) -> None:
    lake = small_lake(tmp_path)
    gold = gold_customers(lake)
    token = lookup(lake, "subject:customers", ["cust-c"])["cust-c"]
    name_token = lookup(lake, "name", ["Cy Only"])["Cy Only"]
    assert token in gold.get_column("customer_id").to_list()
    needles = ["cust-c", "Cy Only", token, name_token]
    assert all(scan([tmp_path], needles).values())  # the scan sees the subject before
    orders_version = delta.table_version(lake, lake.table_uri("silver", "orders"))
    others = pl.read_delta(lake.table_uri("silver", "orders")).filter(
        pl.col("customer_id") != token
    )

    with monkeypatch.context() as patch:
        interrupt(patch, module, name, after)
        with pytest.raises(Interrupted):
            erase(lake, "customers", "cust-c", writers_held=True)
    assert scan([tmp_path], needles)[token]  # half erased: its tokens are still on disk
    names = [lake.table_uri(layer, s) for layer in ("bronze", "silver") for s in SOURCES]
    uris = [*names, lake.table_uri("gold", "customers"), vault_uri(lake)]
    left = [u for uri in uris if (u := erasure.unpurged_erasure(lake, uri)) is not None]
    assert left and len({u.request_id for u in left}) == 1

    done = erase(lake, "customers", "cust-c", writers_held=True)
    assert done.found and done.request_id == left[0].request_id
    assert scan([tmp_path], needles) == {n: [] for n in needles}
    # every other row is as it was; gold keeps its types; old versions are gone
    assert_frame_equal(pl.read_delta(lake.table_uri("silver", "orders")), others)
    expected = gold.filter(pl.col("customer_id") != token)
    published = pl.read_delta(lake.table_uri("gold", "customers"))
    assert_frame_equal(published, expected, check_row_order=False)
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        assert_frame_equal(con.sql("select * from gold.customers").pl(), expected)
    with pytest.raises(Exception):  # noqa: B017 - the log entries are gone
        pl.read_delta(lake.table_uri("silver", "orders"), version=orders_version)
    # the rewritten file's statistics bound its rows (Decimal, date, timestamp included)
    stats = pl.DataFrame(DeltaTable(lake.table_uri("gold", "customers")).get_add_actions(True))
    for column in ("lifetime_spend", "first_order_date", "first_ordered_at", "order_count"):
        assert stats.get_column(f"min.{column}").item() == expected.get_column(column).min()
        assert stats.get_column(f"max.{column}").item() == expected.get_column(column).max()
    assert published.get_column("lifetime_spend").sum() == Decimal(106 * 20)
    # nothing left unfinished, and one log row under the interrupted request's id
    assert [erasure.unpurged_erasure(lake, u) for u in uris] == [None] * len(uris)
    log = system.read_table(lake, system.ERASURE_LOG)
    assert log.get_column("request_id").to_list() == [done.request_id]
    assert sorted(log.get_column("tables").item()) == [
        "bronze/customers",
        "bronze/orders",
        "gold/customers",
        "silver/customers",
        "silver/orders",
        "vault",
        "warehouse:gold.customers",
    ]
    assert log.get_column("rows").item() == 1 + 10 + 1 + 10 + 1 + 2 + 1
    assert erase(lake, "customers", "cust-c", writers_held=True).found is False
    assert datetime.fromisoformat(str(log.get_column("erased_at").item())) <= datetime.now()


def test_another_subjects_interrupted_erasure_is_finished_before_or_with_the_next(
    tmp_path: Path, monkeypatch
) -> None:
    lake = small_lake(tmp_path)
    gold_customers(lake)
    ids = lookup(lake, "subject:customers", ["cust-a", "cust-b", "cust-c"])
    names = lookup(lake, "name", ["Cy Only", SHARED_NAME])
    # cust-c's erasure stops while rewriting: another subject's must wait (it would purge the
    # old versions where cust-c's rerun finds its name's token)
    with monkeypatch.context() as patch:
        interrupt(patch, delta, "commit_files", 2)
        with pytest.raises(Interrupted):
            erase(lake, "customers", "cust-c", writers_held=True)
    before = versions(lake)
    with pytest.raises(ConfigError, match="of another subject stopped midway"):
        erase(lake, "customers", "cust-a", writers_held=True)
    assert versions(lake) == before
    first = erase(lake, "customers", "cust-c", writers_held=True)
    assert first.resumed == ["bronze/customers", "silver/customers"]
    # cust-a's stops while purging (its request logged): the next subject's finishes its purge
    with monkeypatch.context() as patch:
        interrupt(patch, maintenance, "expire_log", 1)
        with pytest.raises(Interrupted):
            erase(lake, "customers", "cust-a", writers_held=True)
    third = erase(lake, "customers", "cust-b", writers_held=True)
    assert third.purged_for_others and not third.resumed
    assert set(third.purged_for_others.values()) != {third.request_id}
    needles = ["cust-a", "cust-b", "cust-c", "Cy Only", SHARED_NAME, *ids.values(), *names.values()]
    assert scan([tmp_path], needles) == {n: [] for n in needles}
    log = system.read_table(lake, system.ERASURE_LOG)
    assert log.height == 3 and log.get_column("request_id").n_unique() == 3
    assert pl.read_delta(lake.table_uri("silver", "orders")).is_empty()
