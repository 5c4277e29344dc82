"""The Dagster side of alerts without the daemon: freshness policies from contracts, and run
incidents read from a real instance's run storage (SQLite, as the embedded default)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg

from lakehouse.core import alerts
from lakehouse.core.contract import load_contracts, parse_contract
from lakehouse.defs.alerts import freshness_policy, run_alerts
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
