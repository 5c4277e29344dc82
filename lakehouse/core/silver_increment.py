"""Silver for a landing date that only gained new files: evaluate those files, not the date.

A stream lands a file every second into today's landing date; evaluating the whole date on
each one would make every publish cost what the day holds so far. When all a date gained since
its last published evaluation is new files (the fingerprint of its other files is the one that
evaluation recorded), and nothing else calls for the whole date, only the new files' rows are
typed, checked and published, with exactly the outcome of evaluating the whole date:

- nothing is retracted (no file changed or went away), so for every key silver's new row is
  the latest of the row it holds and the new files' best valid row;
- the date's counts are its last evaluation's plus the new rows': quarantined, duplicates
  within the date (a new row of a key the date's older files already hold in silver), accepted;
  its batch rules judge those totals.

Anything else takes the whole-date road (`lakehouse.core.silver`): a changed, removed or
rejected file, a date last held or blocked, a key the new files share with silver's row from
another landing date or from an interrupted earlier evaluation of the same files (whose
duplicate and superseded counts need the whole date), a batch rule that fails, rows waiting
for held-back keys, references (the whole date re-checks its rows against the referenced table
as it is now), anomaly profiles (a profile of the whole date), snapshot sources, `reprocess`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import polars as pl

from lakehouse.core import delta, drift
from lakehouse.core.bronze import LANDING_DATE, SOURCE_FILE, SOURCE_SHA256
from lakehouse.core.checks import CHECK_ROW_RULES, PartitionAudit, batch_rules, table_checks
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.publish import latest_per_key, prepare, publish
from lakehouse.core.quarantine import write_quarantine

if TYPE_CHECKING:
    from lakehouse.core.silver import SilverResult, _Triage

log = logging.getLogger(__name__)


def new_files(contract: Contract, date: str, triage: _Triage) -> pl.DataFrame | None:
    """The ledger rows of the files `date` gained since its last published evaluation, when
    that is all it gained (None: the whole date must be evaluated)."""
    from lakehouse.core.silver import _fingerprints

    before = triage.previous.get(date)
    if (
        before is None
        or before["status"] != "published"
        or int(before.get("held") or 0)
        or contract.delivery == "snapshot"
        or contract.checks.anomalies is not None
        or any(c.references is not None for c in contract.columns)
    ):
        return None
    ledger = triage.ledger.filter(pl.col("landing_date") == date)
    fresh = pl.col("ingested_at") > before["recorded_at"]
    added, kept = ledger.filter(fresh), ledger.filter(~fresh)
    if added.is_empty():
        return None
    rejected = {date: triage.rejected[date]} if date in triage.rejected else {}
    if _fingerprints(contract, kept, [date], rejected)[date] != before["fingerprint"]:
        return None
    return added


def publish_new_files(
    lake: Lake, contract: Contract, date: str, triage: _Triage, run_id: str, result: SilverResult
) -> bool:
    """Evaluate and publish only the files `date` gained, when that is the whole date's outcome;
    returns whether it did (else nothing was written and the whole date must be evaluated)."""
    from lakehouse.core.silver import _from_state, _sample, _split_waiting, _validate

    added = new_files(contract, date, triage)
    if added is None:
        return False
    files = added.get_column("path").to_list()
    before = triage.previous[date]
    bronze = delta.scan(
        lake,
        lake.table_uri("bronze", contract.name),
        partition_column=LANDING_DATE,
        partitions=[date],
    )
    if bronze is None:
        return False
    rows = bronze.filter(pl.col(SOURCE_FILE).is_in(files)).collect()
    total = int(triage.counts.get(date) or 0)
    if (
        rows.height != int(added.get_column("rows").sum())
        or total != int(before["bronze_rows"] or 0) + rows.height
    ):
        return False  # bronze does not hold what the ledger says: evaluate the date
    rows, problems = drift.apply_policy(contract, rows, added)
    valid, invalid, _ = _validate(lake, contract, rows)
    waiting, invalid = _split_waiting(lake, contract, invalid)
    if not waiting.is_empty():
        return False

    audit = _from_state(date, before)
    audit.unchanged = False
    audit.bronze_rows = total
    audit.landed = int(triage.ledger.filter(pl.col("landing_date") == date)["rows"].sum())
    audit.quarantined += invalid.height
    audit.files_rejected = [f"`{f['path']}`: {f['reason']}" for f in triage.rejected.get(date, [])]
    batch_rules(contract, audit, problems, triage.counts)
    if audit.blocked:
        return False  # the whole date decides what a blocked date holds back

    keys = list(contract.primary_key)
    winners = valid if valid.select(keys).is_unique().all() else latest_per_key(contract, valid)
    held_here: list[pl.DataFrame] = []

    def admit(state: pl.DataFrame) -> bool:
        """Silver's rows of the new keys must all come from this date's older files."""
        if state.is_empty():
            return True
        elsewhere = (pl.col(LANDING_DATE) != date) | pl.col(SOURCE_FILE).is_in(files)
        if not state.filter(elsewhere).is_empty():
            return False
        held_here.append(state.select(keys))
        return True

    versions = rows.select(SOURCE_FILE, SOURCE_SHA256).unique()
    write_quarantine(lake, contract, invalid, [date], versions, run_id=run_id, files=files)
    published = publish(
        lake,
        contract,
        prepare(lake, contract, winners),
        [],
        fallback=lambda keys: pl.DataFrame(),
        admit=admit,
        run_id=run_id,
    )
    if published is None:
        return False
    log.info(
        "silver %s: landing date %s: %d new file(s) evaluated on their own (%d rows)",
        contract.name,
        date,
        len(files),
        rows.height,
    )
    held = held_here[0].height if held_here else 0
    audit.duplicates += valid.height - winners.height + held
    audit.accepted += winners.height - held
    accepted_before = int(before["accepted"] or 0)
    _check_published(audit, winners.select(keys), published.keys, date, accepted_before, held)
    result.partitions[date] = audit
    result.add_changes(published)
    _sample(result, CHECK_ROW_RULES, invalid)
    _sample(result, "quarantine_ratio", invalid)
    return True


def _check_published(
    audit: PartitionAudit,
    expected: pl.DataFrame,
    after: pl.DataFrame,
    date: str,
    accepted_before: int,
    held: int,
) -> None:
    """The table checks over the keys the publish touched: each held once, each from `date`."""
    keys = expected.columns
    duplicated = after.filter(pl.struct(keys).is_duplicated()) if not after.is_empty() else after
    found = (
        after.filter(pl.col(LANDING_DATE) == date).select(keys) if not after.is_empty() else after
    )
    differ = (
        expected.join(found, on=keys, how="anti").height
        + found.join(expected, on=keys, how="anti").height
        if not found.is_empty()
        else expected.height
    )
    table_checks(
        audit,
        duplicate_keys=duplicated.select(keys).n_unique() if not duplicated.is_empty() else 0,
        expected=audit.accepted,
        found=accepted_before + found.height - held,
        missing=differ,
    )
