"""Delta helpers: table reuse within one load, compaction of append-only tables."""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable, write_deltalake

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
