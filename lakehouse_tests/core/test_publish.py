"""Silver is a function of bronze: corrections, retractions, moves and late versions, on the core.

Each step delivers files, loads bronze and silver, and checks silver row by row against what the
landed rows say, plus the event dates each publish records as changed.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from lakehouse.core import delta, maintenance
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.publish import Changes, changes_since
from lakehouse.core.silver import load_silver
from lakehouse_tests.small_lake import (
    HEADER,
    deliver,
    deliver_reference_data,
    edit_contract,
    order,
    text,
)
from lakehouse_tests.small_lake import load as load_layers

D1, D2, D3 = "2024-04-01", "2024-04-02", "2024-04-03"


def load(lake: Lake, dates: list[str]) -> None:
    load_layers(lake, ("stores", "customers", "orders"), dates)


def orders(lake: Lake) -> dict[str, tuple]:
    frame = pl.read_delta(lake.table_uri("silver", "orders"))
    assert frame.get_column("id").is_unique().all()
    return {
        r[0]: r[1:]
        for r in frame.select("id", "order_total", "_event_date", "_landing_date").iter_rows()
    }


def version(lake: Lake) -> int | None:
    return delta.table_version(lake, lake.table_uri("silver", "orders"))


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    deliver_reference_data(tmp_path, D1)
    deliver(
        tmp_path,
        "orders",
        D1,
        "orders.csv",
        text([HEADER, *(order(f"o{i}", D1) for i in range(5))]),
    )
    lake = Lake(str(tmp_path))
    load(lake, [D1])
    return lake


def test_a_corrected_file_retracts_updates_moves_and_adds(lake: Lake) -> None:
    first = version(lake)
    lines = [
        HEADER,
        order("o1", D1, order_total="999"),  # corrected
        order("o2", D2),  # moved to another event date
        order("o3", D1),
        order("o4", D1),
        order("o5", D1),  # added; o0 is gone
    ]
    deliver(Path(lake.root), "orders", D1, "orders.csv", text(lines))
    load(lake, [D1])
    got = orders(lake)
    assert set(got) == {"o1", "o2", "o3", "o4", "o5"}
    assert got["o1"][:2] == (999, D1)
    assert got["o2"][1] == D2
    assert version(lake) == first + 1  # one commit: the move's delete and insert together
    found = changes_since(lake, "orders", first)
    assert not found.whole
    inserted, updated, deleted = zip(*(found.dates[d] for d in (D1, D2)), strict=True)
    # D1: o5 inserted; o1 and the shifted rows updated; o0 and o2 deleted. D2: o2 inserted.
    assert inserted == (1, 1) and deleted == (2, 0) and updated[0] >= 1
    # nothing changed: no new version
    load(lake, [D1])
    assert version(lake) == first + 1


def test_a_reader_whose_commits_expired_from_the_log_rebuilds_everything(lake: Lake) -> None:
    # A gold consumer took silver in at `first`; two corrections land, then maintenance expires
    # the log while the consumer is away: the dates of the lost commits are unknown, so whole.
    first = version(lake)
    for total in ("111", "222"):
        lines = [HEADER, *(order(f"o{i}", D1, order_total=total) for i in range(5))]
        deliver(Path(lake.root), "orders", D1, "orders.csv", text(lines))
        load(lake, [D1])
    found = changes_since(lake, "orders", first)
    assert not found.whole and set(found.dates) == {D1}
    uri = lake.table_uri("silver", "orders")
    maintenance.expire_log(lake, uri, retention_hours=0, writers_held=True)
    found = changes_since(lake, "orders", first)
    assert found.whole and found.latest == version(lake)
    assert changes_since(lake, "orders", found.latest) == Changes(found.latest)


def test_a_late_file_wins_only_where_it_is_newer(lake: Lake) -> None:
    late = [
        HEADER,
        order("o1", D1, ordered_at="2024-03-01T00:00:00", order_total="1"),  # older: loses
        order("o2", D1, ordered_at=f"{D1}T13:00:00", order_total="2"),  # newer: wins
        order("o9", D1, order_total="9"),  # a new order of an earlier event date
    ]
    deliver(Path(lake.root), "orders", D3, "late.csv", text(late))
    load(lake, [D3])
    got = orders(lake)
    assert got["o1"] == (106, D1, D1)
    assert got["o2"] == (2, D1, D3)
    assert got["o9"] == (9, D1, D3)


def test_a_retracted_winner_falls_back_to_an_older_version(lake: Lake) -> None:
    # D2 carries a newer version of o1; then D2's file is corrected without it: D1's stands again.
    deliver(
        Path(lake.root),
        "orders",
        D2,
        "orders.csv",
        text([HEADER, order("o1", D1, ordered_at=f"{D1}T18:00:00", order_total="7")]),
    )
    load(lake, [D2])
    assert orders(lake)["o1"] == (7, D1, D2)
    deliver(Path(lake.root), "orders", D2, "orders.csv", text([HEADER, order("x1", D2)]))
    load(lake, [D2])
    got = orders(lake)
    assert got["o1"] == (106, D1, D1)
    assert "x1" in got and len(got) == 6


def test_a_warn_only_reference_publishes_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_contract(
        tmp_path,
        monkeypatch,
        "orders",
        "references: customers.id,",
        "references: customers.id, on_missing: warn,",
    )
    warned = {c.name: c for c in load_contracts()}
    root = tmp_path / "root"
    deliver_reference_data(root, D1)
    orphan = order("orphan", D1, customer="nobody")
    deliver(root, "orders", D1, "orders.csv", text([HEADER, order("o0", D1), orphan]))
    lake = Lake(str(root))
    for source in ("stores", "customers", "orders"):
        load_bronze(lake, warned[source], [D1], run_id="test")
        result = load_silver(lake, warned[source], [D1], run_id="test")
    audit = result.partitions[D1]
    assert set(orders(lake)) == {"o0", "orphan"}
    assert (audit.quarantined, audit.references_warned, audit.accepted) == (0, 1, 2)
    check = next(c for c in audit.checks if c.check == "references")
    assert not check.passed and not check.blocking and "1 kept" in check.detail


def test_a_snapshot_source_holds_its_latest_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_contract(
        tmp_path,
        monkeypatch,
        "products",
        "primary_key: [sku]",
        "primary_key: [sku]\ndelivery: snapshot",
    )
    products = next(c for c in load_contracts() if c.name == "products")
    root = tmp_path / "root"
    header = "sku,name,type,price,description"
    snapshots = {
        D1: ["A,a,jaffle,100,", "B,b,beverage,200,"],
        D2: ["A,a,jaffle,150,", "C,c,jaffle,300,"],  # A repriced, B withdrawn, C new
        D3: ["A,a,jaffle,-1,", "C,c,jaffle,300,"],  # broken: blocked (max_quarantine_ratio 0)
    }
    lake = Lake(str(root))
    expected = {
        D1: {"A": 100, "B": 200},
        D2: {"A": 150, "C": 300},
        D3: {"A": 150, "C": 300},  # the blocked snapshot leaves the last good one
    }
    for day, rows in snapshots.items():
        deliver(root, "products", day, "products.csv", text([header, *rows]))
        load_bronze(lake, products, [day], run_id="test")
        result = load_silver(lake, products, [D1, D2, D3], run_id="test")
        silver = pl.read_delta(lake.table_uri("silver", "products"))
        assert dict(silver.select("sku", "price").iter_rows()) == expected[day], day
    assert result.blocked_dates == [D3]
