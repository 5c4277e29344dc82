"""Benchmark data, generated once and cached under bench/work/.

lineitem  tpchgen-cli CSV at a scale factor, delivered as one file per ship date:
          bench/work/tpch-sf<N>/landing/lineitem/<YYYY-MM-DD>/lineitem.csv
bigfile   one ~2 GB lineitem CSV (tpchgen-cli -s 3) with one short line in its middle:
          bench/work/bigfile/landing/lineitem/1995-06-17/lineitem.csv
jaffle    jafgen's Jaffle Shop over several years, delivered by `lakehouse.core.seed`:
          bench/work/jaffle-<days>d/landing/<source>/<YYYY-MM-DD>/<source>.csv
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

from lakehouse.core.lake import Lake

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work"
CONTRACTS = BENCH_DIR / "contracts"
LINEITEM = "lineitem"
SHIP_DATE = "l_shipdate"
_ROWS_PER_PART = 6_001_215  # lineitem rows per scale factor: one generated part per SF unit


def _tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def lineitem_landing(sf: int, log=print) -> Path:
    """The landing root holding lineitem at scale factor `sf`, one file per ship date."""
    base = WORK / f"tpch-sf{sf}"
    landing = base / "landing"
    done = base / ".delivered"
    if done.exists():
        return landing
    shutil.rmtree(base, ignore_errors=True)
    raw = base / "raw"
    raw.mkdir(parents=True)
    parts = max(1, sf)
    log(f"data: tpchgen-cli csv -s {sf} lineitem in {parts} part(s)")
    subprocess.run(
        [
            _tool("tpchgen-cli"),
            "csv",
            "-s",
            str(sf),
            "--tables",
            "lineitem",
            "--parts",
            str(parts),
            "-o",
            str(raw),
        ],
        check=True,
    )
    generated = sorted(raw.rglob("*.csv"))
    target = landing / LINEITEM
    for i, part in enumerate(generated, 1):
        # One part at a time: memory stays at one part's rows (about 6M) at any scale factor.
        frame = pl.read_csv(part, infer_schema=False)
        log(f"data: delivering part {i}/{len(generated)} ({frame.height} rows) by ship date")
        for (day,), rows in frame.partition_by(SHIP_DATE, as_dict=True).items():
            path = target / day / "lineitem.csv"
            new = not path.exists()
            if new:
                path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as out:
                rows.write_csv(out, include_header=new)
        part.unlink()
    shutil.rmtree(raw)
    done.touch()
    return landing


BIGFILE_DATE = "1995-06-17"
BAD_LINE = "1,2\n"
"""The one bad line of the big file: two fields where lineitem has sixteen."""


def bigfile_landing(sf: int = 3, log=print) -> tuple[Path, int]:
    """A landing root with ONE lineitem CSV of scale factor `sf` (about 0.77 GB per unit) that
    holds one short line halfway through; returns the root and the file's data lines."""
    base = WORK / "bigfile"
    landing = base / "landing"
    done = base / ".delivered"
    if done.exists():
        return landing, int(done.read_text())
    shutil.rmtree(base, ignore_errors=True)
    raw = base / "raw"
    raw.mkdir(parents=True)
    log(f"data: tpchgen-cli csv -s {sf} lineitem, one file")
    subprocess.run(
        [_tool("tpchgen-cli"), "csv", "-s", str(sf), "--tables", "lineitem", "-o", str(raw)],
        check=True,
    )
    (generated,) = raw.rglob("*.csv")
    target = landing / LINEITEM / BIGFILE_DATE / "lineitem.csv"
    target.parent.mkdir(parents=True)
    half = generated.stat().st_size // 2
    lines = 0
    with generated.open("rb") as src, target.open("wb") as out:
        out.write(src.readline())  # the header
        written, inserted = 0, False
        for line in src:  # streamed: memory stays flat
            out.write(line)
            written += len(line)
            lines += 1
            if not inserted and written >= half:
                out.write(BAD_LINE.encode())
                lines += 1
                inserted = True
    shutil.rmtree(raw)
    done.write_text(str(lines))
    log(f"data: {target.stat().st_size / 2**30:.2f} GiB, {lines} data lines, one of them short")
    return landing, lines


def jaffle_landing(days: int, log=print) -> Path:
    """The landing root holding `days` days of Jaffle Shop deliveries."""
    from lakehouse.core.seed import seed

    base = WORK / f"jaffle-{days}d"
    done = base / ".delivered"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        log(f"data: jafgen, {days} days of Jaffle Shop deliveries")
        seed(Lake(str(base)), days=days)
        done.touch()
    return base / "landing"


def landing_dates(landing: Path, source: str) -> list[str]:
    return sorted(p.name for p in (landing / source).iterdir() if p.is_dir())


def landing_files(landing: Path, source: str, dates: list[str]) -> list[Path]:
    return [f for d in dates for f in sorted((landing / source / d).iterdir())]


def new_lake_root(name: str, landing: Path) -> Path:
    """A fresh, empty lake under bench/work/lakes/<name> whose landing zone is `landing`."""
    root = WORK / "lakes" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "landing").symlink_to(landing.resolve(), target_is_directory=True)
    return root


def demo_instance(home: Path) -> Path:
    """`home` as a Dagster home configured like the demo's (the project's `dagster.yaml`)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BENCH_DIR.parent / "dagster.yaml", home / "dagster.yaml")
    return home
