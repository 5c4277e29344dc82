"""One measured stage in its own process: `python -m bench.stage <spec.json> <out.json>`.

Running each stage in a fresh process makes its peak RSS (VmHWM) the stage's own, and keeps
one stage's caches from flattering the next. The spec names the stage and its inputs; the child
writes {"seconds", "rows", "peak_rss_bytes", ...} to out.json. Timings exclude process start and
imports: they time the work only.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl


def _peak_rss() -> int:
    """This process's peak resident memory in bytes.

    From VmHWM, the high-water mark of the process's own address space: `ru_maxrss` survives
    exec, so a stage started by a large parent would report the parent's peak as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _contract(name: str):
    from lakehouse.core.contract import load_contracts

    return next(c for c in load_contracts() if c.name == name)


def _lake(spec: dict):
    from lakehouse.core.lake import Lake

    return Lake(spec["root"])


def floor(spec: dict) -> dict:
    """polars scan_csv(...).sink_parquet(...) over the same landing files: the hardware floor."""
    files = [str(f) for f in spec["files"]]
    out = Path(spec["root"]) / "floor.parquet"
    started = time.perf_counter()
    pl.scan_csv(files, infer_schema=False).sink_parquet(out)
    seconds = time.perf_counter() - started
    rows = pl.scan_parquet(out).select(pl.len()).collect().item()
    out.unlink()
    return {"seconds": seconds, "rows": rows}


def bronze(spec: dict) -> dict:
    from lakehouse.core.bronze import load_bronze

    lake, contract = _lake(spec), _contract(spec["source"])
    started = time.perf_counter()
    result = load_bronze(lake, contract, spec["dates"], run_id="bench")
    return {"seconds": time.perf_counter() - started, "rows": result.rows}


def silver(spec: dict) -> dict:
    from lakehouse.core.silver import load_silver

    lake, contract = _lake(spec), _contract(spec["source"])
    started = time.perf_counter()
    result = load_silver(lake, contract, spec["dates"], run_id="bench")
    return {
        "seconds": time.perf_counter() - started,
        "rows": result.total("bronze_rows"),
        "accepted": result.total("accepted"),
        "quarantined": result.total("quarantined"),
    }


def incremental(spec: dict) -> dict:
    """Load `history` days of every source (untimed), then time each next day, one at a time.

    Per new day: bronze, silver (every source of the spec), and gold when asked. Returns the
    median seconds per layer over the new days.
    """
    from lakehouse.core.bronze import load_bronze
    from lakehouse.core.silver import load_silver

    lake = _lake(spec)
    contracts = _referenced_first([_contract(s) for s in spec["sources"]])
    history, new_days = spec["history"], spec["new_days"]
    # `daily` builds the history the way production does, one run per day (one commit each);
    # `bulk` loads it in one run per layer.
    batches = [[d] for d in history] if spec.get("setup") == "daily" else [history]
    for dates in batches:
        for contract in contracts:
            load_bronze(lake, contract, dates, run_id="setup")
            load_silver(lake, contract, dates, run_id="setup")
    if spec.get("gold"):
        _gold(lake)
    profiler = _start_profiler(spec)  # the new days only, not the setup
    times: dict[str, list[float]] = {"bronze": [], "silver": [], "gold": []}
    for day in new_days:
        for layer, load in (("bronze", load_bronze), ("silver", load_silver)):
            started = time.perf_counter()
            for contract in contracts:
                load(lake, contract, [day], run_id=f"new-{day}")
            times[layer].append(time.perf_counter() - started)
        if spec.get("gold"):
            times["gold"].append(_gold(lake))
    _stop_profiler(spec, profiler)
    return {
        f"{layer}_seconds": statistics.median(values) for layer, values in times.items() if values
    } | {"samples": times}


def _referenced_first(contracts: list) -> list:
    """Order sources so a table another one references (a foreign key) loads before it."""
    ordered: list = []
    pending = list(contracts)
    while pending:
        names = {c.name for c in pending}
        ready = [
            c
            for c in pending
            if not any(
                col.references and col.references.table in names - {c.name} for col in c.columns
            )
        ] or pending[:1]
        ordered += ready
        pending = [c for c in pending if c not in ready]
    return ordered


def _gold(lake) -> float:
    """Materialize the gold marts through Dagster; returns the run's wall seconds."""
    import dagster as dg

    from lakehouse.definitions import defs
    from lakehouse.defs.resources import LakeResource

    gold = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and not a.partitions_def]
    started = time.perf_counter()
    result = dg.materialize(
        gold,
        resources={"lake": LakeResource(root=lake.root)},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    seconds = time.perf_counter() - started
    if not result.success:
        msg = "gold run failed"
        raise RuntimeError(msg)
    return seconds


def gold(spec: dict) -> dict:
    return {"seconds": _gold(_lake(spec))}


def backfill(spec: dict) -> dict:
    """bronze + silver of `dates` through Dagster: one single-run backfill, or one run per day."""
    import dagster as dg

    from lakehouse.definitions import defs
    from lakehouse.defs.resources import LakeResource
    from lakehouse.defs.runs import materialize_range

    lake = _lake(spec)
    chain = [  # bronze and silver: the daily gold marts read Jaffle Shop tables lineitem lacks
        a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition)
        and a.partitions_def
        and all(key.path[0] in ("bronze", "silver") for key in a.keys)
    ]
    resources = {"lake": LakeResource(root=lake.root)}
    instance = dg.DagsterInstance.ephemeral()
    dates = spec["dates"]
    runs = [(dates[0], dates[-1])] if spec["mode"] == "single_run" else [(d, d) for d in dates]
    started = time.perf_counter()
    for first, last in runs:
        result = materialize_range(chain, first, last, instance=instance, resources=resources)
        if not result.success:
            msg = f"backfill run {first}..{last} failed"
            raise RuntimeError(msg)
    return {"seconds": time.perf_counter() - started, "runs": len(runs)}


def rerun(spec: dict) -> dict:
    """`materialize_landed` over `dates` (the first load), then again: nothing should change."""
    from pathlib import Path

    import dagster as dg

    from lakehouse.core import delta
    from lakehouse.definitions import defs
    from lakehouse.defs.resources import LakeResource
    from lakehouse.defs.runs import materialize_landed

    lake = _lake(spec)
    resources = {"lake": LakeResource(root=lake.root)}
    instance = dg.DagsterInstance.ephemeral()

    def versions() -> dict[str, int | None]:
        out = {}
        for layer_dir in sorted((Path(lake.root) / "lake").iterdir()):
            for table in sorted(layer_dir.iterdir()):
                out[f"{layer_dir.name}/{table.name}"] = delta.table_version(lake, str(table))
        return out

    timed = []
    for _ in range(2):
        started = time.perf_counter()
        results = materialize_landed(
            defs, lake, instance=instance, resources=resources, dates=spec["dates"]
        )
        timed.append(time.perf_counter() - started)
        if not all(r.success for r in results):
            msg = "materialize failed"
            raise RuntimeError(msg)
        if len(timed) == 1:
            before = versions()
    after = versions()
    return {
        "first_seconds": timed[0],
        "rerun_seconds": timed[1],
        "new_versions": sum((after[k] or 0) - (before.get(k) or 0) for k in after),
        "tables": len(after),
    }


def _start_profiler(spec: dict):
    if not spec.get("profile"):
        return None
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    return profiler


def _stop_profiler(spec: dict, profiler) -> None:
    if profiler is not None:
        profiler.stop()
        Path(spec["profile"]).write_text(profiler.output_text(unicode=False, color=False))


STAGES = {
    "floor": floor,
    "bronze": bronze,
    "silver": silver,
    "incremental": incremental,
    "gold": gold,
    "backfill": backfill,
    "rerun": rerun,
}


def main() -> None:
    spec: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    logging.basicConfig(level=logging.WARNING)
    # Import what every stage uses before any clock starts: a Dagster run has them loaded.
    import deltalake  # noqa: F401
    import pyarrow  # noqa: F401

    import lakehouse.core.bronze
    import lakehouse.core.silver  # noqa: F401

    profiler = None if spec["stage"] == "incremental" else _start_profiler(spec)
    result = STAGES[spec["stage"]](spec)
    _stop_profiler(spec, profiler)
    result["peak_rss_bytes"] = _peak_rss()
    result["pid"] = os.getpid()
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
