"""Every kind of bad input lands somewhere known: silver, quarantine (with its reason), a counted
duplicate, held with a blocked landing date, or a rejected file; never silently, never in gold.

One small lake is built once: each case delivers its own landing date of `orders` (20 good rows
plus the defect), so a case that blocks its date holds back nothing else. Bronze and silver run
through the core directly; gold is built once through Dagster and dbt.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from lakehouse.core import system
from lakehouse.core.bronze import load_bronze
from lakehouse.core.checks import (
    CHECK_QUARANTINE_RATIO,
    CHECK_SCHEMA_DRIFT,
    CHECK_VOLUME,
)
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.pii import pseudonym
from lakehouse.core.silver import load_silver
from lakehouse_tests.conftest import resources_for
from lakehouse_tests.small_lake import (
    GOOD,
    HEADER,
    deliver,
    deliver_reference_data,
    order,
    orders_file,
    text,
)

DAY0 = date(2024, 3, 1)
RUN = "bad-inputs-run"


@dataclass
class Case:
    """One kind of bad input: the files it delivers and where each of its rows must end."""

    kind: str
    source: str
    files: Callable[[str], dict[str, bytes]]
    """Given the landing date, the files to deliver (name -> bytes)."""
    expect: dict[tuple[str, int], tuple[str, str]]
    """(file name, row number) -> (destination, reason fragment) for the defect rows."""
    good_dest: str = "silver"
    """Where the 20 good rows of the case's main file end (`silver` or `held`)."""
    blocked_by: str | None = None
    good: int = GOOD
    """How many good rows the case's main file has."""


def main(day: str, *bad: str, **kw: str) -> dict[str, bytes]:
    return {"orders.csv": orders_file(day, *bad, **kw)}


Q = "quarantine"
ROW = GOOD + 1  # the row number of the first defect line in a case file
CASES = [
    Case(
        "int-not-castable",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, subtotal="abc")),
        {("orders.csv", ROW): (Q, "subtotal:castable")},
    ),
    Case(
        "negative-amount",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, order_total="-5")),
        {("orders.csv", ROW): (Q, "order_total:greater_than_or_equal_to")},
    ),
    Case(
        "null-primary-key",
        "orders",
        lambda d: main(d, order("", d)),
        {("orders.csv", ROW): (Q, "id:not_nullable")},
    ),
    Case(
        "bad-datetime",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, ordered_at="yesterday")),
        {("orders.csv", ROW): (Q, "ordered_at:castable")},
    ),
    Case(
        "unknown-customer",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, customer="c404")),
        {("orders.csv", ROW): (Q, "customer_id:references")},
    ),
    Case(
        "unknown-store",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, store_id="s404")),
        {("orders.csv", ROW): (Q, "store_id:references")},
    ),
    Case(
        "too-few-fields",
        "orders",
        lambda d: main(d, f"{d}-x,c1,{d}T12:00:00"),
        {("orders.csv", ROW): (Q, "parseable")},
    ),
    Case(
        "too-many-fields",
        "orders",
        lambda d: main(d, order(f"{d}-x", d) + ",surplus"),
        {("orders.csv", ROW): (Q, "parseable")},
    ),
    Case(
        "unclosed-quote",
        "orders",
        lambda d: main(d, order(f'"{d}-x', d)),
        {("orders.csv", ROW): (Q, "parseable")},
    ),
    Case(
        "invalid-utf8",
        "orders",
        lambda d: {
            "orders.csv": orders_file(d)
            + order(f"{d}-x", d).encode().replace(b"c1", b"c\xff")
            + b"\n"
        },
        {("orders.csv", ROW): (Q, "parseable")},
    ),
    Case(
        "duplicate-row",
        "orders",
        lambda d: main(d, order(f"{d}-0", d)),
        {("orders.csv", 1): ("duplicate", "")},
    ),
    Case(
        "padded-values",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, subtotal=" 100 ")),
        {("orders.csv", ROW): ("silver", "")},
    ),
    Case(
        "extra-column-rescued",
        "orders",
        lambda d: {
            "orders.csv": orders_file(d, order(f"{d}-x", d) + ",gift", header=HEADER + ",note")
            .replace(b"106\n", b"106,\n")
            .replace(b"gift,", b"gift")
        },
        {("orders.csv", ROW): ("silver", "")},
    ),
    Case(
        "missing-required-column",
        "orders",
        lambda d: {
            "orders.csv": (
                "id,customer,ordered_at,store_id,subtotal,order_total\n"
                f"{d}-m,c1,{d}T12:00:00,s1,100,106\n"
            ).encode()
        },
        {("orders.csv", 1): (Q, "tax_paid:not_nullable")},
        good_dest="none",
        blocked_by=CHECK_SCHEMA_DRIFT,
    ),
    Case(
        "over-quarantine-threshold",
        "orders",
        lambda d: main(d, *(order(f"{d}-x{i}", d, subtotal="-1") for i in range(3))),
        {("orders.csv", ROW + i): (Q, "subtotal:greater_than_or_equal_to") for i in range(3)},
        good_dest="held",
        blocked_by=CHECK_QUARANTINE_RATIO,
    ),
    Case(
        "volume-spike",
        "orders",
        lambda d: {"orders.csv": orders_file(d, good=300)},
        {},
        good_dest="held",
        blocked_by=CHECK_VOLUME,
    ),
    Case(
        "binary-junk-file",
        "orders",
        lambda d: main(d) | {"junk.csv": b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256))},
        {("junk.csv", 0): ("rejected", "binary content")},
    ),
    Case(
        "broken-gzip",
        "orders",
        lambda d: main(d) | {"more.csv.gz": gzip.compress(orders_file(d + "z") * 50)[:300]},
        {("more.csv.gz", 0): ("rejected", "broken gzip")},
    ),
    Case(
        "wrong-format",
        "orders",
        lambda d: main(d) | {"dump.csv": b'[{"id": "1", "total": 3}]\n'},
        {("dump.csv", 0): ("rejected", "none of the contract's columns")},
    ),
    Case(
        "empty-file",
        "orders",
        lambda d: main(d) | {"empty.csv": b""},
        {("empty.csv", 0): ("rejected", "empty file")},
    ),
    Case(
        # one short and one long line: the byte counts balance, polars fails on the file
        "compensating-bad-lines",
        "orders",
        lambda d: {
            "orders.csv": orders_file(
                d, f"{d}-s,c1,{d}T12:00:00,s1,100,6", order(f"{d}-l", d) + ",7", good=3 * GOOD
            )
        },
        {
            ("orders.csv", 3 * GOOD + 1): (Q, "parseable"),
            ("orders.csv", 3 * GOOD + 2): (Q, "parseable"),
        },
        good=3 * GOOD,
    ),
    Case(
        "million-character-value",
        "orders",
        lambda d: main(d, order(f"{d}-x", d, subtotal="a" * 1_000_000)),
        {("orders.csv", ROW): (Q, "subtotal:castable")},
    ),
    Case(
        "blank-lines-gzip",
        "orders",
        lambda d: {"orders.csv.gz": gzip.compress(orders_file(d).replace(b"\n", b"\n\n", 5))},
        {},
    ),
]
# Items and products cases ride on day 0, whose orders are all good.
ITEM_HEADER = "id,order_id,sku"
ITEM_CASES = [
    Case(
        "sku-pattern", "items", lambda d: {}, {("items.csv", 2 * GOOD + 1): (Q, "sku:str_matches")}
    ),
    Case(
        "unknown-order",
        "items",
        lambda d: {},
        {("items.csv", 2 * GOOD + 2): (Q, "order_id:references")},
    ),
    Case(
        "not-in-allowed-values",
        "products",
        lambda d: {},
        {("products2.csv", 2): (Q, "product_type:isin")},
        good_dest="held",
        blocked_by=CHECK_QUARANTINE_RATIO,
    ),
]


def case_day(i: int) -> str:
    return (DAY0 + timedelta(days=i + 1)).isoformat()


@dataclass
class Built:
    lake: Lake
    silver: dict[str, pl.DataFrame]
    quarantine: dict[str, pl.DataFrame]
    rejected: pl.DataFrame
    dq: pl.DataFrame
    gold_orders: pl.DataFrame


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("bad-inputs")
    d0 = DAY0.isoformat()
    deliver_reference_data(root, d0)
    deliver(
        root,
        "products",
        case_day(len(CASES)),
        "products2.csv",
        text(
            [
                "sku,name,type,price,description",
                "JAF-002,doctor stew,jaffle,1100,",
                "MER-001,tote bag,merch,900,",
            ]
        ),
    )
    deliver(root, "orders", d0, "orders.csv", orders_file(d0))
    items = [
        ITEM_HEADER,
        *(f"i{i},{d0}-{i % GOOD},JAF-001" for i in range(2 * GOOD)),
        f"ix,{d0}-0,jaf1",
        "iy,o404,BEV-001",
    ]
    deliver(root, "items", d0, "items.csv", text(items))
    for i, case in enumerate(CASES):
        for name, data in case.files(case_day(i)).items():
            deliver(root, case.source, case_day(i), name, data)
    deliver(root, "orders", "2024-02-30", "orders.csv", orders_file("2024-02-30"))
    lake = Lake(str(root))
    dates = [d0] + [case_day(i) for i in range(len(CASES) + 1)]
    for source in ("stores", "customers", "products", "orders", "items"):
        contract = next(c for c in load_contracts() if c.name == source)
        load_bronze(lake, contract, dates, run_id=RUN)
        load_silver(lake, contract, dates, run_id=RUN)

    from lakehouse.definitions import defs
    from lakehouse.defs.gold import pending_gold_runs

    # gold as the platform runs it: whole marts, daily facts, metrics
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    instance = dg.DagsterInstance.ephemeral()
    runs = pending_gold_runs(lake)
    assert runs
    for run in runs:
        result = dg.materialize(
            assets,
            selection=run.keys,
            resources=resources_for(lake),
            raise_on_error=False,
            instance=instance,
            tags=run.tags,
        )
        assert result.success
    read = lambda layer, t: pl.read_delta(lake.table_uri(layer, t))  # noqa: E731
    sources = ("orders", "items", "products")
    return Built(
        lake,
        {s: read("silver", s) for s in sources},
        {s: read("quarantine", s) for s in sources},
        system.read_table(lake, "rejected_files"),
        system.read_table(lake, "dq_results"),
        read("gold", "orders"),
    )


def file_path(case: Case, i: int, name: str) -> str:
    day = DAY0.isoformat() if case in ITEM_CASES else case_day(i)
    if case.kind == "not-in-allowed-values":
        day = case_day(len(CASES))
    return f"{case.source}/{day}/{name}"


ALL = [(i, c) for i, c in enumerate(CASES)] + [(i, c) for i, c in enumerate(ITEM_CASES)]


def test_there_are_at_least_fifteen_kinds() -> None:
    assert len({c.kind for _, c in ALL}) >= 15


@pytest.mark.parametrize(("i", "case"), ALL, ids=[c.kind for _, c in ALL])
def test_every_row_ends_where_expected(built: Built, i: int, case: Case) -> None:
    silver = built.silver[case.source]
    quarantine = built.quarantine[case.source]
    for (name, row), (dest, reason) in case.expect.items():
        path = file_path(case, i, name)
        in_silver = silver.filter(pl.col("_source_file") == path, pl.col("_row_number") == row)
        in_q = quarantine.filter(pl.col("_source_file") == path, pl.col("_row_number") == row)
        if dest == "silver":
            assert (in_silver.height, in_q.height) == (1, 0)
        elif dest == Q:
            assert (in_silver.height, in_q.height) == (0, 1)
            rules = in_q.get_column("_rules").to_list()[0]
            assert any(reason in r for r in rules), rules
            assert in_q.get_column("_errors").to_list()[0], "every quarantined row has a message"
            assert in_q.get_column("_run_id").to_list() == [RUN]
            if reason == "parseable":
                assert in_q.get_column("_raw_line").to_list()[0]
        elif dest == "duplicate":
            assert (in_silver.height, in_q.height) == (0, 0)
            assert silver.filter(pl.col("_source_file") == path).height == GOOD
        else:
            rejected = built.rejected.filter(pl.col("path") == path)
            assert rejected.height == 1 and reason in rejected.get_column("reason")[0]
            assert rejected.get_column("sha256")[0]
            # and the date's `files_rejected` check fails, naming the file
            check = built.dq.filter(
                pl.col("source") == case.source,
                pl.col("partition") == path.split("/")[1],
                pl.col("check") == "files_rejected",
            )
            assert check.height == 1 and not check.get_column("passed")[0]
            assert path in check.get_column("detail")[0]
    # the case's good rows
    if case.source == "orders" and case.good_dest != "none":
        main = "orders.csv.gz" if case.kind == "blank-lines-gzip" else "orders.csv"
        main_path = file_path(case, i, main)
        good = silver.filter(pl.col("_source_file") == main_path)
        held = case.good_dest == "held"
        expected = 0 if held else case.good + sum(d == "silver" for d, _ in case.expect.values())
        assert good.height == expected
    if case.blocked_by:
        partition = file_path(case, i, "x").split("/")[1]
        check = built.dq.filter(
            pl.col("source") == case.source,
            pl.col("partition") == partition,
            pl.col("check") == case.blocked_by,
        )
        assert check.get_column("passed").to_list() == [False]
        assert check.get_column("blocking").to_list() == [True]


def test_rescued_column_is_kept_as_json(built: Built) -> None:
    i = next(i for i, c in enumerate(CASES) if c.kind == "extra-column-rescued")
    row = built.silver["orders"].filter(pl.col("id") == f"{case_day(i)}-x")
    # orders hold a subject's identifier (PII): unclassified values are pseudonymised
    assert row.get_column("_rescued").to_list() == [json.dumps({"note": pseudonym("gift")})]


def test_missing_column_message_names_file_and_column(built: Built) -> None:
    i = next(i for i, c in enumerate(CASES) if c.kind == "missing-required-column")
    detail = built.dq.filter(
        pl.col("source") == "orders",
        pl.col("partition") == case_day(i),
        pl.col("check") == CHECK_SCHEMA_DRIFT,
    ).get_column("detail")[0]
    assert f"orders/{case_day(i)}/orders.csv" in detail and "`tax_paid`" in detail


def test_reconciliation_passes_on_every_partition(built: Built) -> None:
    rec = built.dq.filter(pl.col("check") == "reconciliation")
    assert rec.height > len(CASES)
    assert rec.filter(~pl.col("passed")).get_column("detail").to_list() == []


def test_no_bad_row_is_visible_in_silver_or_gold(built: Built) -> None:
    q_ids = set(built.quarantine["orders"].get_column("id").drop_nulls().to_list())
    silver_ids = set(built.silver["orders"].get_column("id").to_list())
    gold_ids = set(built.gold_orders.get_column("order_id").to_list())
    assert q_ids and not q_ids & silver_ids
    assert gold_ids == silver_ids
    held = {
        f"{case_day(i)}-{n}"
        for i, c in enumerate(CASES)
        if c.good_dest == "held"
        for n in range(GOOD)
    }
    assert not held & gold_ids
    with duckdb.connect(built.lake.warehouse_path, read_only=True) as con:
        warehouse = {r[0] for r in con.sql("select order_id from gold.orders").fetchall()}
    assert warehouse == silver_ids
    assert set(built.silver["items"].get_column("id").to_list()) == {
        f"i{n}" for n in range(2 * GOOD)
    }
    assert "MER-001" not in built.silver["products"].get_column("sku").to_list()


def test_a_long_value_is_cut_in_its_message(built: Built) -> None:
    i = next(i for i, c in enumerate(CASES) if c.kind == "million-character-value")
    row = built.quarantine["orders"].filter(pl.col("id") == f"{case_day(i)}-x")
    assert row.get_column("subtotal").str.len_chars().to_list() == [1_000_000]  # kept as landed
    (message,) = row.get_column("_errors").to_list()[0]
    assert message.startswith("column `subtotal`: `" + "a" * 200 + "…` (1000000 characters)")
    assert len(message) < 400


def test_landed_rows_count_what_bronze_read_and_nothing_crashes(built: Built) -> None:
    from lakehouse.cli import landed_rows, summary_table
    from lakehouse.core import landing
    from lakehouse.defs.runs import landed_dates

    lake = built.lake
    bronze = pl.read_delta(lake.table_uri("bronze", "orders"))
    assert landed_rows(lake, "orders") == bronze.height  # .gz, blank lines, junk, empty: as bronze
    table = summary_table(lake)  # an empty, a binary and a broken gzip file landed: no crash
    assert f"{'orders':<12}{bronze.height:>10}{bronze.height:>10}" in table
    # and it lists every file bronze could not read, with its reason
    rejected = system.read_table(lake, "rejected_files").filter(
        pl.col("path").str.count_matches("/") == 2
    )
    assert rejected.height >= 2
    for path, reason in rejected.select("path", "reason").iter_rows():
        assert f"  {path}: {reason}" in table
    # the misnamed folder: not a landing date, recorded once, whatever lists it how often
    assert "2024-02-30" not in landed_dates(lake)
    landing._reported.clear()
    landed_dates(lake)
    folder = system.read_table(lake, "rejected_files").filter(pl.col("path") == "orders/2024-02-30")
    assert folder.height == 1
    assert "not a valid landing date" in folder.get_column("reason")[0]
    assert bronze.filter(pl.col("_landing_date") == "2024-02-30").height == 0


def test_landed_rows_reads_files_bronze_has_not_loaded(tmp_path) -> None:
    from lakehouse.cli import landed_rows

    day = "2024-05-01"
    deliver(tmp_path, "orders", day, "a.csv.gz", gzip.compress(orders_file(day)))
    deliver(tmp_path, "orders", day, "b.csv", orders_file(day).replace(b"\n", b"\n\n", 3))
    deliver(tmp_path, "orders", day, "empty.csv", b"")
    deliver(tmp_path, "orders", day, "junk.csv", b"\x00\x01\x02" * 10)
    assert landed_rows(Lake(str(tmp_path)), "orders") == 2 * GOOD
