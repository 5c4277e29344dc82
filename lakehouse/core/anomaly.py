"""Anomaly detection beyond volume: each landing date's column profile against the same weekday
of the trailing weeks.

For a contract with `checks.anomalies`, silver profiles the valid rows of every landing date it
evaluates: per column the null rate and the distinct count, and for numeric columns the mean
and the 5th, 50th and 95th percentiles. Each figure is judged against the same figure of the
same weekday in the trailing `weeks` weeks (weekly seasonality: a Monday is compared with
Mondays) by a robust z-score, `(x - median) / (1.4826 * MAD)`; past `max_z` it is an anomaly.
A figure needs `min_weeks` such earlier dates before it is judged. The spread is taken as at
least 2% of the baseline median (1 point for a null rate): a few steady weeks have a tiny MAD,
and with the default `max_z` of 3.5 a figure must then move by more than 7% (3.5 points) to be
an anomaly.

The `anomalies` check of a date fails when any figure is an anomaly: a warning by default, a
blocked date with `on_fail: block`. Every figure, its baseline and its verdict is a row of
`_system/column_profiles` (written once per new profile of a date), and the check's result is
a row of `_system/dq_results` like every other check's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from lakehouse.core import delta, system
from lakehouse.core.checks import CHECK_ANOMALIES, CheckOutcome
from lakehouse.core.contract import Anomalies, Contract
from lakehouse.core.lake import Lake

COLUMN_PROFILES = "column_profiles"
MAD_SCALE = 1.4826
"""Makes the median absolute deviation estimate a normal distribution's standard deviation."""
MIN_RELATIVE_SPREAD = 0.02
"""The baseline's spread is taken as at least this share of its median: a few weeks of a steady
feed have a tiny MAD, and ordinary noise must not read as an anomaly."""
MIN_RATE_SPREAD = 0.01
"""The same floor for a null rate, in absolute terms (one point)."""
QUANTILES = {"p05": 0.05, "p50": 0.5, "p95": 0.95}

SCHEMA = {
    "source": pl.String,
    "landing_date": pl.String,
    "column": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "baseline_median": pl.Float64,
    "baseline_mad": pl.Float64,
    "baseline_dates": pl.Int64,
    "z": pl.Float64,
    "anomalous": pl.Boolean,
    "run_id": pl.String,
    "profiled_at": pl.Datetime("us"),
}
SCHEMAS = {COLUMN_PROFILES: SCHEMA}
"""The system table this module keeps, and its columns (for the catalog)."""


def profile(rows: pl.DataFrame, columns: Sequence[str]) -> dict[tuple[str, str], float]:
    """(column, metric) -> value over `rows`: null rate and distinct count of every column,
    mean and quantiles of the numeric ones. No rows, no profile."""
    if rows.is_empty():
        return {}
    exprs = []
    for name in columns:
        col = pl.col(name)
        exprs += [
            col.null_count().truediv(pl.len()).alias(f"{name}\0null_rate"),
            col.drop_nulls().n_unique().alias(f"{name}\0distinct"),
        ]
        if rows.schema[name].is_numeric():
            numbers = col.cast(pl.Float64)
            exprs.append(numbers.mean().alias(f"{name}\0mean"))
            exprs += [
                numbers.quantile(q, interpolation="linear").alias(f"{name}\0{metric}")
                for metric, q in QUANTILES.items()
            ]
    values = rows.select(exprs).row(0, named=True)
    out = {}
    for key, value in values.items():
        column, metric = key.split("\0")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[(column, metric)] = float(value)
    return out


@dataclass(frozen=True)
class Judgement:
    column: str
    metric: str
    value: float
    median: float | None
    mad: float | None
    history: int
    z: float | None
    anomalous: bool

    def describe(self, weekday: str) -> str:
        return (
            f"`{self.column}` {self.metric} {self.value:g} vs median {self.median:g} of "
            f"{self.history} earlier {weekday}s (robust z {self.z:+.1f})"
        )


def robust_z(value: float, history: Sequence[float], metric: str) -> tuple[float, float, float]:
    """(z, median, MAD) of `value` against `history`, the spread floored (`MIN_*_SPREAD`)."""
    median = statistics.median(history)
    mad = statistics.median(abs(h - median) for h in history)
    floor = MIN_RATE_SPREAD if metric == "null_rate" else MIN_RELATIVE_SPREAD * abs(median)
    scale = max(MAD_SCALE * mad, floor, 1e-12)
    return (value - median) / scale, median, mad


def judge(
    figures: Mapping[tuple[str, str], float],
    baseline: Sequence[Mapping[tuple[str, str], float]],
    rules: Anomalies,
) -> list[Judgement]:
    """Each figure of a date against the same figure of its baseline dates."""
    out = []
    for (column, metric), value in sorted(figures.items()):
        history = [b[(column, metric)] for b in baseline if (column, metric) in b]
        if len(history) < rules.min_weeks:
            out.append(Judgement(column, metric, value, None, None, len(history), None, False))
            continue
        z, median, mad = robust_z(value, history, metric)
        out.append(
            Judgement(column, metric, value, median, mad, len(history), z, abs(z) > rules.max_z)
        )
    return out


def baseline_dates(day: str, weeks: int) -> list[str]:
    """The same weekday in each of the `weeks` weeks before `day`."""
    d = date.fromisoformat(day)
    return [(d - timedelta(weeks=k)).isoformat() for k in range(1, weeks + 1)]


def stored_profiles(
    lake: Lake, source: str, dates: Iterable[str]
) -> dict[str, dict[tuple[str, str], float]]:
    """The latest stored profile of each of `dates` that has one."""
    frame = delta.scan(lake, lake.table_uri("_system", COLUMN_PROFILES))
    wanted = sorted(set(dates))
    if frame is None or not wanted:
        return {}
    rows = (
        frame.filter(pl.col("source") == source, pl.col("landing_date").is_in(wanted))
        .sort("profiled_at")
        .group_by("landing_date", "column", "metric")
        .last()
        .collect()
    )
    out: dict[str, dict[tuple[str, str], float]] = {}
    for day, column, metric, value in rows.select(
        "landing_date", "column", "metric", "value"
    ).iter_rows():
        out.setdefault(day, {})[(column, metric)] = value
    return out


def profiled_columns(contract: Contract, rows: pl.DataFrame) -> list[str]:
    """The contract's columns to profile (its `checks.anomalies.columns`, else all), by silver name."""
    rules = contract.checks.anomalies
    assert rules is not None
    wanted = set(rules.columns) if rules.columns else None
    out = []
    for c in contract.columns:
        name = c.silver_name if c.silver_name in rows.columns else c.name
        if name in rows.columns and (wanted is None or {c.name, c.silver_name} & wanted):
            out.append(name)
    return out


def check(
    lake: Lake,
    contract: Contract,
    valid: pl.DataFrame,
    dates: Sequence[str],
    date_column: str,
    *,
    run_id: str,
) -> dict[str, CheckOutcome]:
    """The `anomalies` check of each of `dates` (their valid rows in `valid`), and their
    profiles recorded. Dates of the same run are each other's baseline too."""
    rules = contract.checks.anomalies
    assert rules is not None
    columns = profiled_columns(contract, valid)
    figures = {
        day: profile(valid.filter(pl.col(date_column) == day), columns) for day in sorted(dates)
    }
    wanted = {b for day in dates for b in baseline_dates(day, rules.weeks)}
    known = stored_profiles(lake, contract.name, wanted | set(dates))
    before = {day: known.get(day) for day in dates}
    known.update({day: f for day, f in figures.items() if f})
    outcomes, rows = {}, []
    now = datetime.now(UTC).replace(tzinfo=None)
    for day in sorted(dates):
        baseline = [known[b] for b in baseline_dates(day, rules.weeks) if b in known]
        judged = judge(figures[day], baseline, rules)
        failed = [j for j in judged if j.anomalous]
        weekday = date.fromisoformat(day).strftime("%A")
        compared = [j for j in judged if j.z is not None]
        if not figures[day]:
            detail = "no valid rows to profile"
        elif not compared:
            detail = (
                f"no baseline yet: fewer than {rules.min_weeks} earlier {weekday}s profiled "
                f"in the last {rules.weeks} weeks"
            )
        elif failed:
            detail = f"{len(failed)} of {len(compared)} figure(s) off: " + "; ".join(
                j.describe(weekday) for j in failed[:10]
            )
        else:
            detail = (
                f"{len(compared)} figure(s) within robust z {rules.max_z} of the same weekday "
                f"of the last {rules.weeks} weeks"
            )
        outcomes[day] = CheckOutcome(
            CHECK_ANOMALIES,
            day,
            not failed,
            len(compared),
            len(failed),
            detail,
            blocking=rules.on_fail == "block",
        )
        if figures[day] and figures[day] != before[day]:
            rows += [
                {
                    "source": contract.name,
                    "landing_date": day,
                    "column": j.column,
                    "metric": j.metric,
                    "value": j.value,
                    "baseline_median": j.median,
                    "baseline_mad": j.mad,
                    "baseline_dates": j.history,
                    "z": j.z,
                    "anomalous": j.anomalous,
                    "run_id": run_id,
                    "profiled_at": now,
                }
                for j in judged
            ]
    if rows:
        system.append_rows(lake, COLUMN_PROFILES, pl.DataFrame(rows, schema=SCHEMA))
    return outcomes
