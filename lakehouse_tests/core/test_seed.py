"""`lakehouse seed`: a reproducible demo feed that grows, corrects its past and delivers late."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from lakehouse.cli import main
from lakehouse.core.contract import load_contracts
from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake
from lakehouse.core.seed import deliver_late, generate_jaffle_shop, redeliver, seed

CONTRACTS = {c.name: c for c in load_contracts()}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every landed file: bytes and mtime (ns), by path relative to the landing root."""
    base = root / "landing"
    return {
        str(p.relative_to(base)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def order_dates(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "landing" / "orders").iterdir())


def test_jafgen_output_is_byte_identical_run_to_run(tmp_path: Path, jaffle_raw: Path) -> None:
    again = generate_jaffle_shop(tmp_path, days=10)
    names = sorted(p.name for p in jaffle_raw.glob("raw_*.csv"))
    assert names == sorted(p.name for p in again.glob("raw_*.csv"))
    assert "raw_orders.csv" in names
    for name in names:  # ids included: uuid4 draws from a seeded generator
        assert (again / name).read_bytes() == (jaffle_raw / name).read_bytes(), name


def test_more_days_delivers_only_the_new_ones(tmp_path: Path, jaffle_raw: Path) -> None:
    lake = Lake(str(tmp_path / "a"))
    first = seed(lake, days=4, raw_dir=jaffle_raw)
    before = snapshot(tmp_path / "a")
    assert len(first.delivered) == 4 and first.skipped == 0

    more = seed(lake, days=7, raw_dir=jaffle_raw)
    after = snapshot(tmp_path / "a")
    assert more.delivered == tuple(first.last_day + timedelta(days=n) for n in (1, 2, 3))
    assert more.files["orders"] == more.files["items"] == 3
    assert more.files["products"] == more.files["stores"] == 0
    assert {k: v for k, v in after.items() if k in before} == before  # bytes and mtime
    new_dates = {k.split("/")[1] for k in after.keys() - before.keys()}
    assert new_dates == {d.isoformat() for d in more.delivered}
    assert len(order_dates(tmp_path / "a")) == 7

    again = seed(lake, days=7, raw_dir=jaffle_raw)
    assert again.delivered == () and sum(again.files.values()) == 0
    assert snapshot(tmp_path / "a") == after

    # the same days seeded in one go elsewhere: the same bytes, ids included
    seed(Lake(str(tmp_path / "b")), days=7, raw_dir=jaffle_raw, start=first.first_day)
    other = snapshot(tmp_path / "b")
    assert {k: v[0] for k, v in other.items()} == {k: v[0] for k, v in after.items()}


def test_redeliver_corrects_a_day(tmp_path: Path, jaffle_raw: Path) -> None:
    root = tmp_path / "a"
    lake = Lake(str(root))
    seeded = seed(lake, days=6, raw_dir=jaffle_raw)
    day = seeded.first_day + timedelta(days=3)
    orders_path = root / "landing" / "orders" / day.isoformat() / "orders.csv"
    items_path = root / "landing" / "items" / day.isoformat() / "items.csv"
    _, old_orders = read(orders_path)
    _, old_items = read(items_path)
    before = snapshot(root)

    result = redeliver(lake, day.isoformat())
    header, new_orders = read(orders_path)
    items_header, new_items = read(items_path)
    assert header == list(CONTRACTS["orders"].landed_columns)
    assert items_header == list(CONTRACTS["items"].landed_columns)
    old, new = {r["id"]: r for r in old_orders}, {r["id"]: r for r in new_orders}

    changed = [i for i in old.keys() & new.keys() if old[i] != new[i]]
    assert sorted(changed) == sorted([*result.changed, result.moved])
    assert len(result.changed) >= 2
    for i in result.changed:
        assert new[i]["subtotal"] != old[i]["subtotal"]
        assert new[i]["order_total"] != old[i]["order_total"]
        assert int(new[i]["order_total"]) == int(new[i]["subtotal"]) + int(new[i]["tax_paid"])
        assert new[i]["ordered_at"] == old[i]["ordered_at"]
    assert result.moved is not None and result.moved_to == day - timedelta(days=1)
    moved = new[result.moved]
    assert (
        moved["ordered_at"][:10]
        == result.moved_to.isoformat()
        != old[result.moved]["ordered_at"][:10]
    )
    assert moved["ordered_at"][10:] == old[result.moved]["ordered_at"][10:]

    removed = old.keys() - new.keys()
    added = new.keys() - old.keys()
    assert removed == set(result.removed) and len(removed) >= 1
    assert added == set(result.added) and len(added) >= 2
    for i in added:
        assert new[i]["ordered_at"][:10] == day.isoformat()
        assert int(new[i]["order_total"]) == int(new[i]["subtotal"]) + int(new[i]["tax_paid"])
    item_orders = {r["order_id"] for r in new_items}
    assert not removed & item_orders
    assert added <= item_orders
    assert [r for r in old_items if r["order_id"] not in removed] == [
        r for r in new_items if r["order_id"] not in added
    ]

    # only the two files changed; a second call, or more days, leave the correction in place
    after = snapshot(root)
    assert {k for k in after if after[k] != before[k]} == {
        f"orders/{day}/orders.csv",
        f"items/{day}/items.csv",
    }
    assert redeliver(lake, day).already
    seed(lake, days=7, raw_dir=jaffle_raw)
    assert {k: v for k, v in snapshot(root).items() if k in after} == after

    # deterministic: the same day redelivered in another lake gives the same bytes
    other = Lake(str(tmp_path / "b"))
    seed(other, days=6, raw_dir=jaffle_raw)
    redeliver(other, day)
    for path in (orders_path, items_path):
        twin = tmp_path / "b" / path.relative_to(root)
        assert twin.read_bytes() == path.read_bytes()


def test_late_orders_of_earlier_days(tmp_path: Path, jaffle_raw: Path) -> None:
    root = tmp_path / "a"
    lake = Lake(str(root))
    seeded = seed(lake, days=6, raw_dir=jaffle_raw)
    day = seeded.last_day
    before = snapshot(root)

    result = deliver_late(lake, day)
    assert result.files == (f"orders/{day}/orders_late_1.csv", f"items/{day}/items_late_1.csv")
    after = snapshot(root)
    assert after.keys() - before.keys() == set(result.files)
    assert {k: v for k, v in after.items() if k in before} == before
    header, late = read(root / "landing" / result.files[0])
    items_header, late_items = read(root / "landing" / result.files[1])
    assert header == list(CONTRACTS["orders"].landed_columns)
    assert items_header == list(CONTRACTS["items"].landed_columns)
    assert len(late) == result.orders and len(late_items) == result.items

    event_dates = {r["ordered_at"][:10] for r in late}
    assert len(event_dates) >= 3
    assert event_dates <= set(order_dates(root)) and max(event_dates) < day.isoformat()
    customers = {
        r["id"] for p in (root / "landing" / "customers").rglob("*.csv") for r in read(p)[1]
    }
    stores = {r["id"] for p in (root / "landing" / "stores").rglob("*.csv") for r in read(p)[1]}
    skus = {r["sku"] for p in (root / "landing" / "products").rglob("*.csv") for r in read(p)[1]}
    landed_ids = {
        r["id"] for p in (root / "landing" / "orders").rglob("orders.csv") for r in read(p)[1]
    }
    for row in late:
        assert row["customer"] in customers and row["store_id"] in stores
        assert row["id"] not in landed_ids
        assert int(row["order_total"]) == int(row["subtotal"]) + int(row["tax_paid"])
    assert {r["order_id"] for r in late_items} == {r["id"] for r in late}
    assert {r["sku"] for r in late_items} <= skus

    second = deliver_late(lake, day.isoformat())  # a new file, the first one untouched
    assert second.files[0].endswith("orders_late_2.csv")
    assert {k: v for k, v in snapshot(root).items() if k in after} == after

    other = Lake(str(tmp_path / "b"))
    seed(other, days=6, raw_dir=jaffle_raw)
    deliver_late(other, day)
    for name in result.files:
        assert (tmp_path / "b" / "landing" / name).read_bytes() == after[name][0]


def test_undelivered_dates_are_errors(tmp_path: Path, jaffle_raw: Path) -> None:
    lake = Lake(str(tmp_path))
    seeded = seed(lake, days=3, raw_dir=jaffle_raw)
    later = (seeded.last_day + timedelta(days=1)).isoformat()
    with pytest.raises(LakehouseError, match=f"`{later}` has no delivered `orders.csv`"):
        redeliver(lake, later)
    with pytest.raises(LakehouseError, match=f"`{later}` has no orders delivery"):
        deliver_late(lake, later)
    with pytest.raises(LakehouseError, match="at least 3 delivered days before"):
        deliver_late(lake, seeded.last_day)
    with pytest.raises(LakehouseError, match="`2018-13-01` is not a date"):
        redeliver(lake, "2018-13-01")
    with pytest.raises(LakehouseError, match="has no delivered"):
        redeliver(Lake(str(tmp_path / "empty")), date(2018, 9, 1))


def test_cli_redeliver_and_late(
    tmp_path: Path, jaffle_raw: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path))
    seeded = seed(Lake(str(tmp_path)), days=5, raw_dir=jaffle_raw)
    day = seeded.last_day.isoformat()
    assert main(["--root", str(tmp_path), "seed", "--redeliver", day]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Redelivered orders/{day}/orders.csv and items/{day}/items.csv: ")
    assert "corrected" in out and "withdrawn" in out and "added" in out and "1 moved to" in out
    assert main(["--root", str(tmp_path), "seed", "--late", day]) == 0
    assert f"orders/{day}/orders_late_1.csv" in capsys.readouterr().out
    assert main(["--root", str(tmp_path), "seed", "--late", "2018-01-01"]) == 2
    assert "error: landing date `2018-01-01`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "seed", "--late", day, "--days", "3"])


def test_redeliver_keeps_a_spoiled_days_defects(tmp_path: Path, jaffle_raw: Path) -> None:
    lake = Lake(str(tmp_path))
    # defects are drawn per source and calendar day: a fixed start makes day 3 one with a short line
    seeded = seed(lake, days=4, raw_dir=jaffle_raw, defects=0.1, start=date(2018, 9, 1))
    day = seeded.first_day + timedelta(days=2)
    path = tmp_path / "landing" / "orders" / day.isoformat() / "orders.csv"
    old_lines = path.read_text().splitlines()
    result = redeliver(lake, day)
    new_lines = path.read_text().splitlines()
    touched = {*result.changed, *result.removed, *result.added, result.moved}
    assert new_lines[0] == old_lines[0]
    # every other line (short lines, bad values, null keys, duplicates) is delivered as it was
    kept = [line for line in old_lines[1:] if line.split(",")[0] not in touched]
    assert [line for line in new_lines[1:] if line.split(",")[0] not in touched] == kept
    assert any(len(line.split(",")) < len(old_lines[0].split(",")) for line in kept)


def test_a_fresh_feed_ends_yesterday_with_its_timestamps_moved(
    tmp_path: Path, jaffle_raw: Path
) -> None:
    lake = Lake(str(tmp_path))
    seeded = seed(lake, days=5, raw_dir=jaffle_raw)
    today = datetime.now(UTC).date()
    assert seeded.last_day == today - timedelta(days=1)
    assert seeded.first_day == today - timedelta(days=5)
    # each day's events carry that day's timestamps; the first store opened on day 1, as in jafgen
    for source, column in (("orders", "ordered_at"), ("tweets", "tweeted_at")):
        for folder in (tmp_path / "landing" / source).iterdir():
            rows = read(folder / f"{source}.csv")[1]
            assert rows and {r[column][:10] for r in rows} == {folder.name}, (source, folder)
    stores = read(tmp_path / "landing" / "stores" / seeded.first_day.isoformat() / "stores.csv")[1]
    assert min(r["opened_at"] for r in stores) == f"{seeded.first_day}T00:00:00"
    # the same days from jafgen's own start hold the same rows, dates aside
    raw = read(jaffle_raw / "raw_orders.csv")[1]
    first_raw = [r for r in raw if r["ordered_at"][:10] == "2018-09-01"]
    day_one = read(tmp_path / "landing" / "orders" / seeded.first_day.isoformat() / "orders.csv")[1]
    assert [{**r, "ordered_at": r["ordered_at"][10:]} for r in day_one] == [
        {**r, "ordered_at": r["ordered_at"][10:]} for r in first_raw
    ]

    # more days continue the same feed; a --start that disagrees with it is refused
    more = seed(lake, days=6, raw_dir=jaffle_raw)
    assert more.delivered == (today,)
    with pytest.raises(LakehouseError, match=f"feed starts on {seeded.first_day}"):
        seed(lake, days=6, raw_dir=jaffle_raw, start=date(2018, 9, 1))


def test_cli_start(tmp_path: Path, jaffle_raw: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "seed", "--start", "2018-02-30"])
    assert "`2018-02-30` is not a date" in capsys.readouterr().err


def test_partitions_start_at_the_earliest_landed_date(tmp_path: Path, monkeypatch) -> None:
    from lakehouse.defs.partitions import START_DATE_ENV, start_date

    for day in ("2026-03-04", "2026-03-02", "not-a-date"):
        (tmp_path / "landing" / "orders" / day).mkdir(parents=True)
    monkeypatch.setenv("LAKEHOUSE_ROOT", str(tmp_path))
    monkeypatch.delenv(START_DATE_ENV)
    assert start_date() == "2026-03-02"  # the demo contracts declare no `since:`
    monkeypatch.setenv(START_DATE_ENV, "2026-01-01")
    assert start_date() == "2026-01-01"
