"""`lakehouse replay-quarantine`: after a contract fix the fixed rows are promoted exactly once."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from lakehouse.cli import main
from lakehouse.core import delta
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import CONTRACTS_DIR, load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver
from lakehouse_tests.small_lake import deliver, deliver_reference_data, order, orders_file

DAY1, DAY2 = "2024-05-01", "2024-05-02"


def load(lake: Lake, dates: list[str]) -> None:
    contracts = {c.name: c for c in load_contracts()}
    for source in ("stores", "customers", "orders"):
        load_bronze(lake, contracts[source], dates, run_id="load")
        load_silver(lake, contracts[source], dates, run_id="load")


def versions(lake: Lake) -> tuple[int | None, int | None]:
    return (
        delta.table_version(lake, lake.table_uri("silver", "orders")),
        delta.table_version(lake, lake.table_uri("quarantine", "orders")),
    )


def test_replay_promotes_fixed_rows_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    contracts = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts)
    monkeypatch.setenv("LAKEHOUSE_CONTRACTS", str(contracts))
    root = tmp_path / "root"
    lake = Lake(str(root))
    deliver_reference_data(root, DAY1)
    refund = order("refund", DAY1, subtotal="-5", tax_paid="0", order_total="-5")
    broken = order("broken", DAY1, subtotal="abc")
    deliver(root, "orders", DAY1, "orders.csv", orders_file(DAY1, refund, broken, good=40))
    # Day 2 is blocked (3 of 23 rows fail): its rows wait for the date to be materialized again.
    refunds = [order(f"refund{i}", DAY2, order_total="-1") for i in range(3)]
    deliver(root, "orders", DAY2, "orders.csv", orders_file(DAY2, *refunds))
    load(lake, [DAY1, DAY2])
    silver_ids = set(pl.read_delta(lake.table_uri("silver", "orders")).get_column("id"))
    assert "refund" not in silver_ids and len(silver_ids) == 40

    # The contract is fixed: refunds (negative amounts) are valid orders.
    orders_yaml = contracts / "orders.yaml"
    orders_yaml.write_text(orders_yaml.read_text().replace("checks: {ge: 0}", "checks: {ge: -100}"))
    before = versions(lake)
    assert main(["--root", str(root), "replay-quarantine", "orders"]) == 0
    out = capsys.readouterr().out
    assert "2 quarantined rows re-validated, 1 promoted to silver, 1 still failing" in out
    assert "3 on blocked landing dates" in out
    assert versions(lake) == (before[0] + 1, before[1] + 1)

    silver = pl.read_delta(lake.table_uri("silver", "orders"))
    assert silver.filter(pl.col("id") == "refund").select("subtotal", "order_total").rows() == [
        (-5, -5)
    ]
    assert silver.height == 41
    quarantine = pl.read_delta(lake.table_uri("quarantine", "orders"))
    marked = dict(quarantine.select("id", "_replay_run_id").iter_rows())
    assert marked["refund"].startswith("replay-")
    assert marked["broken"] is None
    assert all(marked[f"refund{i}"] is None for i in range(3))

    # Twice: nothing changes.
    assert main(["--root", str(root), "replay-quarantine", "orders"]) == 0
    assert "1 quarantined rows re-validated, 0 promoted" in capsys.readouterr().out
    assert versions(lake) == (before[0] + 1, before[1] + 1)
    assert pl.read_delta(lake.table_uri("silver", "orders")).height == 41

    # The blocked date is replayed by materializing it again under the fixed contract.
    load(lake, [DAY2])
    silver = pl.read_delta(lake.table_uri("silver", "orders"))
    assert silver.filter(pl.col("_landing_date") == DAY2).height == 23
    assert silver.height == 64
