"""Delta helpers: table reuse within one load, compaction of append-only tables, commits of
written files and removals on the snapshot they were decided on."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import RemoveAction

from lakehouse.core import delta
from lakehouse.core.lake import Lake


def test_reused_table_sees_commits_made_by_another_writer(tmp_path):
    lake = Lake(str(tmp_path))
    uri = lake.table_uri("_system", "t")
    delta.append(lake, uri, pl.DataFrame({"i": [0]}), step="first")
    with delta.reusing_tables():
        first = delta.open_table(lake, uri)
        write_deltalake(uri, pl.DataFrame({"i": [1]}).to_arrow(), mode="append")
        again = delta.open_table(lake, uri)
        assert again is first
        assert again.version() == 1
        # A write through the helpers goes to the reused table and keeps it current.
        delta.append(lake, uri, pl.DataFrame({"i": [2]}), step="third")
        assert sorted(pl.scan_delta(delta.open_table(lake, uri)).collect()["i"]) == [0, 1, 2]
    fresh = delta.open_table(lake, uri)
    assert fresh is not first
    assert fresh.version() == 2


def test_compact_bin_packs_small_files_and_keeps_every_row(tmp_path):
    lake = Lake(str(tmp_path))
    uri = lake.table_uri("_system", "t")
    for i in range(4):
        delta.append(lake, uri, pl.DataFrame({"i": [i]}), step="append")
    assert not delta.compact(lake, uri, max_files=4, step="compact")
    assert len(DeltaTable(uri).file_uris()) == 4
    assert delta.compact(lake, uri, max_files=3, step="compact")
    table = DeltaTable(uri)
    assert len(table.file_uris()) == 1
    assert sorted(pl.scan_delta(table).collect()["i"]) == [0, 1, 2, 3]


def test_a_commit_with_removals_lands_only_on_the_snapshot_it_read(tmp_path):
    """Replacing a row decided on a snapshot a compaction has since rewritten is refused (the
    compacted file still holds the row); a commit that only adds files is rebased and lands."""
    lake = Lake(str(tmp_path))
    uri = lake.table_uri("bronze", "t")
    for i in range(3):
        delta.append(lake, uri, pl.DataFrame({"d": ["x"], "i": [i]}), partition_by=["d"])
    stale = DeltaTable(uri)
    files = pl.DataFrame(stale.get_add_actions(flatten=True)).filter(pl.col("min.i") == 0)
    path, size = files.select("path", "size_bytes").row(0)
    DeltaTable(uri).optimize.compact()  # a concurrent compaction commits first

    def replacement() -> list:
        part = ({"d": "x"}, pl.DataFrame({"d": ["x"], "i": [10]}))
        return delta.write_data_files(lake, uri, [part], stats_columns=["i"])

    remove = RemoveAction(path, True, int(time.time() * 1000), size, {"d": "x"})
    schema = stale.schema().to_arrow()
    with pytest.raises(CommitFailedError, match="where removals were read"):
        delta.commit_files(
            lake, uri, stale, replacement(), [remove], schema, partition_by=["d"], claims=["t"]
        )
    assert sorted(pl.read_delta(uri)["i"]) == [0, 1, 2]  # not [0, 1, 2, 10]: 0 was replaced
    delta.commit_files(lake, uri, stale, replacement(), [], schema, partition_by=["d"], claims=[])
    assert sorted(pl.read_delta(uri)["i"]) == [0, 1, 2, 10]


def test_written_files_carry_statistics_that_bound_every_type(tmp_path):
    """Each column's statistics in Delta's JSON format, read back by delta-rs: a filtered scan
    finds every matching row (bounds that are off would skip a file holding a match)."""
    lake = Lake(str(tmp_path))
    uri = lake.table_uri("gold", "t")
    big = Decimal("12345678901234567890123456789012345678")  # beyond a float's digits
    rows = pl.DataFrame(
        {
            "spend": pl.Series([big, Decimal(-1)], dtype=pl.Decimal(38, 0)),
            "price": pl.Series([Decimal("12.34"), Decimal("-1.50")], dtype=pl.Decimal(18, 2)),
            "day": [date(2024, 1, 1), date(2024, 2, 1)],
            "at": [datetime(2024, 1, 1, 1, 2, 3, 456789), datetime(2024, 1, 2, 0, 0, 0, 999)],
            "at_utc": pl.Series(
                [datetime(2024, 1, 1), datetime(2024, 1, 2, 0, 0, 0, 1)]
            ).dt.replace_time_zone("UTC"),
            "ratio": [1.5, float("nan")],
            "flag": [True, None],
            "raw": [b"ab", b"\x00\xff"],
            "name": ["x" * 40, 'é"q'],
            "tags": [[1], [2]],
            "n": pl.Series([None, None], dtype=pl.Int64),
        }
    )
    table = delta.create_table(lake, uri, rows.to_arrow().schema)
    adds = delta.write_data_files(lake, uri, [({}, rows)], stats_columns=rows.columns)
    schema = rows.to_arrow().schema
    delta.commit_files(lake, uri, table, adds, [], schema, partition_by=[], claims=[])
    stats = pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))
    assert stats.get_column("min.spend").item() == Decimal(-1)
    assert stats.get_column("max.spend").item() == big
    assert stats.get_column("max.price").item() == Decimal("12.34")
    assert stats.get_column("max.day").item() == date(2024, 2, 1)
    # timestamps at millisecond precision: the maximum rounded up, still above the last value
    assert stats.get_column("min.at").item() == datetime(2024, 1, 1, 1, 2, 3, 456000)
    assert stats.get_column("max.at").item() == datetime(2024, 1, 2, 0, 0, 0, 1000)
    assert stats.get_column("null_count.n").item() == 2
    assert stats.get_column("min.ratio").item() is None  # NaN: no bounds, no skipping
    for match in (
        pl.col("spend") == big,
        pl.col("price") >= Decimal("12.34"),
        pl.col("day") == date(2024, 2, 1),
        pl.col("at") >= datetime(2024, 1, 2, 0, 0, 0, 999),
        pl.col("at_utc") > datetime(2024, 1, 2).replace(tzinfo=UTC),
        pl.col("ratio").is_nan(),
        pl.col("name") == 'é"q',
        pl.col("raw") == b"\x00\xff",
    ):
        assert pl.scan_delta(uri).filter(match).collect().height == 1, match


def test_the_logged_row_count_follows_appends_and_replaced_rows(tmp_path):
    uri = str(tmp_path / "t")
    write_deltalake(uri, pl.DataFrame({"d": [1, 1, 2]}).to_arrow())
    write_deltalake(uri, pl.DataFrame({"d": [3]}).to_arrow(), mode="append")
    assert delta.logged_row_count(DeltaTable(uri)) == 4
    # the rows of d = 1 replaced by one row: their file rewritten without them
    write_deltalake(uri, pl.DataFrame({"d": [1]}).to_arrow(), mode="overwrite", predicate="d = 1")
    table = DeltaTable(uri)
    assert delta.logged_row_count(table) == pl.read_delta(uri).height == 3
