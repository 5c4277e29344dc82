"""dbt's view of silver: a table read whole is every live row of the Delta table, whatever its
history of overwrites and partitions, the same through the lean dataset, the in-memory read and
deltalake's own; a read restricted to event dates is those dates' live rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse.core.dbt_silver_plugin import (
    EVENT_DATE,
    EVENT_DATES_ENV,
    Plugin,
    serving,
    whole_table,
)
from lakehouse.core.lake import Lake


def _rows(day: str | None, ids: range, note: str) -> pa.Table:
    return pa.table(
        {
            "id": pa.array([f"k{i}" for i in ids]),
            "at": pa.array([dt.datetime(2024, 1, 1, 8, i % 60) for i in ids], pa.timestamp("us")),
            "amount": pa.array([i * 1.5 for i in ids]),
            "note": pa.array([note] * len(ids)),
            EVENT_DATE: pa.array([day] * len(ids), pa.string()),
        }
    )


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("id", "ascending"), (EVENT_DATE, "ascending")])


def test_a_whole_read_holds_exactly_the_live_rows_of_every_partition(
    tmp_path: Path, monkeypatch
) -> None:
    uri = Lake(str(tmp_path)).table_uri("silver", "orders")
    days = [f"2024-01-{d:02d}" for d in range(1, 31)]
    for day in days:
        write_deltalake(
            uri, _rows(day, range(5), "first"), partition_by=[EVENT_DATE], mode="append"
        )
    # a corrected day replaces its file; another day is retracted; a row without an event date
    write_deltalake(
        uri,
        _rows("2024-01-07", range(3), "corrected"),
        mode="overwrite",
        predicate=f"{EVENT_DATE} = '2024-01-07'",
    )
    write_deltalake(
        uri,
        _rows("2024-01-08", range(0), "gone"),
        mode="overwrite",
        predicate=f"{EVENT_DATE} = '2024-01-08'",
    )
    write_deltalake(uri, _rows(None, range(2), "undated"), mode="append")
    table = DeltaTable(uri)

    assert set(table.protocol().reader_features or ()) <= {"timestampNtz"}  # the lean road
    lean = whole_table(table).to_table()
    expected = table.to_pyarrow_dataset().to_table()
    assert lean.schema == expected.schema
    assert _sorted(lean).equals(_sorted(expected))
    # and what that is, from the deliveries: 28 days of 5 rows, 3 corrected, 2 undated
    assert lean.num_rows == 28 * 5 + 3 + 2
    by_day = {d: n for d, n in _count_by(lean, EVENT_DATE).items()}
    assert by_day["2024-01-07"] == 3 and "2024-01-08" not in by_day and by_day[None] == 2
    assert set(
        _count_by(lean.filter(pa.compute.equal(lean[EVENT_DATE], "2024-01-07")), "note")
    ) == {"corrected"}

    # what dbt reads: the small table in memory (every row), and a run's event dates only
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path))
    monkeypatch.setenv(EVENT_DATES_ENV, "")
    in_memory = Plugin("silver", {})._read("orders")
    assert isinstance(in_memory, pa.Table)
    assert _sorted(in_memory.cast(expected.schema)).equals(_sorted(expected))
    monkeypatch.setenv(EVENT_DATES_ENV, "2024-01-07,2024-01-08")
    dated = Plugin("silver", {})._read("orders").to_table()
    assert _count_by(dated, "note") == {"corrected": 3}
    # in the platform's process, the lake and dates it serves, whatever the environment says
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path / "another_lake"))
    with serving(Lake(str(tmp_path)), ["2024-01-08", "2024-01-07", "2024-01-07"]):
        plugin = Plugin("silver", {})
        assert plugin.event_dates == ["2024-01-07", "2024-01-08"]
        assert _count_by(plugin._read("orders").to_table(), "note") == {"corrected": 3}
    with pytest.raises(ValueError), serving(Lake(str(tmp_path)), ["2024-01-07; drop table"]):
        pass  # dates enter SQL: ISO dates only
    assert Plugin("silver", {}).lake.root == str(tmp_path / "another_lake")


def _count_by(table: pa.Table, column: str) -> dict:
    counts: dict = {}
    for value in table.column(column).to_pylist():
        counts[value] = counts.get(value, 0) + 1
    return counts
