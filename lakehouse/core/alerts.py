"""Alerts: one row of `_system/alerts` per incident, a `resolved` row when it recovers, and
delivery of every row to the configured sinks (a webhook; Slack from the Dagster side).

An observer looks at the lake (or at Dagster's run storage) and says which incidents are firing
now, as `Alert`s, and which incidents it can vouch for (`covers`). `sync` compares that with the
incidents `_system/alerts` holds open:

- a firing alert whose incident is not open is raised (a new row, status `firing`);
- an open incident the observer covers but no longer sees firing is resolved (a new row, status
  `resolved`, same incident key);
- an incident already open raises nothing: one alert per incident, however many ticks see it.

Delivery is separate and at-least-once: `_system/alert_deliveries` holds one row per alert and
sink delivered. `deliver` sends each sink the rows it has not acknowledged yet, oldest first,
with retries and backoff; a sink that stays down keeps its rows pending for the next call, so a
dead webhook loses nothing.

The first response of each kind is the first step of its section in `docs/runbook.md`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import polars as pl

from lakehouse.core import delta, system
from lakehouse.core.contract import Contract, parse_duration
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import PROJECT_DIR, Lake
from lakehouse.core.landing import list_landing_files

log = logging.getLogger(__name__)

ALERTS = "alerts"
DELIVERIES = "alert_deliveries"

Kind = Literal[
    "run_failed",
    "check_failed",
    "partition_blocked",
    "freshness",
    "arrival_late",
    "run_stuck",
    "file_rejected",
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
Severity = Literal["error", "warning"]

RUNBOOK = PROJECT_DIR / "docs" / "runbook.md"
UI_URL_ENV = "LAKEHOUSE_UI_URL"
WEBHOOK_ENV = "LAKEHOUSE_ALERT_WEBHOOK"
DELIVERY_MAX_AGE = timedelta(days=7)
"""Rows older than this are not sent any more (a sink configured today does not get last year)."""

_ALERT_SCHEMA = {
    "alert_id": pl.String,
    "incident": pl.String,
    "kind": pl.String,
    "status": pl.String,
    "source": pl.String,
    "asset": pl.String,
    "partition": pl.String,
    "severity": pl.String,
    "message": pl.String,
    "run_id": pl.String,
    "run_url": pl.String,
    "first_response": pl.String,
    "raised_at": pl.Datetime("us"),
}
_DELIVERY_SCHEMA = {
    "alert_id": pl.String,
    "sink": pl.String,
    "attempts": pl.Int64,
    "delivered_at": pl.Datetime("us"),
}


SCHEMAS = {ALERTS: _ALERT_SCHEMA, DELIVERIES: _DELIVERY_SCHEMA}
"""The system tables of alerts, and their columns (for the catalog)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Alert:
    """One incident as an observer sees it now."""

    kind: str
    incident: str
    """What makes two observations the same incident, e.g. `partition_blocked:silver/orders:2024-04-02`."""
    message: str
    severity: Severity = "error"
    source: str = ""
    asset: str = ""
    partition: str = ""
    run_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            msg = f"unknown alert kind `{self.kind}`; kinds are {', '.join(KINDS)}"
            raise ValueError(msg)


def incident_key(kind: str, *parts: str) -> str:
    return ":".join([kind, *(p for p in parts if p)])


def run_url(run_id: str) -> str:
    """The run's page in the Dagster UI (`LAKEHOUSE_UI_URL`, default http://127.0.0.1:3000)."""
    if not run_id:
        return ""
    base = os.environ.get(UI_URL_ENV, "http://127.0.0.1:3000").rstrip("/")
    return f"{base}/runs/{run_id}"


@cache
def first_responses() -> dict[str, str]:
    """Per alert kind: the first step of its section in docs/runbook.md (`## <kind>`, `1. ...`)."""
    if not RUNBOOK.exists():
        return {}
    out: dict[str, str] = {}
    kind = None
    for line in RUNBOOK.read_text().splitlines():
        heading = re.match(r"^##\s+`?([a-z_]+)`?\s*$", line)
        if heading:
            kind = heading[1]
            continue
        step = re.match(r"^1\.\s+(.*)$", line)
        if kind and step and kind not in out:
            out[kind] = step[1].strip()
    return out


def _row(alert: Alert, status: str, now: datetime) -> dict:
    return {
        "alert_id": uuid.uuid4().hex,
        "incident": alert.incident,
        "kind": alert.kind,
        "status": status,
        "source": alert.source,
        "asset": alert.asset,
        "partition": alert.partition,
        "severity": alert.severity if status == "firing" else "info",
        "message": alert.message,
        "run_id": alert.run_id,
        "run_url": run_url(alert.run_id),
        "first_response": first_responses().get(alert.kind, "") if status == "firing" else "",
        "raised_at": now,
    }


def read_alerts(lake: Lake) -> pl.DataFrame:
    """Every row of `_system/alerts`, oldest first (empty, with its schema, if none yet)."""
    frame = delta.scan(lake, lake.table_uri("_system", ALERTS))
    if frame is None:
        return pl.DataFrame(schema=_ALERT_SCHEMA)
    return frame.sort("raised_at").collect()


def open_incidents(lake: Lake) -> dict[str, dict]:
    """Incident key -> its firing row, for every incident whose latest row is not `resolved`."""
    rows = read_alerts(lake)
    if rows.is_empty():
        return {}
    latest = rows.group_by("incident").last().filter(pl.col("status") == "firing")
    return {r["incident"]: r for r in latest.iter_rows(named=True)}


def sync(
    lake: Lake,
    firing: Sequence[Alert],
    covers: Callable[[dict], bool],
    *,
    now: datetime | None = None,
) -> list[dict]:
    """Raise the firing alerts not yet open and resolve the covered open ones that stopped.

    Args:
        firing: the incidents the observer sees now (one per incident key; later ones win).
        covers: whether the observer can vouch for an open incident (its row): one it covers and
            does not see firing has recovered.

    Returns the rows written (raised and resolved).
    """
    now = now or _now()
    opened = open_incidents(lake)
    by_key = {a.incident: a for a in firing}
    rows = [_row(a, "firing", now) for key, a in by_key.items() if key not in opened]
    for key, row in opened.items():
        if key not in by_key and covers(row):
            resolved = Alert(
                kind=row["kind"],
                incident=key,
                message=f"resolved: {row['message']}",
                source=row["source"],
                asset=row["asset"],
                partition=row["partition"],
                run_id=row["run_id"],
            )
            rows.append(_row(resolved, "resolved", now))
    if rows:
        system.append_rows(lake, ALERTS, pl.DataFrame(rows, schema=_ALERT_SCHEMA))
        for row in rows:
            log.warning("alert %s %s: %s", row["status"], row["incident"], row["message"])
    return rows


# --- observers of the lake's own tables (work on any Dagster storage: they read no events) ---


def _silver_asset(source: str) -> str:
    return f"silver/{source}"


def partition_alerts(lake: Lake) -> list[Alert]:
    """`partition_blocked`: each silver landing date whose latest outcome is blocked."""
    held = system.held_partitions(lake, "silver")
    return [
        Alert(
            kind="partition_blocked",
            incident=incident_key(
                "partition_blocked", _silver_asset(r["source"]), r["landing_date"]
            ),
            message=f"silver/{r['source']} landing date {r['landing_date']} is blocked, "
            f"{r['held']} row(s) held: {r['detail']}",
            source=r["source"],
            asset=_silver_asset(r["source"]),
            partition=r["landing_date"],
            run_id=r["run_id"] or "",
        )
        for r in held.filter(pl.col("status") == "blocked").iter_rows(named=True)
    ]


def check_alerts(lake: Lake) -> list[Alert]:
    """`check_failed`: per silver asset and warn check, the landing dates it fails now.

    Blocking checks are reported by `partition_alerts` (the date they block), not here.
    """
    frame = delta.scan(lake, lake.table_uri("_system", system.DQ_RESULTS))
    if frame is None:
        return []
    failing = (
        frame.filter(pl.col("layer") == "silver")
        .sort("checked_at")
        .group_by("source", "partition", "check")
        .last()
        .filter(~pl.col("passed"), ~pl.col("blocking").fill_null(False))
        .sort("source", "check", "partition")
        .collect()
    )
    alerts = []
    for (source, check), rows in failing.group_by("source", "check", maintain_order=True):
        dates = rows.get_column("partition").to_list()
        last = rows.row(-1, named=True)
        shown = ", ".join(dates[:5]) + (f" and {len(dates) - 5} more" if len(dates) > 5 else "")
        alerts.append(
            Alert(
                kind="check_failed",
                incident=incident_key("check_failed", _silver_asset(source), check),
                message=f"check `{check}` of silver/{source} fails on {len(dates)} landing "
                f"date(s) ({shown}); latest {last['partition']}: {last['detail']}",
                severity="warning",
                source=source,
                asset=_silver_asset(source),
                partition=last["partition"],
                run_id=last["run_id"] or "",
            )
        )
    return alerts


def rejected_file_alerts(lake: Lake) -> list[Alert]:
    """`file_rejected`: each landed file whose latest outcome is a rejection."""
    frame = delta.scan(lake, lake.table_uri("_system", system.REJECTED_FILES))
    if frame is None:
        return []
    alerts = []
    for source, dates in sorted(
        frame.select("source", "landing_date")
        .unique()
        .collect()
        .group_by("source")
        .agg(pl.col("landing_date"))
        .iter_rows()
    ):
        for day, rows in sorted(system.rejected_now(lake, source, dates).items()):
            for r in rows:
                alerts.append(
                    Alert(
                        kind="file_rejected",
                        incident=incident_key("file_rejected", r["path"]),
                        message=f"landing file `{r['path']}` could not be read: {r['reason']}",
                        severity="warning",
                        source=source,
                        asset=f"bronze/{source}",
                        partition=day,
                    )
                )
    return alerts


_MAINTENANCE = {"OPTIMIZE", "VACUUM START", "VACUUM END"}


def last_change(lake: Lake, uri: str) -> datetime | None:
    """When the table's data last changed (its latest non-maintenance commit), UTC naive."""
    table = delta.open_table(lake, uri)
    if table is None:
        return None
    for commit in table.history(20):
        if commit.get("operation") not in _MAINTENANCE and "timestamp" in commit:
            return datetime.fromtimestamp(commit["timestamp"] / 1000, UTC).replace(tzinfo=None)
    return None


def freshness_alerts(
    lake: Lake, contracts: Iterable[Contract], *, now: datetime | None = None
) -> list[Alert]:
    """`freshness`: silver tables whose data last changed longer ago than the contract allows.

    `fail_after` breached is an error, `warn_after` a warning (two incidents: a warning that
    worsens raises the error too). A table never written is not judged (nothing landed yet).
    """
    now = now or _now()
    alerts = []
    for c in contracts:
        changed = last_change(lake, lake.table_uri("silver", c.name))
        if changed is None:
            continue
        age = now - changed
        for level, limit, severity in (
            ("fail", c.freshness_fail_after, "error"),
            ("warn", c.freshness_warn_after, "warning"),
        ):
            if limit is not None and age > limit:
                alerts.append(
                    Alert(
                        kind="freshness",
                        incident=incident_key("freshness", _silver_asset(c.name), level),
                        message=f"silver/{c.name} last changed {_ago(age)} ago "
                        f"({changed:%Y-%m-%d %H:%M:%S} UTC); its contract's "
                        f"freshness.{level}_after is {_ago(limit)}",
                        severity=severity,  # type: ignore[arg-type]
                        source=c.name,
                        asset=_silver_asset(c.name),
                    )
                )
    return alerts


def _ago(delta_: timedelta) -> str:
    seconds = int(delta_.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds / 3600:.1f}h"


ARRIVAL_LOOKBACK_DAYS = 7
"""`arrival_late` looks at this many landing dates back (today included)."""


def _arrival_window(now: datetime, zone: str) -> list[date]:
    today = now.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).date()
    return [today - timedelta(days=n) for n in range(ARRIVAL_LOOKBACK_DAYS)]


def arrival_alerts(
    lake: Lake, contracts: Iterable[Contract], *, now: datetime | None = None
) -> list[Alert]:
    """`arrival_late`: landing dates past their contract's `arrival.expected_by` + `grace` (in its
    `timezone`) with no file delivered, among the last `ARRIVAL_LOOKBACK_DAYS` dates."""
    now = now or _now()
    alerts = []
    for c in contracts:
        sla = c.arrival
        if sla is None:
            continue
        zone = ZoneInfo(sla.timezone)
        local_now = now.replace(tzinfo=UTC).astimezone(zone)
        due = {
            day.isoformat(): datetime.combine(day, sla.expected_by, zone) + sla.grace
            for day in _arrival_window(now, sla.timezone)
            if (c.since is None or day.isoformat() >= c.since)
        }
        late = sorted(d for d, deadline in due.items() if local_now > deadline)
        if not late:
            continue
        landed = {f.landing_date for f in list_landing_files(lake, c.name, late)}
        for day in late:
            if day in landed:
                continue
            alerts.append(
                Alert(
                    kind="arrival_late",
                    incident=incident_key("arrival_late", f"landing/{c.name}", day),
                    message=f"no file landed for `{c.name}` landing date {day}: due by "
                    f"{sla.expected_by:%H:%M} {sla.timezone} + {_ago(sla.grace)} grace "
                    f"({due[day]:%Y-%m-%d %H:%M %Z})",
                    source=c.name,
                    asset=f"landing/{c.name}",
                    partition=day,
                )
            )
    return alerts


LAKE_KINDS = frozenset(
    {"partition_blocked", "check_failed", "file_rejected", "freshness", "arrival_late"}
)
"""The kinds `lake_alerts` observes completely: an open one it no longer sees has recovered."""


def lake_alerts(lake: Lake, contracts: Iterable[Contract], *, now: datetime | None = None):
    """Every incident the lake's own tables and landing zone show now (the `LAKE_KINDS`)."""
    return [
        *partition_alerts(lake),
        *check_alerts(lake),
        *rejected_file_alerts(lake),
        *freshness_alerts(lake, contracts, now=now),
        *arrival_alerts(lake, contracts, now=now),
    ]


def covered_by_lake(row: dict, *, now: datetime | None = None) -> bool:
    """Whether `lake_alerts` vouches for an open incident (its `_system/alerts` row): every one
    of the `LAKE_KINDS`, except a late arrival older than the days it looks at."""
    if row["kind"] not in LAKE_KINDS:
        return False
    if row["kind"] == "arrival_late":
        oldest = (now or _now()).date() - timedelta(days=ARRIVAL_LOOKBACK_DAYS - 2)
        return row["partition"] >= oldest.isoformat()
    return True


# --- delivery ---


class Sink(Protocol):
    """Somewhere alerts go. `send` raises on failure (after its own retries)."""

    name: str

    def send(self, alert: dict) -> None: ...


def payload(alert: dict) -> dict:
    """An alert row as JSON-ready data, with a one-line `text` for chat tools."""
    body = {k: (v.isoformat() + "Z" if isinstance(v, datetime) else v) for k, v in alert.items()}
    body["text"] = summary(alert)
    return body


def summary(alert: dict) -> str:
    where = " ".join(p for p in (alert["asset"], alert["partition"]) if p)
    head = "RESOLVED" if alert["status"] == "resolved" else alert["severity"].upper()
    text = f"[{head}] {alert['kind']} {where}: {alert['message']}"
    if alert.get("first_response"):
        text += f"\nFirst response: {alert['first_response']}"
    if alert.get("run_url"):
        text += f"\nRun: {alert['run_url']}"
    return text


class DeliveryError(Exception):
    """A sink did not take an alert (after its retries); the alert stays pending."""


@dataclass
class WebhookSink:
    """A JSON POST of each alert to `url`; a non-2xx answer or no answer is retried with backoff."""

    url: str
    attempts: int = 3
    backoff_seconds: float = 0.5
    timeout_seconds: float = 5.0
    name: str = field(default="webhook")

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            msg = f"{WEBHOOK_ENV} `{self.url}`: must be an http:// or https:// URL"
            raise ConfigError(msg)

    def send(self, alert: dict) -> None:
        data = json.dumps(payload(alert)).encode()
        error: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            request = urllib.request.Request(
                self.url, data=data, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    response.read()
                return
            except (urllib.error.URLError, OSError) as exc:  # HTTPError is a URLError
                error = exc
        msg = f"webhook `{self.url}` did not take alert {alert['alert_id']}: {error}"
        raise DeliveryError(msg)


def env_sinks() -> list[Sink]:
    """The sinks configured in the environment that need no Dagster (the webhook)."""
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    return [WebhookSink(url)] if url else []


@dataclass
class DeliveryReport:
    delivered: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def pending(lake: Lake, sink: str, *, now: datetime | None = None) -> pl.DataFrame:
    """The alert rows `sink` has not acknowledged, oldest first (within `DELIVERY_MAX_AGE`)."""
    now = now or _now()
    rows = read_alerts(lake).filter(pl.col("raised_at") >= now - DELIVERY_MAX_AGE)
    done = delta.scan(lake, lake.table_uri("_system", DELIVERIES))
    if done is not None:
        ids = done.filter(pl.col("sink") == sink).select("alert_id").collect()
        rows = rows.join(ids, on="alert_id", how="anti")
    return rows.sort("raised_at")


def deliver(lake: Lake, sinks: Sequence[Sink], *, now: datetime | None = None) -> DeliveryReport:
    """Send every sink its pending alerts, oldest first; stop a sink at its first failure (the
    rest wait, in order, for the next call). Acknowledgements are one append per call."""
    report = DeliveryReport()
    acks = []
    for sink in sinks:
        rows = pending(lake, sink.name, now=now).to_dicts()
        sent = 0
        for row in rows:
            try:
                sink.send(row)
            except Exception as exc:  # any sink failure leaves the row pending, by design
                report.errors.append(f"{sink.name}: {exc}")
                log.warning("alert delivery to %s failed, will retry: %s", sink.name, exc)
                break
            acks.append(
                {
                    "alert_id": row["alert_id"],
                    "sink": sink.name,
                    "attempts": 1,
                    "delivered_at": _now(),
                }
            )
            sent += 1
        report.delivered[sink.name] = sent
        report.pending[sink.name] = len(rows) - sent
    if acks:
        system.append_rows(lake, DELIVERIES, pl.DataFrame(acks, schema=_DELIVERY_SCHEMA))
    return report


def parse_stuck_after(value: str | None, default: timedelta) -> timedelta:
    """`LAKEHOUSE_RUN_STUCK_AFTER`-style durations (`30m`, `2h`), with a clear error."""
    if not value:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        msg = f"LAKEHOUSE_RUN_STUCK_AFTER: {exc}"
        raise ConfigError(msg) from exc
