"""Items are dated by their order: each publish records its item changes at their orders' dates.

A sequence of item deliveries over orders of two days, each checked against what the landed
rows say: which dates the silver commit says it changed (and how), and which dates a consumer
following silver then has pending. Then the race a lookup cannot see: an order moved after the
items' publish looked the dates up, taken in by a consumer before the items' commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

from lakehouse.core import delta, follow, system
from lakehouse.core.contract import ContractError, load_contracts, parse_contract
from lakehouse.core.dated import DATED_AGAINST_KEY
from lakehouse.core.lake import Lake
from lakehouse.core.publish import CHANGES_KEY, changes_since
from lakehouse_tests.small_lake import (
    HEADER,
    deliver,
    deliver_reference_data,
    edit_contract,
    order,
    text,
)
from lakehouse_tests.small_lake import load as load_layers

D1, D2, D3 = "2024-05-01", "2024-05-02", "2024-05-03"
ITEMS = "id,order_id,sku"
CONSUMER = "test_daily"


def load(lake: Lake, sources: tuple[str, ...], day: str) -> None:
    load_layers(lake, sources, [day])


def deliver_items(lake: Lake, day: str, rows: list[str]) -> None:
    deliver(Path(lake.root), "items", day, "items.csv", text([ITEMS, *rows]))


def last_commit(lake: Lake, table: str) -> dict:
    commits = delta.open_table(lake, lake.table_uri("silver", table)).history(1)
    return commits[0]


def changed(lake: Lake) -> dict[str, list[int]]:
    """The dates (and counts) the last items commit recorded."""
    return json.loads(last_commit(lake, "items")[CHANGES_KEY])


def silver_items(lake: Lake) -> dict[str, str]:
    frame = pl.read_delta(lake.table_uri("silver", "items"))
    return dict(frame.select("id", "order_id").iter_rows())


def take_in(lake: Lake) -> follow.Pending:
    todo = follow.pending(lake, CONSUMER, ["orders", "items"])
    follow.taken_in(lake, CONSUMER, todo, run_id="test")
    return todo


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """Orders a1, a2 of D1 and b1 of D2, each with an item; a consumer has taken them in."""
    deliver_reference_data(tmp_path, D1)
    lines = [HEADER, order("a1", D1), order("a2", D1), order("b1", D2)]
    deliver(tmp_path, "orders", D1, "orders.csv", text(lines))
    lake = Lake(str(tmp_path))
    load(lake, ("stores", "customers", "products", "orders"), D1)
    deliver_items(lake, D1, ["i1,a1,JAF-001", "i2,a2,JAF-001", "i3,b1,BEV-001"])
    load(lake, ("items",), D1)
    assert silver_items(lake) == {"i1": "a1", "i2": "a2", "i3": "b1"}
    assert changed(lake) == {D1: [2, 0, 0], D2: [1, 0, 0]}
    take_in(lake)
    return lake


def test_item_changes_are_recorded_at_their_orders_dates(lake: Lake) -> None:
    # A later delivery (landing date D3): i4 arrives late for a1 (D1); i1 changes product in
    # place; i3 moves from b1 (D2) to a2 (D1); i2 moves to a1, another order of the same day.
    deliver_items(lake, D3, ["i4,a1,BEV-001", "i1,a1,BEV-001", "i3,a2,BEV-001", "i2,a1,JAF-001"])
    load(lake, ("items",), D3)
    assert silver_items(lake) == {"i1": "a1", "i2": "a1", "i3": "a2", "i4": "a1"}
    # D1: i4 and i3 inserted, i1 and i2 updated; D2: i3 deleted
    assert changed(lake) == {D1: [2, 2, 0], D2: [0, 0, 1]}
    todo = take_in(lake)
    assert todo.dates == {D1, D2} and not todo.whole

    # The D3 delivery is corrected: i4 is gone, i3 is back on b1 (its D1 row stands again).
    deliver_items(lake, D3, ["i1,a1,BEV-001", "i2,a1,JAF-001"])
    load(lake, ("items",), D3)
    assert silver_items(lake) == {"i1": "a1", "i2": "a1", "i3": "b1"}
    # D1: i4 and i3's row there deleted, i1 and i2 updated (their lineage: another row of the
    # file); D2: i3 inserted
    assert changed(lake) == {D1: [0, 2, 2], D2: [1, 0, 0]}
    assert take_in(lake).dates == {D1, D2}

    # An order of D1 moves to D2: its publish records both dates, the items none.
    deliver(Path(lake.root), "orders", D3, "orders.csv", text([HEADER, order("a1", D2)]))
    load(lake, ("orders", "items"), D3)
    assert take_in(lake).dates == {D1, D2}
    assert take_in(lake).empty


def test_the_commit_says_which_order_version_dated_it(lake: Lake) -> None:
    orders_version = delta.table_version(lake, lake.table_uri("silver", "orders"))
    deliver_items(lake, D3, ["i9,b1,JAF-001"])
    load(lake, ("items",), D3)
    assert changed(lake) == {D2: [1, 0, 0]}
    assert json.loads(last_commit(lake, "items")[DATED_AGAINST_KEY]) == {"orders": orders_version}


def test_an_order_change_a_consumer_took_in_before_the_items_commit_is_rebuilt(
    lake: Lake,
) -> None:
    # The race, step by step: an items publish looks its dates up in orders at version V;
    # order b1 then moves to D3 (V + 1) and the consumer builds D2 and D3 from it, before the
    # items commit lands: that build read the items without it.
    against = delta.table_version(lake, lake.table_uri("silver", "orders"))
    deliver(Path(lake.root), "orders", D3, "orders.csv", text([HEADER, order("b1", D3)]))
    load(lake, ("orders",), D3)
    assert take_in(lake).dates == {D2, D3}
    # The items commit, as a publish that read orders at V writes it: i5 on b1, dated D2.
    items_uri = lake.table_uri("silver", "items")
    row = pl.read_delta(items_uri).filter(pl.col("id") == "i3")
    write_deltalake(
        delta.open_table(lake, items_uri),
        row.with_columns(pl.lit("i5").alias("id")).to_arrow(),
        mode="append",
        commit_properties=delta.commit_properties(
            step="silver publish",
            run_id="test",
            **{
                CHANGES_KEY: json.dumps({D2: [1, 0, 0]}),
                DATED_AGAINST_KEY: json.dumps({"orders": against}),
            },
        ),
    )
    assert changes_since(lake, "items", against).dated_against == {"orders": against}
    # D3 holds b1 now: the consumer rebuilds it, with i5 this time.
    todo = take_in(lake)
    assert todo.dates == {D2, D3} and not todo.whole
    assert system.watermarks(lake, CONSUMER)["items"] == delta.table_version(lake, items_uri)
    assert take_in(lake).empty


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"dated_by": "order_id", "event_time": "at"}, "dated by it"),
        ({"dated_by": "note"}, "with `references`"),
    ],
)
def test_dated_by_names_a_reference(extra: dict, problem: str) -> None:
    raw = {
        "name": "lines",
        "description": "d",
        "owner": "team:x",
        "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "string", "nullable": False},
            {"name": "order_id", "type": "string", "nullable": False, "references": "orders.id"},
            {"name": "note", "type": "string"},
            {"name": "at", "type": "datetime", "nullable": False},
            {"name": "sku", "type": "string", "nullable": False},
        ],
        **extra,
    }
    with pytest.raises(ContractError, match=problem):
        parse_contract(raw)


def test_dated_by_needs_a_referenced_table_with_event_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_contract(tmp_path, monkeypatch, "items", "dated_by: order_id", "dated_by: sku")
    with pytest.raises(ContractError, match="`products` to have an `event_time`"):
        load_contracts()
