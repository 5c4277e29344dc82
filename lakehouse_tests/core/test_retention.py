"""Retention: contract validation, expired partitions deleted by partition value in bronze,
quarantine and silver (gold told which dates changed), and storage bounded after many runs and
one maintenance pass."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from lakehouse.core import follow, maintenance, system
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contract, parse_contract
from lakehouse.core.errors import ContractError
from lakehouse.core.lake import Lake
from lakehouse.core.retention import Retention, cutoff, parse_duration
from lakehouse.core.silver import load_silver

CONTRACT = """\
name: events
description: Small events for retention tests.
owner: team:data-eng
format: {type: csv}
primary_key: [id]
event_time: at
columns:
  - {name: id, type: string, nullable: false}
  - {name: at, type: date, nullable: false}
  - {name: amount, type: int64, nullable: false, checks: {ge: 0}}
checks: {max_quarantine_ratio: 1.0}
retention: {bronze: 20d, quarantine: 16d, silver: 15d, history: 0h}
"""
FIRST = date(2024, 3, 1)


def _contract(tmp_path: Path):
    path = tmp_path / "contracts" / "events.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONTRACT)
    return load_contract(path)


def _base(**retention) -> dict:
    raw = {
        "name": "t",
        "description": "d",
        "owner": "o",
        "primary_key": ["id"],
        "columns": [{"name": "id", "type": "string", "nullable": False}],
    }
    if retention:
        raw["retention"] = retention
    return raw


def test_retention_defaults_to_forever_and_bad_values_are_clear_errors():
    assert parse_contract(_base()).retention == Retention()
    parsed = parse_contract(_base(bronze="90d", quarantine="4w", history="36h"))
    assert parsed.retention.bronze == timedelta(days=90)
    assert parsed.retention.quarantine == timedelta(weeks=4)
    assert parsed.retention.history_hours == 36
    assert parse_duration("2y") == timedelta(days=730)
    assert parse_duration("forever") is None
    for retention, field, problem in [
        ({"bronze": "90 days"}, "retention.bronze", "not a retention like"),
        ({"gold": "1y"}, "retention.gold", "unknown field"),
        ({"silver": "2y"}, "retention.silver", "needs `event_time`"),
        ({"bronze": "12h"}, "retention.bronze", "at least `1d`"),
        ({"history": "forever"}, "retention.history", "give a duration"),
    ]:
        with pytest.raises(ContractError, match=problem) as info:
            parse_contract(_base(**retention))
        assert field in str(info.value)
    with pytest.raises(ContractError, match="retention"):
        parse_contract({**_base(), "retention": "90d"})
    assert cutoff(timedelta(days=90), date(2024, 6, 30)) == "2024-04-01"


def _deliver(root: Path, day: str, name: str, rows: list[tuple[str, str, int]]) -> None:
    folder = root / "landing" / "events" / day
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id,at,amount", *(f"{i},{at},{amount}" for i, at, amount in rows)]
    (folder / name).write_text("\n".join(lines) + "\n")


def _landed(root: Path) -> pl.DataFrame:
    """Every landed row with its landing date and file, read with plain polars."""
    frames = [
        pl.read_csv(p, infer_schema=False).with_columns(
            landing_date=pl.lit(p.parent.name), file=pl.lit(p.name)
        )
        for p in sorted((root / "landing" / "events").rglob("*.csv"))
    ]
    return pl.concat(frames)


def _files(lake: Lake, layer: str) -> tuple[int, int]:
    uri = lake.table_uri(layer, "events")  # type: ignore[arg-type]
    on_disk = [p for p in maintenance.delta_files(lake, uri) if not p.startswith("_delta_log")]
    return len(on_disk), len(maintenance.live_files(lake, uri))


def test_expired_partitions_go_and_storage_stays_bounded_after_many_runs(tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    root = Path(lake.root)
    contract = _contract(tmp_path)
    dates: list[str] = []
    # 30 small deliveries (three files per landing date, like a stream's micro-batches), each
    # run through bronze and silver, each followed by a run with nothing new (a no-op).
    for run in range(30):
        day = (FIRST + timedelta(days=run // 3)).isoformat()
        dates = sorted({*dates, day})
        at = [(FIRST + timedelta(days=max(0, run // 3 - k))).isoformat() for k in range(3)]
        rows = [(f"e{run}-{k}", at[k], run * 10 + k) for k in range(3)]
        rows.append((f"e{max(0, run - 3)}-0", at[0], 1000 + run))  # a correction of an older key
        if run % 5 == 0:
            rows.append((f"bad{run}", at[0], -1))  # quarantined
        _deliver(root, day, f"part-{run:03d}.csv", rows)
        for _ in range(2):
            load_bronze(lake, contract, dates, run_id=f"r{run}")
            load_silver(lake, contract, dates, run_id=f"r{run}")
    # Gold has taken in silver's versions so far (a consumer's watermark).
    consumer = "gold_daily_test"
    silver_uri = lake.table_uri("silver", "events")
    system.record_watermarks(lake, consumer, {"events": DeltaTable(silver_uri).version()}, "g")

    before = {layer: _files(lake, layer) for layer in ("bronze", "silver", "quarantine")}
    today = FIRST + timedelta(days=21)  # 2024-03-22
    started = time.monotonic()
    passes = {
        layer: maintenance.maintain_table(
            lake,
            layer,
            "events",
            keep=contract.retention.of(layer),
            history_hours=contract.retention.history_hours,
            today=today,
            writers_held=True,  # nothing else writes to this lake
            progress=print,
        )
        for layer in ("bronze", "quarantine", "silver")
    }
    seconds = time.monotonic() - started
    after = {layer: _files(lake, layer) for layer in ("bronze", "silver", "quarantine")}
    out = capsys.readouterr().out
    assert "bronze/events: deleting" in out
    with capsys.disabled():
        print(
            f"\n{out}storage bound (files on disk, live): before {before} after {after}; "
            f"maintenance pass {seconds:.2f}s"
        )

    for layer, (on_disk, live) in after.items():
        assert on_disk <= 2 * live, f"{layer}: {on_disk} files on disk for {live} live"
        # At a zero history nothing unreferenced stays at all.
        assert on_disk == live, f"{layer}: {on_disk} files on disk for {live} live"
    assert before["silver"][0] > before["silver"][1]  # MERGEs left replaced files behind
    # Small files compacted: three per landing date in bronze, one per MERGE in silver.
    assert after["bronze"][1] < before["bronze"][1] and after["silver"][1] < before["silver"][1]

    landed = _landed(root)
    amount = pl.col("amount").cast(pl.Int64)
    # Bronze: exactly the landed rows of landing dates within 20 days (from 2024-03-02).
    bronze = pl.read_delta(lake.table_uri("bronze", "events"))
    kept = landed.filter(pl.col("landing_date") >= cutoff(timedelta(days=20), today))
    assert bronze.height == kept.height
    assert sorted(bronze["_landing_date"].unique()) == sorted(kept["landing_date"].unique())
    assert passes["bronze"].expired == {"2024-03-01": 12 + 1}
    # Quarantine: the bad rows of landing dates within 16 days (from 2024-03-06).
    quarantine = pl.read_delta(lake.table_uri("quarantine", "events"))
    bad = landed.filter(amount < 0, pl.col("landing_date") >= cutoff(timedelta(days=16), today))
    assert quarantine.height == bad.height > 0
    assert passes["quarantine"].expired
    # Silver: the latest version of each key whose event date is within 15 days (from 03-07).
    expected = (
        landed.filter(amount >= 0)
        .sort("landing_date", "file")
        .group_by("id")
        .last()
        .filter(pl.col("at") >= cutoff(timedelta(days=15), today))
        .select("id", amount.alias("amount"))
        .sort("id")
    )
    silver = pl.read_delta(silver_uri).select("id", "amount").sort("id")
    assert silver.equals(expected)
    assert passes["silver"].expired and max(passes["silver"].expired) < "2024-03-07"

    # Gold follows the deletion: the expired event dates are pending for the consumer, and
    # silver's log keeps the commits saying so until it has taken them in.
    todo = follow.pending(lake, consumer, ["events"])
    assert todo.dates == set(passes["silver"].expired) and not todo.whole
    assert passes["silver"].log_expired == 0 and "log kept" in passes["silver"].summary()
    follow.taken_in(lake, consumer, todo, run_id="g2")
    again = maintenance.maintain_table(
        lake,
        "silver",
        "events",
        keep=timedelta(days=15),
        history_hours=0,
        today=today,
        writers_held=True,
    )
    assert again.log_expired > 0 and not again.expired
    assert follow.pending(lake, consumer, ["events"]).empty

    # The deleted rows are gone from disk and from the log; time travel before the pass fails.
    assert not any(
        pl.read_parquet(p).height and "2024-03-01" in str(p)
        for p in Path(silver_uri).rglob("*.parquet")
        if "_delta_log" not in str(p)
    )
    with pytest.raises(Exception):  # noqa: B017 - those versions' log entries are expired
        DeltaTable(silver_uri, version=1).to_pyarrow_table()


def test_dry_run_changes_nothing(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    contract = _contract(tmp_path)
    _deliver(Path(lake.root), "2024-03-01", "a.csv", [("a", "2024-03-01", 1)])
    _deliver(Path(lake.root), "2024-03-02", "b.csv", [("b", "2024-03-02", 2)])
    load_bronze(lake, contract, ["2024-03-01", "2024-03-02"], run_id="r")
    uri = lake.table_uri("bronze", "events")
    version = DeltaTable(uri).version()
    report = maintenance.maintain_table(
        lake,
        "bronze",
        "events",
        keep=timedelta(days=1),
        history_hours=0,
        today=date(2024, 3, 3),
        dry_run=True,
    )
    assert report.expired == {"2024-03-01": 1}
    assert DeltaTable(uri).version() == version
    assert pl.read_delta(uri).height == 2
