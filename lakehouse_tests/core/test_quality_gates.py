"""Row rules, batch rules and schema-drift policies of silver, run on the core without Dagster."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lakehouse.core import delta, system
from lakehouse.core.bronze import load_bronze
from lakehouse.core.checks import (
    CHECK_SCHEMA_DRIFT,
    CHECK_VOLUME,
)
from lakehouse.core.contract import load_contracts, parse_contract
from lakehouse.core.lake import Lake
from lakehouse.core.readers import PARSE_ERROR, RAW_LINE
from lakehouse.core.silver import load_silver
from lakehouse.core.validation import ERRORS, RULES, split_rows
from lakehouse_tests.small_lake import deliver, text

RAW = {
    "name": "events",
    "description": "Test events.",
    "owner": "team:test",
    "primary_key": ["id"],
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "kind", "type": "string", "checks": {"isin": ["a", "b"]}},
        {"name": "amount", "type": "int64", "checks": {"ge": 0}},
        {"name": "code", "type": "string", "checks": {"str_matches": "^[A-Z]{2}$"}},
    ],
    "checks": {"max_quarantine_ratio": 0.5},
}


def contract(**over: object):
    return parse_contract({**RAW, **over}, "events.yaml")


def test_split_rows_reports_every_failed_rule_for_failing_rows_only() -> None:
    batch = pl.DataFrame(
        {
            "id": ["1", None, "3", "4", None],
            "kind": ["a", "a", "z", "b", None],
            "amount": ["5", "-1", "x", " 7 ", None],
            "code": ["AB", "AB", "AB", "abc", None],
            PARSE_ERROR: [None, None, None, None, "2 fields, the header has 4"],
            RAW_LINE: [None, None, None, None, "5,a"],
            "_row_number": [1, 2, 3, 4, 5],
        }
    )
    split = split_rows(contract(), batch, ["_row_number", RAW_LINE])
    assert split.valid.select("id", "amount", "_row_number").rows() == [("1", 5, 1)]
    got = {r["_row_number"]: (sorted(r[RULES]), len(r[ERRORS])) for r in split.invalid.to_dicts()}
    assert got == {
        2: (["amount:greater_than_or_equal_to(0)", "id:not_nullable"], 2),
        3: (["amount:castable"], 1),  # a row that does not cast is not range-checked
        4: (["code:str_matches('^[A-Z]{2}$')"], 1),
        5: (["parseable"], 1),
    }
    messages = split.invalid.filter(pl.col("_row_number") == 3).get_column(ERRORS).to_list()[0]
    assert messages == ["column `amount`: `x` is not a valid int64"]
    assert split.invalid.filter(pl.col("_row_number") == 5).get_column(RAW_LINE)[0] == "5,a"


def test_foreign_keys_fail_values_the_referenced_table_lacks() -> None:
    with_ref = contract(
        columns=[*RAW["columns"][:3], {"name": "code", "type": "string", "references": "x.y"}]
    )
    batch = pl.DataFrame(
        {"id": ["1", "2", "3"], "kind": ["a"] * 3, "amount": ["1"] * 3, "code": ["AA", "ZZ", None]}
    )
    split = split_rows(with_ref, batch, [], known_values={"code": pl.Series(["AA"])})
    assert split.valid.get_column("id").to_list() == ["1", "3"]  # a null is not a dangling key
    assert split.invalid.get_column(RULES).to_list() == [["code:references"]]
    assert split.invalid.get_column(ERRORS).to_list() == [
        ["column `code`: `ZZ` is not a `y` of silver `x`"]
    ]


def run(root: Path, c, dates: list[str]):
    lake = Lake(str(root))
    load_bronze(lake, c, dates, run_id="r")
    return lake, load_silver(lake, c, dates, run_id="r")


def check(result, name: str, date: str):
    return next(o for o in result.outcomes(name) if o.partition == date)


@pytest.mark.parametrize("policy", ["rescue", "evolve", "freeze"])
def test_schema_drift_policies(tmp_path: Path, policy: str) -> None:
    deliver(
        tmp_path, "events", "2024-01-01", "e.csv", text(["id,kind,amount,code,extra", "1,a,1,AB,x"])
    )
    lake, result = run(tmp_path, contract(schema_drift=policy), ["2024-01-01"])
    silver_uri = lake.table_uri("silver", "events")
    drift = check(result, CHECK_SCHEMA_DRIFT, "2024-01-01")
    if policy == "freeze":
        assert not drift.passed
        assert "events/2024-01-01/e.csv" in drift.detail and "`extra`" in drift.detail
        assert delta.open_table(lake, silver_uri) is None
        assert result.partitions["2024-01-01"].held == 1
        return
    assert drift.passed
    silver = pl.read_delta(silver_uri)
    if policy == "rescue":
        assert silver.get_column("_rescued").to_list() == ['{"extra": "x"}']
        assert "extra" not in silver.columns
    else:
        assert silver.get_column("extra").to_list() == ["x"]


def test_a_missing_required_column_blocks_naming_file_and_column(tmp_path: Path) -> None:
    deliver(tmp_path, "events", "2024-01-01", "e.csv", text(["kind,amount", "a,1"]))
    _, result = run(tmp_path, contract(), ["2024-01-01"])
    drift = check(result, CHECK_SCHEMA_DRIFT, "2024-01-01")
    assert not drift.passed and drift.blocking
    assert drift.detail == "file `events/2024-01-01/e.csv` lacks required column(s) `id`"


def test_volume_blocks_a_date_far_outside_the_recent_ones(tmp_path: Path) -> None:
    days = [f"2024-01-0{d}" for d in range(1, 7)]
    sizes = [10, 12, 11, 10, 60, 1]
    for day, n in zip(days, sizes, strict=True):
        rows = [f"{day}-{i},a,1,AB" for i in range(n)]
        deliver(tmp_path, "events", day, "e.csv", text(["id,kind,amount,code", *rows]))
    c = contract(checks={"volume": {"min_ratio": 0.5, "max_ratio": 3, "window": 3}})
    lake, result = run(tmp_path, c, days)
    passed = {d: check(result, CHECK_VOLUME, d).passed for d in days}
    # no baseline for the first three; 60 is > 3 x median(12, 11, 10); 1 < 0.5 x median(11, 10, 60)
    assert passed == dict(zip(days, [True, True, True, True, False, False], strict=True))
    assert "60 rows = 5.45 x the median 11" in check(result, CHECK_VOLUME, days[4]).detail
    silver = pl.read_delta(lake.table_uri("silver", "events"))
    assert sorted(silver.group_by("_landing_date").len().iter_rows()) == list(
        zip(days[:4], sizes[:4], strict=True)
    )
    dq = system.read_table(lake, "dq_results").filter(pl.col("check") == CHECK_VOLUME)
    assert dq.filter(~pl.col("passed")).get_column("partition").sort().to_list() == days[4:]


def test_split_rows_handles_a_batch_in_many_chunks() -> None:
    tweets = next(c for c in load_contracts() if c.name == "tweets")
    bad = {(1, 7), (4, 7)}
    parts = [
        pl.DataFrame(
            {
                "id": [f"{p}-{i}" for i in range(50)],
                "user_id": ["u1"] * 50,
                "tweeted_at": [
                    "soon" if (p, i) in bad else "2018-09-01T10:00:00" for i in range(50)
                ],
                "content": ["hi"] * 50,
            }
        )
        for p in range(6)
    ]
    batch = pl.concat(parts, rechunk=False)  # as read from bronze: a chunk per file
    assert batch.n_chunks() == 6
    split = split_rows(tweets, batch, [])
    assert split.valid.height == 298
    assert sorted(split.invalid.get_column("id").to_list()) == ["1-7", "4-7"]
