"""The Dagster side of alerts without the daemon: freshness policies from contracts, and run
incidents read from a real instance's run storage (SQLite, as the embedded default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg

from lakehouse.core import alerts
from lakehouse.core.contract import load_contracts, parse_contract
from lakehouse.defs.alerts import freshness_policy, run_alerts
from lakehouse.defs.recovery import recover_dead_runs
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.sources import silver_asset

RAW = {
    "name": "events",
    "description": "Test events.",
    "owner": "team:test",
    "primary_key": ["id"],
    "columns": [{"name": "id", "type": "string", "nullable": False}],
}


def policy(**freshness: str) -> dg.FreshnessPolicy | None:
    return freshness_policy(parse_contract({**RAW, "freshness": freshness}, "events.yaml"))


def test_contract_freshness_becomes_the_silver_assets_policy() -> None:
    both = policy(warn_after="2h", fail_after="26h")
    assert both is not None
    assert (both.fail_window.to_timedelta(), both.warn_window.to_timedelta()) == (
        timedelta(hours=26),
        timedelta(hours=2),
    )
    short = policy(fail_after="30s")  # Dagster's floor is a minute; the platform alert has none
    assert short is not None and short.fail_window.to_timedelta() == timedelta(minutes=1)
    assert policy(warn_after="3h", fail_after="2h").warn_window is None
    assert policy(warn_after="2h") is None
    orders = next(c for c in load_contracts() if c.name == "orders")
    spec = silver_asset(orders).specs_by_key[dg.AssetKey(["silver", "orders"])]
    assert spec.freshness_policy == freshness_policy(orders)
    assert spec.freshness_policy is not None


@dg.asset(config_schema={"fail": bool})
def flaky(context) -> None:
    if context.op_execution_context.op_config["fail"]:
        msg = "the source database refused the connection"
        raise RuntimeError(msg)


def test_a_failed_run_fires_until_the_same_assets_succeed(tmp_path: Path) -> None:
    def run(fail: bool) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [flaky],
            selection=[flaky],  # a run for named assets, as the sensors request them
            instance=instance,
            run_config={"ops": {"flaky": {"config": {"fail": fail}}}},
            raise_on_error=False,
        )

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        failed = run(True)
        assert not failed.success
        firing, recovered = run_alerts(instance, stuck_after=timedelta(hours=1))
        assert [(a.kind, a.run_id, a.asset) for a in firing] == [
            ("run_failed", failed.run_id, "flaky")
        ]
        assert "the source database refused the connection" in firing[0].message
        assert recovered == set()
        # the same assets succeed: the incident is known recovered, nothing fires
        run(False)
        firing_after, recovered = run_alerts(instance, stuck_after=timedelta(hours=1))
        assert firing_after == [] and recovered == {firing[0].incident}


@dg.op
def wait_forever() -> None:
    """Never executed: the run is only recorded as started."""


@dg.job
def hangs() -> None:
    wait_forever()


def test_a_run_that_hangs_is_stuck(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = instance.create_run_for_job(hangs, status=dg.DagsterRunStatus.STARTED)
        assert run_alerts(instance, stuck_after=timedelta(hours=1))[0] == []
        firing, _ = run_alerts(instance, stuck_after=timedelta(0))
        assert [(a.kind, a.incident) for a in firing] == [
            ("run_stuck", alerts.incident_key("run_stuck", run.run_id))
        ]
        assert "STARTED" in firing[0].message


def test_the_sensor_writes_and_delivers_nothing_on_a_quiet_lake(tmp_path: Path) -> None:
    from lakehouse.definitions import defs

    sensor = defs.get_sensor_def("alerts_sensor")
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"lake": LakeResource(root=str(tmp_path / "lake"))}
        )
        result = sensor(context)
    assert "0 alert row(s) written" in result.skip_message


KILLED_RUN = """
import time
import dagster as dg

@dg.op
def slow_step() -> None:
    time.sleep(600)

@dg.job
def killed() -> None:
    slow_step()

killed.execute_in_process(instance=dg.DagsterInstance.get())
"""


def test_a_killed_run_is_stuck_then_failed_once_recovered(tmp_path: Path) -> None:
    """A run whose process dies by SIGKILL mid-step stays STARTED: `run_stuck` names the dead
    process at once (not after LAKEHOUSE_RUN_STUCK_AFTER); once recovery marks it failed it is
    `run_failed`, and the stuck incident is no longer firing."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN], env=env)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                steps = [
                    r
                    for r in instance.get_run_records()
                    for _ in instance.all_logs(
                        r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START
                    )
                ]
                if steps:
                    break
                time.sleep(0.5)
            assert steps, "the run never reached its step"
            run_id = steps[0].dagster_run.run_id
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            firing, _ = run_alerts(instance, stuck_after=timedelta(hours=2))
            assert [(a.kind, a.run_id) for a in firing] == [("run_stuck", run_id)]
            assert f"(pid {proc.pid}) is gone" in firing[0].message
            assert recover_dead_runs(instance) == [run_id]
            firing, _ = run_alerts(instance, stuck_after=timedelta(hours=2))
            assert [(a.kind, a.run_id) for a in firing] == [("run_failed", run_id)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
