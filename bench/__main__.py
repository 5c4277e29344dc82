"""`make bench`: the platform measured against the floor of its hardware and its own scaling.

    python -m bench [--sf N] [--scenario NAME ...] [--quick] [--profile]

Scenarios (default: all but sf10):
  throughput   floor (polars scan_csv -> sink_parquet), bronze, bronze + silver over lineitem
  incremental  one new day when the tables hold 1, 30, 365 days (lineitem bronze/silver,
               Jaffle Shop gold), and the gold dbt time over a year of Jaffle Shop
  backfill     a 365-day backfill through Dagster as one run vs one run per day
  rerun        a no-op `lakehouse materialize` over a 365-day lake vs its first load
  gold         one day's gold change through Dagster with 365 days held vs 1 (ratio <= 1.3x)
  latency      file landing -> rows visible in silver, then in all of gold, with dagster-daemon
  bigfile      bronze over ONE ~2 GB CSV with one bad line: the careful parser's peak RSS
  stream       5,000 messages/s to nats-server through `lakehouse stream`: throughput, p95 latency
  sf10         throughput at scale factor 10 (writes bench/results/sf10.{json,md})

Every stage runs in its own process (bench/stage.py), so its peak RSS is its own. Results go
to bench/results/latest.{json,md,png}; generated data is cached in bench/work/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import data, report

RESULTS = data.BENCH_DIR / "results"
PROFILES = data.WORK / "profiles"
LOGS = data.WORK / "logs"
DEFAULT_SCENARIOS = (
    "throughput",
    "incremental",
    "backfill",
    "rerun",
    "gold",
    "latency",
    "bigfile",
    "stream",
)
SCENARIOS = (*DEFAULT_SCENARIOS, "sf10")
HISTORIES = (1, 30, 365)
LINEITEM_START = "1992-01-01"
_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


def lineitem_env() -> dict[str, str]:
    return {"LAKEHOUSE_CONTRACTS": str(data.CONTRACTS), "LAKEHOUSE_START_DATE": LINEITEM_START}


def run_stage(spec: dict, env: dict[str, str] | None = None, *, label: str) -> dict:
    """Run one stage in a child process; returns its result (seconds, rows, peak RSS)."""
    out = data.WORK / f"stage-{os.getpid()}-result.json"
    out.unlink(missing_ok=True)
    spec_path = data.WORK / f"stage-{os.getpid()}-spec.json"
    spec_path.write_text(json.dumps(spec))
    child_env = {**os.environ, **(env or {})}
    if "root" in spec:
        child_env["LAKEHOUSE_ROOT"] = spec["root"]
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{label.replace(' ', '_').replace(',', '').replace('+', 'and')}.log"
    say(f"{label} ... (log: {log_path.relative_to(data.BENCH_DIR.parent)})")
    started = time.monotonic()
    with log_path.open("w") as log_file:
        done = subprocess.run(
            [sys.executable, "-m", "bench.stage", str(spec_path), str(out)],
            env=child_env,
            cwd=data.BENCH_DIR.parent,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0 or not out.exists():
        msg = f"stage {label} failed (exit {done.returncode}); see {log_path}"
        raise RuntimeError(msg)
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.monotonic() - started
    shown = {k: v for k, v in result.items() if k not in ("samples", "pid")}
    say(f"{label}: {json.dumps(shown, default=str)}")
    return result


def _profile(args: argparse.Namespace, name: str) -> dict:
    if not args.profile:
        return {}
    PROFILES.mkdir(parents=True, exist_ok=True)
    return {"profile": str(PROFILES / f"{name}.txt")}


def throughput(args: argparse.Namespace, sf: int) -> dict:
    """Floor, bronze, bronze + silver over the same lineitem landing files."""
    landing = data.lineitem_landing(sf, log=say)
    dates = data.landing_dates(landing, data.LINEITEM)
    if args.quick:
        dates = dates[:120]
    files = [str(f) for f in data.landing_files(landing, data.LINEITEM, dates)]
    root = data.new_lake_root(f"throughput-sf{sf}", landing)
    base = {"root": str(root), "source": data.LINEITEM, "dates": dates}
    env = lineitem_env()
    fl = run_stage(
        {"stage": "floor", "root": str(root), "files": files}, env, label=f"floor sf{sf}"
    )
    br = run_stage(
        {**base, "stage": "bronze", **_profile(args, f"bronze-sf{sf}")}, env, label=f"bronze sf{sf}"
    )
    si = run_stage(
        {**base, "stage": "silver", **_profile(args, f"silver-sf{sf}")}, env, label=f"silver sf{sf}"
    )
    rows = fl["rows"]
    if br["rows"] != rows or si["rows"] != rows:
        say(f"WARNING: row counts differ: floor {rows}, bronze {br['rows']}, silver {si['rows']}")
    floor_rate = rows / fl["seconds"]
    bronze_rate = rows / br["seconds"]
    both_rate = rows / (br["seconds"] + si["seconds"])
    return {
        "scale_factor": sf,
        "rows": rows,
        "files": len(files),
        "landing_bytes": sum(Path(f).stat().st_size for f in files),
        "floor": {
            "seconds": fl["seconds"],
            "rows_per_s": floor_rate,
            "peak_rss": fl["peak_rss_bytes"],
        },
        "bronze": {
            "seconds": br["seconds"],
            "rows_per_s": bronze_rate,
            "ratio_to_floor": bronze_rate / floor_rate,
            "peak_rss": br["peak_rss_bytes"],
        },
        "silver": {
            "seconds": si["seconds"],
            "rows_per_s": rows / si["seconds"],
            "accepted": si["accepted"],
            "quarantined": si["quarantined"],
            "peak_rss": si["peak_rss_bytes"],
        },
        "bronze_silver": {"rows_per_s": both_rate, "ratio_to_floor": both_rate / floor_rate},
    }


def incremental(args: argparse.Namespace) -> dict:
    """Time to load one new day when the tables already hold 1, 30 and 365 days."""
    new_days = 1 if args.quick else 3
    histories = (1, 30) if args.quick else HISTORIES
    li_landing = data.lineitem_landing(args.sf, log=say)
    li_dates = data.landing_dates(li_landing, data.LINEITEM)
    jf_landing = data.jaffle_landing(400, log=say)
    jf_dates = data.landing_dates(jf_landing, "orders")
    out: dict = {"histories": list(histories), "new_days": new_days, "lineitem": {}, "jaffle": {}}
    for n in histories:
        root = data.new_lake_root(f"incremental-lineitem-{n}", li_landing)
        res = run_stage(
            {
                "stage": "incremental",
                "root": str(root),
                "sources": [data.LINEITEM],
                "setup": "daily",
                "history": li_dates[:n],
                "new_days": li_dates[n : n + new_days],
                **_profile(args, f"incremental-lineitem-{n}"),
            },
            lineitem_env(),
            label=f"incremental lineitem, {n} day(s) held",
        )
        out["lineitem"][n] = res
    from lakehouse.core.contract import load_contracts

    jaffle_sources = [c.name for c in load_contracts(Path("lakehouse/contracts"))]
    for n in histories:
        root = data.new_lake_root(f"incremental-jaffle-{n}", jf_landing)
        res = run_stage(
            {
                "stage": "incremental",
                "root": str(root),
                "sources": jaffle_sources,
                "history": jf_dates[:n],
                "new_days": jf_dates[n : n + new_days],
                "gold": True,
                **_profile(args, f"incremental-jaffle-{n}"),
            },
            label=f"incremental jaffle shop + gold, {n} day(s) held",
        )
        out["jaffle"][n] = res
    first, last = histories[0], histories[-1]
    out["ratio"] = {
        "bronze": out["lineitem"][last]["bronze_seconds"]
        / out["lineitem"][first]["bronze_seconds"],
        "silver": out["lineitem"][last]["silver_seconds"]
        / out["lineitem"][first]["silver_seconds"],
        "gold": out["jaffle"][last]["gold_seconds"] / out["jaffle"][first]["gold_seconds"],
    }
    # The gold dbt time over the whole history: the last gold load of the largest lake.
    out["gold_full"] = {
        "days": last,
        "seconds": out["jaffle"][last]["gold_seconds"],
        "peak_rss": out["jaffle"][last]["peak_rss_bytes"],
    }
    return out


def backfill(args: argparse.Namespace) -> dict:
    """A backfill of bronze + silver through Dagster: one run over the range vs one run per day."""
    days = 30 if args.quick else 365
    landing = data.lineitem_landing(args.sf, log=say)
    dates = data.landing_dates(landing, data.LINEITEM)[:days]
    results = {}
    for mode in ("single_run", "per_day"):
        root = data.new_lake_root(f"backfill-{mode}", landing)
        results[mode] = run_stage(
            {"stage": "backfill", "root": str(root), "mode": mode, "dates": dates},
            lineitem_env(),
            label=f"backfill {days} days, {mode.replace('_', ' ')}",
        )
    single, per_day = results["single_run"]["seconds"], results["per_day"]["seconds"]
    return {
        "days": days,
        "single_run_seconds": single,
        "per_day_sum_seconds": per_day,
        "ratio": single / per_day,
        "per_run_overhead_seconds": (per_day - single) / max(1, days - 1),
        "peak_rss": {m: r["peak_rss_bytes"] for m, r in results.items()},
    }


def rerun(args: argparse.Namespace) -> dict:
    """The first materialize of a 365-day lineitem lake, then the same materialize again."""
    days = 30 if args.quick else 365
    landing = data.lineitem_landing(args.sf, log=say)
    dates = data.landing_dates(landing, data.LINEITEM)[:days]
    root = data.new_lake_root("rerun", landing)
    res = run_stage(
        {"stage": "rerun", "root": str(root), "dates": dates},
        lineitem_env(),
        label=f"rerun: first load and a no-op rerun of {days} days",
    )
    return {**res, "days": days, "ratio": res["rerun_seconds"] / res["first_seconds"]}


def bigfile(args: argparse.Namespace) -> dict:
    """Bronze over one big CSV whose one short line sends it down the careful parser."""
    landing, lines = data.bigfile_landing(1 if args.quick else 3, log=say)
    root = data.new_lake_root("bigfile", landing)
    path = landing / data.LINEITEM / data.BIGFILE_DATE / "lineitem.csv"
    res = run_stage(
        {
            "stage": "bronze",
            "root": str(root),
            "source": data.LINEITEM,
            "dates": [data.BIGFILE_DATE],
        },
        lineitem_env(),
        label=f"bigfile: bronze over one {path.stat().st_size / 2**30:.2f} GiB file, one bad line",
    )
    if res["rows"] != lines:  # every line, the bad one included (silver quarantines it)
        msg = f"bronze holds {res['rows']} rows of the big file's {lines} lines"
        raise RuntimeError(msg)
    return {**res, "file_bytes": path.stat().st_size, "lines": lines}


def gold(args: argparse.Namespace) -> dict:
    from bench.gold import scenario

    return scenario(quick=args.quick, log=say)


def latency(args: argparse.Namespace) -> dict:
    from bench.latency import measure

    return measure(quick=args.quick, log=say)


def stream(args: argparse.Namespace) -> dict:
    from bench.stream import measure

    return measure(quick=args.quick, log=say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sf", type=int, default=1, help="TPC-H scale factor (default 1)")
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run on less data")
    parser.add_argument(
        "--profile", action="store_true", help="pyinstrument profiles into bench/work/profiles/"
    )
    args = parser.parse_args(argv)
    scenarios = args.scenario or list(DEFAULT_SCENARIOS)
    data.WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_mem_gib():.0f} GiB, "
        f"Python {platform.python_version()}",
        "quick": args.quick,
        "scale_factor": args.sf,
    }
    say(
        f"scenarios: {', '.join(scenarios)}; scale factor {args.sf}{' (quick)' if args.quick else ''}"
    )
    if scenarios == ["sf10"] or "sf10" in scenarios:
        figures = {"throughput": throughput(args, 10)}
        report.write(RESULTS / "sf10", meta | {"scale_factor": 10}, figures)
        say(f"wrote {RESULTS / 'sf10.md'}")
        scenarios = [s for s in scenarios if s != "sf10"]
        if not scenarios and (RESULTS / "latest.json").exists():
            last = json.loads((RESULTS / "latest.json").read_text())
            last["figures"]["sf10"] = json.loads((RESULTS / "sf10.json").read_text())
            report.write(RESULTS / "latest", last["meta"], last["figures"])  # its SF10 rows
            return 0
    figures: dict = {}
    previous = RESULTS / "latest.json"
    if previous.exists() and set(scenarios) != set(DEFAULT_SCENARIOS):
        # A partial run keeps the other scenarios' figures of the last run (their commit noted).
        last = json.loads(previous.read_text())
        kept = {
            k: v
            for k, v in last.get("figures", {}).items()
            if k.removesuffix("_error") not in scenarios
        }
        figures |= kept
        if kept:
            origin = last.get("meta", {}).get("carried_over", {})
            meta["carried_over"] = {
                k: origin.get(k, last.get("meta", {}).get("git_commit"))
                for k in kept
                if k != "sf10"
            }
    sf10 = RESULTS / "sf10.json"
    for name in scenarios:
        try:
            figures[name] = {"throughput": lambda: throughput(args, args.sf)}.get(
                name, lambda n=name: globals()[n](args)
            )()
        except RuntimeError as exc:  # one failed scenario must not lose the others' figures
            say(f"scenario {name} failed: {exc}")
            figures[name + "_error"] = str(exc)
        if sf10.exists():
            figures["sf10"] = json.loads(sf10.read_text())
        meta["seconds"] = time.monotonic() - _T0
        report.write(RESULTS / "latest", meta, figures)  # after every scenario: partial results
    say(f"wrote {RESULTS}/latest.json, latest.md, latest.png")
    print((RESULTS / "latest.md").read_text())
    return 0


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def _mem_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


if __name__ == "__main__":
    raise SystemExit(main())
