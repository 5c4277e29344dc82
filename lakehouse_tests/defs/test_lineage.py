"""The lineage sensor turns the instance's runs into OpenLineage events: one START and one
COMPLETE / FAIL per run, with the tables the run read and wrote as they are on disk, column
lineage from the contract, once each however often it ticks; delivered to a local endpoint."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse.core import lineage
from lakehouse_tests.defs.conftest import SmallLake
from lakehouse_tests.servers import free_port
from lakehouse_tests.webhook import Hook


@dg.asset(key=["scratch", "fails"])
def fails() -> None:
    raise RuntimeError("the source system refused the connection")


def test_runs_become_openlineage_events(
    small_lake: SmallLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.definitions import defs
    from lakehouse.defs.lineage import tick

    lake, instance = small_lake.lake, small_lake.instance
    graph = defs.resolve_asset_graph()
    port = free_port()
    monkeypatch.setenv(lineage.URL_ENV, f"http://127.0.0.1:{port}")  # nothing listens yet
    cursor, report = tick(instance, lake, graph, None)
    path = lineage.events_file(lake)
    assert path is not None and path.parent == Path(lake.root) / "openlineage"
    events = lineage.read(path)
    final = {dg.DagsterRunStatus.SUCCESS: "COMPLETE", dg.DagsterRunStatus.FAILURE: "FAIL"}
    runs = {r.dagster_run.run_id: final[r.dagster_run.status] for r in instance.get_run_records()}
    assert len(runs) == 2 and report["events"] == len(events) == 4
    assert report["delivered"] == 0 and report["error"]
    by_run = {(e["run"]["runId"], e["eventType"]): e for e in events}
    assert set(by_run) == {(r, s) for r, end in runs.items() for s in ("START", end)}

    complete = by_run[(small_lake.range_run.run_id, "COMPLETE")]
    outputs = {o["name"]: o for o in complete["outputs"]}
    silver_path = lake.table_uri("silver", "orders")
    assert set(outputs) == {lake.table_uri("bronze", "orders"), silver_path}
    silver = outputs[silver_path]
    on_disk = pl.read_delta(silver_path)
    assert silver["outputFacets"]["outputStatistics"]["rowCount"] == on_disk.height
    columns = [f["name"] for f in silver["facets"]["schema"]["fields"]]
    assert set(columns) <= set(on_disk.columns) and "customer_id" in columns
    fields = silver["facets"]["columnLineage"]["fields"]
    assert fields["customer_id"]["inputFields"] == [
        {
            "namespace": "file",
            "name": lake.table_uri("bronze", "orders"),
            "field": "customer",
            "transformations": [],
        }
    ]
    inputs = {i["name"] for i in complete["inputs"]}
    assert {
        lake.landing_uri("orders"),
        lake.table_uri("silver", "customers"),
        lake.table_uri("silver", "stores"),
    } <= inputs

    # Nothing new: no event. A failed run: START and FAIL with the error.
    cursor, report = tick(instance, lake, graph, cursor)
    assert report["events"] == 0
    failed = dg.materialize([fails], instance=instance, raise_on_error=False)
    assert not failed.success
    with Hook(port).running() as hook:
        cursor, report = tick(instance, lake, graph, cursor)
        events = lineage.read(path)
        assert [e["eventType"] for e in events[-2:]] == ["START", "FAIL"]
        assert "refused the connection" in events[-1]["run"]["facets"]["errorMessage"]["message"]
        # the endpoint, down for the first tick, gets every event, in the file's order
        assert report["delivered"] == len(events) == 6 and not report["error"]
        assert [b["eventType"] for b in hook.bodies] == [e["eventType"] for e in events]
