"""Gold: one day's change through Dagster when the lake holds 1 day vs 365 days of Jaffle Shop.

Each history runs in its own process (`python -m bench.gold SPEC OUT`): bronze and silver load
the history (untimed), the first gold run builds everything (untimed: it parses the dbt project),
then the next day lands in bronze and silver and the clock runs over the one gold run its changes
call for (`pending_gold_runs`, as `lakehouse materialize` and the gold sensor start it): the whole
marts a changed source reaches, the daily marts over the changed dates, the headline metrics.
That is done for `DAYS_TIMED` days in turn and the run of median seconds is reported (one run's
time swings by a fifth on this kind of 2-core VM), with every run's seconds beside it. Both
histories' processes stay up and take turns, day by day (1 day held, then 365, then the next
day): the VM's speed drifts over minutes, and runs far apart in time would compare the drift.
The instance is configured like the demo's (the project's `dagster.yaml`).
Reported: the seconds from the run's request to its success (`seconds`, the target's figure: the
run's creation, its planned events and its steps), the run's own start-to-end seconds, the
seconds `pending_gold_runs` took to decide it (a sensor tick's work, before the request), each
step's seconds, dbt's own seconds inside them, the rest (Dagster, publishing, metrics), the
events the run wrote and the machine's load after it, and the seconds a fixed pure-Python loop
took just before the run (`cpu_seconds`: this VM's CPU runs the same loop in 0.17-0.34 s from one
second to the next, which is most of a run's spread).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import data

HISTORIES = (1, 365)
QUICK_HISTORIES = (1, 30)
DAYS_TIMED = 5
CPU_LOOP = 2_000_000


def cpu_seconds() -> float:
    """The seconds `CPU_LOOP` additions take in Python now: the CPU's speed at this moment."""
    started = time.perf_counter()
    total = 0
    for i in range(CPU_LOOP):
        total += i
    return time.perf_counter() - started


DBT_FINISHED = re.compile(r"Finished dbt command: .* in ([0-9.]+) s")


def scenario(*, quick: bool, log: Callable[[str], None]) -> dict:
    histories = QUICK_HISTORIES if quick else HISTORIES
    landing = data.jaffle_landing(400, log=log)
    dates = data.landing_dates(landing, "orders")
    out: dict = {"histories": list(histories), "days": {}}
    children: dict[int, _Child] = {}
    try:
        for n in histories:  # one at a time: loading the history and the first build
            root = data.new_lake_root(f"gold-{n}", landing)
            spec = {"root": str(root), "history": dates[:n], "new_days": dates[n : n + DAYS_TIMED]}
            log(f"gold: {n} day(s) held: loading, first build ...")
            children[n] = _Child(n, root, spec)
            children[n].turn()
        # the days in turn, each history's run after the other's: both see the VM's drift alike
        for i in range(DAYS_TIMED):
            for n in histories:
                children[n].turn()
            log(
                f"gold: day {i + 1} of {DAYS_TIMED} timed with "
                + " and ".join(f"{n} day(s) held" for n in histories)
            )
        for n in histories:
            out["days"][n] = children[n].result()
            log(f"gold: {n} day(s) held: {json.dumps(out['days'][n])}")
    finally:
        for child in children.values():
            child.stop()
    first, last = histories[0], histories[-1]
    out["ratio"] = out["days"][last]["seconds"] / out["days"][first]["seconds"]
    log(f"gold: {last} vs {first} day(s) held: {out['ratio']:.2f}x (target <= 1.3x)")
    return out


class _Child:
    """`python -m bench.gold SPEC OUT` for one history: it does a step each time it is told to
    (a line on its stdin) and says when done (a line on a pipe), so two histories take turns."""

    def __init__(self, n: int, root: Path, spec: dict) -> None:
        self.n, self.root = n, root
        spec_path, self.result_path = root / "spec.json", root / "result.json"
        spec_path.write_text(json.dumps(spec))
        self.log_file = (root / "bench.log").open("w")
        read, write = os.pipe()
        self.done = os.fdopen(read)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.gold", str(spec_path), str(self.result_path)],
            env={**_env(root), DONE_FD: str(write)},
            cwd=data.BENCH_DIR.parent,
            stdin=subprocess.PIPE,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            pass_fds=(write,),
            text=True,
        )
        os.close(write)

    def turn(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        if not self.done.readline():
            self._failed()

    def result(self) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.wait() != 0 or not self.result_path.exists():
            self._failed()
        return json.loads(self.result_path.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.done.close()
        self.log_file.close()

    def _failed(self) -> None:
        msg = f"gold bench with {self.n} day(s) held failed; see {self.root / 'bench.log'}"
        raise RuntimeError(msg)


DONE_FD = "BENCH_GOLD_DONE_FD"
"""The child's end of the pipe it reports each finished step on."""


def _env(root: Path) -> dict[str, str]:
    home = data.demo_instance(root / "dagster")
    env = {**os.environ, "LAKEHOUSE_ROOT": str(root), "DAGSTER_HOME": str(home)}
    env.pop("LAKEHOUSE_CONTRACTS", None)
    env.pop("LAKEHOUSE_WAREHOUSE", None)
    return env


def step_seconds(records) -> dict[str, float]:
    """Each step's seconds from its start to its success, from a run's event log records."""
    steps: dict[str, list[float]] = {}
    for record in records:
        event = record.dagster_event
        if event is not None and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
            steps.setdefault(event.step_key or "", []).append(record.timestamp)
    return {k: round(v[-1] - v[0], 3) for k, v in steps.items() if len(v) > 1}


def _gold_run(lake, instance) -> dict:
    """Start the gold run silver's changes call for; its wall, step and dbt seconds."""
    import dagster as dg

    from lakehouse.definitions import defs
    from lakehouse.defs.gold import pending_gold_runs
    from lakehouse.defs.runs import QUIET

    cpu = cpu_seconds()
    planning = time.perf_counter()
    [run] = pending_gold_runs(lake)
    started = time.perf_counter()
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(
        assets,
        selection=run.selection,
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
        run_config=QUIET,
        tags=run.tags,
    )
    seconds = time.perf_counter() - started
    if not result.success:
        msg = "gold run failed"
        raise RuntimeError(msg)
    records = instance.all_logs(result.run_id)
    stats = instance.get_run_stats(result.run_id)
    dbt = sum(
        float(found.group(1))
        for record in records
        if (found := DBT_FINISHED.search(record.user_message or ""))
    )
    return {
        "seconds": seconds,
        "run_seconds": round((stats.end_time or 0) - (stats.start_time or 0), 3),
        "plan_seconds": round(started - planning, 3),
        "steps": step_seconds(records),
        "dbt_seconds": round(dbt, 3),
        "overhead_seconds": round(seconds - dbt, 3),
        "events": len(records),
        "marts": len(run.keys),
        "load": os.getloadavg()[0],
        "cpu_seconds": round(cpu, 3),
    }


def child(spec_path: str, out_path: str) -> None:
    import dagster as dg

    from bench.stage import _referenced_first
    from lakehouse.core.bronze import load_bronze
    from lakehouse.core.contract import load_contracts
    from lakehouse.core.lake import Lake
    from lakehouse.core.silver import load_silver

    spec = json.loads(Path(spec_path).read_text())
    lake = Lake(spec["root"])
    contracts = _referenced_first(load_contracts())
    done = os.fdopen(int(os.environ[DONE_FD]), "w")

    def step() -> None:  # wait for the parent's turn
        sys.stdin.readline()

    def stepped() -> None:
        done.write("done\n")
        done.flush()

    step()
    for contract in contracts:
        load_bronze(lake, contract, spec["history"], run_id="history")
        load_silver(lake, contract, spec["history"], run_id="history")
    with dg.DagsterInstance.get() as instance:
        first = _gold_run(lake, instance)
        stepped()
        timed = []
        for day in spec["new_days"]:
            step()
            for contract in contracts:
                load_bronze(lake, contract, [day], run_id="new-day")
                load_silver(lake, contract, [day], run_id="new-day")
            timed.append(_gold_run(lake, instance))
            stepped()
    median = sorted(timed, key=lambda t: t["seconds"])[len(timed) // 2]
    Path(out_path).write_text(
        json.dumps(
            {
                **median,
                "samples": [round(t["seconds"], 3) for t in timed],
                "cpu_samples": [t["cpu_seconds"] for t in timed],
                "first_build_seconds": first["seconds"],
            }
        )
    )


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
