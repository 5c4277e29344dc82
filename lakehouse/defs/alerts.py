"""The alerts sensor: incidents of the lake and of Dagster's runs, raised once, resolved, delivered.

One sensor (RUNNING by default, every 10 s) does it all, so one writer decides each incident:

- the lake's own `_system` tables give blocked partitions, failing warn checks, rejected files
  and freshness breaches (`lakehouse.core.alerts.lake_alerts`);
- Dagster's run storage gives failed runs (`run_failed`, resolved by the next success of the same
  assets and partitions) and runs that hang or whose process died (`run_stuck`).

Both read no cross-run event query, so the sensor works on the embedded SQLite instance as on
PostgreSQL storage (Dagster refuses event-log sensors on plain SQLite). Each row of
`_system/alerts` then goes to every sink configured in the environment: the webhook
(`LAKEHOUSE_ALERT_WEBHOOK`) and Slack through dagster-slack (`LAKEHOUSE_SLACK_TOKEN`,
`LAKEHOUSE_SLACK_CHANNEL`). A sink that is down keeps its rows pending for the next tick.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from lakehouse.core import alerts
from lakehouse.core.contract import Contract
from lakehouse.defs.recovery import find_dead_runs
from lakehouse.defs.resources import LakeResource

ALERT_TICK_SECONDS = 10
RUN_WINDOW = timedelta(hours=24)
"""Finished runs younger than this decide whether a run incident is open or resolved."""
STUCK_AFTER_ENV = "LAKEHOUSE_RUN_STUCK_AFTER"
STUCK_AFTER_DEFAULT = timedelta(hours=2)
SLACK_TOKEN_ENV = "LAKEHOUSE_SLACK_TOKEN"
SLACK_CHANNEL_ENV = "LAKEHOUSE_SLACK_CHANNEL"
SLACK_CHANNEL_DEFAULT = "#lakehouse-alerts"
BLOCKING_CHECK_FAILURE = "DagsterAssetCheckFailedError"
"""The step failure of a failed blocking check: its partition_blocked alert says it already."""

_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
_WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]


@dataclass
class SlackSink:
    """Alerts posted to a Slack channel through dagster-slack's client."""

    token: str
    channel: str
    name: str = field(default="slack")

    def send(self, alert: dict) -> None:
        from dagster_slack import SlackResource  # slack_sdk: imported where a Slack sink posts

        client = SlackResource(token=self.token).get_client()
        client.chat_postMessage(channel=self.channel, text=alerts.summary(alert))


def configured_sinks() -> list[alerts.Sink]:
    """The webhook and Slack, each when its environment variable is set."""
    sinks = alerts.env_sinks()
    token = os.environ.get(SLACK_TOKEN_ENV, "").strip()
    if token:
        channel = os.environ.get(SLACK_CHANNEL_ENV, "").strip() or SLACK_CHANNEL_DEFAULT
        sinks.append(SlackSink(token, channel))
    return sinks


def run_scope(run: dg.DagsterRun) -> str:
    """What a run was for: its job, assets and partition (or range); a later run of the same
    scope that succeeds resolves this one's failure."""
    assets = ",".join(sorted(k.to_user_string() for k in run.asset_selection or ()))
    tags = run.tags
    partition = tags.get("dagster/partition") or (
        f"{tags['dagster/asset_partition_range_start']}...{tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in tags
        else ""
    )
    return ":".join(p for p in (run.job_name, assets, partition) if p)


@dataclass(frozen=True)
class RunFailure:
    """What a finished failed run's events say."""

    checks_only: bool
    """Every failed step failed only on a blocking check (a blocked partition)."""
    error: str
    assets: tuple[str, ...]
    """The assets the run planned to materialize."""


_FAILURES: dict[str, RunFailure] = {}
"""Per failed run id: what `run_failure` found (a finished run's events do not change)."""


def run_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunFailure:
    """The failure of a finished failed run, from its own events (no cross-run event query)."""
    if run.run_id not in _FAILURES:
        if len(_FAILURES) > 4096:
            _FAILURES.clear()
        _FAILURES[run.run_id] = _read_failure(instance, run)
    return _FAILURES[run.run_id]


def _read_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunFailure:
    steps = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    errors = [
        e.dagster_event.step_failure_data.error
        for e in steps
        if e.dagster_event is not None and e.dagster_event.step_failure_data is not None
    ]
    errors = [e for e in errors if e is not None]
    if run.asset_selection:
        assets = {k.to_user_string() for k in run.asset_selection}
    else:
        planned = instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        )
        assets = {
            e.dagster_event.asset_key.to_user_string()
            for e in planned
            if e.dagster_event is not None and e.dagster_event.asset_key is not None
        }
    if errors:
        root = errors[0]
        while root.cause is not None:  # the user's exception, not Dagster's wrapper of it
            root = root.cause
        error = f"{root.cls_name}: {root.message.strip()[:400]}"
    else:
        run_failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        error = run_failures[-1].message[:400] if run_failures else "the run failed"
    return RunFailure(
        checks_only=bool(errors) and all(e.cls_name == BLOCKING_CHECK_FAILURE for e in errors),
        error=error,
        assets=tuple(sorted(assets)),
    )


def run_alerts(
    instance: dg.DagsterInstance, *, now: datetime | None = None, stuck_after: timedelta
) -> tuple[list[alerts.Alert], set[str]]:
    """The run incidents firing now, and the run_failed incidents known recovered."""
    now = now or datetime.now(UTC)
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=_FINISHED, updated_after=now - RUN_WINDOW)
    )
    latest: dict[str, dg.RunRecord] = {}
    for record in sorted(records, key=lambda r: r.end_time or r.update_timestamp.timestamp()):
        latest[run_scope(record.dagster_run)] = record
    firing, healthy = [], set()
    for scope, record in latest.items():
        run = record.dagster_run
        key = alerts.incident_key("run_failed", scope)
        if run.status == dg.DagsterRunStatus.SUCCESS:
            healthy.add(key)
            continue
        failure = run_failure(instance, run)
        if failure.checks_only:
            healthy.add(key)  # a blocked partition, reported as partition_blocked
            continue
        firing.append(
            alerts.Alert(
                kind="run_failed",
                incident=key,
                message=f"run {run.run_id[:8]} ({scope}) failed: {failure.error}",
                asset=",".join(failure.assets),
                partition=run.tags.get("dagster/partition", ""),
                run_id=run.run_id,
            )
        )
    firing += _stuck_runs(instance, now, stuck_after)
    return firing, healthy


def _stuck_runs(
    instance: dg.DagsterInstance, now: datetime, stuck_after: timedelta
) -> list[alerts.Alert]:
    out = {}
    for proc in find_dead_runs(instance):
        out[proc.run_id] = (
            f"its process (pid {proc.pid}) is gone but the run is still {proc.status.value}"
        )
    active = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, *_WAITING]
        )
    )
    for record in active:
        run = record.dagster_run
        since = record.start_time or record.create_timestamp.timestamp()
        age = now.timestamp() - since
        if run.run_id not in out and age > stuck_after.total_seconds():
            out[run.run_id] = (
                f"{run.status.value} for {age / 60:.0f} min (more than {STUCK_AFTER_ENV} "
                f"{stuck_after})"
            )
    return [
        alerts.Alert(
            kind="run_stuck",
            incident=alerts.incident_key("run_stuck", run_id),
            message=f"run {run_id[:8]}: {why}",
            run_id=run_id,
        )
        for run_id, why in out.items()
    ]


MIN_FRESHNESS_WINDOW = timedelta(minutes=1)
"""Dagster's floor for a freshness window; the platform's own `freshness` alert has none."""


def freshness_policy(contract: Contract) -> dg.FreshnessPolicy | None:
    """The contract's `freshness` as a Dagster policy (the UI shows it, the daemon evaluates it).

    Windows under a minute are raised to one (Dagster refuses less); a `warn_after` not below
    `fail_after` is dropped (Dagster refuses it). Without `fail_after` there is no policy.
    """
    fail, warn = contract.freshness_fail_after, contract.freshness_warn_after
    if fail is None:
        return None
    fail = max(fail, MIN_FRESHNESS_WINDOW)
    if warn is not None and not MIN_FRESHNESS_WINDOW <= warn < fail:
        warn = None
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


def build_alerts_sensor(contracts: Sequence[Contract]) -> dg.SensorDefinition:
    @dg.sensor(
        name="alerts_sensor",
        description="Raises one alert per incident (blocked partition, failed check, rejected "
        "file, freshness breach, failed or stuck run) into `_system/alerts`, resolves it when it "
        "recovers, and delivers both to the webhook and Slack when configured.",
        minimum_interval_seconds=ALERT_TICK_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def alerts_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SkipReason:
        the_lake = lake.lake()
        stuck_after = alerts.parse_stuck_after(os.environ.get(STUCK_AFTER_ENV), STUCK_AFTER_DEFAULT)
        written = alerts.sync(
            the_lake,
            alerts.lake_alerts(the_lake, contracts),
            covers=alerts.covered_by_lake,
        )
        firing, recovered = run_alerts(context.instance, stuck_after=stuck_after)
        written += alerts.sync(
            the_lake,
            firing,
            covers=lambda row: row["kind"] == "run_stuck" or row["incident"] in recovered,
        )
        for row in written:
            context.log.warning(alerts.summary(row))
        report = alerts.deliver(the_lake, configured_sinks())
        for error in report.errors:
            context.log.warning(f"alert delivery failed (kept for the next tick): {error}")
        return dg.SkipReason(
            f"{len(written)} alert row(s) written; delivered {report.delivered}, "
            f"pending {report.pending}"
        )

    return alerts_sensor
