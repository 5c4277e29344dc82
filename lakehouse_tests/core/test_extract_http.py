"""HTTP API extracts through dlt's rest_api against a real local server that fails mid-pagination.

The server (127.0.0.1, a thread of this test) pages its orders, demands a bearer token, filters
by `updated_since` (at or after), and answers one page with a 429 and another with a 500 the first
time each is asked: dlt retries both, and every record lands once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest
import yaml

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import Contract, parse_contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.extract import ExtractError, extract
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.silver import load_silver

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "sources"
TOKEN = "s3cret-token"
PER_PAGE = 50


class ShopApi:
    """Orders in memory, served page by page; `fail` maps a page number to the status it answers
    the first time that page is asked for."""

    def __init__(self) -> None:
        self.orders: dict[int, dict] = {}
        self.fail: dict[int, int] = {}
        self.calls: list[tuple[int, int]] = []  # (page, status)

    def put(self, id_: int, updated_at: str, **fields: object) -> None:
        order = {
            "id": id_,
            "status": "placed",
            "total_cents": 100 * id_,
            "customer": {"id": f"c{id_ % 7}", "tier": "gold"},
            "updated_at": updated_at,
        }
        order.update(fields)
        self.orders[id_] = order

    def page(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        page = int(query.get("page", ["1"])[0])
        if page in self.fail:
            status = self.fail.pop(page)
            self.calls.append((page, status))
            return status, {"error": "try again"}
        since = query.get("updated_since", [""])[0]
        rows = sorted(
            (o for o in self.orders.values() if o["updated_at"] >= since),
            key=lambda o: (o["updated_at"], o["id"]),
        )
        per_page = int(query.get("per_page", ["10"])[0])
        self.calls.append((page, 200))
        return 200, {"data": rows[(page - 1) * per_page : page * per_page], "page": page}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ShopApi, str]]:
    shop = ShopApi()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = 401, {"error": "unauthorized"}
            elif url.path != "/v1/orders":
                status, body = 404, {"error": "not found"}
            else:
                status, body = shop.page(parse_qs(url.query))
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SHOP_API_TOKEN", TOKEN)
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.05")  # dlt's retry backoff, fast
    try:
        yield shop, f"http://127.0.0.1:{server.server_port}/v1/"
    finally:
        server.shutdown()
        server.server_close()


def contract_for(url: str, **source: object) -> Contract:
    raw = yaml.safe_load((CONTRACTS / "shop_orders.yaml").read_text())
    raw["source"]["url"] = url
    raw["source"].update(source)
    return parse_contract(raw, CONTRACTS / "shop_orders.yaml")


def ts(minute: int) -> str:
    return f"2024-05-01T10:{minute:02d}:00Z"


def test_pages_retries_and_increments(tmp_path: Path, api: tuple[ShopApi, str]) -> None:
    shop, url = api
    contract = contract_for(url)
    lake = Lake(str(tmp_path / "lake"))
    for i in range(1, 131):  # 3 pages of 50; ten orders share each minute
        shop.put(i, ts(i // 10))
    shop.put(131, ts(13), status="lost")  # not an allowed status: quarantined
    shop.fail = {2: 429, 3: 500}
    first = extract(lake, contract, landing_date="2024-05-01")
    assert first.rows == 131
    assert (2, 429) in shop.calls and (3, 500) in shop.calls  # failed mid-pagination...
    assert shop.calls.count((2, 200)) == 1 and shop.calls.count((3, 200)) == 1  # ...retried once
    assert first.cursor == ts(13)

    # between runs: a status change, a record at exactly the last cursor, a correction
    shop.put(5, ts(20), status="shipped")
    shop.put(132, ts(13))
    shop.put(131, ts(21), status="returned")
    shop.calls.clear()
    second = extract(lake, contract, landing_date="2024-05-02")
    assert second.rows == 3, "records already landed at the boundary are not landed again"
    assert extract(lake, contract, landing_date="2024-05-02").uri is None
    assert [f.relative_path for f in list_landing_files(lake, "shop_orders")] == [
        "shop_orders/2024-05-01/extract-000001.parquet",
        "shop_orders/2024-05-02/extract-000002.parquet",
    ]

    dates = ["2024-05-01", "2024-05-02"]
    load_bronze(lake, contract, dates, run_id="test")
    load_silver(lake, contract, dates, run_id="test")
    bronze = pl.read_delta(lake.table_uri("bronze", "shop_orders"))
    assert bronze.height == 134  # 132 records, 2 of them twice (an update, a correction)
    silver = pl.read_delta(lake.table_uri("silver", "shop_orders"))
    expected = {o["id"]: (o["status"], o["total_cents"]) for o in shop.orders.values()}
    got = {i: (s, t) for i, s, t in silver.select("id", "status", "total_cents").iter_rows()}
    assert got == expected
    held = pl.read_delta(lake.table_uri("quarantine", "shop_orders"))
    assert held.select("id", "status").rows() == [("131", "lost")]
    customer = dict(silver.select("id", "customer").iter_rows())[8]
    assert json.loads(customer) == {"id": "c1", "tier": "gold"}  # nested objects land as JSON


def test_a_snapshot_api_retracts_what_it_no_longer_lists(
    tmp_path: Path, api: tuple[ShopApi, str]
) -> None:
    shop, url = api
    raw_source = {"mode": "snapshot", "cursor": None, "cursor_param": None}
    raw = yaml.safe_load((CONTRACTS / "shop_orders.yaml").read_text())
    raw["source"]["url"] = url
    raw["source"].update(raw_source)
    raw["source"] = {k: v for k, v in raw["source"].items() if v is not None}
    contract = parse_contract(raw, "shop_orders.yaml")
    lake = Lake(str(tmp_path / "lake"))
    for i in range(1, 61):
        shop.put(i, ts(1))
    assert extract(lake, contract, landing_date="2024-05-01").rows == 60
    del shop.orders[7]
    assert extract(lake, contract, landing_date="2024-05-02").rows == 59
    dates = ["2024-05-01", "2024-05-02"]
    load_bronze(lake, contract, dates, run_id="test")
    load_silver(lake, contract, dates, run_id="test")
    silver = pl.read_delta(lake.table_uri("silver", "shop_orders"))
    assert sorted(silver["id"]) == [i for i in range(1, 61) if i != 7]


def test_failures_are_named(
    tmp_path: Path, api: tuple[ShopApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shop, url = api
    shop.put(1, ts(1))
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ExtractError, match="404"):
        extract(lake, contract_for(url, path="nope"))
    monkeypatch.setenv("SHOP_API_TOKEN", "wrong")
    with pytest.raises(ExtractError, match="401"):
        extract(lake, contract_for(url))
    monkeypatch.delenv("SHOP_API_TOKEN")
    with pytest.raises(ConfigError, match="`SHOP_API_TOKEN`"):
        extract(lake, contract_for(url))
    assert list_landing_files(lake, "shop_orders") == []
