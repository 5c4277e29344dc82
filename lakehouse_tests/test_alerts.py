"""Alerts for real: a `dagster-daemon` subprocess on the embedded SQLite instance, a webhook
server on 127.0.0.1, and a timeline of incidents:

1. a blocked landing date raises one `partition_blocked` alert (asset, partition, check), and the
   corrected redelivery one `resolved` alert;
2. a silver table past its contract's (short) `freshness.fail_after` raises `freshness`;
3. with the webhook down, a run that fails (a corrupt Delta log) raises `run_failed`: it stays in
   `_system/alerts`, is delivered when the webhook is back, and resolves after a good rerun.

Each alert's latency from its cause is printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from lakehouse.core import alerts, system
from lakehouse.core.contract import CONTRACTS_DIR
from lakehouse.core.lake import PROJECT_DIR, Lake
from lakehouse_tests.servers import free_port
from lakehouse_tests.small_lake import (
    GOOD,
    deliver,
    deliver_reference_data,
    order,
    orders_file,
    text,
)
from lakehouse_tests.test_daemon import dagster_home, running_daemon, wait_for_idle_runs
from lakehouse_tests.webhook import Hook

pytestmark = [pytest.mark.daemon, pytest.mark.slow]

DAY1, DAY2 = "2024-04-01", "2024-04-02"
ALERT_DEADLINE = 60
"""The issue's promise: an alert is out within 60 s of its cause."""
RUN_DEADLINE = 240
"""Loads under the daemon on a loaded 2-core machine: sensor tick + run start + the work."""
FRESH_SECONDS = 60


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def wait(what: str, predicate: Callable[[], object], daemon: subprocess.Popen, log: Path, timeout):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert daemon.poll() is None, log.read_text()[-3000:]
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout}s\n{log.read_text()[-3000:]}")


def received(hook: Hook, kind: str, status: str) -> list[tuple[dict, datetime]]:
    return [
        (b, t)
        for b, t in zip(hook.bodies, hook.received, strict=True)
        if b["kind"] == kind and b["status"] == status
    ]


def state(lake: Lake, day: str) -> dict | None:
    return system.latest_states(lake, "silver", "orders", [day]).get(day)


def run_end(home: Path, run_id: str) -> datetime:
    """When the run finished, from the instance's run storage (UTC, naive)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    assert record.end_time is not None
    return datetime.fromtimestamp(record.end_time, UTC).replace(tzinfo=None)


def last_success(home: Path) -> str:
    """The id of the latest successful run of bronze/stores (the CLI's rerun)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS], job_name="__ASSET_JOB"),
            limit=20,
        )
    runs = [
        r.dagster_run
        for r in records
        if {k.to_user_string() for k in r.dagster_run.asset_selection or ()} == {"bronze/stores"}
    ]
    return runs[0].run_id


def contracts_with_short_freshness(tmp_path: Path) -> Path:
    """The shipped contracts, `stores` with `freshness.fail_after` of FRESH_SECONDS."""
    out = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, out)
    stores = out / "stores.yaml"
    raw = yaml.safe_load(stores.read_text())
    raw["freshness"] = {"fail_after": f"{FRESH_SECONDS}s"}
    stores.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def materialize_cli(root: Path, home: Path, contracts: Path) -> subprocess.CompletedProcess:
    """`dagster asset materialize` of bronze/stores for DAY1 on another lake, same instance."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "asset",
            "materialize",
            "-m",
            "lakehouse.definitions",
            "--select",
            "bronze/stores",
            "--partition",
            DAY1,
        ],
        cwd=PROJECT_DIR,
        env={
            **os.environ,
            "DAGSTER_HOME": str(home),
            "LAKEHOUSE_ROOT": str(root),
            "LAKEHOUSE_WAREHOUSE": str(root / "warehouse.duckdb"),
            "LAKEHOUSE_CONTRACTS": str(contracts),
        },
        capture_output=True,
        text=True,
        check=False,
    )


def test_alerts_with_the_daemon(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = Lake(str(root))
    home = dagster_home(tmp_path)
    contracts = contracts_with_short_freshness(tmp_path)
    port = free_port()
    env = {
        "LAKEHOUSE_ROOT": lake.root,
        "LAKEHOUSE_WAREHOUSE": lake.warehouse_path,
        "LAKEHOUSE_CONTRACTS": str(contracts),
        "LAKEHOUSE_ALERT_WEBHOOK": f"http://127.0.0.1:{port}/alerts",
        "LAKEHOUSE_UI_URL": "http://ui.example:3000",
    }
    log = tmp_path / "daemon.log"
    latency: dict[str, float] = {}
    hook = Hook(port)
    with hook.running(), running_daemon(home, env, log) as daemon:
        # --- 1. a blocked date, then its fix ---
        deliver_reference_data(root, DAY1)
        deliver(root, "orders", DAY1, "orders.csv", orders_file(DAY1))
        wait(
            "day 1 published",
            lambda: (s := state(lake, DAY1)) and s["status"] == "published",
            daemon,
            log,
            RUN_DEADLINE,
        )
        bad = [order(f"{DAY2}-bad{i}", DAY2, order_total="-1") for i in range(GOOD // 4)]
        deliver(root, "orders", DAY2, "orders.csv", orders_file(DAY2, *bad))
        blocked_state = wait(
            "day 2 blocked",
            lambda: (s := state(lake, DAY2)) and s["status"] == "blocked" and s,
            daemon,
            log,
            RUN_DEADLINE,
        )
        (blocked, at), *_ = wait(
            "partition_blocked alert",
            lambda: received(hook, "partition_blocked", "firing"),
            daemon,
            log,
            ALERT_DEADLINE + 30,
        )
        latency["partition_blocked"] = (at - blocked_state["recorded_at"]).total_seconds()
        assert (blocked["asset"], blocked["partition"]) == ("silver/orders", DAY2)
        assert "quarantine_ratio" in blocked["message"]
        assert blocked["run_url"] == f"http://ui.example:3000/runs/{blocked_state['run_id']}"
        assert blocked["first_response"] == alerts.first_responses()["partition_blocked"]

        time.sleep(1)  # a new mtime for the corrected file
        deliver(root, "orders", DAY2, "orders.csv", orders_file(DAY2))
        fixed_state = wait(
            "day 2 published after the fix",
            lambda: (s := state(lake, DAY2)) and s["status"] == "published" and s,
            daemon,
            log,
            RUN_DEADLINE,
        )
        (resolved, at), *_ = wait(
            "resolved alert",
            lambda: received(hook, "partition_blocked", "resolved"),
            daemon,
            log,
            ALERT_DEADLINE + 30,
        )
        latency["partition_blocked resolved"] = (at - fixed_state["recorded_at"]).total_seconds()
        assert resolved["incident"] == blocked["incident"]

        # --- 2. freshness: stores published on day 1 only, FRESH_SECONDS allowed ---
        (fresh, at), *_ = wait(
            "freshness alert",
            lambda: [
                (b, t)
                for b, t in received(hook, "freshness", "firing")
                if b["asset"] == "silver/stores"
            ],
            daemon,
            log,
            FRESH_SECONDS + ALERT_DEADLINE + 30,
        )
        changed = alerts.last_change(lake, lake.table_uri("silver", "stores"))
        assert changed is not None
        breach = changed + timedelta(seconds=FRESH_SECONDS)
        latency["freshness"] = (at - breach).total_seconds()
        assert fresh["severity"] == "error" and "fail_after is 60s" in fresh["message"]

        # --- 3. the webhook goes down; a run fails ---
        hook.stop()
        broken = tmp_path / "broken"
        deliver(
            broken,
            "stores",
            DAY1,
            "stores.csv",
            text(["id,name,opened_at,tax_rate", "s9,Tacoma,2016-09-01T00:00:00,0.06"]),
        )
        delta_log = broken / "lake" / "bronze" / "stores" / "_delta_log"
        delta_log.mkdir(parents=True)
        (delta_log / "00000000000000000000.json").write_text("this is not a Delta log\n")
        failed_run = materialize_cli(broken, home, contracts)
        assert failed_run.returncode != 0, failed_run.stdout[-2000:]
        row = wait(
            "run_failed in _system/alerts",
            lambda: [
                r
                for r in alerts.read_alerts(lake).iter_rows(named=True)
                if r["kind"] == "run_failed" and "bronze/stores" in r["asset"]
            ],
            daemon,
            log,
            ALERT_DEADLINE + 30,
        )[0]
        latency["run_failed (recorded)"] = (
            row["raised_at"] - run_end(home, row["run_id"])
        ).total_seconds()
        assert row["asset"] == "bronze/stores" and row["partition"] == DAY1
        assert "DeltaError" in row["message"], row["message"]
        time.sleep(2 * 10)  # two alert ticks with the webhook down
        assert row["alert_id"] not in {b["alert_id"] for b in hook.bodies}
        assert row["alert_id"] in alerts.pending(lake, "webhook").get_column("alert_id").to_list()

        # --- the webhook is back: the pending alert arrives; a good rerun resolves it ---
        back = Hook(port)
        with back.running():
            back_at = utcnow()
            (late, at), *_ = wait(
                "run_failed delivered after the webhook came back",
                lambda: [
                    (b, t)
                    for b, t in received(back, "run_failed", "firing")
                    if b["alert_id"] == row["alert_id"]
                ],
                daemon,
                log,
                ALERT_DEADLINE,
            )
            latency["delivery after the webhook came back"] = (at - back_at).total_seconds()
            assert late["alert_id"] == row["alert_id"]
            shutil.rmtree(delta_log.parent)
            assert materialize_cli(broken, home, contracts).returncode == 0
            (fixed, at), *_ = wait(
                "run_failed resolved",
                lambda: [
                    (b, t)
                    for b, t in received(back, "run_failed", "resolved")
                    if b["incident"] == row["incident"]
                ],
                daemon,
                log,
                ALERT_DEADLINE + 30,
            )
            latency["run_failed resolved"] = (
                at - run_end(home, last_success(home))
            ).total_seconds()
            assert fixed["incident"] == row["incident"]
            wait_for_idle_runs(home)
            wait(
                "every alert delivered",
                lambda: alerts.pending(lake, "webhook").is_empty(),
                daemon,
                log,
                ALERT_DEADLINE,
            )
            delivered = list(back.bodies)

    print("alert latency from cause (s):", {k: round(v, 1) for k, v in latency.items()})
    for kind, seconds in latency.items():
        assert seconds <= ALERT_DEADLINE, (kind, seconds)
    # one alert per incident: exactly one firing and one resolved for each, nothing twice
    table = alerts.read_alerts(lake)
    for incident in (blocked["incident"], row["incident"]):
        statuses = table.filter(pl.col("incident") == incident).get_column("status").to_list()
        assert statuses == ["firing", "resolved"], (incident, statuses)
    ids = [b["alert_id"] for b in hook.bodies + delivered]
    assert len(ids) == len(set(ids)), "an alert was delivered twice"
    # every row of _system/alerts reached the webhook (nothing lost while it was down)
    assert set(table.get_column("alert_id").to_list()) <= set(ids) | set(
        alerts.pending(lake, "webhook").get_column("alert_id").to_list()
    )
    assert not set(table.filter(pl.col("kind") == "run_failed").get_column("status")) - {
        "firing",
        "resolved",
    }
