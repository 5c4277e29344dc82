"""Demo data: run jafgen (dbt Labs' Jaffle Shop generator) and deliver its output as daily files.

Event sources (orders, items, tweets) are split by event day; customers are delivered on the day
of their first order; products, stores and supplies arrive as snapshot files on the first day:

    <root>/landing/<source>/<YYYY-MM-DD>/<source>.csv

With `defects=RATE`, about that share of the event rows is spoiled the way real feeds are: a value
of the wrong type, a null key, a duplicated row, a truncated (malformed) line; and one file per
event source carries an extra column. The choice is seeded by source and day: reproducible.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import write_landing_file

log = logging.getLogger(__name__)

SNAPSHOT_SOURCES = ("products", "stores", "supplies")
DEFECT_SOURCES = ("orders", "items", "tweets")
JAFGEN_SEED = 20180901
DEFECT_KINDS = ("bad_type", "null_key", "duplicate", "malformed")
_BAD_VALUES = {
    "orders": ("subtotal", "n/a"),
    "items": ("sku", "??"),
    "tweets": ("tweeted_at", "soon"),
}
EXTRA_COLUMN = "coupon_code"


@dataclass(frozen=True)
class SeedResult:
    """What was delivered: files and data rows per source, and the landing dates covered."""

    first_day: date
    last_day: date
    files: dict[str, int]
    rows: dict[str, int]


def generate_jaffle_shop(out_dir: Path, days: int) -> Path:
    """Run jafgen for enough whole years to cover `days`; returns the folder of raw CSVs."""
    years = max(1, math.ceil(days / 365))
    # jafgen draws from `random` and numpy unseeded: seeded here, every run delivers the same
    # volumes (only its uuid4 ids differ), so a demo or a test sees the same batches each time.
    program = (
        f"import random, sys, numpy; random.seed({JAFGEN_SEED}); numpy.random.seed({JAFGEN_SEED}); "
        "from jafgen.cli import app; sys.argv[0] = 'jafgen'; sys.exit(app())"
    )
    command = [sys.executable, "-c", program, str(years), "--pre", "raw"]
    log.info("seed: generating %d year(s) of Jaffle Shop data with jafgen", years)
    done = subprocess.run(command, cwd=out_dir, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"jafgen failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        raise LakehouseError(msg)
    return out_dir / "jaffle-data"


def seed(
    lake: Lake, *, days: int = 21, raw_dir: Path | None = None, defects: float = 0.0
) -> SeedResult:
    """Generate Jaffle Shop data and deliver its first `days` days into the landing zone."""
    if days < 1:
        msg = f"days must be at least 1, got {days}"
        raise LakehouseError(msg)
    if not 0 <= defects <= 1:
        msg = f"defects is a share of rows between 0 and 1, got {defects}"
        raise LakehouseError(msg)
    with tempfile.TemporaryDirectory(prefix="lakehouse-seed-") as tmp:
        raw = raw_dir or generate_jaffle_shop(Path(tmp), days)
        tables = {
            name: pl.read_csv(raw / f"raw_{name}.csv", infer_schema=False)
            for name in ("customers", "orders", "items", "products", "stores", "supplies", "tweets")
        }
        return deliver(lake, tables, days=days, staging=Path(tmp), defects=defects)


def deliver(
    lake: Lake,
    tables: dict[str, pl.DataFrame],
    *,
    days: int,
    staging: Path,
    defects: float = 0.0,
) -> SeedResult:
    """Split raw Jaffle Shop tables into daily landing files (see the module docstring)."""
    orders = tables["orders"].with_columns(_day("ordered_at"))
    first_day = orders.get_column("_day").min()
    last_day = first_day + timedelta(days=days - 1)
    orders = orders.filter(pl.col("_day") <= last_day)
    order_day = orders.select(pl.col("id").alias("order_id"), "_day")
    first_order = orders.group_by(pl.col("customer").alias("id")).agg(pl.col("_day").min())
    by_day = {
        "orders": orders,
        "items": tables["items"].join(order_day, on="order_id", how="inner"),
        "tweets": tables["tweets"]
        .with_columns(_day("tweeted_at"))
        .filter(pl.col("_day") <= last_day),
        "customers": tables["customers"].join(first_order, on="id", how="inner"),
    }
    for name in SNAPSHOT_SOURCES:
        by_day[name] = tables[name].with_columns(pl.lit(first_day).alias("_day"))

    files: dict[str, int] = {}
    rows: dict[str, int] = {}
    for source, frame in by_day.items():
        columns = [c for c in tables[source].columns]
        files[source] = 0
        rows[source] = 0
        for n, ((day,), part) in enumerate(
            frame.sort("_day").partition_by("_day", as_dict=True, maintain_order=True).items()
        ):
            local = staging / f"{source}-{day}.csv"
            part = part.select(columns)
            malformed: list[str] = []
            if defects and source in DEFECT_SOURCES:
                rng = random.Random(f"{source}/{day}")
                part, malformed = _spoil(source, part, defects, rng, extra_column=n == 1)
            part.write_csv(local)
            if malformed:
                with local.open("a", encoding="utf-8") as fh:
                    fh.writelines(f"{line}\n" for line in malformed)
            write_landing_file(lake, source, day.isoformat(), f"{source}.csv", local)
            local.unlink()
            files[source] += 1
            rows[source] += part.height + len(malformed)
        log.info("seed: delivered %d rows of %s in %d files", rows[source], source, files[source])
    return SeedResult(first_day, last_day, files, rows)


def _spoil(
    source: str, part: pl.DataFrame, rate: float, rng: random.Random, *, extra_column: bool
) -> tuple[pl.DataFrame, list[str]]:
    """Spoil about `rate` of the rows; returns the rows to write and malformed lines to append."""
    rows = part.to_dicts()
    out: list[dict] = []
    malformed: list[str] = []
    bad_column, bad_value = _BAD_VALUES[source]
    for row in rows:
        kind = rng.choice(DEFECT_KINDS) if rng.random() < rate else None
        if kind == "bad_type":
            row[bad_column] = bad_value
        elif kind == "null_key":
            row["id"] = None
        elif kind == "duplicate":
            out.append(dict(row))
        elif kind == "malformed":  # the line was cut after its first two fields
            malformed.append(",".join(str(v) for v in list(row.values())[:2]))
            continue
        out.append(row)
    spoiled = pl.DataFrame(out, schema=part.schema)
    if extra_column:
        spoiled = spoiled.with_columns(
            pl.when(pl.int_range(pl.len()) % 3 == 0)
            .then(pl.lit("SPRING10"))
            .otherwise(None)
            .alias(EXTRA_COLUMN)
        )
    return spoiled, malformed


def _day(column: str) -> pl.Expr:
    return pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d").alias("_day")


def clear_local_root(lake: Lake) -> None:
    """Delete a local root's landing zone, lake and warehouse (`lakehouse seed --fresh`)."""
    if lake.is_s3:
        msg = "--fresh clears only a local data root; empty the S3 prefix yourself"
        raise LakehouseError(msg)
    shutil.rmtree(lake.landing_root, ignore_errors=True)
    shutil.rmtree(f"{lake.root}/lake", ignore_errors=True)
    Path(lake.warehouse_path).unlink(missing_ok=True)
