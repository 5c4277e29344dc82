"""PostgreSQL as Dagster's instance storage (deploy/dagster.yaml) for a full materialization."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from lakehouse.core.lake import PROJECT_DIR, Lake
from lakehouse.core.seed import seed
from lakehouse.defs.resources import shared_instance
from lakehouse_tests.conftest import materialize_all
from lakehouse_tests.servers import postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_full_materialization_with_postgres_instance_storage(
    tmp_path: Path, jaffle_raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    seeded = seed(lake, days=2, raw_dir=jaffle_raw)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DIR / "deploy" / "dagster.yaml", home / "dagster.yaml")
    with postgres() as pg:
        monkeypatch.setenv("DAGSTER_PG_URL", pg.url)
        # a shared instance is not local development: PII needs a secret key of its own
        monkeypatch.setenv("LAKEHOUSE_PII_KEY", "a-team-deployment-secret")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert shared_instance(instance)
            results = materialize_all(lake, instance)
            # the chain, then gold: one run (whole marts, daily facts, headline metrics)
            assert [r.success for r in results] == [True, True]
            run_ids = {r.run_id for r in results}
            stored = {r.run_id for r in instance.get_runs()}
            orders = instance.get_latest_materialization_event(dg.AssetKey(["gold", "orders"]))
        # what Dagster wrote is in PostgreSQL itself, read with a plain driver
        with psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres") as con:
            cur = con.cursor()
            cur.execute("select run_id, status from runs")
            rows = dict(cur.fetchall())
            cur.execute(
                "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
                " and asset_key = %s",
                ['["gold", "daily_store_revenue"]'],
            )
            (revenue_events,) = cur.fetchone()
    assert stored == run_ids == set(rows)
    assert set(rows.values()) == {"SUCCESS"}
    assert orders is not None and orders.run_id in run_ids
    # the daily mart was materialized once per landed day, in the one range run
    assert revenue_events == (seeded.last_day - seeded.first_day).days + 1 == 2
    assert orders.asset_materialization.metadata["dagster/row_count"].value > 0
