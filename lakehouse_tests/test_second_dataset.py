"""A second public dataset loaded from contracts only: Seattle weather, the CSV `vega_datasets`
ships in its wheel (no network). A team drafts a contract with `lakehouse contract draft`, tunes
it by hand, and `lakehouse materialize` loads it with no Jaffle Shop source present: every landed
row is traced to silver or quarantine, with its values as landed.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core.contract import load_contract
from lakehouse.core.draft import draft_contract
from lakehouse.core.lake import Lake

pytestmark = pytest.mark.slow

TUNED = """
name: weather
description: One row per day of Seattle weather (vega_datasets).
owner: team:analytics
since: 2012-12-31
format: {type: csv}
primary_key: [date]
event_time: date
columns:
  - {name: date, type: date, format: "%Y/%m/%d", nullable: false, description: "The day."}
  - {name: precipitation, type: float64, checks: {ge: 0}, description: "Millimetres."}
  - {name: temp_max, type: float64, checks: {ge: -40, le: 50}, description: "Celsius."}
  - {name: temp_min, type: float64, checks: {ge: -40, le: 50}, description: "Celsius."}
  - {name: wind, type: float64, checks: {ge: 0}, description: "Metres per second."}
  - {name: weather, type: string, checks: {isin: [drizzle, rain, sun, snow, fog]}, description: "Kind of day."}
checks: {max_quarantine_ratio: 0.01}
"""


def weather_csv() -> Path:
    spec = importlib.util.find_spec("vega_datasets")  # located, not imported (it needs pandas)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "_data" / "seattle-weather.csv"


def test_seattle_weather_from_contracts_only(tmp_path: Path) -> None:
    with weather_csv().open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    root = tmp_path / "root"
    by_year: dict[str, list[dict]] = {}
    for row in rows:
        by_year.setdefault(row["date"][:4], []).append(row)
    for year, part in by_year.items():  # one delivery per year, on its last day
        folder = root / "landing" / "weather" / f"{year}-12-31"
        folder.mkdir(parents=True)
        with (folder / "weather.csv").open("w", newline="") as out:
            writer = csv.DictWriter(out, header)
            writer.writeheader()
            writer.writerows(part)

    # The draft: loads as it is, finds the key; the slashed dates need a `format:` by hand.
    draft = tmp_path / "draft" / "weather.yaml"
    draft.parent.mkdir()
    draft.write_text(draft_contract(Lake(str(root)), "weather"))
    drafted = load_contract(draft)
    assert drafted.primary_key == ("date",)
    assert {c.name: c.type for c in drafted.columns}["temp_max"] == "float64"

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "weather.yaml").write_text(TUNED)
    env = {**os.environ, "LAKEHOUSE_CONTRACTS": str(contracts), "LAKEHOUSE_ROOT": str(root)}
    env.pop("DAGSTER_HOME", None)  # an ephemeral instance
    env.pop("LAKEHOUSE_START_DATE", None)  # the partitions start at the contract's `since:`
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lakehouse")), "materialize"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "all runs succeeded" in done.stdout

    lake = Lake(str(root))
    silver = pl.read_delta(lake.table_uri("silver", "weather")).sort("date")
    quarantine = lake.table_uri("quarantine", "weather")
    assert not Path(quarantine).exists() or pl.read_delta(quarantine).is_empty()
    assert silver.height == len(rows)  # every landed row is in silver, once
    landed = pl.DataFrame(rows).with_columns(
        pl.col("date").str.to_date("%Y/%m/%d"),
        *(pl.col(c).cast(pl.Float64) for c in ("precipitation", "temp_max", "temp_min", "wind")),
    )
    assert silver.select(landed.columns).equals(landed.sort("date"))
    assert silver.get_column("_event_date").to_list() == [
        d.isoformat() for d in landed.get_column("date").sort()
    ]
