"""Alerts on the core, without Dagster: incidents from the lake's real `_system` tables, raised
once and resolved once, and delivered to a real HTTP server that fails, recovers or is absent."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core import alerts
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import parse_contract
from lakehouse.core.errors import ConfigError, ContractError
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver
from lakehouse_tests.servers import free_port
from lakehouse_tests.small_lake import deliver, text
from lakehouse_tests.webhook import Hook

DAY1, DAY2 = "2024-05-01", "2024-05-02"
RAW = {
    "name": "events",
    "description": "Test events.",
    "owner": "team:test",
    "primary_key": ["id"],
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "amount", "type": "int64", "checks": {"ge": 0}},
    ],
    "checks": {"max_quarantine_ratio": 0.3},
    "freshness": {"warn_after": "30s", "fail_after": "60s"},
}
CONTRACT = parse_contract(RAW, "events.yaml")


def events(day: str, good: int, bad: int = 0) -> bytes:
    return text(
        [
            "id,amount",
            *(f"{day}-{i},{i}" for i in range(good)),
            *(f"{day}-bad{i},-1" for i in range(bad)),
        ]
    )


def load(lake: Lake, *dates: str) -> None:
    load_bronze(lake, CONTRACT, list(dates), run_id="r-bronze")
    load_silver(lake, CONTRACT, list(dates), run_id="r-silver")


def tick(lake: Lake, now: datetime | None = None) -> list[dict]:
    """What the alerts sensor does with the lake's tables on one tick."""
    return alerts.sync(
        lake,
        alerts.lake_alerts(lake, [CONTRACT], now=now),
        covers=lambda row: alerts.covered_by_lake(row, now=now),
        now=now,
    )


def early(lake: Lake) -> datetime:
    """A `now` at which the tables are fresh (right after their last change)."""
    changed = alerts.last_change(lake, lake.table_uri("silver", "events"))
    assert changed is not None
    return changed + timedelta(seconds=1)


def test_a_blocked_date_raises_one_alert_and_resolves_once_after_the_fix(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    deliver(tmp_path, "events", DAY1, "events.csv", events(DAY1, 10))
    load(lake, DAY1)
    assert tick(lake, early(lake)) == []

    # 4 of 10 rows fail `amount >= 0`: 40% > 30%, so DAY2 is blocked
    deliver(tmp_path, "events", DAY2, "events.csv", events(DAY2, 6, bad=4))
    load(lake, DAY2)
    raised = tick(lake, early(lake))
    by_kind = {r["kind"]: r for r in raised}
    assert sorted(by_kind) == ["check_failed", "partition_blocked"]
    blocked = by_kind["partition_blocked"]
    assert blocked["status"] == "firing" and blocked["severity"] == "error"
    assert (blocked["asset"], blocked["partition"], blocked["source"]) == (
        "silver/events",
        DAY2,
        "events",
    )
    assert "quarantine_ratio" in blocked["message"] and "6 row(s) held" in blocked["message"]
    assert blocked["run_id"] == "r-silver" and blocked["run_url"].endswith("/runs/r-silver")
    assert blocked["first_response"] == alerts.first_responses()["partition_blocked"]
    failed = by_kind["check_failed"]
    assert failed["incident"] == "check_failed:silver/events:row_rules"
    assert failed["severity"] == "warning" and DAY2 in failed["message"]

    # the same state on later ticks (and after a rerun that changes nothing) raises nothing
    load(lake, DAY2)
    assert tick(lake, early(lake)) == []
    assert tick(lake, early(lake)) == []

    # the corrected redelivery publishes DAY2: both incidents resolve, once
    deliver(tmp_path, "events", DAY2, "events.csv", events(DAY2, 10))
    load(lake, DAY2)
    resolved = tick(lake, early(lake))
    assert sorted((r["kind"], r["status"]) for r in resolved) == [
        ("check_failed", "resolved"),
        ("partition_blocked", "resolved"),
    ]
    assert {r["incident"] for r in resolved} == {blocked["incident"], failed["incident"]}
    assert tick(lake, early(lake)) == []
    table = alerts.read_alerts(lake)
    assert table.height == 4
    assert table.filter(pl.col("kind") == "partition_blocked").get_column("status").to_list() == [
        "firing",
        "resolved",
    ]
    assert alerts.open_incidents(lake) == {}


def test_freshness_warns_then_fails_and_resolves_on_the_next_publish(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    deliver(tmp_path, "events", DAY1, "events.csv", events(DAY1, 5))
    before = datetime.now(UTC).replace(tzinfo=None)
    load(lake, DAY1)
    after = datetime.now(UTC).replace(tzinfo=None)
    changed = alerts.last_change(lake, lake.table_uri("silver", "events"))
    assert changed is not None
    assert before - timedelta(seconds=1) <= changed <= after + timedelta(seconds=1)

    assert tick(lake, changed + timedelta(seconds=20)) == []
    warned = tick(lake, changed + timedelta(seconds=45))
    assert [(r["incident"], r["severity"]) for r in warned] == [
        ("freshness:silver/events:warn", "warning")
    ]
    assert "warn_after is 30s" in warned[0]["message"]
    failed = tick(lake, changed + timedelta(seconds=90))
    assert [(r["incident"], r["severity"]) for r in failed] == [
        ("freshness:silver/events:fail", "error")
    ]
    # new data publishes: silver changed now, both incidents resolve
    deliver(tmp_path, "events", DAY2, "events.csv", events(DAY2, 5))
    load(lake, DAY2)
    resolved = tick(lake, early(lake))
    assert sorted((r["incident"], r["status"]) for r in resolved) == [
        ("freshness:silver/events:fail", "resolved"),
        ("freshness:silver/events:warn", "resolved"),
    ]


def test_a_rejected_file_alerts_until_it_is_redelivered_readable(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    deliver(tmp_path, "events", DAY1, "good.csv", events(DAY1, 5))
    deliver(tmp_path, "events", DAY1, "broken.csv", b"")
    load(lake, DAY1)
    raised = [r for r in tick(lake, early(lake)) if r["kind"] == "file_rejected"]
    assert [(r["incident"], r["partition"], r["asset"]) for r in raised] == [
        (f"file_rejected:events/{DAY1}/broken.csv", DAY1, "bronze/events")
    ]
    assert "empty file" in raised[0]["message"]
    time.sleep(0.01)  # a new mtime: the redelivery is a new version of the file
    deliver(tmp_path, "events", DAY1, "broken.csv", events(DAY1, 0) + b"x1,3\n")
    load(lake, DAY1)
    resolved = [r for r in tick(lake, early(lake)) if r["kind"] == "file_rejected"]
    assert [(r["incident"], r["status"]) for r in resolved] == [(raised[0]["incident"], "resolved")]


def two_alerts(lake: Lake) -> list[dict]:
    return alerts.sync(
        lake,
        [
            alerts.Alert("run_failed", "run_failed:a", "run a failed", run_id="ra"),
            alerts.Alert("run_stuck", "run_stuck:b", "run b hangs", run_id="rb"),
        ],
        covers=lambda row: False,
    )


def test_the_webhook_is_retried_with_backoff(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    raised = two_alerts(lake)
    port = free_port()
    with Hook(port, fail_first=2).running() as hook:
        sink = alerts.WebhookSink(f"http://127.0.0.1:{port}/hook", backoff_seconds=0.2)
        started = time.monotonic()
        report = alerts.deliver(lake, [sink])
        elapsed = time.monotonic() - started
    assert report.delivered == {"webhook": 2} and report.pending == {"webhook": 0}
    assert elapsed >= 0.2 + 0.4  # two failures: waited 0.2 s, then 0.4 s
    assert hook.calls == 4
    assert [b["alert_id"] for b in hook.bodies] == [r["alert_id"] for r in raised]
    body = hook.bodies[0]
    assert body["kind"] == "run_failed" and body["status"] == "firing"
    assert body["first_response"] == alerts.first_responses()["run_failed"]
    assert body["text"].startswith("[ERROR] run_failed") and "/runs/ra" in body["run_url"]
    assert re.match(r"\d{4}-\d\d-\d\dT", body["raised_at"])


def test_a_dead_webhook_loses_nothing(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    raised = two_alerts(lake)
    port = free_port()
    sink = alerts.WebhookSink(f"http://127.0.0.1:{port}/", attempts=2, backoff_seconds=0.05)
    # nothing listens: every tick fails, the rows stay pending, in order
    for _ in range(2):
        report = alerts.deliver(lake, [sink])
        assert report.delivered == {"webhook": 0} and report.pending == {"webhook": 2}
        assert "did not take alert" in report.errors[0]
    assert alerts.pending(lake, "webhook").get_column("alert_id").to_list() == [
        r["alert_id"] for r in raised
    ]
    # a third alert while it is down
    later = alerts.sync(
        lake, [alerts.Alert("freshness", "freshness:x", "stale")], covers=lambda row: False
    )
    with Hook(port).running() as hook:
        assert alerts.deliver(lake, [sink]).delivered == {"webhook": 3}
        assert alerts.deliver(lake, [sink]).delivered == {"webhook": 0}  # no duplicates
    assert [b["alert_id"] for b in hook.bodies] == [r["alert_id"] for r in raised + later]
    assert alerts.pending(lake, "webhook").is_empty()


def test_the_runbook_has_three_first_steps_for_every_kind() -> None:
    text_ = alerts.RUNBOOK.read_text()
    for kind in alerts.KINDS:
        section = text_.split(f"## {kind}\n", 1)[1].split("\n## ", 1)[0]
        steps = re.findall(r"^(\d)\. ", section, flags=re.M)
        assert steps == ["1", "2", "3"], kind
        assert alerts.first_responses()[kind] in section


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="LAKEHOUSE_ALERT_WEBHOOK `ftp://x`"):
        alerts.WebhookSink("ftp://x")
    with pytest.raises(ValueError, match="unknown alert kind `late`"):
        alerts.Alert("late", "late:x", "?")
    with pytest.raises(ConfigError, match="LAKEHOUSE_RUN_STUCK_AFTER: `soon`"):
        alerts.parse_stuck_after("soon", timedelta(hours=1))


def test_a_delivery_missing_past_its_deadline_is_late_until_it_lands(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    sla = {"expected_by": "06:00", "timezone": "Europe/Paris", "grace": "15m"}
    contract = parse_contract({**RAW, "since": DAY1, "arrival": sla}, "events.yaml")
    deliver(tmp_path, "events", DAY1, "events.csv", events(DAY1, 3))

    def arrivals(utc: str) -> list[dict]:
        now = datetime.fromisoformat(utc)
        return alerts.sync(
            lake,
            alerts.arrival_alerts(lake, [contract], now=now),
            covers=lambda row: alerts.covered_by_lake(row, now=now),
            now=now,
        )

    # 06:10 in Paris (CEST, UTC+2) on DAY2: within the grace
    assert arrivals(f"{DAY2}T04:10:00") == []
    # 06:20: late (DAY1 landed, and nothing is due before `since`)
    late = arrivals(f"{DAY2}T04:20:00")
    assert [(r["incident"], r["asset"], r["partition"]) for r in late] == [
        (f"arrival_late:landing/events:{DAY2}", "landing/events", DAY2)
    ]
    assert f"due by 06:00 Europe/Paris + 15m grace ({DAY2} 06:15 CEST)" in late[0]["message"]
    assert arrivals(f"{DAY2}T05:00:00") == []  # still late: no second alert
    deliver(tmp_path, "events", DAY2, "events.csv", events(DAY2, 3))
    resolved = arrivals(f"{DAY2}T05:10:00")
    assert [(r["incident"], r["status"]) for r in resolved] == [(late[0]["incident"], "resolved")]


def test_arrival_mistakes_name_the_field() -> None:
    with pytest.raises(ContractError, match=r"arrival\.expected_by.*in quotes"):
        parse_contract({**RAW, "arrival": {"expected_by": 360}}, "events.yaml")
    with pytest.raises(ContractError, match=r"arrival\.timezone.*`Mars/Olympus`"):
        parse_contract(
            {**RAW, "arrival": {"expected_by": "06:00", "timezone": "Mars/Olympus"}}, "e.yaml"
        )
    with pytest.raises(ContractError, match=r"arrival\.expected_by.*`soon`"):
        parse_contract({**RAW, "arrival": {"expected_by": "soon"}}, "events.yaml")
