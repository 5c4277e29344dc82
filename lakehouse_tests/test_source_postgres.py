"""A PostgreSQL source through Dagster: the extract asset lands files, the landing sensor loads them.

The same code path as under the daemon: `landing/accounts` is materialized by its extract, the
landing sensor sees the new Parquet file and requests bronze for its date, and bronze + silver
run for that partition; a second round brings updates, a third nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest
from dagster_aws.s3 import S3Resource

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.defs.extract import (
    DEFAULT_EXTRACT_CRON,
    EXTRACT_CRON_ENV,
    extract_asset,
    extract_assets,
    extract_schedules,
)
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.sensors import build_landing_sensor
from lakehouse.defs.sources import bronze_asset, silver_asset
from lakehouse_tests.servers import postgres

CONTRACTS = Path(__file__).resolve().parent / "contracts" / "sources"


@pytest.fixture
def shop_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg2.extensions.cursor]:
    with postgres() as pg:
        dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        monkeypatch.setenv("SHOP_DB_URL", dsn)
        with closing(psycopg2.connect(dsn)) as conn:
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute(
                "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, plan text NOT "
                "NULL, balance numeric(12,2), active boolean, signed_up date, updated_at "
                "timestamptz NOT NULL)"
            )
            yield cur


def test_extract_asset_sensor_bronze_silver(tmp_path: Path, shop_db) -> None:
    contracts = [c for c in load_contracts(CONTRACTS) if c.name == "accounts"]
    (contract,) = contracts
    lake = Lake(str(tmp_path / "lake"))
    resources = {"lake": LakeResource(root=lake.root), "s3": S3Resource()}
    assets = [extract_asset(contract), bronze_asset(contract), silver_asset(contract)]
    sensor = build_landing_sensor(contracts)
    today = datetime.now(UTC).date().isoformat()
    instance = dg.DagsterInstance.ephemeral()
    cursor = None

    def one_round() -> tuple[dict, dg.ExecuteInProcessResult]:
        nonlocal cursor
        extracted = dg.materialize(
            assets,
            selection=[extract_asset(contract).key],
            resources=resources,
            instance=instance,
        )
        (materialization,) = extracted.asset_materializations_for_node(assets[0].node_def.name)
        meta = {k: v.value for k, v in materialization.metadata.items()}
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources
        ) as context:
            tick = sensor(context)
        cursor = tick.cursor
        (request,) = tick.run_requests
        assert request.partition_key == today
        loaded = dg.materialize(
            assets,
            selection=[assets[1].key, assets[2].key],
            partition_key=request.partition_key,
            resources=resources,
            instance=instance,
        )
        assert loaded.success
        return meta, loaded

    shop_db.execute(
        "INSERT INTO accounts SELECT g, 'u' || g || '@example.com', 'free', g, true, "
        "'2024-01-01', timestamptz '2024-03-01 00:00:00+00' + g * interval '1 s' "
        "FROM generate_series(1, 100) g"
    )
    meta, _ = one_round()
    assert meta["rows"] == 100 and meta["landed_file"].endswith("extract-000001.parquet")
    assert meta["cursor"] == "2024-03-01 00:01:40+00"

    shop_db.execute(
        "UPDATE accounts SET plan = 'pro', updated_at = updated_at + interval '1 day' "
        "WHERE id <= 10"
    )
    meta, _ = one_round()
    assert meta["rows"] == 10 and meta["landed_file"].endswith("extract-000002.parquet")

    silver = pl.read_delta(lake.table_uri("silver", "accounts"))
    assert silver.height == 100
    plans = dict(silver.select("id", "plan").iter_rows())
    assert plans == {i: ("pro" if i <= 10 else "free") for i in range(1, 101)}
    bronze = pl.read_delta(lake.table_uri("bronze", "accounts"))
    assert bronze.height == 110  # each version once: 100 first versions, 10 updates

    # nothing new: the extract lands nothing and the sensor requests nothing
    again = dg.materialize(
        assets, selection=[assets[0].key], resources=resources, instance=instance
    )
    assert again.success
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
        assert sensor(ctx).run_requests == []


def test_the_schedule_targets_every_extracted_source_but_streams() -> None:
    contracts = load_contracts(CONTRACTS)
    (schedule,) = extract_schedules(contracts)
    selection = schedule.target.resolvable_to_job.selection
    targets = {key.path[-1] for key in selection.selected_keys}
    assert targets == {c.name for c in contracts if c.source and c.source.kind != "nats"}
    assert "clicks" not in targets  # served by `lakehouse stream`: one consumer only
    assert "clicks" in {a.key.path[-1] for a in extract_assets(contracts)}  # still an asset
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == os.environ.get(EXTRACT_CRON_ENV, DEFAULT_EXTRACT_CRON)
    assert extract_schedules([]) == []
