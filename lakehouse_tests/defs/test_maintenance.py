"""`lakehouse maintain` through Dagster: the dry run lists what expires and changes nothing; the
run executes `maintain_orders` (each op in its table's writer pool on an instance that enforces
pools), deletes the expired landing and event dates, and leaves only live files on disk; the
shared job maintains gold's tables in folders and the vault at the shortest history of the
sources it holds values of."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from lakehouse.core import delta, maintenance, vault
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import PROJECT_DIR, Lake
from lakehouse.core.silver import load_silver
from lakehouse.defs.maintenance import shared_job
from lakehouse_tests.conftest import resources_for
from lakehouse_tests.small_lake import (
    GOOD,
    deliver,
    deliver_reference_data,
    edit_contract,
    orders_file,
)


def test_lakehouse_maintain_expires_through_the_pooled_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    edit_contract(
        tmp_path,
        monkeypatch,
        "orders",
        "freshness: {fail_after: 26h}",
        "freshness: {fail_after: 26h}\nretention: {bronze: 30d, silver: 30d, history: 0h}",
    )
    today = datetime.now(UTC).date()
    old, recent = (today - timedelta(days=40)).isoformat(), (today - timedelta(days=1)).isoformat()
    root = tmp_path / "lake"
    for day in (old, recent):
        deliver_reference_data(root, day)
        deliver(root, "orders", day, "orders.csv", orders_file(day))
    lake = Lake(str(root))
    contracts = {c.name: c for c in load_contracts()}
    for name in ("stores", "customers", "products", "orders"):
        load_bronze(lake, contracts[name], [old, recent], run_id="load")
        load_silver(lake, contracts[name], [old, recent], run_id="load")
    bronze_uri, silver_uri = lake.table_uri("bronze", "orders"), lake.table_uri("silver", "orders")
    assert pl.read_delta(silver_uri).height == 2 * GOOD
    version = DeltaTable(bronze_uri).version()

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")  # pools of limit 1
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LAKEHOUSE_ROOT", lake.root)
    from lakehouse.cli import main

    assert main(["maintain", "orders", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"bronze/orders: would delete 1 expired partition(s) {old} .. {old} ({GOOD} rows)" in out
    assert f"silver/orders: {GOOD} row(s) in 1 partition(s) expired" in out
    assert DeltaTable(bronze_uri).version() == version

    assert main(["maintain", "orders"]) == 0
    bronze = pl.read_delta(bronze_uri)
    assert sorted(bronze["_landing_date"].unique()) == [recent] and bronze.height == GOOD
    silver = pl.read_delta(silver_uri)
    assert silver.height == GOOD and silver["id"].str.starts_with(recent).all()
    for uri in (bronze_uri, silver_uri):
        on_disk = [p for p in maintenance.delta_files(lake, uri) if not p.startswith("_delta_log")]
        assert sorted(on_disk) == sorted(maintenance.live_files(lake, uri))
    # The other sources' tables were not touched (no retention set, and not selected).
    assert pl.read_delta(lake.table_uri("bronze", "stores"))["_landing_date"].n_unique() == 2

    instance = dg.DagsterInstance.get()
    (run,) = instance.get_runs(dg.RunsFilter(job_name="maintain_orders"))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    pools = {
        e.dagster_event.step_key: e.dagster_event.event_specific_data
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
    }
    assert set(pools) == {
        f"maintain_{layer}_orders" for layer in ("bronze", "quarantine", "silver")
    }
    assert set(instance.event_log_storage.get_concurrency_keys()) >= {
        "delta_bronze_orders",
        "delta_silver_orders",
    }


def test_the_shared_job_maintains_gold_metrics_and_the_vault_at_their_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the vault's history is the shortest of the sources it holds values of
    edit_contract(
        tmp_path,
        monkeypatch,
        "customers",
        "freshness: {fail_after: 26h}",
        "freshness: {fail_after: 26h}\nretention: {history: 2h}",
    )
    lake = Lake(str(tmp_path / "lake"))
    metrics = lake.table_uri("gold", "metrics/revenue")
    for day in range(1, 4):
        delta.append(lake, metrics, pl.DataFrame({"day": [f"2024-01-0{day}"], "revenue": [day]}))
    for i in range(3):
        vault.mint(lake, {"email": [f"person-{i}@example.com"]}, run_id=f"mint-{i}")
    minted = pl.read_delta(vault.vault_uri(lake))
    monkeypatch.setenv("LAKEHOUSE_ROOT", lake.root)

    job = shared_job(load_contracts())
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert job.execute_in_process(instance=instance, resources=resources_for(lake)).success
    for uri, hours in ((metrics, 168), (vault.vault_uri(lake), 2)):
        assert len(maintenance.live_files(lake, uri)) == 1  # compacted
        # vacuumed and its log expired at that history (the standing log retention it set)
        setting = DeltaTable(uri).metadata().configuration[maintenance.LOG_RETENTION]
        assert setting == f"interval {hours} hours"
    assert_frame_equal(pl.read_delta(vault.vault_uri(lake)), minted, check_row_order=False)
