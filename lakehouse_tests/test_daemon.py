"""The daemon for real: `dagster-daemon` as a subprocess on a temporary DAGSTER_HOME. Files dropped
into the landing zone reach gold with no click: landing sensor -> bronze -> automation -> silver
-> gold."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lakehouse.core.lake import PROJECT_DIR, Lake
from lakehouse.core.seed import seed
from lakehouse_tests.conftest import expected_revenue

pytestmark = [pytest.mark.daemon, pytest.mark.slow]

DEADLINE_SECONDS = 420


def gold_revenue(lake: Lake) -> pl.DataFrame | None:
    uri = lake.table_uri("gold", "daily_store_revenue")
    if not Path(uri, "_delta_log").exists():
        return None
    return pl.read_delta(uri).sort("store_id", "order_date")


def reflects(lake: Lake, expected: pl.DataFrame) -> bool:
    gold = gold_revenue(lake)
    if gold is None or gold.height != expected.height:
        return False
    try:
        assert_frame_equal(gold.select(expected.columns), expected, check_dtypes=False)
    except AssertionError:
        return False
    return Path(lake.table_uri("gold", "customers"), "_delta_log").exists()


def wait_until(lake: Lake, expected: pl.DataFrame, daemon: subprocess.Popen, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE_SECONDS:
        assert daemon.poll() is None, log.read_text()[-3000:]
        if reflects(lake, expected):
            return time.monotonic() - started
        time.sleep(2)
    pytest.fail(f"gold did not reflect the landed files in {DEADLINE_SECONDS}s")


def wait_for_idle_runs(home: Path) -> None:
    """Wait until no run is queued or in progress, so stopping the daemon interrupts none."""
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    started = time.monotonic()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while instance.get_runs_count(dg.RunsFilter(statuses=active)):
            if time.monotonic() - started > DEADLINE_SECONDS:
                pytest.fail(f"runs still queued or running after {DEADLINE_SECONDS}s")
            time.sleep(2)


@contextmanager
def running_daemon(home: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` on this project's workspace with `env`; stopped (its whole process
    group: code server and runs) on exit."""
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=PROJECT_DIR,
            env={**os.environ, "DAGSTER_HOME": str(home), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and runs share its process group
        )
    try:
        yield daemon
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=30)


def dagster_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME with the project's embedded (SQLite) instance config."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    return home


def test_dropped_files_reach_gold_with_the_daemon(tmp_path: Path, jaffle_raw: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    home = dagster_home(tmp_path)
    env = {"LAKEHOUSE_ROOT": lake.root, "LAKEHOUSE_WAREHOUSE": lake.warehouse_path}
    log = tmp_path / "daemon.log"
    with running_daemon(home, env, log) as daemon:
        # first delivery: two days
        seed(lake, days=2, raw_dir=jaffle_raw)
        first = wait_until(lake, expected_revenue(lake), daemon, log)
        # a third day arrives later: gold follows again
        seed(lake, days=3, raw_dir=jaffle_raw)
        second = wait_until(lake, expected_revenue(lake), daemon, log)
        print(f"gold reflected the landing zone {first:.0f}s and {second:.0f}s after delivery")
        # Gold can reflect the files while the same run's other steps, or a follow-up run, are
        # still going: let them finish before stopping the daemon.
        wait_for_idle_runs(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    triggers = {r.tags.get("lakehouse/trigger") or r.tags.get("dagster/sensor_name") for r in runs}
    assert "landing_sensor" in triggers
