"""Contracts load from YAML and every mistake names the file and the field."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from lakehouse.core.contract import CONTRACTS_DIR, load_contract, load_contracts
from lakehouse.core.errors import ContractError

VALID = {
    "name": "orders",
    "description": "One row per order.",
    "owner": "team:data-eng",
    "primary_key": ["id"],
    "event_time": "ordered_at",
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "ordered_at", "type": "datetime", "nullable": False},
        {"name": "total", "type": "int64", "checks": {"ge": 0}},
    ],
}


def write(tmp_path: Path, contract: dict, name: str = "orders.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(contract))
    return path


def test_shipped_contracts_load() -> None:
    names = [c.name for c in load_contracts(CONTRACTS_DIR)]
    assert names == ["customers", "items", "orders", "products", "stores", "supplies", "tweets"]


def test_valid_contract_parses(tmp_path: Path) -> None:
    contract = load_contract(write(tmp_path, VALID))
    assert contract.primary_key == ("id",)
    assert contract.column("total").checks == {"ge": 0}
    assert contract.schema_drift == "rescue"


def broken(**changes) -> dict:
    contract = yaml.safe_load(yaml.safe_dump(VALID))
    for key, value in changes.items():
        if value is None:
            contract.pop(key)
        else:
            contract[key] = value
    return contract


@pytest.mark.parametrize(
    ("contract", "field", "message"),
    [
        (
            broken(columns=[*VALID["columns"][:2], {"name": "total", "type": "integer"}]),
            "columns[2].type",
            "unknown type `integer`",
        ),
        (broken(primary_key=None), "primary_key", "a primary key is required"),
        (broken(primary_key=["order_id"]), "primary_key", "`order_id` is not a column"),
        (
            broken(columns=[*VALID["columns"], {"name": "id", "type": "string"}]),
            "columns[3].name",
            "landed column `id` is named twice",
        ),
        (
            broken(columns=[*VALID["columns"], {"name": "x", "type": "string", "rename": "total"}]),
            "columns[3].rename",
            "silver column `total` is named twice",
        ),
        (broken(schema_drift="loose"), "schema_drift", "`loose` is not one of"),
        (broken(event_time="total"), "event_time", "must be of type date, datetime or timestamp"),
        (broken(description=None), "description", "is required"),
        (broken(colums=[]), "colums", "unknown field"),
        (broken(freshness={"fail_after": "soon"}), "freshness.fail_after", "is not a duration"),
        (
            broken(
                columns=[*VALID["columns"], {"name": "c", "type": "string", "on_missing": "warn"}]
            ),
            "columns[3].on_missing",
            "applies only to a column with `references`",
        ),
        (
            broken(
                columns=[
                    *VALID["columns"],
                    {"name": "c", "type": "string", "references": "x.y", "on_missing": "ignore"},
                ]
            ),
            "columns[3].on_missing",
            "`ignore` is not one of quarantine, warn",
        ),
        (
            broken(
                columns=[*VALID["columns"], {"name": "c", "type": "string", "references": "x."}]
            ),
            "columns[3].references",
            "must be `<source>.<column>`",
        ),
        (broken(format={"type": "csv", "null_values": "NA"}), "format.null_values", "a list"),
        (
            broken(columns=[*VALID["columns"], {"name": "c", "type": "int64", "null_values": [0]}]),
            "columns[3].null_values",
            "must be a list of strings",
        ),
        (
            broken(columns=[*VALID["columns"], {"name": "c", "type": "int64", "format": "%d"}]),
            "columns[3].format",
            "applies to date, datetime, timestamp columns",
        ),
        (
            broken(columns=[*VALID["columns"], {"name": "c", "type": "date", "format": "dd/mm"}]),
            "columns[3].format",
            "must be a strftime pattern",
        ),
    ],
)
def test_contract_errors_name_file_and_field(
    tmp_path: Path, contract: dict, field: str, message: str
) -> None:
    path = write(tmp_path, contract)
    with pytest.raises(ContractError, match=message) as info:
        load_contract(path)
    assert info.value.field == field
    assert str(path) in str(info.value)
    assert f"field `{field}`" in str(info.value)


def test_duplicate_source_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, VALID, "a.yaml")
    second = write(tmp_path, VALID, "b.yaml")
    with pytest.raises(ContractError, match="already defined") as info:
        load_contracts(tmp_path)
    assert info.value.path == str(second)


def test_reference_to_unknown_source(tmp_path: Path) -> None:
    columns = [*VALID["columns"], {"name": "store_id", "type": "string", "references": "stores.id"}]
    write(tmp_path, broken(columns=columns))
    with pytest.raises(ContractError, match="source `stores` has no contract"):
        load_contracts(tmp_path)


def test_null_values_add_to_the_default_empty_string(tmp_path: Path) -> None:
    columns = [*VALID["columns"], {"name": "score", "type": "int64", "null_values": ["-", "NA"]}]
    contract = load_contract(
        write(
            tmp_path, broken(format={"type": "csv", "null_values": ["NA", "N/A"]}, columns=columns)
        )
    )
    assert contract.format.null_values == ("", "NA", "N/A")
    assert contract.column("score").null_values == ("-", "NA")
    assert contract.null_values(contract.column("score")) == ("", "NA", "N/A", "-")
    assert contract.null_values(contract.column("total")) == ("", "NA", "N/A")
    default = load_contract(write(tmp_path, VALID))
    assert default.format.null_values == ("",)
    assert default.null_values(default.column("total")) == ("",)


def test_references_on_missing_defaults_to_quarantine(tmp_path: Path) -> None:
    columns = [
        *VALID["columns"],
        {"name": "store_id", "type": "string", "references": "stores.id"},
        {"name": "promo", "type": "string", "references": "stores.id", "on_missing": "warn"},
    ]
    contract = load_contract(write(tmp_path, broken(columns=columns)))
    assert contract.column("store_id").references.on_missing == "quarantine"
    assert not contract.column("store_id").references.warn_only
    assert contract.column("promo").references.on_missing == "warn"
    assert contract.column("promo").references.warn_only


def test_timestamp_type_is_utc_and_may_be_the_event_time(tmp_path: Path) -> None:
    columns = [
        {"name": "id", "type": "string", "nullable": False},
        {
            "name": "ordered_at",
            "type": "timestamp",
            "nullable": False,
            "format": "%d/%m/%Y %H:%M%z",
        },
    ]
    contract = load_contract(write(tmp_path, broken(columns=columns)))
    assert contract.column("ordered_at").dtype == pl.Datetime("us", "UTC")
    assert contract.column("ordered_at").format == "%d/%m/%Y %H:%M%z"
