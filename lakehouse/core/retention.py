"""How long each layer of a source keeps its data, and which partitions that has expired.

A contract's `retention:` block sets it per layer, each a duration (`90d`, `12w`, `2y`, `36h`)
or `forever` (the default for every layer):

    retention:
      bronze: 90d        # landed rows, by their landing date (`_landing_date`)
      quarantine: 30d    # rejected rows, by their landing date
      silver: 2y         # published rows, by their event date (`_event_date`; needs event_time)
      history: 7d        # how long replaced data files and log entries stay (time travel)

A partition is expired when its date is older than the retention on the day maintenance runs:
with `bronze: 90d` on 2024-06-30, landing dates before 2024-04-01 go. `history` is the vacuum and
log retention of every table of the source (default 7 days): data files a delete, a MERGE or a
compaction replaced, and JSON commits older than it, are removed by `lakehouse maintain`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from lakehouse.core.errors import ContractError

RETENTION_LAYERS = ("bronze", "quarantine", "silver")
DEFAULT_HISTORY = timedelta(days=7)
FOREVER = "forever"
_DURATION = re.compile(r"^(\d+)\s*([hdwy])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_UNITS["y"] = timedelta(days=365)
PARTITION_COLUMNS = {"bronze": "_landing_date", "quarantine": "_landing_date"}
"""The date partition a layer's rows expire by; silver's is its event date (`_event_date`)."""
SILVER_PARTITION = "_event_date"


@dataclass(frozen=True)
class Retention:
    """Per-layer retention of one source (None: kept forever) and its time-travel history."""

    bronze: timedelta | None = None
    quarantine: timedelta | None = None
    silver: timedelta | None = None
    history: timedelta = DEFAULT_HISTORY

    def of(self, layer: str) -> timedelta | None:
        return getattr(self, layer) if layer in RETENTION_LAYERS else None

    @property
    def history_hours(self) -> float:
        return self.history.total_seconds() / 3600


def parse_duration(text: Any) -> timedelta | None:
    """`90d`, `12w`, `2y` (365 days each), `36h`, or `forever` (None)."""
    if str(text).strip() == FOREVER:
        return None
    match = _DURATION.match(str(text).strip())
    if not match:
        msg = f"`{text}` is not a retention like `90d`, `12w`, `2y`, `36h` or `forever`"
        raise ValueError(msg)
    return int(match[1]) * _UNITS[match[2]]


def parse_retention(raw: Any, path: str | Path, *, event_time: str | None) -> Retention:
    """Validate a contract's `retention:` block (None or absent: everything kept forever)."""
    if raw is None:
        return Retention()
    if not isinstance(raw, Mapping):
        raise ContractError(
            path, "retention", "must be a mapping of layer to duration, e.g. `{bronze: 90d}`"
        )
    allowed = (*RETENTION_LAYERS, "history")
    values: dict[str, timedelta | None] = {}
    for key, text in raw.items():
        if key not in allowed:
            raise ContractError(
                path, f"retention.{key}", f"unknown field; allowed here: {', '.join(allowed)}"
            )
        try:
            values[key] = parse_duration(text)
        except ValueError as exc:
            raise ContractError(path, f"retention.{key}", str(exc)) from None
        if key != "history" and values[key] is not None and values[key] < timedelta(days=1):
            raise ContractError(path, f"retention.{key}", "partitions are days: keep at least `1d`")
    if values.get("silver") is not None and event_time is None:
        raise ContractError(
            path,
            "retention.silver",
            "silver expires by event date: the contract needs `event_time` (or drop the field)",
        )
    if "history" in values and values["history"] is None:
        raise ContractError(
            path,
            "retention.history",
            "replaced files must be removed at some point: give a duration such as `7d`",
        )
    history = values.pop("history", DEFAULT_HISTORY)
    assert history is not None
    return Retention(**values, history=history)


def partition_column(layer: str) -> str:
    return PARTITION_COLUMNS.get(layer, SILVER_PARTITION)


def cutoff(keep: timedelta, today: date) -> str:
    """The first date still kept (ISO) when `keep` is the retention on `today`."""
    return (today - timedelta(days=max(1, keep.days))).isoformat()


def expired(partitions: Mapping[str, int], keep: timedelta | None, today: date) -> list[str]:
    """The partition dates (of `partitions`: date -> rows) `keep` has expired on `today`."""
    if keep is None:
        return []
    first = cutoff(keep, today)
    return sorted(d for d in partitions if d < first)
