"""Anomaly detection on generated data: four weeks of a steady feed, then a normal week and a
week with a known anomaly (a shifted amount, a column gone half null). The normal week passes,
the anomaly is caught on exactly the figures it changed, blocks its date where the contract
says so, and every figure is a row of `_system/column_profiles`."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core import anomaly, system
from lakehouse.core.bronze import load_bronze
from lakehouse.core.checks import CHECK_ANOMALIES, blocking_checks
from lakehouse.core.contract import Anomalies, parse_contract
from lakehouse.core.errors import ContractError
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver
from lakehouse_tests.small_lake import deliver, text

MONDAYS = [(date(2024, 1, 1) + timedelta(weeks=k)).isoformat() for k in range(6)]
NORMAL, ANOMALOUS = MONDAYS[4], MONDAYS[5]
RAW = {
    "name": "events",
    "description": "Generated events.",
    "owner": "team:test",
    "primary_key": ["id"],
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "kind", "type": "string", "checks": {"isin": ["a", "b"]}},
        {"name": "amount", "type": "int64"},
        {"name": "code", "type": "string"},
    ],
    "checks": {"max_quarantine_ratio": 0.5, "anomalies": {"on_fail": "block", "weeks": 4}},
}


def rows(day: str, *, shift: int = 0, null_codes: float = 0.02, n: int = 300) -> pl.DataFrame:
    """One day of events: amounts around 1000 (+ `shift`), a few null codes."""
    rng = random.Random(day)
    return pl.DataFrame(
        {
            "id": [f"{day}-{i}" for i in range(n)],
            "kind": [rng.choice("ab") for _ in range(n)],
            "amount": [int(rng.gauss(1000, 100)) + shift for _ in range(n)],
            "code": [
                None if rng.random() < null_codes else rng.choice("XYZ") * 2 for _ in range(n)
            ],
        }
    )


def weeks(anomalous: pl.DataFrame) -> dict[str, pl.DataFrame]:
    return {**{d: rows(d) for d in MONDAYS[:5]}, ANOMALOUS: anomalous}


def verdicts(frames: dict[str, pl.DataFrame], day: str) -> dict[tuple[str, str], bool]:
    profiles = {d: anomaly.profile(f, list(f.columns)) for d, f in frames.items()}
    baseline = [profiles[b] for b in anomaly.baseline_dates(day, 4) if b in profiles]
    judged = anomaly.judge(profiles[day], baseline, Anomalies())
    return {(j.column, j.metric): j.anomalous for j in judged}


def test_a_normal_week_passes_and_a_known_anomaly_is_caught_on_its_figures() -> None:
    frames = weeks(rows(ANOMALOUS, shift=400, null_codes=0.5))
    normal = verdicts(frames, NORMAL)
    assert normal and not any(normal.values())
    caught = {k for k, bad in verdicts(frames, ANOMALOUS).items() if bad}
    assert caught == {
        ("amount", "mean"),
        ("amount", "p05"),
        ("amount", "p50"),
        ("amount", "p95"),
        ("code", "null_rate"),
    }


def test_too_little_history_is_not_judged() -> None:
    frames = {d: rows(d) for d in MONDAYS[:3]}
    frames[MONDAYS[2]] = rows(MONDAYS[2], shift=5000)
    assert not any(verdicts(frames, MONDAYS[2]).values())  # 2 earlier Mondays < min_weeks 3


def deliver_csv(root: Path, day: str, frame: pl.DataFrame) -> None:
    lines = [",".join(frame.columns)] + [
        ",".join("" if v is None else str(v) for v in row) for row in frame.iter_rows()
    ]
    deliver(root, "events", day, "events.csv", text(lines))


def test_silver_blocks_the_anomalous_date_and_records_every_figure(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    contract = parse_contract(RAW, "events.yaml")
    assert CHECK_ANOMALIES in blocking_checks(contract)
    frames = weeks(rows(ANOMALOUS, shift=400))
    for day, frame in frames.items():
        deliver_csv(tmp_path, day, frame)
    load_bronze(lake, contract, MONDAYS, run_id="r1")
    result = load_silver(lake, contract, MONDAYS, run_id="r1")
    assert result.blocked_dates == [ANOMALOUS]
    silver = pl.read_delta(lake.table_uri("silver", "events"))
    per_date = dict(silver.group_by("_landing_date").len().iter_rows())
    assert per_date == {d: frames[d].height for d in MONDAYS[:5]}
    dq = system.read_table(lake, "dq_results").filter(pl.col("check") == CHECK_ANOMALIES)
    by_date = {r["partition"]: r for r in dq.to_dicts()}
    assert set(by_date) == set(MONDAYS)
    assert by_date[NORMAL]["passed"] and "within robust z" in by_date[NORMAL]["detail"]
    assert by_date[MONDAYS[1]]["detail"].startswith("no baseline yet")
    bad = by_date[ANOMALOUS]
    assert not bad["passed"] and bad["blocking"] and bad["rows_failed"] == 4
    assert "`amount` mean" in bad["detail"] and "Mondays" in bad["detail"]
    profiles = system.read_table(lake, anomaly.COLUMN_PROFILES)
    flagged = profiles.filter(pl.col("anomalous"))
    assert set(flagged.select("landing_date", "column").iter_rows()) == {(ANOMALOUS, "amount")}
    amounts = frames[NORMAL].get_column("amount")
    normal_mean = profiles.filter(
        pl.col("landing_date") == NORMAL, pl.col("column") == "amount", pl.col("metric") == "mean"
    )
    assert normal_mean.get_column("value").item() == pytest.approx(amounts.mean())
    # Nothing new, nothing written; the fix (a corrected redelivery) publishes the date.
    load_silver(lake, contract, MONDAYS, run_id="r2")
    assert system.read_table(lake, anomaly.COLUMN_PROFILES).height == profiles.height
    deliver_csv(tmp_path, ANOMALOUS, rows(ANOMALOUS))
    load_bronze(lake, contract, [ANOMALOUS], run_id="r3")
    fixed = load_silver(lake, contract, [ANOMALOUS], run_id="r3")
    assert fixed.blocked_dates == []
    assert pl.read_delta(lake.table_uri("silver", "events")).height == 6 * 300


def test_the_contract_block_is_validated() -> None:
    def parse(value: object):
        return parse_contract({**RAW, "checks": {"anomalies": value}}, "events.yaml")

    assert parse("warn").checks.anomalies == Anomalies()
    assert parse({"max_z": 5, "columns": ["amount"]}).checks.anomalies == Anomalies(
        max_z=5.0, columns=("amount",)
    )
    assert parse_contract({**RAW, "checks": {}}, "events.yaml").checks.anomalies is None
    for value, field in (
        ("loud", "checks.anomalies"),
        ({"on_fail": "stop"}, "checks.anomalies.on_fail"),
        ({"weeks": 2, "min_weeks": 3}, "checks.anomalies.min_weeks"),
        ({"max_z": -1}, "checks.anomalies.max_z"),
        ({"window": 3}, "checks.anomalies.window"),
        ({"columns": ["amuont"]}, "checks.anomalies.columns"),
    ):
        with pytest.raises(ContractError, match=field.replace(".", r"\.")):
            parse(value)
