"""The pseudonymisation key: the public development key serves local development only."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.core import delta, vault
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.pii import check_key, not_local
from lakehouse.core.silver import load_silver
from lakehouse_tests.small_lake import deliver, text

CONTRACTS = {c.name: c for c in load_contracts()}
DAY = "2024-06-01"


def test_local_development_runs_with_the_development_key(monkeypatch) -> None:
    monkeypatch.delenv("LAKEHOUSE_PII_KEY", raising=False)
    monkeypatch.delenv("LAKEHOUSE_ENV", raising=False)
    assert not_local(Lake("/tmp/somewhere")) == []
    check_key([])  # no error


@pytest.mark.parametrize(
    ("env", "root", "deployment", "why"),
    [
        ({"LAKEHOUSE_ENV": "production"}, "/data", (), "LAKEHOUSE_ENV=production"),
        ({}, "s3://bucket/lake", (), "the data root `s3://bucket/lake` is on S3"),
        ({}, "/data", ("a shared instance",), "a shared instance"),
    ],
)
def test_outside_local_development_the_development_key_is_refused(
    monkeypatch, env: dict, root: str, deployment: tuple, why: str
) -> None:
    monkeypatch.delenv("LAKEHOUSE_PII_KEY", raising=False)
    monkeypatch.delenv("LAKEHOUSE_ENV", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reasons = not_local(Lake(root), deployment)
    assert reasons == [why]
    with pytest.raises(ConfigError, match=r"LAKEHOUSE_PII_KEY is not set.*" + why.split("`")[0]):
        check_key(reasons)
    monkeypatch.setenv("LAKEHOUSE_PII_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        check_key(reasons)
    monkeypatch.setenv("LAKEHOUSE_PII_KEY", "a-proper-secret-of-the-team")
    check_key(reasons)


def test_an_empty_key_is_refused_everywhere(monkeypatch) -> None:
    monkeypatch.setenv("LAKEHOUSE_PII_KEY", "  ")
    with pytest.raises(ConfigError, match="set but empty"):
        check_key([])


def test_a_pii_source_writes_nothing_in_production_without_a_key(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("LAKEHOUSE_PII_KEY", raising=False)
    monkeypatch.setenv("LAKEHOUSE_ENV", "production")
    deliver(tmp_path, "customers", DAY, "customers.csv", text(["id,name", "c1,Ann Smith"]))
    deliver(
        tmp_path,
        "stores",
        DAY,
        "stores.csv",
        text(["id,name,opened_at,tax_rate", "s1,Philly,2016-09-01T00:00:00,0.06"]),
    )
    lake = Lake(str(tmp_path))
    load_bronze(lake, CONTRACTS["customers"], [DAY], run_id="t")
    with pytest.raises(ConfigError, match="LAKEHOUSE_PII_KEY is not set"):
        load_silver(lake, CONTRACTS["customers"], [DAY], run_id="t")
    assert delta.table_version(lake, lake.table_uri("silver", "customers")) is None
    # a source without PII columns does not need the key
    load_bronze(lake, CONTRACTS["stores"], [DAY], run_id="t")
    load_silver(lake, CONTRACTS["stores"], [DAY], run_id="t")
    assert delta.table_version(lake, lake.table_uri("silver", "stores")) is not None


def test_unclassified_columns_of_a_pii_contract_never_reach_silver_in_clear(
    tmp_path: Path,
) -> None:
    import json

    import polars as pl

    from lakehouse.core.pii import pseudonym

    data = text(["id,name,email", "c1,Ann Smith,ann@example.com", "c2,Bo Li,"])
    deliver(tmp_path, "customers", DAY, "customers.csv", data)
    lake = Lake(str(tmp_path))
    load_bronze(lake, CONTRACTS["customers"], [DAY], run_id="t")
    load_silver(lake, CONTRACTS["customers"], [DAY], run_id="t")
    # ids are random tokens: order the rows by the clear id they stand for
    silver = pl.read_delta(lake.table_uri("silver", "customers"))
    clear_ids = vault.clear_values(lake, silver.get_column("id"))
    silver = silver.sort(pl.col("id").replace(clear_ids))
    rescued = [json.loads(v) if v else None for v in silver.get_column("_rescued")]
    # the column name stays readable for whoever classifies it; its value is pseudonymised
    assert rescued == [{"email": pseudonym("ann@example.com")}, None]
    assert "ann@example.com" not in silver.write_csv()
    bronze = pl.read_delta(lake.table_uri("bronze", "customers"))
    assert "ann@example.com" in bronze.get_column("email").to_list()  # bronze keeps it as landed


def test_evolve_is_refused_for_a_contract_with_pii() -> None:
    from lakehouse.core.contract import parse_contract
    from lakehouse.core.errors import ContractError

    raw = {
        "name": "people",
        "description": "d",
        "owner": "team:t",
        "primary_key": ["id"],
        "schema_drift": "evolve",
        "columns": [
            {"name": "id", "type": "string", "nullable": False},
            {"name": "email", "type": "string", "pii": "email"},
        ],
    }
    with pytest.raises(ContractError, match="unclassified columns in clear"):
        parse_contract(raw, "people.yaml")
