"""The embedded instance (`lakehouse.defs.storage`, selected by `dagster.yaml`): the same
files as Dagster's SQLite storage, every committed event visible to any other process reading
them, a shard deleted behind its back opened again, and a bounded number of files held open."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.sql import check_alembic_revision, get_alembic_config

from lakehouse.core.lake import PROJECT_DIR
from lakehouse.defs.storage import OPEN_RUN_SHARDS, PooledSqliteEventLogStorage


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"rows": 3}, check_results=[dg.AssetCheckResult(passed=True)]
    )


def _project_instance() -> dict:
    """The `instance_class` of the project's dagster.yaml (what `make demo` runs with)."""
    return yaml.safe_load((PROJECT_DIR / "dagster.yaml").read_text())["instance_class"]


def _open_db_files(home: Path) -> list[str]:
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(home / "history" / "runs")) and ".db" in target:
            held.append(target)
    return held


def test_the_demo_storage_writes_what_dagsters_own_storage_reads(tmp_path: Path) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(
        temp_dir=str(home), overrides={"instance_class": _project_instance()}
    ) as ours:
        assert isinstance(ours.event_log_storage, PooledSqliteEventLogStorage)
        runs = [dg.materialize([numbers], instance=ours).run_id for _ in range(OPEN_RUN_SHARDS + 4)]
        # the event log does not keep every run's shard open: the index and the newest run
        # shards at most (a database with its WAL and shared memory files each)
        held = {Path(f).name.split(".")[0] for f in _open_db_files(home)}
        assert len(held) == OPEN_RUN_SHARDS + 1 and "index" in held
        assert runs[-1] in held and runs[0] not in held
        written = {run: len(ours.all_logs(run)) for run in runs}
        # a new run's shard is as Dagster's own init leaves it: WAL, at the head revision
        with ours.event_log_storage.run_connection(runs[-1]) as conn:
            config = get_alembic_config(sqlite_event_log.__file__)
            revision, head = check_alembic_revision(config, conn)
            assert revision == head and head is not None
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

        # Dagster's own SQLite storage over the same home sees every event, check and run
        with dg.instance_for_test(temp_dir=str(home)) as theirs:
            assert not isinstance(theirs.event_log_storage, PooledSqliteEventLogStorage)
            assert {run: len(theirs.all_logs(run)) for run in runs} == written
            assert all(n > 0 for n in written.values())
            latest = theirs.get_latest_materialization_event(dg.AssetKey("numbers"))
            assert latest is not None and latest.run_id == runs[-1]
            check = theirs.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")]
            )
            assert next(iter(check.values())).run_id == runs[-1]

            # a run shard deleted behind the pooled storage's back (another shell wiping runs):
            # its next event lands in a new file that everyone reads, not in the deleted one
            last = runs[-1]
            shard = Path(ours.event_log_storage.path_for_shard(last))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{shard}{suffix}").unlink(missing_ok=True)
            ours.report_engine_event("after the wipe", ours.get_run_by_id(last))
            assert shard.exists()
            messages = [r.dagster_event.message for r in theirs.all_logs(last) if r.dagster_event]
            assert messages == ["after the wipe"]
