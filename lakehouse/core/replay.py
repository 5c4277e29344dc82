"""Quarantine replay: re-evaluate quarantined rows under the current contract and promote those that pass."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from lakehouse.core import system
from lakehouse.core.bronze import LANDING_DATE, SOURCE_FILE, SOURCE_SHA256
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.quarantine import open_rows
from lakehouse.core.readers import ROW_NUMBER
from lakehouse.core.silver import load_silver

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """What one quarantine replay did."""

    checked: int = 0
    promoted: int = 0
    still_failing: int = 0
    skipped_blocked: int = 0
    """Rows of landing dates whose last silver run was blocked: re-materialize those instead."""


def replay_quarantine(lake: Lake, contract: Contract, *, run_id: str) -> ReplayResult:
    """Re-evaluate the landing dates holding open quarantine rows under the current contract.

    Rows that now pass are published like any others (silver is a function of bronze) and marked
    in quarantine with `_replay_run_id` and `_replayed_at`; a second replay changes nothing.
    Rows of a landing date whose last evaluation was blocked stay put: that date's held rows are
    not in quarantine, so the date is replayed whole by materializing its partition again.
    """
    result = ReplayResult()
    pending = open_rows(lake, contract)
    if pending.is_empty():
        return result
    blocked = system.blocked_dates(lake, "silver", contract.name)
    on_blocked = pending.get_column(LANDING_DATE).is_in(list(blocked))
    result.skipped_blocked = int(on_blocked.sum())
    pending = pending.filter(~on_blocked)
    result.checked = pending.height
    if pending.is_empty():
        return result
    dates = sorted(set(pending.get_column(LANDING_DATE).to_list()))
    load_silver(lake, contract, dates, run_id=run_id, reprocess=True)
    after = open_rows(lake, contract)
    still = after.filter(pl.col(LANDING_DATE).is_in(dates)) if not after.is_empty() else after
    result.still_failing = (
        still.join(
            pending.select(SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER),
            on=[SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER],
            how="semi",
        ).height
        if not still.is_empty()
        else 0
    )
    result.promoted = result.checked - result.still_failing
    log.info(
        "replay %s: %d quarantined rows checked, %d promoted to silver, %d still failing",
        contract.name,
        result.checked,
        result.promoted,
        result.still_failing,
    )
    return result
