"""The PII gate: clear values sampled from bronze and the vault are found in gold and in a role's
new file, which is then not published (the old file stays); findings never quote a value; a value
silver publishes in an unclassified column is left out and reported; a value only the vault still
holds (its bronze rows expired) is sampled too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import polars as pl

from lakehouse.core import vault
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.pii_scan import sample_clear_values, scan_delta_tables, scan_duckdb_file
from lakehouse.core.policies import parse_policy
from lakehouse.core.serve import role_path, serve

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
  - {name: referrer, type: string, pii: free_text}
"""
POLICY = {
    "roles": {
        "analyst": {"read": ["gold.*"], "masks": {"name": "partial"}},
        "pii_reader": {"read": ["gold.*"], "clear_pii": True},
    }
}
N = 30


def token(value: str) -> str:
    return "tok_" + hashlib.sha256(value.encode()).hexdigest()[:20]


def landed() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"cust-{i:04d}" for i in range(N)],
            "name": [f"Philippa Ormsby-{i:03d}" for i in range(N)],
            "email": [f"p.ormsby{i:03d}@example.net" for i in range(N)],
            # a PII column that holds another customer's id, which silver publishes in clear
            "referrer": [f"cust-{(i + 1) % N:04d}" for i in range(N)],
        }
    )


def lake_with_clean_gold(root: Path) -> tuple[Lake, list]:
    lake = Lake(str(root / "data"))
    bronze = landed()
    bronze.write_delta(lake.table_uri("bronze", "customers"))
    silver = bronze.with_columns(pl.col("name", "email", "referrer").map_elements(token))
    silver.write_delta(lake.table_uri("silver", "customers"))
    gold = silver.select(
        pl.col("id").alias("customer_id"),
        pl.col("name").alias("customer_name_pseudonym"),
        pl.lit("regular").alias("segment"),
    )
    gold.write_delta(lake.table_uri("gold", "customers"))
    (root / "contracts").mkdir()
    (root / "contracts" / "customers.yaml").write_text(CONTRACT)
    return lake, load_contracts(root / "contracts")


def leak(lake: Lake, customer_id: str, value: str) -> None:
    """A clear value slips into gold's customer row in a column nobody classified."""
    leaked = pl.read_delta(lake.table_uri("gold", "customers")).with_columns(
        pl.when(pl.col("customer_id") == customer_id)
        .then(pl.lit(value))
        .otherwise(pl.col("segment"))
        .alias("segment")
    )
    leaked.write_delta(lake.table_uri("gold", "customers"), mode="overwrite")


def test_the_gate_passes_on_clean_gold_and_fails_on_a_clear_value(tmp_path: Path) -> None:
    lake, contracts = lake_with_clean_gold(tmp_path)
    policy = parse_policy(POLICY)

    sample = sample_clear_values(lake, contracts)
    assert sorted(sample.values) == ["customers.email", "customers.name", "customers.referrer"]
    assert len(sample.values["customers.name"]) == N
    # every referrer is a customer id silver publishes in clear: not a secret, reported
    assert sample.values["customers.referrer"] == []
    assert sample.published_in_clear == {"customers.referrer": ["silver.customers.id"]}

    clean = serve(lake, policy, contracts)
    assert clean.findings == []
    assert all(s.published for s in clean.stores)
    analyst = role_path(lake, "analyst")
    served = duckdb.connect(str(analyst), read_only=True)
    names = served.sql("select customer_name_pseudonym from gold.customers").fetchall()
    served.close()
    assert {n for (n,) in names} == {"t***"}  # the policy's partial mask of the name class
    before = analyst.read_bytes()

    # a clear name slips into gold in a column nobody classified
    leak(lake, "cust-0007", "Philippa Ormsby-007")
    caught = serve(lake, policy, contracts)
    assert [str(f) for f in caught.gold_findings] == [
        "gold: gold.customers.segment: 1 row(s) hold clear values of customers.name"
    ]
    by_role = {s.role: s for s in caught.stores}
    assert [str(f) for f in by_role["analyst"].findings] == [
        "serve/analyst.duckdb: gold.customers.segment: 1 row(s) hold clear values of customers.name"
    ]
    assert not by_role["analyst"].published
    assert analyst.read_bytes() == before  # the old file is still the one served
    assert b"Philippa Ormsby-007" not in before
    assert by_role["pii_reader"].published  # may read clear PII: its file is not audited
    for finding in caught.findings:
        assert "Ormsby" not in str(finding)

    # dbt's warehouse file is gold too
    with duckdb.connect(lake.warehouse_path) as con:
        con.execute("create schema gold")
        con.execute("create table gold.notes (who varchar)")
        con.execute("insert into gold.notes values ('p.ormsby011@example.net')")
    warehouse = serve(lake, policy, contracts).gold_findings
    assert "warehouse: gold.notes.who: 1 row(s) hold clear values of customers.email" in [
        str(f) for f in warehouse
    ]


def test_a_clear_value_in_any_table_of_a_duckdb_file_is_found(tmp_path: Path) -> None:
    lake, contracts = lake_with_clean_gold(tmp_path)
    sample = sample_clear_values(lake, contracts)
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema x")
        con.execute("create table x.notes (id int, body varchar, contact varchar)")
        con.execute(
            "insert into x.notes values (1, 'call back', 'p.ormsby004@example.net'), "
            "(2, 'p.ormsby004', 'p.ormsby005@example.net ')"  # not whole values: not found
        )
    found = scan_duckdb_file(path, sample, label="other")
    assert [str(f) for f in found] == [
        "other: x.notes.contact: 1 row(s) hold clear values of customers.email"
    ]


def test_values_only_the_vault_still_holds_are_sampled(tmp_path: Path) -> None:
    """A customer whose bronze rows expired long ago is still in the vault: a clear value of
    theirs in gold fails the gate."""
    lake, contracts = lake_with_clean_gold(tmp_path)
    vault.mint(lake, {"name": ["Ottilie Oldhand"], "email": ["o.oldhand@example.net"]})
    sample = sample_clear_values(lake, contracts)
    assert "Ottilie Oldhand" in sample.values["customers.name"]
    assert "o.oldhand@example.net" in sample.values["customers.email"]
    assert len(sample.values["customers.name"]) == N + 1  # bronze's as well

    leak(lake, "cust-0003", "Ottilie Oldhand")
    found = scan_delta_tables(
        lake, [("gold.customers", lake.table_uri("gold", "customers"))], sample
    )
    assert [str(f) for f in found] == [
        "gold: gold.customers.segment: 1 row(s) hold clear values of customers.name"
    ]
    # a sample smaller than the values takes some of the vault's and some of bronze's
    small = sample_clear_values(lake, contracts, per_column=5)
    assert 5 <= len(small.values["customers.name"]) <= 10
