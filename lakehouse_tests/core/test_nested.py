"""Nested NDJSON: `path:` columns flattened, an `explode:` array as a child source; every record
and every array element traced to silver or quarantine, checked against the files themselves."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import polars as pl

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "sources" / "nested"
DAY = "2024-05-01"


def order(oid: str, customer: object = None, lines: object = None, **payload: object) -> str:
    body: dict = dict(payload)
    if customer is not None:
        body["customer"] = {"id": customer, "name": "n"}
    if lines is not None:
        body["lines"] = lines
    return json.dumps({"order_id": oid, "payload": body})


def line(sku: str | None, quantity: object, price: object = "1.50") -> dict:
    out: dict = {"quantity": quantity, "price": {"amount": price, "currency": "EUR"}}
    if sku is not None:
        out["sku"] = sku
    return out


CLEAN = [  # read by polars' NDJSON scan
    order("o1", 7, [line("a", 2), line("b", 1, "9.99")], channel="web"),
    order("o2", "x", [], channel="web"),  # wrong type at the path: quarantined
    order("o3", None, [line("c", "many"), line("d", 3)], channel="app"),  # missing path
    order("o4", 9, [line(None, 1), line("e", 0)], channel="fax"),  # bad channel; bad lines
]
BROKEN = [  # one line is not JSON: the file is read record by record
    order("o5", 11, [line("f", 4)], channel="app"),
    '{"order_id": "o6", "payload": {',
    order("o7", 12, None, channel="web"),  # no lines at all: no child rows
]


def expected(records: list[str]) -> tuple[dict, dict]:
    """Per (row number) of a file: the parent's outcome; per (row, index): the element's."""
    parents, children = {}, {}
    for row, text in enumerate(records, start=1):
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            parents[row] = "quarantined"
            continue
        payload = record["payload"]
        customer = payload.get("customer", {}).get("id")
        ok = isinstance(customer, int) and payload.get("channel") in ("web", "app")
        parents[row] = (record["order_id"], customer) if ok else "quarantined"
        for i, element in enumerate(payload.get("lines") or []):
            sku, qty = element.get("sku"), element.get("quantity")
            good = sku is not None and isinstance(qty, int) and qty >= 1
            price = Decimal(element["price"]["amount"])
            children[row, i] = (record["order_id"], sku, qty, price) if good else "quarantined"
    return parents, children


def test_nested_ndjson_flattened_and_exploded(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    folder = Path(lake.landing_uri("web_orders")) / DAY
    folder.mkdir(parents=True)
    (folder / "clean.ndjson").write_text("\n".join(CLEAN) + "\n")
    (folder / "broken.ndjson").write_text("\n".join(BROKEN) + "\n")
    contracts = {c.name: c for c in load_contracts(CONTRACTS)}
    assert set(contracts) == {"web_orders", "web_orders__lines"}
    for contract in contracts.values():
        load_bronze(lake, contract, [DAY], run_id="t")
        load_silver(lake, contract, [DAY], run_id="t")

    def table(layer: str, name: str) -> pl.DataFrame:
        return pl.read_delta(lake.table_uri(layer, name))

    files = {"clean.ndjson": CLEAN, "broken.ndjson": BROKEN}
    silver, held = table("silver", "web_orders"), table("quarantine", "web_orders")
    child, child_held = (
        table("silver", "web_orders__lines"),
        table("quarantine", "web_orders__lines"),
    )
    assert "payload" not in silver.columns  # the record field serves paths only
    for name, records in files.items():
        source_file = f"web_orders/{DAY}/{name}"
        parents, children = expected(records)
        got = {
            r["_row_number"]: (r["order_id"], r["customer_id"])
            for r in silver.filter(pl.col("_source_file") == source_file).to_dicts()
        }
        got |= {
            r: "quarantined"
            for r in held.filter(pl.col("_source_file") == source_file)["_row_number"]
        }
        assert got == parents, name  # every record: in silver or quarantine, never both

        mine = child.filter(pl.col("_source_file") == source_file)
        got_children = {
            (r["parent_row"], r["array_index"]): (
                r["order_id"],
                r["sku"],
                r["quantity"],
                r["unit_price"],
            )
            for r in mine.to_dicts()
        }
        quarantined = child_held.filter(pl.col("_source_file") == source_file)
        for r in quarantined.select("parent_row", "array_index").to_dicts():
            key = (int(r["parent_row"]), int(r["array_index"]))
            assert key not in got_children
            got_children[key] = "quarantined"
        assert got_children == children, name  # every element: traced to its file and record

    reasons = dict(held.select("order_id", pl.col("_errors").list.join("; ")).iter_rows())
    assert "customer_id" in reasons["o2"] and "`x`" in reasons["o2"]  # wrong type at the path
    assert "customer_id" in reasons["o3"] and "null" in reasons["o3"]  # missing path
    assert "channel" in reasons["o4"]
    line_reasons = {
        (r["order_id"], int(r["array_index"])): "; ".join(r["_errors"])
        for r in child_held.to_dicts()
    }
    assert "quantity" in line_reasons["o3", 0]  # "many" is not an int64
    assert "sku" in line_reasons["o4", 0] and "null" in line_reasons["o4", 0]
    assert "quantity" in line_reasons["o4", 1]  # 0 < ge: 1
    # a delivery corrected later: the child follows its parent's file
    (folder / "broken.ndjson").write_text(order("o5", 11, [line("f", 5), line("g", 1)]) + "\n")
    for contract in contracts.values():
        load_bronze(lake, contract, [DAY], run_id="t2")
        load_silver(lake, contract, [DAY], run_id="t2")
    lines = table("silver", "web_orders__lines").filter(pl.col("order_id") == "o5")
    assert sorted(lines.select("sku", "quantity").iter_rows()) == [("f", 5), ("g", 1)]


def test_paths_and_explode_are_checked_when_the_contract_loads() -> None:
    import pytest

    from lakehouse.core.contract import child_contracts, parse_contract
    from lakehouse.core.errors import ContractError

    base = {
        "name": "n",
        "description": "d",
        "owner": "o",
        "format": {"type": "ndjson"},
        "primary_key": ["id"],
        "columns": [{"name": "id", "type": "string", "nullable": False}],
    }
    bad_path = {
        **base,
        "columns": [*base["columns"], {"name": "x", "type": "int64", "path": "a..b"}],
    }
    with pytest.raises(ContractError, match=r"columns\[1\]\.path"):
        parse_contract(bad_path)
    bad_key = {
        **base,
        "explode": [
            {
                "name": "xs",
                "array": "a.xs",
                "primary_key": ["nope"],
                "columns": [{"name": "v", "type": "string"}],
            }
        ],
    }
    with pytest.raises(ContractError, match=r"explode\[0\]\.primary_key"):
        child_contracts(parse_contract(bad_key))
