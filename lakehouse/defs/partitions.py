"""The one daily partitions definition of the event chain (landing date = partition key).

The partitions start at `LAKEHOUSE_START_DATE` when set, else at the earliest `since:` of the
contracts, else at the earliest landing date on a local landing zone, else today: the UI opens on
partitions that hold data, not on years of empty days.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.landing import is_landing_date

START_DATE_ENV = "LAKEHOUSE_START_DATE"


def start_date() -> str:
    """The first daily partition (see the module docstring for where it comes from)."""
    if os.environ.get(START_DATE_ENV):
        return os.environ[START_DATE_ENV]
    contracts = load_contracts()
    declared = [c.since for c in contracts if c.since]
    if declared:
        return min(declared)
    lake = Lake.from_env()
    landed = []
    if not lake.is_s3:
        for contract in contracts:
            folder = lake.landing_uri(contract.name)
            if os.path.isdir(folder):
                landed += [d for d in os.listdir(folder) if is_landing_date(d)]
    return min(landed) if landed else datetime.now(UTC).date().isoformat()


START_DATE = start_date()
daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1)

backfill_policy = dg.BackfillPolicy.single_run()
"""Every asset of the partitioned chain reads its whole partition range: a backfill is one run."""
