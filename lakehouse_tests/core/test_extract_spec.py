"""The contract's `source:` block: validated on load, every error naming the file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lakehouse.core.contract import load_contracts, parse_contract
from lakehouse.core.errors import ContractError
from lakehouse.core.extract.spec import PostgresSource

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "sources"


def accounts(**source: Any) -> dict:
    raw = yaml.safe_load((CONTRACTS / "accounts.yaml").read_text())
    raw["source"].update(source)
    return {k: v for k, v in raw.items() if v is not None}


def test_the_example_contracts_load() -> None:
    by_name = {c.name: c for c in load_contracts(CONTRACTS)}
    accounts_, plans = by_name["accounts"], by_name["plans"]
    assert accounts_.source == PostgresSource(
        dsn_env="SHOP_DB_URL", table="public.accounts", cursor="updated_at"
    )
    assert (accounts_.delivery, accounts_.format.type) == ("events", "parquet")
    assert plans.source is not None and plans.source.mode == "snapshot"
    assert plans.delivery == "snapshot"  # implied by the mode


def test_files_need_no_block() -> None:
    raw = accounts()
    raw["source"] = {"kind": "files"}
    raw["format"] = {"type": "csv"}
    contract = parse_contract(raw, "a.yaml")
    assert contract.source is None and contract.format.type == "csv"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"kind": "mysql"}, "source.kind", "`mysql` is not one of files, postgres"),
        ({"dsn_env": None}, "source.dsn_env", "is required"),
        ({"query": "select 1"}, "source.table", "exactly one of `table` and `query`"),
        ({"table": "a.b.c"}, "source.table", "`schema.table`"),
        ({"table": "x; drop table y"}, "source.table", "identifiers"),
        ({"cursor": None}, "source.cursor", "needs a cursor column"),
        ({"mode": "snapshot"}, "source.cursor", "applies only to mode `incremental`"),
        ({"mode": "stream"}, "source.mode", "`stream` is not one of incremental, snapshot, cdc"),
        ({"batch_rows": 0}, "source.batch_rows", "positive whole number"),
        ({"password": "x"}, "source.password", "unknown field"),
    ],
)
def test_a_bad_block_names_the_field(change: dict, field: str, problem: str) -> None:
    raw = accounts()
    raw["source"].update(change)
    raw["source"] = {k: v for k, v in raw["source"].items() if v is not None}
    with pytest.raises(ContractError, match=problem) as caught:
        parse_contract(raw, "accounts.yaml")
    assert caught.value.field == field
    assert str(caught.value).startswith("accounts.yaml: field")


def test_delivery_and_format_must_match_the_extract() -> None:
    raw = accounts(mode="snapshot", cursor=None)
    raw["source"].pop("cursor")
    raw["delivery"] = "events"
    with pytest.raises(ContractError, match="lands `snapshot` deliveries"):
        parse_contract(raw, "a.yaml")
    raw = accounts()
    raw["format"] = {"type": "csv"}
    with pytest.raises(ContractError, match="a `postgres` source lands parquet files"):
        parse_contract(raw, "a.yaml")


def test_the_cli_names_a_source_that_has_nothing_to_extract(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.cli import main
    from lakehouse.core.contract import CONTRACTS_DIR

    monkeypatch.setenv("LAKEHOUSE_CONTRACTS", str(CONTRACTS_DIR))  # the demo's: files only
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path))  # restored after `main` sets it
    assert main(["extract", "customers"]) == 2
    assert "`customers` is delivered as files" in capsys.readouterr().err
    assert main(["extract", "nope"]) == 2
    assert "no contract for source `nope`" in capsys.readouterr().err
