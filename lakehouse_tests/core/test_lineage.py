"""OpenLineage events: datasets named as OpenLineage names files and objects, schema and column
lineage facets, the lineage file, and delivery to a real HTTP endpoint on 127.0.0.1 that is
down at first (nothing lost, nothing reordered, a half-written line waits)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakehouse.core import lineage
from lakehouse.core.lake import Lake
from lakehouse_tests.servers import free_port
from lakehouse_tests.webhook import Hook


def test_datasets_are_named_by_where_the_tables_live(tmp_path: Path) -> None:
    local = Lake(str(tmp_path))
    assert lineage.table_id(local, ["silver", "orders"]) == (
        "file",
        str(tmp_path / "lake" / "silver" / "orders"),
    )
    assert lineage.table_id(local, ["landing", "orders"]) == (
        "file",
        str(tmp_path / "landing" / "orders"),
    )
    assert lineage.table_id(local, ["gold", "metrics", "revenue"])[1].endswith(
        "lake/gold/metrics/revenue"
    )
    s3 = Lake("s3://bucket/prefix")
    assert lineage.table_id(s3, ["bronze", "orders"]) == (
        "s3://bucket",
        "/prefix/lake/bronze/orders",
    )


def events(n: int) -> list:
    bronze = lineage.Table("file", "/lake/bronze/orders", [("customer", "string")])
    silver = lineage.Table(
        "file",
        "/lake/silver/orders",
        [("customer_id", "string")],
        {"customer_id": [("file", "/lake/bronze/orders", "customer")]},
        "One row per order.",
        rows=20,
    )
    out = []
    for i in range(n):
        run_id = str(uuid.uuid4())
        for state in ("START", "FAIL" if i % 2 else "COMPLETE"):
            out.append(
                lineage.run_event(
                    state,
                    run_id=run_id,
                    job="__ASSET_JOB",
                    when=datetime.now(UTC),
                    inputs=[bronze],
                    outputs=[silver],
                    error="boom" if state == "FAIL" else None,
                )
            )
    return out


def test_events_carry_datasets_schema_and_column_lineage(tmp_path: Path) -> None:
    path = tmp_path / "openlineage" / "events.ndjson"
    lineage.write(path, events(2))
    read = lineage.read(path)
    assert [e["eventType"] for e in read] == ["START", "COMPLETE", "START", "FAIL"]
    complete = read[1]
    assert complete["run"]["runId"] == read[0]["run"]["runId"]
    assert complete["job"] == {**complete["job"], "namespace": "lakehouse", "name": "__ASSET_JOB"}
    (output,) = complete["outputs"]
    assert (output["namespace"], output["name"]) == ("file", "/lake/silver/orders")
    assert output["facets"]["schema"]["fields"][0]["name"] == "customer_id"
    fields = output["facets"]["columnLineage"]["fields"]
    assert fields["customer_id"]["inputFields"][0]["field"] == "customer"
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 20
    assert complete["inputs"][0]["name"] == "/lake/bronze/orders"
    assert read[3]["run"]["facets"]["errorMessage"]["message"] == "boom"
    assert lineage.events_file(Lake(str(tmp_path))) == path
    assert lineage.events_file(Lake("s3://b/p")) is None


def test_a_dead_endpoint_gets_every_event_later_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv(lineage.URL_ENV, f"http://127.0.0.1:{port}")
    path = tmp_path / "events.ndjson"
    lineage.write(path, events(2))
    transport = lineage.http_transport()
    assert transport is not None
    down = lineage.deliver(path, 0, transport)
    assert (down.offset, down.delivered) == (0, 0) and down.error
    with path.open("a") as f:
        f.write('{"half": ')  # a line still being written is not sent
    with Hook(port).running() as hook:
        up = lineage.deliver(path, down.offset, transport)
        assert up.delivered == 4 and not up.error
        assert [(b["run"]["runId"], b["eventType"]) for b in hook.bodies] == [
            (e["run"]["runId"], e["eventType"]) for e in lineage.read(path)
        ]
        again = lineage.deliver(path, up.offset, transport)
        assert again.delivered == 0 and len(hook.bodies) == 4
