"""The lineage sensor: every Dagster run as OpenLineage START and COMPLETE / FAIL / ABORT events.

It reads Dagster's run storage and each run's own events (no cross-run event query), so it works
on the embedded SQLite instance as on PostgreSQL storage, and it sees runs launched from the CLI
as well as the daemon's. A run's outputs are the assets it materialized (planned, for START),
with their columns, column lineage and row count; its inputs are those assets' upstream assets
outside the run. Events go to the lineage file and, with `OPENLINEAGE_URL`, to that endpoint
(`lakehouse.core.lineage`); the sensor's cursor keeps how far the endpoint has been served.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from lakehouse.core.lake import Lake
from lakehouse.defs.alerts import run_failure
from lakehouse.defs.resources import LakeResource

if TYPE_CHECKING:  # openlineage costs half a second to import: only the sensor's ticks need it
    from lakehouse.core import lineage

LINEAGE_TICK_SECONDS = 15
LOOKBACK = timedelta(hours=24)
"""A sensor with no cursor yet reports the runs updated this recently."""
OVERLAP_SECONDS = 2.0
"""Runs updated this long before the last tick's newest are read again (deduplicated by id)."""
KEEP_DONE = 2000
_FINISHED = {
    dg.DagsterRunStatus.SUCCESS: "COMPLETE",
    dg.DagsterRunStatus.FAILURE: "FAIL",
    dg.DagsterRunStatus.CANCELED: "ABORT",
}
_RUNNING = {dg.DagsterRunStatus.STARTED, *_FINISHED}


def _keys(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> dict:
    """Asset key -> the metadata of its last event of `kind` in the run."""
    out = {}
    for record in instance.all_logs(run_id, of_type=kind):
        event = record.dagster_event
        if event is None or event.asset_key is None:
            continue
        data = event.event_specific_data
        materialization = getattr(data, "materialization", None)
        out[event.asset_key] = dict(materialization.metadata) if materialization else {}
    return out


def _value(value):
    return getattr(value, "value", value)


def describe(
    lake: Lake, graph, key: dg.AssetKey, metadata: dict | None = None, rows: bool = False
) -> lineage.Table:
    """An asset as an OpenLineage dataset: its table, columns (the run's metadata, else the
    definition's) and column lineage."""
    from lakehouse.core import lineage

    namespace, name = lineage.table_id(lake, key.path)
    static = dict(graph.get(key).metadata) if graph is not None and graph.has(key) else {}
    found = {**static, **(metadata or {})}
    schema = _value(found.get("dagster/column_schema"))
    columns = [(c.name, c.type) for c in schema.columns] if schema is not None else []
    deps = _value(found.get("dagster/column_lineage"))
    column_lineage = {}
    if deps is not None:
        for column, sources in deps.deps_by_column.items():
            column_lineage[column] = [
                (*lineage.table_id(lake, d.asset_key.path), d.column_name) for d in sources
            ]
    description = graph.get(key).description or "" if graph is not None and graph.has(key) else ""
    count = _value((metadata or {}).get("dagster/row_count")) if rows else None
    return lineage.Table(
        namespace,
        name,
        columns,
        column_lineage,
        description,
        int(count) if isinstance(count, int) else None,
    )


def run_events(
    instance: dg.DagsterInstance,
    lake: Lake,
    graph,
    record: dg.RunRecord,
    states: Iterable[str],
) -> list:
    """The OpenLineage events `states` of one run."""
    from lakehouse.core import lineage

    run = record.dagster_run
    planned = set(run.asset_selection or ()) or set(
        _keys(instance, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    )
    done = _keys(instance, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    events = []
    for state in states:
        outputs = planned if state == "START" else set(done) or planned
        parents = set()
        if graph is not None:
            for key in outputs:
                if graph.has(key):
                    parents |= set(graph.get(key).parent_entity_keys)
        inputs = sorted(
            (k for k in parents - outputs if isinstance(k, dg.AssetKey)),
            key=lambda k: k.to_user_string(),
        )
        if state == "START":
            when = record.start_time or record.create_timestamp.timestamp()
        else:
            when = record.end_time or record.update_timestamp.timestamp()
        error = run_failure(instance, run).error if state == "FAIL" else None
        events.append(
            lineage.run_event(
                state,
                run_id=run.run_id,
                job=run.job_name,
                when=datetime.fromtimestamp(when, UTC),
                inputs=[describe(lake, graph, k) for k in inputs],
                outputs=[
                    describe(lake, graph, k, done.get(k), rows=state != "START")
                    for k in sorted(outputs, key=lambda k: k.to_user_string())
                ],
                error=error,
            )
        )
    return events


def tick(instance: dg.DagsterInstance, lake: Lake, graph, cursor: str | None) -> tuple[str, dict]:
    """One pass: the events of runs that started or finished since `cursor`, written and (with
    `OPENLINEAGE_URL`) delivered. Returns the new cursor and what was done."""
    from lakehouse.core import lineage

    state = json.loads(cursor) if cursor else {}
    after = state.get("after") or (datetime.now(UTC) - LOOKBACK).timestamp()
    started, done = set(state.get("started", [])), list(state.get("done", []))
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            updated_after=datetime.fromtimestamp(after - OVERLAP_SECONDS, UTC),
            statuses=list(_RUNNING),
        )
    )
    events = []
    newest = after
    for record in sorted(records, key=lambda r: r.update_timestamp.timestamp()):
        run = record.dagster_run
        newest = max(newest, record.update_timestamp.timestamp())
        if run.run_id in done:
            continue
        states = [] if run.run_id in started else ["START"]
        final = _FINISHED.get(run.status)
        if final:
            states.append(final)
        if not states:
            continue
        events += run_events(instance, lake, graph, record, states)
        if final:
            started.discard(run.run_id)
            done.append(run.run_id)
        else:
            started.add(run.run_id)
    path = lineage.events_file(lake)
    if path is not None and events:
        lineage.write(path, events)
    report = {"events": len(events), "delivered": 0, "error": ""}
    offset = state.get("http", 0)
    transport = lineage.http_transport()
    if transport is not None and path is not None:
        delivery = lineage.deliver(path, offset, transport)
        offset = delivery.offset
        report.update(delivered=delivery.delivered, error=delivery.error)
    new = {"after": newest, "started": sorted(started), "done": done[-KEEP_DONE:], "http": offset}
    return json.dumps(new), report


@dg.sensor(
    name="lineage_sensor",
    description="Writes an OpenLineage START and COMPLETE/FAIL/ABORT event for every run, with "
    "its input and output datasets and column lineage, to the lineage file, and POSTs them to "
    "OPENLINEAGE_URL when it is set.",
    minimum_interval_seconds=LINEAGE_TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lineage_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    graph = context.repository_def.asset_graph if context.repository_def else None
    cursor, report = tick(context.instance, lake.lake(), graph, context.cursor)
    if report["error"]:
        context.log.warning(f"OpenLineage delivery failed (kept for the next tick): {report}")
    return dg.SensorResult(cursor=cursor, skip_reason=f"{report}")
