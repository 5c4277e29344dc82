"""A `lakehouse materialize` killed with SIGKILL at any point: the next one recovers and converges.

Each kill is a real `kill -9` of the command's whole process group (dbt's subprocess included),
fired when a given log line appears on its stderr. The next `lakehouse materialize` must mark the
dead run failed, free its pool slots (pools have limit 1: without that it would wait forever) and
finish on its own; the lake's tables must then equal those of an uninterrupted run of an identical
lake.

To bound the test's time the kill points run in chains, each on a freshly seeded lake: kill at
the first point, the rerun is killed at the next (it must get past the dead run's pools to reach
it), and so on; the chain's last rerun finishes and the lake is compared. LAKEHOUSE_CRASH_EACH=1 gives every kill point
its own rerun to completion and comparison (about twice as long).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.core.lake import Lake
from lakehouse.core.seed import seed
from lakehouse.defs.recovery import (
    TAG_HOST,
    TAG_PID,
    process_gone,
    process_tags,
    recover_dead_runs,
    slot_holders,
    slot_waits,
)
from lakehouse_tests.conftest import detokenised

DAYS = 4
RUN_TIMEOUT = 240.0
"""Seconds a `lakehouse materialize` may take (a few days of a small lake take about 40 s)."""
LAYERS = ("bronze", "silver", "quarantine", "gold")
RUN_COLUMNS = {"_ingested_at", "_run_id", "_quarantined_at", "_replay_run_id", "_replayed_at"}
"""Set by the platform per run; also dropped: any other `_..._at` column (a platform timestamp;
data columns such as `ordered_at` have no leading underscore)."""
LAKEHOUSE = str(Path(sys.executable).parent / "lakehouse")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class KillPoint:
    name: str
    pattern: str  # a regex searched in each stderr line
    delay: float = 0.0  # seconds to wait after the line before the kill

    def __str__(self) -> str:
        return self.name


# In the order a run passes them (the partitioned chain run, then the gold run). Bronze and silver
# log each table before they write it: a kill at the line lands mid-write. Patterns match only
# lines of real work (a rerun over unchanged files logs `... unchanged since their last load`).
BRONZE_FIRST = KillPoint(
    "bronze: first table loading", r"INFO bronze customers: \d+ file\(s\), \d+ bytes"
)
BRONZE_MID = KillPoint("bronze: orders loading", r"INFO bronze orders: \d+ file\(s\), \d+ bytes")
BRONZE_LAST = KillPoint(
    "bronze: last table loading", r"INFO bronze tweets: \d+ file\(s\), \d+ bytes"
)
SILVER_READ = KillPoint("silver: before the first merge", r"INFO silver customers: \d+ bronze rows")
# Silver logs nothing after its publish: this kill lands a moment after the read, mid-publish.
SILVER_MERGED = KillPoint(
    "silver: publishing (0.6 s after the read)", r"INFO silver customers: \d+ bronze rows", 0.6
)
SILVER_FK = KillPoint("silver: orders (foreign keys)", r"INFO silver orders: \d+ bronze rows", 0.1)
DBT_DAILY = KillPoint("dbt: building daily marts", r"gold_daily_marts - Running dbt command", 2.0)
GOLD_DAILY = KillPoint("gold: publishing daily marts", r"gold_daily_marts - Finished dbt command")
DBT_MARTS = KillPoint("dbt: building marts (gold run)", r"gold_marts - Running dbt command", 2.0)
GOLD_PUBLISH = KillPoint("gold: publishing marts", r"gold_marts - Finished dbt command", 0.2)

CHAINS = [  # gold runs the whole marts (the dimensions) first, then the daily facts
    [BRONZE_FIRST, SILVER_READ, SILVER_FK, DBT_MARTS, DBT_DAILY],
    [BRONZE_MID, BRONZE_LAST, SILVER_MERGED, GOLD_PUBLISH, GOLD_DAILY],
]
if os.environ.get("LAKEHOUSE_CRASH_EACH") == "1":
    CHAINS = [[point] for chain in CHAINS for point in chain]


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_recover_dead_runs_marks_failed_and_frees_slots() -> None:
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("pool_a", 1)

        def started_run(tags: dict[str, str]) -> str:
            run = dg.DagsterRun(job_name="job", status=dg.DagsterRunStatus.STARTED, tags=tags)
            instance.add_run(run)
            return run.run_id

        gone = dead_pid()
        dead = started_run({TAG_HOST: socket.gethostname(), TAG_PID: str(gone)})
        live = started_run(process_tags())
        remote = started_run({TAG_HOST: "another-host", TAG_PID: str(gone)})
        untagged = started_run({})
        storage.claim_concurrency_slot("pool_a", dead, "step")
        storage.claim_concurrency_slot("pool_a", live, "step")  # waits behind the dead run
        assert slot_holders(instance, ["pool_a"]) == {"pool_a": [dead]}
        [wait] = slot_waits(instance)
        assert wait.startswith(f"waiting for pool `pool_a`: held by run `{dead}` (started ")
        assert f"pid {gone})" in wait

        recovered = recover_dead_runs(instance)

        assert recovered == [dead]
        assert recovered[0].message == (
            f"recovered dead run {dead} (pid {gone} gone): marked failed, pool slots freed"
        )
        status = {r: instance.get_run_by_id(r).status for r in (dead, live, remote, untagged)}
        assert status == {
            dead: dg.DagsterRunStatus.FAILURE,
            live: dg.DagsterRunStatus.STARTED,  # this process
            remote: dg.DagsterRunStatus.STARTED,  # left to the daemon's run monitoring
            untagged: dg.DagsterRunStatus.STARTED,  # no pid known
        }
        assert slot_holders(instance, ["pool_a"]) == {"pool_a": []}
        assert recover_dead_runs(instance) == []


def test_process_gone() -> None:
    assert process_gone(dead_pid(), None)
    assert not process_gone(os.getpid(), time.time())
    # A live pid whose process started after the run did runs something else (pid reuse).
    assert process_gone(os.getpid(), time.time() - 10 * 365 * 86400)


class Materialize:
    """`lakehouse materialize` as a subprocess in its own process group, stderr read live."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.stdout_path = log_path.with_suffix(".out")
        self._stdout = self.stdout_path.open("w")
        self.proc = subprocess.Popen(
            [LAKEHOUSE, "materialize"],
            env=env,
            cwd=REPO,
            stdout=self._stdout,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started = time.monotonic()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.log_path.open("w") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                self.stderr.append(line)
                self.lines.put(line)
        self.lines.put(None)

    def kill_at(self, point: KillPoint, timeout: float = RUN_TIMEOUT) -> str:
        """Wait for the point's line, then kill -9 the process group; returns the line."""
        pattern = re.compile(point.pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"kill point `{point}`: no line /{point.pattern}/ in {timeout}s")
            if line is None:
                self.wait(5)
                pytest.fail(
                    f"kill point `{point}`: the run ended (exit {self.proc.returncode}) before "
                    f"/{point.pattern}/ appeared\n{self.tail()}"
                )
            if pattern.search(line):
                time.sleep(point.delay)
                self.kill()
                return line.strip()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait(30)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self._stdout.close()
        return code

    def finish(self, instance: dg.DagsterInstance, timeout: float = RUN_TIMEOUT) -> int:
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            waits = slot_waits(instance)
            self.kill()
            pytest.fail(
                f"`lakehouse materialize` did not finish in {timeout}s; pool waits: {waits}\n"
                + self.tail()
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def tail(self, lines: int = 40) -> str:
        return "".join(self.stderr[-lines:]) + "\n--- stdout ---\n" + self.stdout[-3000:]


def lake_tables(root: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Every Delta table of the lake's layers: (schema, sorted rows) without per-run columns.

    Vault tokens are random per lake: each is replaced by the clear value it stands for, and
    what is derived from tokens (silver's row hash, gold's surrogate keys, the snapshot's
    version ids) is left out."""
    lake = Lake(str(root))
    tables = {}
    for layer in LAYERS:
        layer_dir = root / "lake" / layer
        if not layer_dir.is_dir():
            continue
        for table_dir in sorted(p for p in layer_dir.iterdir() if (p / "_delta_log").is_dir()):
            df = pl.read_delta(str(table_dir))
            df = df.drop(
                [
                    c
                    for c in df.columns
                    if c in RUN_COLUMNS or (c.startswith("_") and c.endswith("_at"))
                ]
            )
            df = detokenised(lake, df)
            df = df.select(sorted(df.columns))
            tables[f"{layer}/{table_dir.name}"] = (
                {c: str(t) for c, t in df.schema.items()},
                sorted(repr(row) for row in df.rows()),
            )
    return tables


def differences(expected: dict, actual: dict) -> list[str]:
    diffs = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual or name not in expected:
            diffs.append(
                f"{name}: only in {'the uninterrupted' if name in expected else 'the crashed'} lake"
            )
            continue
        (schema_e, rows_e), (schema_a, rows_a) = expected[name], actual[name]
        if schema_e != schema_a:
            diffs.append(f"{name}: schema {schema_a} != {schema_e}")
        elif rows_e != rows_a:
            missing = sorted(set(rows_e) - set(rows_a))
            extra = sorted(set(rows_a) - set(rows_e))
            diffs.append(
                f"{name}: {len(rows_a)} rows vs {len(rows_e)}; missing {missing[:3]}, extra {extra[:3]}"
            )
    return diffs


def recovered_runs(run: Materialize) -> set[str]:
    """The run ids a `lakehouse materialize` reported as recovered (marked failed, slots freed)."""
    return set(re.findall(r"recovered dead run (\S+) \(pid \d+ gone\)", run.stdout))


def unfinished_runs(instance: dg.DagsterInstance) -> set[str]:
    return {
        r.run_id
        for r in instance.get_runs(
            filters=dg.RunsFilter(
                statuses=[
                    dg.DagsterRunStatus.STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.NOT_STARTED,
                ]
            )
        )
    }


@pytest.mark.slow
def test_killed_materialize_recovers_and_converges(
    tmp_path: Path, jaffle_raw: Path, capsys: pytest.CaptureFixture
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")  # as `make dagster-home` does
    logs = tmp_path / "logs"
    logs.mkdir()
    clean_root = tmp_path / "clean"
    seed(Lake(str(clean_root)), days=DAYS, raw_dir=jaffle_raw)

    base_env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "LAKEHOUSE_ROOT")}
    base_env["DAGSTER_HOME"] = str(home)

    def materialize(root: Path, name: str) -> Materialize:
        return Materialize({**base_env, "LAKEHOUSE_ROOT": str(root)}, logs / f"{name}.log")

    def say(message: str) -> None:
        with capsys.disabled():
            print(message, flush=True)

    test_started = time.monotonic()
    clean = materialize(clean_root, "uninterrupted")
    instance = dg.DagsterInstance.from_config(str(home))
    assert clean.finish(instance) == 0, clean.tail()
    say(f"\nuninterrupted run: {time.monotonic() - clean.started:.0f}s")
    expected = lake_tables(clean_root)
    assert {"bronze/orders", "silver/orders", "gold/orders"} <= expected.keys()

    outcomes: list[str] = []
    for c, chain in enumerate(CHAINS, 1):
        # A fresh lake per chain: a rerun over a converged lake skips unchanged files and
        # partitions, so it would never reach the bronze and silver kill points.
        crash_root = tmp_path / f"crash{c}"
        seed(Lake(str(crash_root)), days=DAYS, raw_dir=jaffle_raw)
        dead: set[str] = set()
        run = materialize(crash_root, f"chain{c}-0")
        for k, point in enumerate(chain, 1):
            line = run.kill_at(point)
            elapsed = time.monotonic() - run.started
            # This run got to the point, so it had recovered the run killed before it.
            assert dead <= recovered_runs(run), f"{point}: dead runs {dead} not recovered"
            dead = unfinished_runs(instance)
            assert dead, f"{point}: no unfinished run left behind by the kill"
            held = {p: r for p, r in slot_holders(instance).items() if r}
            say(
                f"chain {c}, kill {k}: `{point}` fired after {elapsed:.1f}s on: {line[:110]}\n"
                f"    left {len(dead)} unfinished run(s), pool slots held: {held or 'none'}"
            )
            run = materialize(crash_root, f"chain{c}-{k}")
        code = run.finish(instance)
        assert code == 0, f"rerun after `{chain[-1]}` failed (exit {code})\n{run.tail()}"
        assert dead <= recovered_runs(run), f"dead runs {dead} not recovered"
        assert not unfinished_runs(instance), "runs left unfinished after the rerun"
        assert not any(slot_holders(instance).values()), "pool slots still held after the rerun"
        diffs = differences(expected, lake_tables(crash_root))
        say(
            f"chain {c}: rerun finished in {time.monotonic() - run.started:.0f}s (exit 0); "
            f"tables {'equal the uninterrupted run' if not diffs else 'DIFFER'}"
        )
        outcomes += [f"chain {c} ({', '.join(map(str, chain))}): {d}" for d in diffs]
    say(f"crash test: {time.monotonic() - test_started:.0f}s")
    assert not outcomes, "tables differ from the uninterrupted run:\n" + "\n".join(outcomes)
