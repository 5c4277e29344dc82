"""Per-role DuckDB stores from a small gold lake whose PII is in clear (as the served values of a
`clear_pii` role would be): the analyst file holds no clear PII value anywhere, not even in its
bytes, and only its stores' rows; the pii_reader file holds every row and clear value."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl
import pytest

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.policies import parse_policy
from lakehouse.core.serve import build_role_stores, role_path, served_tables

CONTRACT = """\
name: customers
description: Test customers.
owner: team:test
format: {type: csv}
primary_key: [id]
schema_drift: freeze
columns:
  - {name: id, type: string, nullable: false}
  - {name: name, type: string, nullable: false, pii: name}
  - {name: email, type: string, pii: email}
"""
MANIFEST = {
    "sources": {
        "source.t.silver.customers": {"resource_type": "source", "name": "customers"},
        "source.t.silver.orders": {"resource_type": "source", "name": "orders"},
    },
    "nodes": {
        "model.t.customers": {
            "resource_type": "model",
            "name": "customers",
            "depends_on": {"nodes": ["source.t.silver.customers"]},
            "raw_code": "select id as customer_id, name as customer_name, c.email as "
            "customer_email, spend from {{ source('silver', 'customers') }} c",
        },
        "model.t.orders": {
            "resource_type": "model",
            "name": "orders",
            "depends_on": {"nodes": ["source.t.silver.orders"]},
            "raw_code": "select * from {{ source('silver', 'orders') }}",
        },
    },
}
POLICY = {
    "roles": {
        "analyst": {
            "read": ["gold.*"],
            "masks": {"email": "partial"},  # names: no mask given, so nulled
            "rows": {"gold.orders": {"store_id": ["s1", "s2"]}},
        },
        "pii_reader": {"read": ["gold.*"], "clear_pii": True},
        "marketing": {"read": ["gold.customers"], "masks": {"email": "hash", "name": "hash"}},
    }
}
STORES = ("s1", "s2", "s3")


def people(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [f"c{i:03d}" for i in range(n)],
            "customer_name": [f"Zelda Quaintrell-{i:03d}" for i in range(n)],
            "customer_email": [f"zq{i:03d}.private@example.org" for i in range(n)],
            "spend": [i * 100 for i in range(n)],
        }
    )


def orders(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": [f"o{i:04d}" for i in range(n)],
            "customer_id": [f"c{i % 40:03d}" for i in range(n)],
            "store_id": [STORES[i % 3] for i in range(n)],
            "order_total": [100 + i for i in range(n)],
        }
    )


def gold_lake(root: Path, customers: int = 40, order_rows: int = 300):
    """A lake whose gold holds `customers` (clear names and e-mails) and `orders`; with the
    contracts directory, manifest and policy that serve it."""
    lake = Lake(str(root / "data"))
    people(customers).write_delta(lake.table_uri("gold", "customers"))
    orders(order_rows).write_delta(lake.table_uri("gold", "orders"))
    contracts_dir = root / "contracts"
    contracts_dir.mkdir()
    (contracts_dir / "customers.yaml").write_text(CONTRACT)
    policy = parse_policy(POLICY, "policies.yaml")
    tables = served_tables(lake, policy, load_contracts(contracts_dir), MANIFEST)
    return lake, policy, tables


def table(path: Path, name: str) -> pl.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(f"select * from {name}").pl()


def test_role_files_hold_what_each_role_may_read(tmp_path: Path) -> None:
    lake, policy, tables = gold_lake(tmp_path)
    assert {t.qualified: dict(t.pii) for t in tables} == {
        "gold.customers": {"customer_name": "name", "customer_email": "email"},
        "gold.orders": {},
    }
    stores = build_role_stores(lake, policy, tables)
    assert [s.role for s in stores] == ["analyst", "pii_reader", "marketing"]
    clear = people(40)
    all_orders = orders(300)

    analyst = role_path(lake, "analyst")
    got = table(analyst, "gold.customers").sort("customer_id")
    assert got["customer_name"].null_count() == 40  # PII without a mask: nulled
    expected_emails = ["z***@example.org" for _ in range(40)]
    assert got["customer_email"].to_list() == expected_emails
    assert got.select("customer_id", "spend").equals(clear.select("customer_id", "spend"))
    seen = table(analyst, "gold.orders").sort("order_id")
    assert seen.equals(all_orders.filter(pl.col("store_id").is_in(["s1", "s2"])))
    # no clear value anywhere in the file's bytes (nor in a leftover next to it)
    data = analyst.read_bytes()
    for value in [*clear["customer_name"], *clear["customer_email"]]:
        assert value.encode() not in data
    assert sorted(os.listdir(analyst.parent)) == [
        "analyst.duckdb",
        "marketing.duckdb",
        "pii_reader.duckdb",
    ]

    reader = role_path(lake, "pii_reader")
    assert table(reader, "gold.customers").sort("customer_id").equals(clear)
    assert table(reader, "gold.orders").sort("order_id").equals(all_orders)
    assert b"Zelda Quaintrell-007" in reader.read_bytes()

    marketing = role_path(lake, "marketing")
    hashed = table(marketing, "gold.customers").sort("customer_id")
    import hashlib

    assert hashed["customer_email"].to_list() == [
        hashlib.sha256(e.encode()).hexdigest() for e in clear["customer_email"]
    ]
    with duckdb.connect(str(marketing), read_only=True) as con:
        held = con.sql("select table_schema, table_name from information_schema.tables").fetchall()
    assert sorted(held) == [("gold", "customers"), ("main", "_served")]  # no orders

    info = table(analyst, "_served").sort("table_name")
    assert info["row_count"].to_list() == [40, 200]
    assert info["row_filter"].to_list() == [None, "(\"store_id\" in ('s1', 's2'))"]


def tokenised_gold_lake(root: Path):
    """`gold_lake` as silver makes it: names and e-mails are vault tokens, the vault beside.
    Returns the lake, policy, served tables, the clear customers and the tokenised ones."""
    from lakehouse.core import vault

    lake, policy, _ = gold_lake(root)
    clear = people(40)
    minted = vault.mint(
        lake, {"name": clear["customer_name"], "email": clear["customer_email"]}, run_id="t"
    )
    token = {v: t for _, v, t in minted.iter_rows()}
    tokenised = clear.with_columns(
        pl.col(c).replace_strict(token) for c in ("customer_name", "customer_email")
    )
    tokenised.write_delta(lake.table_uri("gold", "customers"), mode="overwrite")
    contracts = load_contracts(root / "contracts")
    return lake, policy, served_tables(lake, policy, contracts, MANIFEST), clear, tokenised


def test_a_clear_pii_role_reads_the_values_behind_vault_tokens(tmp_path: Path) -> None:
    """Gold as silver makes it: names and e-mails are vault tokens. The pii_reader file holds the
    clear values the vault maps them to, the analyst's partial mask shows the clear domain, a
    hash mask hashes the token (a pseudonym no dictionary of e-mails reverses), and no role file
    but the pii_reader's holds a clear value."""
    lake, policy, tables, clear, tokenised = tokenised_gold_lake(tmp_path)
    build_role_stores(lake, policy, tables)

    reader = table(role_path(lake, "pii_reader"), "gold.customers").sort("customer_id")
    assert reader.equals(clear)
    analyst = table(role_path(lake, "analyst"), "gold.customers").sort("customer_id")
    assert analyst["customer_email"].to_list() == ["z***@example.org"] * 40
    assert analyst["customer_name"].null_count() == 40
    marketing = table(role_path(lake, "marketing"), "gold.customers").sort("customer_id")
    import hashlib

    assert marketing["customer_email"].to_list() == [
        hashlib.sha256(t.encode()).hexdigest() for t in tokenised["customer_email"]
    ]
    for role in ("analyst", "marketing"):
        data = role_path(lake, role).read_bytes()
        assert not [
            v for v in (*clear["customer_name"], *clear["customer_email"]) if v.encode() in data
        ]


def test_rebuild_replaces_the_file_atomically(tmp_path: Path) -> None:
    """No change, no write; a reader holding the old file keeps reading it whole; the new file
    has the new rows; a policy change rebuilds."""
    lake, policy, tables = gold_lake(tmp_path)
    build_role_stores(lake, policy, tables, roles=["analyst"])
    path = role_path(lake, "analyst")
    # nothing changed: nothing written
    stamp = path.stat().st_mtime_ns
    (again,) = build_role_stores(lake, policy, tables, roles=["analyst"])
    assert not again.written and again.tables == {"gold.customers": 40, "gold.orders": 200}
    assert path.stat().st_mtime_ns == stamp
    old = duckdb.connect(str(path), read_only=True)
    orders(600).write_delta(lake.table_uri("gold", "orders"), mode="overwrite")
    build_role_stores(lake, policy, tables, roles=["analyst"])
    assert old.sql("select count(*) from gold.orders").fetchall() == [(200,)]
    old.close()
    assert table(path, "gold.orders").height == 400
    assert sorted(os.listdir(path.parent)) == ["analyst.duckdb"]
    # a policy change rebuilds the file
    changed = parse_policy(
        {"roles": {"analyst": {**POLICY["roles"]["analyst"], "masks": {"email": "null"}}}}
    )
    (rebuilt,) = build_role_stores(lake, changed, tables, roles=["analyst"])
    assert rebuilt.written
    assert table(path, "gold.customers")["customer_email"].null_count() == 40


def test_unknown_role_is_a_clear_error(tmp_path: Path) -> None:
    lake, policy, tables = gold_lake(tmp_path)
    with pytest.raises(
        Exception, match="no role `auditor`; roles are analyst, pii_reader, marketing"
    ):
        build_role_stores(lake, policy, tables, roles=["auditor"])
