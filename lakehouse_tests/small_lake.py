"""A tiny hand-written Jaffle Shop landing zone for quality tests: every row is known by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import CONTRACTS_DIR, load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver

GOOD = 20
"""Good orders per delivered orders file."""
HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total"


def order(oid: str, day: str, **over: str) -> str:
    """One orders CSV line (a valid order unless `over` says otherwise)."""
    row = {
        "id": oid,
        "customer": "c1",
        "ordered_at": f"{day}T12:00:00",
        "store_id": "s1",
        "subtotal": "100",
        "tax_paid": "6",
        "order_total": "106",
    }
    row.update(over)
    return ",".join(row[c] for c in HEADER.split(","))


def text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def orders_file(day: str, *bad: str, header: str = HEADER, good: int = GOOD) -> bytes:
    """`good` valid orders `<day>-<n>`, then the `bad` lines."""
    return text([header, *(order(f"{day}-{i}", day) for i in range(good)), *bad])


def deliver(root: Path, source: str, day: str, name: str, data: bytes) -> None:
    folder = root / "landing" / source / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def deliver_reference_data(root: Path, day: str) -> None:
    """One store, two customers, two products: what orders and items refer to."""
    deliver(
        root,
        "stores",
        day,
        "stores.csv",
        text(["id,name,opened_at,tax_rate", "s1,Philly,2016-09-01T00:00:00,0.06"]),
    )
    deliver(
        root,
        "customers",
        day,
        "customers.csv",
        text(["id,name", "c1,Ada Lovelace", "c2,Alan Turing"]),
    )
    deliver(
        root,
        "products",
        day,
        "products.csv",
        text(
            [
                "sku,name,type,price,description",
                "JAF-001,nutellaphone,jaffle,1100,",
                "BEV-001,tangaroo,beverage,600,",
            ]
        ),
    )


def load(lake: Lake, sources: tuple[str, ...], dates: list[str]) -> None:
    """Load bronze, then silver, of each of `sources` (in order) for landing `dates`."""
    contracts = {c.name: c for c in load_contracts()}
    for source in sources:
        load_bronze(lake, contracts[source], dates, run_id="test")
        load_silver(lake, contracts[source], dates, run_id="test")


def edit_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, old: str, new: str
) -> None:
    """Use a copy of the shipped contracts in which `source`'s contract has `old` replaced."""
    contracts = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts)
    path = contracts / f"{source}.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    monkeypatch.setenv("LAKEHOUSE_CONTRACTS", str(contracts))
