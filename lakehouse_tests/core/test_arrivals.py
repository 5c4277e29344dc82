"""The arrivals ledger: what is new, changed, deferred, and how arrivals group into loads."""

from __future__ import annotations

from lakehouse.core.arrivals import Ledger, group_loads, scan
from lakehouse.core.landing import LandingFile


def file(source: str, day: str, name: str = "a.csv", size: int = 10, version: str = "v1"):
    return LandingFile(source, day, name, f"/x/{source}/{day}/{name}", size, version)


def test_ledger_round_trips_through_a_cursor() -> None:
    ledger = Ledger({"orders/2024-01-01/a.csv": "10:v1"})
    assert Ledger.decode(ledger.encode()) == ledger
    assert Ledger.decode(None) == Ledger()


def test_limit_defers_the_rest_and_keeps_them_owed() -> None:
    listing = [file("orders", f"2024-01-0{d}") for d in range(1, 6)]
    first = scan(listing, Ledger(), limit=2)
    assert [f.landing_date for f in first.arrivals] == ["2024-01-01", "2024-01-02"]
    assert first.deferred == 3
    second = scan(listing, first.ledger, limit=2)
    assert [f.landing_date for f in second.arrivals] == ["2024-01-03", "2024-01-04"]
    third = scan(listing, second.ledger, limit=2)
    assert [f.landing_date for f in third.arrivals] == ["2024-01-05"]
    assert scan(listing, third.ledger).arrivals == ()


def test_same_content_is_asked_only_for_a_moved_version_of_the_same_size() -> None:
    asked = []
    ledger = Ledger({"orders/2024-01-01/a.csv": "10:v1", "orders/2024-01-02/a.csv": "10:v1"})
    listing = [file("orders", "2024-01-01", version="v2"), file("orders", "2024-01-02", size=11)]
    result = scan(listing, ledger, same_content=lambda f: asked.append(f.landing_date) or True)
    assert asked == ["2024-01-01"]
    assert [f.landing_date for f in result.arrivals] == ["2024-01-02"]
    assert result.ledger.files == {
        "orders/2024-01-01/a.csv": "10:v2",
        "orders/2024-01-02/a.csv": "11:v1",
    }


def test_loads_split_on_gaps_and_keys_follow_identity() -> None:
    files = [
        file("orders", "2024-01-01"),
        file("items", "2024-01-02"),
        file("orders", "2024-01-04"),
    ]
    loads = group_loads(files)
    assert [(lo.start, lo.end, lo.sources) for lo in loads] == [
        ("2024-01-01", "2024-01-02", ("items", "orders")),
        ("2024-01-04", "2024-01-04", ("orders",)),
    ]
    assert group_loads(files)[0].run_key == loads[0].run_key
    changed = [file("orders", "2024-01-01", version="v2"), files[1]]
    assert group_loads(changed)[0].run_key != loads[0].run_key


def test_a_file_of_an_invalid_date_is_left_out_of_the_loads() -> None:
    files = [
        file("orders", "2024-02-29"),
        file("orders", "2024-02-30"),
        file("items", "2024-03-01"),
    ]
    assert [(lo.start, lo.end, len(lo.files)) for lo in group_loads(files)] == [
        ("2024-02-29", "2024-03-01", 2)
    ]
