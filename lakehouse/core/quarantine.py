"""Quarantine: the rows that failed a rule, as landed, with every reason; never deleted.

`quarantine/<source>` is partitioned by landing date. A row is identified by its landed file
version and position (`_source_file`, `_source_sha256`, `_row_number`). Each silver evaluation
of a date brings the date's open rows in line with what its bronze rows now fail:

- a failing row not yet open is added (with `_rules`, `_errors`, `_run_id`, `_quarantined_at`);
- an open row whose file version bronze no longer holds (the file was redelivered) is retired
  (`_retired_at`, `_retired_run_id`): kept, but no longer counted as open;
- an open row whose file version bronze still holds but which now passes (a contract fix) is
  marked replayed (`_replay_run_id`, `_replayed_at`): silver holds it now.

An unchanged date writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from lakehouse.core import delta
from lakehouse.core.bronze import LANDING_DATE, SOURCE_FILE, SOURCE_SHA256
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.readers import ROW_NUMBER

log = logging.getLogger(__name__)

RUN_ID = "_run_id"
QUARANTINED_AT = "_quarantined_at"
REPLAY_RUN_ID = "_replay_run_id"
REPLAYED_AT = "_replayed_at"
RETIRED_RUN_ID = "_retired_run_id"
RETIRED_AT = "_retired_at"
IDENTITY = [SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER]
OPEN = pl.col(RETIRED_AT).is_null() & pl.col(REPLAY_RUN_ID).is_null()
"""A quarantined row still waiting for a fix."""


def open_rows(lake: Lake, contract: Contract) -> pl.DataFrame:
    """The source's open quarantine rows (empty if none)."""
    frame = delta.scan(lake, lake.table_uri("quarantine", contract.name))
    if frame is None:
        return pl.DataFrame()
    names = frame.collect_schema().names()
    if RETIRED_AT not in names:
        frame = frame.with_columns(pl.lit(None, pl.Datetime("us")).alias(RETIRED_AT))
    return frame.filter(OPEN).collect()


def write_quarantine(
    lake: Lake,
    contract: Contract,
    invalid: pl.DataFrame,
    dates: Sequence[str],
    bronze_versions: pl.DataFrame,
    *,
    run_id: str,
    files: Sequence[str] | None = None,
) -> dict[str, int]:
    """Bring the open quarantine rows of `dates` in line with `invalid`; returns rows added per date.

    Args:
        invalid: This evaluation's failing rows of `dates`.
        bronze_versions: The (`_source_file`, `_source_sha256`) pairs bronze holds for `dates`.
        files: Only the rows of these landed files are brought in line (an evaluation of some
            files of a date); the date's other rows stay as they are.
    """
    uri = lake.table_uri("quarantine", contract.name)
    frame = delta.scan(lake, uri, partition_column=LANDING_DATE, partitions=list(dates))
    if frame is not None and files is not None:
        frame = frame.filter(pl.col(SOURCE_FILE).is_in(list(files)))
    now = datetime.now(UTC).replace(tzinfo=None)
    fresh = invalid.with_columns(
        pl.lit(run_id).alias(RUN_ID),
        pl.lit(now).alias(QUARANTINED_AT),
        pl.lit(None, pl.String).alias(REPLAY_RUN_ID),
        pl.lit(None, pl.Datetime("us")).alias(REPLAYED_AT),
        pl.lit(None, pl.String).alias(RETIRED_RUN_ID),
        pl.lit(None, pl.Datetime("us")).alias(RETIRED_AT),
    )
    if frame is None:
        if fresh.is_empty():
            return {}
        _replace(lake, uri, fresh, dates, run_id, files)
        return dict(fresh.group_by(LANDING_DATE).len().iter_rows())
    existing = frame.collect()
    for column, dtype in ((RETIRED_RUN_ID, pl.String), (RETIRED_AT, pl.Datetime("us"))):
        if column not in existing.columns:
            existing = existing.with_columns(pl.lit(None, dtype).alias(column))
    is_open = existing.select(OPEN).to_series()
    still = existing.filter(is_open)
    added = fresh.join(still.select(IDENTITY), on=IDENTITY, how="anti")
    closing = still.join(fresh.select(IDENTITY), on=IDENTITY, how="anti")
    if added.is_empty() and closing.is_empty():
        return {}
    kept_versions = bronze_versions.select(SOURCE_FILE, SOURCE_SHA256).unique()
    passing = closing.join(kept_versions, on=[SOURCE_FILE, SOURCE_SHA256], how="semi")
    mark = pl.struct(IDENTITY)
    replayed = mark.is_in(passing.select(pl.struct(IDENTITY)).to_series().implode())
    retired = mark.is_in(closing.select(pl.struct(IDENTITY)).to_series().implode()) & ~replayed
    updated = existing.with_columns(
        pl.when(is_open & replayed)
        .then(pl.lit(run_id))
        .otherwise(pl.col(REPLAY_RUN_ID))
        .alias(REPLAY_RUN_ID),
        pl.when(is_open & replayed)
        .then(pl.lit(now))
        .otherwise(pl.col(REPLAYED_AT))
        .alias(REPLAYED_AT),
        pl.when(is_open & retired)
        .then(pl.lit(run_id))
        .otherwise(pl.col(RETIRED_RUN_ID))
        .alias(RETIRED_RUN_ID),
        pl.when(is_open & retired)
        .then(pl.lit(now))
        .otherwise(pl.col(RETIRED_AT))
        .alias(RETIRED_AT),
    )
    touched = sorted(
        set(added.get_column(LANDING_DATE).to_list())
        | set(closing.get_column(LANDING_DATE).to_list())
    )
    rows = pl.concat(
        [updated.filter(pl.col(LANDING_DATE).is_in(touched)), added], how="diagonal_relaxed"
    )
    _replace(lake, uri, rows, touched, run_id, files)
    log.info(
        "quarantine %s: %d row(s) added, %d retired, %d now passing",
        contract.name,
        added.height,
        closing.height - passing.height,
        passing.height,
    )
    return dict(added.group_by(LANDING_DATE).len().iter_rows())


def _replace(
    lake: Lake,
    uri: str,
    rows: pl.DataFrame,
    dates: Sequence[str],
    run_id: str,
    files: Sequence[str] | None = None,
) -> None:
    predicate = delta.in_predicate(LANDING_DATE, list(dates))
    if files is not None:
        predicate += f" AND {delta.in_predicate(SOURCE_FILE, list(files))}"
    delta.replace_where(
        lake,
        uri,
        rows,
        predicate,
        partition_by=[LANDING_DATE],
        step="quarantine",
        run_id=run_id,
    )
