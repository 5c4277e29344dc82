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


def test_null_tokens_of_format_and_column_are_null_not_cast_failures() -> None:
    c = contract(
        format={"type": "csv", "null_values": ["NA", "N/A"]},
        columns=[
            *RAW["columns"][:2],
            {"name": "amount", "type": "int64", "null_values": ["-"]},
            {"name": "code", "type": "string"},
        ],
    )
    batch = pl.DataFrame(
        {
            "id": ["1", "2", "3", "4", "5", "NA"],
            "kind": ["a"] * 6,
            "amount": ["NA", "N/A", "-", "", "7", "1"],
            "code": ["NA", "-", "", "ok", None, "x"],
        }
    )
    split = split_rows(c, batch, [])
    assert split.valid.rows() == [
        ("1", "a", None, None),
        ("2", "a", None, "-"),  # `-` is a null token of `amount` only
        ("3", "a", None, None),
        ("4", "a", None, "ok"),
        ("5", "a", 7, None),
    ]
    assert split.invalid.get_column(RULES).to_list() == [["id:not_nullable"]]  # `NA` is null


def test_null_tokens_replace_nothing_a_value_that_is_not_one_still_fails() -> None:
    c = contract(columns=[*RAW["columns"][:2], {"name": "amount", "type": "int64"}])
    batch = pl.DataFrame({"id": ["1", "2"], "kind": ["a", "a"], "amount": ["NA", ""]})
    split = split_rows(c, batch, [])
    assert split.valid.get_column("id").to_list() == ["2"]  # "" is always a null token
    assert split.invalid.get_column(ERRORS).to_list() == [
        ["column `amount`: `NA` is not a valid int64"]
    ]


ISO_VALUES = [
    "2024-01-02T03:04:05",
    "2024-01-02 03:04:05.250",
    "2024-01-02T03:04",
    "2024-01-02",
    "2024-01-02T03:04:05Z",
    "2024-01-02T03:04:05.5+02:00",
    "2024-01-02 03:04:05-0130",
    "2024-01-02T03:04Z",
]


def temporal_contract(type_name: str, fmt: str | None = None):
    column = {"name": "ts", "type": type_name, **({"format": fmt} if fmt else {})}
    return contract(columns=[RAW["columns"][0], column])


def test_datetime_parses_iso_8601_offsets_to_naive_utc() -> None:
    from datetime import datetime

    batch = pl.DataFrame({"id": [str(i) for i in range(len(ISO_VALUES))], "ts": ISO_VALUES})
    split = split_rows(temporal_contract("datetime"), batch, [])
    assert split.invalid.is_empty()
    assert split.valid.schema["ts"] == pl.Datetime("us")
    assert split.valid.get_column("ts").to_list() == [
        datetime(2024, 1, 2, 3, 4, 5),  # no offset: kept as landed (naive)
        datetime(2024, 1, 2, 3, 4, 5, 250000),
        datetime(2024, 1, 2, 3, 4),
        datetime(2024, 1, 2),
        datetime(2024, 1, 2, 3, 4, 5),  # an offset: converted to UTC, stored naive
        datetime(2024, 1, 2, 1, 4, 5, 500000),
        datetime(2024, 1, 2, 4, 34, 5),
        datetime(2024, 1, 2, 3, 4),
    ]


def test_timestamp_is_utc_aware_and_takes_values_without_offset_as_utc() -> None:
    from datetime import UTC, datetime

    batch = pl.DataFrame({"id": [str(i) for i in range(len(ISO_VALUES))], "ts": ISO_VALUES})
    split = split_rows(temporal_contract("timestamp"), batch, [])
    assert split.invalid.is_empty()
    assert split.valid.schema["ts"] == pl.Datetime("us", "UTC")
    got = split.valid.get_column("ts").to_list()
    assert got[0] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert got[5] == datetime(2024, 1, 2, 1, 4, 5, 500000, tzinfo=UTC)
    assert got[6] == datetime(2024, 1, 2, 4, 34, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_name", "fmt", "value", "expected"),
    [
        ("datetime", "%d/%m/%Y %H:%M", "02/01/2024 03:04", "2024-01-02 03:04:00"),
        ("datetime", "%d/%m/%Y %H:%M%z", "02/01/2024 03:04+0100", "2024-01-02 02:04:00"),
        ("timestamp", "%d/%m/%Y %H:%M", "02/01/2024 03:04", "2024-01-02 03:04:00+00:00"),
        ("timestamp", "%d/%m/%Y %H:%M %z", "02/01/2024 03:04 -0100", "2024-01-02 04:04:00+00:00"),
        ("date", "%d/%m/%Y", "02/01/2024", "2024-01-02"),
    ],
)
def test_a_column_format_parses_other_forms(
    type_name: str, fmt: str, value: str, expected: str
) -> None:
    batch = pl.DataFrame({"id": ["1"], "ts": [value]})
    split = split_rows(temporal_contract(type_name, fmt), batch, [])
    assert split.invalid.is_empty()
    assert str(split.valid.get_column("ts")[0]) == expected


@pytest.mark.parametrize(
    ("type_name", "fmt", "message"),
    [
        (
            "datetime",
            None,
            "column `ts`: `02/01/2024` is not a valid datetime "
            "(ISO 8601, e.g. 2024-01-02T03:04:05[Z|+01:00]; set `format:`)",
        ),
        (
            "timestamp",
            None,
            "column `ts`: `02/01/2024` is not a valid timestamp "
            "(ISO 8601, e.g. 2024-01-02T03:04:05[Z|+01:00]; set `format:`)",
        ),
        (
            "datetime",
            "%Y-%m-%d %H:%M",
            "column `ts`: `02/01/2024` is not a valid datetime (format `%Y-%m-%d %H:%M`)",
        ),
        (
            "date",
            None,
            "column `ts`: `02/01/2024` is not a valid date (YYYY-MM-DD; set `format:`)",
        ),
    ],
)
def test_a_temporal_cast_error_names_the_value_and_the_expected_form(
    type_name: str, fmt: str | None, message: str
) -> None:
    batch = pl.DataFrame({"id": ["1"], "ts": ["02/01/2024"]})
    split = split_rows(temporal_contract(type_name, fmt), batch, [])
    assert split.invalid.get_column(RULES).to_list() == [["ts:castable"]]
    assert split.invalid.get_column(ERRORS).to_list() == [[message]]


def test_a_warn_only_foreign_key_keeps_the_row_and_lists_it_as_warned() -> None:
    c = contract(
        columns=[
            *RAW["columns"][:3],
            {"name": "code", "type": "string", "references": "x.y", "on_missing": "warn"},
        ]
    )
    batch = pl.DataFrame(
        {
            "id": ["1", "2", "3", "4"],
            "kind": ["a", "a", "a", "z"],
            "amount": ["1"] * 4,
            "code": ["AA", "ZZ", None, "ZZ"],
            "_landing_date": ["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-02"],
        }
    )
    split = split_rows(c, batch, ["_landing_date"], known_values={"code": pl.Series(["AA"])})
    assert split.valid.get_column("id").to_list() == ["1", "2", "3"]
    # Row 4 fails `isin` and is quarantined for that only; its missing key is not a reason.
    assert split.invalid.get_column(RULES).to_list() == [["kind:isin(['a', 'b'])"]]
    assert split.warned.select("id", "_landing_date", RULES, ERRORS).rows() == [
        (
            "2",
            "2024-01-02",
            ["code:references"],
            ["column `code`: `ZZ` is not a `y` of silver `x` (on_missing: warn)"],
        )
    ]
    assert split.warned.columns == [*split.valid.columns, RULES, ERRORS]


def test_warned_is_empty_with_the_valid_columns_without_warn_references() -> None:
    split = split_rows(contract(), pl.DataFrame({"id": ["1"], "amount": ["1"]}), [])
    assert split.warned.is_empty()
    assert split.warned.columns == [*split.valid.columns, RULES, ERRORS]


def test_bronze_keeps_null_tokens_and_silver_types_them_null(tmp_path: Path) -> None:
    c = contract(
        format={"type": "csv", "null_values": ["NA"]},
        event_time="at",
        columns=[
            *RAW["columns"][:3],
            {"name": "at", "type": "timestamp", "nullable": False},
        ],
    )
    deliver(
        tmp_path,
        "events",
        "2024-01-01",
        "e.csv",
        text(["id,kind,amount,at", "1,a,NA,2024-01-01T23:30:00-01:00", "2,b,3,2024-01-01 10:00Z"]),
    )
    lake, result = run(tmp_path, c, ["2024-01-01"])
    bronze = pl.read_delta(lake.table_uri("bronze", "events")).sort("id")
    assert bronze.get_column("amount").to_list() in (["NA", "3"], [None, "3"])  # see readers.py
    silver = pl.read_delta(lake.table_uri("silver", "events")).sort("id")
    assert silver.get_column("amount").to_list() == [None, 3]
    assert silver.schema["at"] == pl.Datetime("us", "UTC")
    assert silver.get_column("_event_date").cast(pl.String).to_list() == [
        "2024-01-02",  # 23:30 at -01:00 is 00:30 UTC the next day
        "2024-01-01",
    ]
    assert result.partitions["2024-01-01"].quarantined == 0


@pytest.mark.parametrize("policy", ["warn", "block"])
def test_a_rejected_file_warns_or_blocks_its_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    from lakehouse_tests.small_lake import HEADER, deliver_reference_data, edit_contract, order

    if policy == "block":
        edit_contract(
            tmp_path, monkeypatch, "orders", "\nchecks:\n", "\nchecks:\n  files_rejected: block\n"
        )
    contracts = {c.name: c for c in load_contracts()}
    root = tmp_path / "root"
    d1, d2 = "2024-05-01", "2024-05-02"
    deliver_reference_data(root, d1)
    for day in (d1, d2):
        deliver(root, "orders", day, "orders.csv", text([HEADER, order(f"{day}-a", day)]))
    deliver(root, "orders", d2, "junk.csv.gz", b"not gzip at all")
    lake = Lake(str(root))
    for source in ("stores", "customers", "orders"):
        load_bronze(lake, contracts[source], [d1, d2], run_id="t")
        result = load_silver(lake, contracts[source], [d1, d2], run_id="t")
    check = next(c for c in result.partitions[d2].checks if c.check == "files_rejected")
    assert not check.passed and "orders/2024-05-02/junk.csv.gz" in check.detail
    assert check.blocking is (policy == "block")
    # the rejected file is in `_system/rejected_files`; the date's readable file publishes
    # (warn) or waits in bronze with its date blocked (block); the other date is unaffected
    rejected = system.read_table(lake, "rejected_files")
    assert rejected.get_column("path").to_list() == ["orders/2024-05-02/junk.csv.gz"]
    silver = pl.read_delta(lake.table_uri("silver", "orders"))
    expected = {f"{d1}-a"} if policy == "block" else {f"{d1}-a", f"{d2}-a"}
    assert set(silver.get_column("id")) == expected
    assert result.partitions[d2].status == ("blocked" if policy == "block" else "published")
    assert result.partitions[d1].status == "published"


def test_messages_withhold_pii_values_and_cut_long_ones() -> None:
    pii = contract(
        columns=[
            RAW["columns"][0],
            {"name": "email", "type": "string", "pii": "email", "checks": {"str_matches": ".+@"}},
            {"name": "phone", "type": "int64", "pii": "phone"},
            {"name": "note", "type": "string", "checks": {"isin": ["ok"]}},
        ]
    )
    long_note = "n" * 5000
    batch = pl.DataFrame(
        {
            "id": ["1", "2", "3"],
            "email": ["bob.secret.example.com", "ann@example.com", "cy@example.com"],
            "phone": ["5551234", "555-SECRET", "5551234"],
            "note": ["ok", "ok", long_note],
        }
    )
    split = split_rows(pii, batch, [])
    messages = [m for row in split.invalid.get_column(ERRORS).to_list() for m in row]
    assert sorted(messages) == sorted(
        [
            "column `email`: value (a `email` value of 22 characters, withheld) fails "
            "`str_matches('.+@')`",
            "column `phone`: (a `phone` value of 10 characters, withheld) is not a valid int64",
            "column `note`: value `" + "n" * 200 + "…` (5000 characters) fails `isin(['ok'])`",
        ]
    )
    assert not any("SECRET" in m or "secret" in m for m in messages)
