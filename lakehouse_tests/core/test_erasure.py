"""Erasure at the core: what it deletes, what it keeps (a value another subject shares), what an
unknown subject changes (nothing)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lakehouse.core import delta, system
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.erasure import erase
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver
from lakehouse.core.vault import lookup, vault_uri
from lakehouse_tests.small_lake import HEADER, deliver, order, text

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
