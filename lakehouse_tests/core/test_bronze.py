"""Bronze: one data file per landed file, and a reload replaces exactly that file's rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

from lakehouse.core.bronze import LANDING_DATE, SOURCE_FILE, load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.readers import ROW_NUMBER
from lakehouse_tests.small_lake import deliver, orders_file

ORDERS = next(c for c in load_contracts() if c.name == "orders")
DAY = "2024-01-01"


def bronze(lake: Lake) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri("bronze", "orders")).sort(SOURCE_FILE, ROW_NUMBER)


def test_each_landed_file_is_one_data_file_and_a_reload_replaces_it(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    deliver(tmp_path, "orders", DAY, "a.csv", orders_file("a", good=3))
    deliver(tmp_path, "orders", DAY, "b.csv", orders_file("b", good=2))
    load_bronze(lake, ORDERS, [DAY], run_id="first")
    table = DeltaTable(lake.table_uri("bronze", "orders"))
    assert len(table.file_uris()) == 2
    first = bronze(lake)
    assert first.group_by(SOURCE_FILE).len().sort(SOURCE_FILE).rows() == [
        ("orders/2024-01-01/a.csv", 3),
        ("orders/2024-01-01/b.csv", 2),
    ]
    assert first.get_column(ROW_NUMBER).to_list() == [1, 2, 3, 1, 2]

    # a.csv is delivered again with other content; b.csv is deleted from the landing zone
    deliver(tmp_path, "orders", DAY, "a.csv", orders_file("a2", good=4))
    (tmp_path / "landing" / "orders" / DAY / "b.csv").unlink()
    load_bronze(lake, ORDERS, [DAY], run_id="second")
    again = bronze(lake)
    assert again.group_by(SOURCE_FILE).len().sort(SOURCE_FILE).rows() == [
        ("orders/2024-01-01/a.csv", 4),  # replaced, not added to
        ("orders/2024-01-01/b.csv", 2),  # kept: deleting a landed file deletes no data
    ]
    assert again.filter(pl.col(SOURCE_FILE).str.ends_with("b.csv")).equals(
        first.filter(pl.col(SOURCE_FILE).str.ends_with("b.csv"))
    )
    assert len(DeltaTable(lake.table_uri("bronze", "orders")).file_uris()) == 2


def test_a_data_file_shared_by_several_landed_files_is_rewritten_without_the_reloaded_one(
    tmp_path: Path,
) -> None:
    """A table whose data files mix landed files (another writer, a compaction) still reloads
    exactly: the reloaded file's rows are cut out of the shared data file, the others kept."""
    lake = Lake(str(tmp_path))
    deliver(tmp_path, "orders", DAY, "a.csv", orders_file("a", good=3))
    deliver(tmp_path, "orders", DAY, "b.csv", orders_file("b", good=2))
    load_bronze(lake, ORDERS, [DAY], run_id="first")
    uri = lake.table_uri("bronze", "orders")
    loaded = bronze(lake)
    write_deltalake(uri, loaded.to_arrow(), mode="overwrite", partition_by=[LANDING_DATE])
    assert len(DeltaTable(uri).file_uris()) == 1  # both landed files in one data file

    deliver(tmp_path, "orders", DAY, "a.csv", orders_file("a2", good=4))
    (tmp_path / "landing" / "orders" / DAY / "b.csv").unlink()  # only a.csv is reloaded
    load_bronze(lake, ORDERS, [DAY], run_id="second")
    after = bronze(lake)
    assert after.group_by(SOURCE_FILE).len().sort(SOURCE_FILE).rows() == [
        ("orders/2024-01-01/a.csv", 4),
        ("orders/2024-01-01/b.csv", 2),
    ]
    assert after.filter(pl.col(SOURCE_FILE).str.ends_with("b.csv")).equals(
        loaded.filter(pl.col(SOURCE_FILE).str.ends_with("b.csv"))
    )
    ids = after.filter(pl.col(SOURCE_FILE).str.ends_with("a.csv")).get_column("id").to_list()
    assert all(i.startswith("a2-") for i in ids)


def test_a_big_file_read_record_by_record_is_written_in_bounded_batches(
    tmp_path: Path, monkeypatch
) -> None:
    from lakehouse.core import readers, system

    # small batches stand for big ones: 95 rows and one short line in batches of 10
    monkeypatch.setattr(readers, "CAREFUL_CHUNK_ROWS", 7)
    monkeypatch.setattr(readers, "STREAM_BATCH_ROWS", 10)
    lake = Lake(str(tmp_path))
    deliver(tmp_path, "orders", DAY, "big.csv", orders_file(DAY, "1,2", good=95))
    load_bronze(lake, ORDERS, [DAY], run_id="first")
    rows = bronze(lake)
    assert rows.height == 96 and rows.get_column(ROW_NUMBER).to_list() == list(range(1, 97))
    assert rows.filter(pl.col("_parse_error").is_not_null()).get_column(ROW_NUMBER).to_list() == [
        96
    ]
    assert len(DeltaTable(lake.table_uri("bronze", "orders")).file_uris()) == 10
    ledger = system.read_table(lake, "ingest_ledger")
    assert ledger.select("path", "rows").rows() == [("orders/2024-01-01/big.csv", 96)]

    # a reload replaces every batch of the file: nothing doubles
    deliver(tmp_path, "orders", DAY, "big.csv", orders_file("v2", "1,2", good=12))
    load_bronze(lake, ORDERS, [DAY], run_id="second")
    assert bronze(lake).height == 13
