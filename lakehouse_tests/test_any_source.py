"""A lake of a team's own sources: contracts and files only, none of the demo's Jaffle Shop.

Gold is the team's dbt project: marts over sources the lake lacks are not built, so the lake
materializes with every run green, and every landed row is traced to silver or quarantine.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.core.lake import Lake
from lakehouse_tests.conftest import resources_for
from lakehouse_tests.small_lake import deliver, text

CONTRACT = """
name: readings
description: One row per sensor reading.
owner: team:iot
format: {type: csv, null_values: [NA]}
primary_key: [sensor, taken_at]
event_time: taken_at
columns:
  - {name: sensor, type: string, nullable: false}
  - {name: taken_at, type: timestamp, nullable: false}
  - {name: celsius, type: float64, checks: {ge: -90, le: 60}}
checks: {max_quarantine_ratio: 0.5}
"""


@pytest.mark.slow
def test_a_lake_without_the_demo_sources_materializes_green(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "readings.yaml").write_text(CONTRACT)
    monkeypatch.setenv("LAKEHOUSE_CONTRACTS", str(contracts))
    root = tmp_path / "root"
    header = "sensor,taken_at,celsius"
    deliver(
        root,
        "readings",
        "2024-06-01",
        "a.csv",
        text([header, "s1,2024-06-01T10:00:00Z,21.5", "s2,2024-06-01T10:00:00+02:00,NA"]),
    )
    deliver(
        root,
        "readings",
        "2024-06-02",
        "b.csv",
        text([header, "s1,2024-06-02T10:00:00Z,22", "s1,2024-06-02T11:00:00Z,999"]),
    )
    lake = Lake(str(root))
    from lakehouse.definitions import build_definitions
    from lakehouse.defs.runs import materialize_landed

    defs = build_definitions()
    results = materialize_landed(
        defs, lake, instance=dg.DagsterInstance.ephemeral(), resources=resources_for(lake)
    )
    assert [r.success for r in results] == [True]  # bronze + silver; no gold mart applies
    silver = pl.read_delta(lake.table_uri("silver", "readings")).sort("sensor", "taken_at")
    assert silver.select("sensor", "celsius").rows() == [("s1", 21.5), ("s1", 22.0), ("s2", None)]
    # +02:00 is stored in UTC
    assert str(silver.get_column("taken_at")[2]) == "2024-06-01 08:00:00+00:00"
    quarantine = pl.read_delta(lake.table_uri("quarantine", "readings"))
    assert quarantine.select("sensor", "celsius").rows() == [("s1", "999")]
    assert not (root / "lake" / "gold").exists()


def test_a_file_landed_before_the_first_partition_is_a_clear_error(tmp_path: Path) -> None:
    from lakehouse.core.errors import ConfigError
    from lakehouse.defs.runs import landed_dates

    deliver(tmp_path, "orders", "2013-01-01", "old.csv", text(["id", "x"]))
    with pytest.raises(ConfigError, match=r"orders/2013-01-01/old.csv.*LAKEHOUSE_START_DATE"):
        landed_dates(Lake(str(tmp_path)))
