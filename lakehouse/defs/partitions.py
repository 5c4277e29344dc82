"""The one daily partitions definition of the event chain (landing date = partition key)."""

from __future__ import annotations

import os

import dagster as dg

START_DATE = os.environ.get("LAKEHOUSE_START_DATE", "2018-09-01")
"""First landing date the lakehouse knows; the Jaffle Shop feed starts on 2018-09-01."""

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_offset=1)

backfill_policy = dg.BackfillPolicy.single_run()
"""Every asset of the partitioned chain reads its whole partition range: a backfill is one run."""
