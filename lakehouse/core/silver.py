"""Silver: write-audit-publish from bronze to a typed, deduplicated, PII-safe Delta table.

For a set of landing dates (the Dagster partitions of a run), in bounded chunks of dates:

1. read the bronze rows of those dates (partition-pruned);
2. apply the contract's schema-drift policy, type every column, run the row rules;
3. write failing rows to `quarantine/<source>` with every reason (replace-where on the dates);
4. audit each landing date as a batch (quarantine ratio, drift, reconciliation): a date that
   fails a blocking rule publishes nothing;
5. dedupe the passing rows on the primary key (latest by the contract's ordering), pseudonymise
   PII columns, and MERGE them into silver, the MERGE pinned to the event dates the batch touches.

Every bronze row of a date ends in exactly one place: published, quarantined, dropped as a
duplicate, or held back with its blocked date; `PartitionAudit` counts each.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from lakehouse.core import delta, system
from lakehouse.core.bronze import LANDING_DATE, LINEAGE_COLUMNS, SOURCE_FILE, SOURCE_SHA256
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.pii import pseudonymise
from lakehouse.core.readers import PARSE_ERROR, RAW_LINE, ROW_NUMBER
from lakehouse.core.validation import ERRORS, RULES, split_rows

log = logging.getLogger(__name__)

EVENT_DATE = "_event_date"
RESCUED = "_rescued"
SILVER_LINEAGE = (SOURCE_FILE, ROW_NUMBER, LANDING_DATE)
"""Lineage kept in silver: deterministic, so replaying a partition leaves rows identical."""
QUARANTINE_LINEAGE = (SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER, LANDING_DATE)
RUN_ID = "_run_id"
QUARANTINED_AT = "_quarantined_at"
REPLAY_RUN_ID = "_replay_run_id"
REPLAYED_AT = "_replayed_at"

# Check names, shared by the system tables and the Dagster asset checks.
CHECK_ROW_RULES = "row_rules"
CHECK_REFERENCES = "references"
CHECK_VOLUME = "volume"
CHECK_QUARANTINE_RATIO = "quarantine_ratio"
CHECK_SCHEMA_DRIFT = "schema_drift"
CHECK_PRIMARY_KEY_UNIQUE = "primary_key_unique"
CHECK_RECONCILIATION = "reconciliation"
SILVER_CHECKS = (
    CHECK_ROW_RULES,
    CHECK_REFERENCES,
    CHECK_QUARANTINE_RATIO,
    CHECK_VOLUME,
    CHECK_SCHEMA_DRIFT,
    CHECK_PRIMARY_KEY_UNIQUE,
    CHECK_RECONCILIATION,
)
BLOCKING_CHECKS = frozenset(
    {
        CHECK_QUARANTINE_RATIO,
        CHECK_VOLUME,
        CHECK_SCHEMA_DRIFT,
        CHECK_PRIMARY_KEY_UNIQUE,
        CHECK_RECONCILIATION,
    }
)
VOLUME_MIN_HISTORY = 3
"""The volume check needs this many earlier landing dates with rows before it judges a date."""

MAX_CHUNK_ROWS = 1_000_000
"""Silver processes landing dates in chunks of about this many bronze rows: its peak memory follows
the chunk (TPC-H lineitem, 16 columns: 7.2 GiB with chunks of 4M rows)."""


@dataclass
class CheckOutcome:
    """One check on one landing-date partition."""

    check: str
    partition: str
    passed: bool
    rows_checked: int
    rows_failed: int
    detail: str = ""

    @property
    def blocking(self) -> bool:
        return self.check in BLOCKING_CHECKS


@dataclass
class PartitionAudit:
    """Where every bronze row of one landing date ended."""

    landing_date: str
    landed: int = 0
    """Rows the ingest ledger recorded for the date's loaded files."""
    bronze_rows: int = 0
    references_failed: int = 0
    quarantined: int = 0
    duplicates: int = 0
    accepted: int = 0
    held: int = 0
    """Valid rows not published because a blocking check failed for this date."""
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(c.blocking and not c.passed for c in self.checks)


@dataclass
class SilverResult:
    """What one silver run did, per landing date."""

    partitions: dict[str, PartitionAudit] = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)
    """A few failing rows per check, for the asset check metadata."""

    def total(self, attr: str) -> int:
        return sum(getattr(p, attr) for p in self.partitions.values())

    @property
    def blocked_dates(self) -> list[str]:
        return sorted(d for d, p in self.partitions.items() if p.blocked)

    def outcomes(self, check: str) -> list[CheckOutcome]:
        return [c for p in self.partitions.values() for c in p.checks if c.check == check]


@delta.reusing_tables()
def load_silver(
    lake: Lake, contract: Contract, landing_dates: Sequence[str], *, run_id: str
) -> SilverResult:
    """Promote the bronze rows of `landing_dates` to silver (write-audit-publish)."""
    result = SilverResult()
    counts = _bronze_counts(lake, contract)
    for chunk in _chunks(counts, sorted(set(landing_dates))):
        _load_chunk(lake, contract, chunk, run_id, result, counts)
    system.record_dq_results(lake, _dq_rows(contract, result, run_id))
    return result


def _bronze_counts(lake: Lake, contract: Contract) -> dict[str, int]:
    """Bronze rows per landing date, from the Delta log alone, in date order."""
    table = delta.open_table(lake, lake.table_uri("bronze", contract.name))
    if table is None:
        return {}
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.is_empty():
        return {}
    return {
        d: int(n or 0)
        for d, n in actions.group_by(f"partition.{LANDING_DATE}")
        .agg(pl.col("num_records").sum())
        .sort(f"partition.{LANDING_DATE}")
        .iter_rows()
    }


def _chunks(counts: dict[str, int], dates: list[str]) -> list[list[str]]:
    """Group dates so each chunk holds at most about MAX_CHUNK_ROWS bronze rows."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for date in dates:
        rows = int(counts.get(date) or 0)
        if current and size + rows > MAX_CHUNK_ROWS:
            chunks.append(current)
            current, size = [], 0
        current.append(date)
        size += rows
    if current:
        chunks.append(current)
    return chunks


def _load_chunk(
    lake: Lake,
    contract: Contract,
    dates: list[str],
    run_id: str,
    result: SilverResult,
    counts: dict[str, int],
) -> None:
    bronze = delta.scan(
        lake,
        lake.table_uri("bronze", contract.name),
        partition_column=LANDING_DATE,
        partitions=dates,
    )
    batch = pl.DataFrame() if bronze is None else bronze.collect()
    audits = {d: PartitionAudit(d) for d in dates}
    result.partitions.update(audits)
    if batch.is_empty():
        for audit in audits.values():
            _audit(contract, audit, drift_problems=[], counts=counts)
            audit.checks.append(
                CheckOutcome(CHECK_PRIMARY_KEY_UNIQUE, audit.landing_date, True, 0, 0)
            )
            _reconcile(audit)
        return
    log.info(
        "silver %s: %d bronze rows over %d landing dates", contract.name, batch.height, len(dates)
    )
    for date, rows in batch.group_by(LANDING_DATE).len().iter_rows():
        audits[date].bronze_rows = rows

    batch, drift_problems = _apply_drift_policy(lake, contract, batch, dates, audits)
    if RAW_LINE not in batch.columns:
        batch = batch.with_columns(pl.lit(None, pl.String).alias(RAW_LINE))
    passthrough = [
        *QUARANTINE_LINEAGE,
        RAW_LINE,
        *([RESCUED] if RESCUED in batch.columns else []),
        *_evolved_columns(contract, batch),
    ]
    split = split_rows(
        contract, batch, passthrough, known_values=known_values(lake, contract, batch)
    )

    invalid = split.invalid
    is_fk = pl.col(RULES).list.eval(pl.element().str.ends_with(":references")).list.any()
    for date, rows, fk in invalid.group_by(LANDING_DATE).agg(pl.len(), is_fk.sum()).iter_rows():
        audits[date].quarantined = rows
        audits[date].references_failed = fk
    _sample(result, CHECK_ROW_RULES, invalid)
    _sample(result, CHECK_QUARANTINE_RATIO, invalid)
    _sample(result, CHECK_REFERENCES, invalid.filter(is_fk))
    _write_quarantine(lake, contract, invalid, dates, run_id)

    valid = split.valid.drop(SOURCE_SHA256, RAW_LINE)
    for audit in audits.values():
        _audit(
            contract,
            audit,
            [p for d, p in drift_problems if d == audit.landing_date],
            counts=counts,
        )
    blocked = [d for d in dates if audits[d].blocked]
    held = valid.filter(pl.col(LANDING_DATE).is_in(blocked))
    for date, rows in held.group_by(LANDING_DATE).len().iter_rows():
        audits[date].held = rows
    for date in blocked:
        log.warning(
            "silver %s: landing date %s blocked; nothing of it is published", contract.name, date
        )

    candidates = valid.filter(~pl.col(LANDING_DATE).is_in(blocked))
    # A batch already one row per key (the usual one) has nothing to dedupe or double-check.
    publish = candidates
    keys_unique = candidates.select(contract.primary_key).is_unique().all()
    if not keys_unique:
        publish = _dedupe(contract, candidates)
        keys_unique = publish.select(contract.primary_key).is_unique().all()
    kept = dict(publish.group_by(LANDING_DATE).len().iter_rows())
    for date, rows in candidates.group_by(LANDING_DATE).len().iter_rows():
        audits[date].accepted = kept.get(date, 0)
        audits[date].duplicates = rows - kept.get(date, 0)
    for audit in audits.values():
        audit.checks.append(
            CheckOutcome(
                CHECK_PRIMARY_KEY_UNIQUE,
                audit.landing_date,
                keys_unique,
                audit.accepted,
                0 if keys_unique else audit.accepted,
                f"one row per key ({', '.join(contract.primary_key)}) after dedupe",
            )
        )
        _reconcile(audit)
    if not keys_unique:  # a dedupe bug must never reach silver
        log.error("silver %s: duplicate keys after dedupe; nothing is published", contract.name)
        return
    _publish(lake, contract, publish, run_id)


def _sample(result: SilverResult, check: str, invalid: pl.DataFrame) -> None:
    if invalid.height:
        result.samples[check] = (
            invalid.head(5)
            .select(
                SOURCE_FILE,
                ROW_NUMBER,
                pl.col(RULES).list.join(", ").alias("rules"),
                pl.col(ERRORS).list.join("; ").alias("errors"),
            )
            .to_dicts()
        )


def known_values(lake: Lake, contract: Contract, batch: pl.DataFrame) -> dict[str, pl.Series]:
    """For each column with `references`: the batch's values that its referenced silver table holds.

    Only the batch's distinct values are looked up; an absent referenced table holds none.
    """
    out: dict[str, pl.Series] = {}
    for col in contract.columns:
        ref = col.references
        if ref is None:
            continue
        wanted = (
            batch.get_column(col.name).drop_nulls().unique()
            if col.name in batch.columns
            else pl.Series([], dtype=pl.String)
        )
        frame = delta.scan(lake, lake.table_uri("silver", ref.table))
        if frame is None or wanted.is_empty():
            out[col.silver_name] = pl.Series([], dtype=col.dtype)
            continue
        out[col.silver_name] = (
            frame.select(pl.col(ref.column).cast(pl.String))
            .filter(pl.col(ref.column).is_in(wanted.implode()))
            .unique()
            .collect()
            .get_column(ref.column)
            .cast(col.dtype, strict=False)
        )
    return out


def _apply_drift_policy(
    lake: Lake,
    contract: Contract,
    batch: pl.DataFrame,
    dates: list[str],
    audits: dict[str, PartitionAudit],
) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """Handle columns the contract does not know, and required columns a file lacks.

    Returns the batch (with `_rescued` under `rescue`) and (landing date, problem) pairs that block.
    Also records the rows the ledger counted per date (`PartitionAudit.landed`).
    """
    known = set(contract.landed_columns) | set(LINEAGE_COLUMNS) | {RAW_LINE, PARSE_ERROR}
    problems: list[tuple[str, str]] = []
    ledger = system.latest_ledger(lake, contract.name, dates)
    for date, rows in ledger.group_by("landing_date").agg(pl.col("rows").sum()).iter_rows():
        audits[date].landed = int(rows or 0)
    required = [c.name for c in contract.columns if not c.nullable]
    for path, date, columns in ledger.select("path", "landing_date", "columns").iter_rows():
        missing = [c for c in required if c not in (columns or [])]
        if missing:
            problems.append(
                (
                    date,
                    f"file `{path}` lacks required column(s) "
                    f"{', '.join(f'`{c}`' for c in missing)}",
                )
            )
        extra = [c for c in (columns or []) if c not in known]
        if extra and contract.schema_drift == "freeze":
            problems.append(
                (
                    date,
                    f"file `{path}` has column(s) not in the contract "
                    f"{', '.join(f'`{c}`' for c in extra)} (schema_drift: freeze)",
                )
            )
    extras = [c for c in batch.columns if c not in known]
    if extras and contract.schema_drift == "rescue":
        batch = batch.with_columns(
            pl.struct(extras).map_elements(_rescue_json, return_dtype=pl.String).alias(RESCUED)
        ).drop(extras)
    elif contract.schema_drift == "rescue":
        batch = batch.with_columns(pl.lit(None, pl.String).alias(RESCUED))
    return batch, problems


def _rescue_json(values: dict) -> str | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return json.dumps(kept, sort_keys=True) if kept else None


def _evolved_columns(contract: Contract, batch: pl.DataFrame) -> list[str]:
    if contract.schema_drift != "evolve":
        return []
    known = set(contract.landed_columns) | set(LINEAGE_COLUMNS) | {RAW_LINE, PARSE_ERROR}
    return [c for c in batch.columns if c not in known]


def _audit(
    contract: Contract,
    audit: PartitionAudit,
    drift_problems: list[str],
    *,
    counts: dict[str, int],
) -> None:
    """The batch rules of one landing date (reconciliation comes after the dedupe)."""
    date, rows = audit.landing_date, audit.bronze_rows
    ratio = audit.quarantined / rows if rows else 0.0
    limit = contract.checks.max_quarantine_ratio
    audit.checks = [
        CheckOutcome(
            CHECK_ROW_RULES,
            date,
            audit.quarantined == 0,
            rows,
            audit.quarantined,
            f"{audit.quarantined} of {rows} rows failed a row rule and were quarantined",
        ),
        CheckOutcome(
            CHECK_REFERENCES,
            date,
            audit.references_failed == 0,
            rows,
            audit.references_failed,
            f"{audit.references_failed} of {rows} rows reference a key missing from silver",
        ),
        _volume(contract, date, rows, counts),
        CheckOutcome(
            CHECK_QUARANTINE_RATIO,
            date,
            ratio <= limit,
            rows,
            audit.quarantined,
            f"quarantine ratio {ratio:.4f} (limit {limit})",
        ),
        CheckOutcome(
            CHECK_SCHEMA_DRIFT,
            date,
            not drift_problems,
            rows,
            rows if drift_problems else 0,
            "; ".join(drift_problems),
        ),
    ]


def _volume(contract: Contract, date: str, rows: int, counts: dict[str, int]) -> CheckOutcome:
    """The date's bronze rows against the median of the recent landing dates before it."""
    bounds = contract.checks
    low, high = bounds.volume_min_ratio, bounds.volume_max_ratio
    if low is None and high is None:
        return CheckOutcome(CHECK_VOLUME, date, True, rows, 0, "the contract sets no volume bounds")
    # counts are in date order (see _bronze_counts): no sort per date
    history = [n for d, n in counts.items() if d < date and n][-bounds.volume_window :]
    if rows == 0 or len(history) < VOLUME_MIN_HISTORY:
        return CheckOutcome(
            CHECK_VOLUME, date, True, rows, 0, f"no baseline yet ({len(history)} earlier dates)"
        )
    baseline = statistics.median(history)
    ratio = rows / baseline
    passed = (low is None or ratio >= low) and (high is None or ratio <= high)
    return CheckOutcome(
        CHECK_VOLUME,
        date,
        passed,
        rows,
        0 if passed else rows,
        f"{rows} rows = {ratio:.2f} x the median {baseline:g} of the {len(history)} previous "
        f"landing dates (allowed {low if low is not None else 0} .. "
        f"{high if high is not None else 'any'})",
    )


def _reconcile(audit: PartitionAudit) -> None:
    """Every landed row of the date is in bronze, and every bronze row is accounted for once."""
    rows = audit.bronze_rows
    unaccounted = rows - audit.quarantined - audit.duplicates - audit.accepted - audit.held
    off_landed = audit.landed - rows
    audit.checks.append(
        CheckOutcome(
            CHECK_RECONCILIATION,
            audit.landing_date,
            unaccounted == 0 and off_landed == 0,
            rows,
            abs(unaccounted) + abs(off_landed),
            f"landed {audit.landed} = bronze {rows} = accepted {audit.accepted} "
            f"+ quarantined {audit.quarantined} + duplicates {audit.duplicates} "
            f"+ held {audit.held}"
            + (f" (bronze off by {unaccounted})" if unaccounted else "")
            + (f" (landed off by {off_landed})" if off_landed else ""),
        )
    )


def _order_columns(contract: Contract) -> list[str]:
    """Sort order that makes the last row of a key its latest version."""
    return [
        *([contract.ordering] if contract.ordering else []),
        LANDING_DATE,
        SOURCE_FILE,
        ROW_NUMBER,
    ]


def _dedupe(contract: Contract, valid: pl.DataFrame) -> pl.DataFrame:
    """One row per primary key: the latest by the contract's ordering, then by landing position."""
    if valid.is_empty():
        return valid
    return valid.sort(_order_columns(contract), nulls_last=False).unique(
        subset=list(contract.primary_key), keep="last", maintain_order=True
    )


def _newer_predicate(columns: list[str]) -> str:
    """SQL: source row `s` is at least as new as target row `t` in lexicographic order of columns."""
    head, *rest = columns
    if not rest:
        return f"s.{head} >= t.{head}"
    return f"(s.{head} > t.{head} OR (s.{head} = t.{head} AND {_newer_predicate(rest)}))"


def _publish(lake: Lake, contract: Contract, rows: pl.DataFrame, run_id: str) -> None:
    if rows.is_empty():
        return
    rows = pseudonymise(rows, [c.silver_name for c in contract.pii_columns])
    if contract.event_time:
        rows = rows.with_columns(
            pl.col(contract.event_time).cast(pl.Date).cast(pl.String).alias(EVENT_DATE)
        )
    uri = lake.table_uri("silver", contract.name)
    keys = " AND ".join(f"t.{k} = s.{k}" for k in contract.primary_key)
    predicate = keys
    if contract.event_time:
        event_dates = rows.get_column(EVENT_DATE).unique().sort().to_list()
        predicate = f"{delta.in_predicate('t.' + EVENT_DATE, event_dates)} AND {keys}"
    metrics = delta.merge(
        lake,
        uri,
        rows,
        predicate=predicate,
        update_predicate=_newer_predicate(_order_columns(contract)),
        partition_by=[EVENT_DATE] if contract.event_time else None,
        evolve_schema=contract.schema_drift == "evolve",
        step="silver publish",
        run_id=run_id,
    )
    log.info(
        "silver %s: merged %d rows (%s inserted, %s updated)",
        contract.name,
        rows.height,
        metrics.get("num_target_rows_inserted"),
        metrics.get("num_target_rows_updated"),
    )


def _write_quarantine(
    lake: Lake, contract: Contract, invalid: pl.DataFrame, dates: list[str], run_id: str
) -> None:
    """Replace the quarantine rows of `dates` with this run's failures (idempotent per date)."""
    uri = lake.table_uri("quarantine", contract.name)
    if invalid.is_empty() and delta.open_table(lake, uri) is None:
        return
    rows = invalid.with_columns(
        pl.lit(run_id).alias(RUN_ID),
        pl.lit(datetime.now(UTC).replace(tzinfo=None)).alias(QUARANTINED_AT),
        pl.lit(None, pl.String).alias(REPLAY_RUN_ID),
        pl.lit(None, pl.Datetime("us")).alias(REPLAYED_AT),
    )
    delta.replace_where(
        lake,
        uri,
        rows,
        delta.in_predicate(LANDING_DATE, dates),
        partition_by=[LANDING_DATE],
        step="quarantine",
        run_id=run_id,
    )


def _dq_rows(contract: Contract, result: SilverResult, run_id: str) -> list[dict]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        {
            "run_id": run_id,
            "source": contract.name,
            "layer": "silver",
            "partition": c.partition,
            "check": c.check,
            "passed": c.passed,
            "blocking": c.blocking,
            "rows_checked": c.rows_checked,
            "rows_failed": c.rows_failed,
            "landed": audit.landed,
            "bronze_rows": audit.bronze_rows,
            "accepted": audit.accepted,
            "quarantined": audit.quarantined,
            "duplicates": audit.duplicates,
            "held": audit.held,
            "detail": c.detail,
            "checked_at": now,
        }
        for audit in result.partitions.values()
        for c in audit.checks
    ]


@dataclass
class ReplayResult:
    """What one quarantine replay did."""

    checked: int = 0
    promoted: int = 0
    still_failing: int = 0
    skipped_blocked: int = 0
    """Rows of landing dates whose last silver run was blocked: re-materialize those instead."""


def replay_quarantine(lake: Lake, contract: Contract, *, run_id: str) -> ReplayResult:
    """Re-validate the source's quarantined rows under the current contract; promote those that pass.

    Promoted rows are MERGEd into silver like any batch and marked in quarantine with
    `_replay_run_id` and `_replayed_at`; marked rows are never replayed again, so a second replay
    changes nothing. Unparseable lines (`_raw_line`) cannot pass. Rows of a landing date whose
    last silver run was blocked stay put: that date's held rows are not in quarantine, so the
    date is replayed whole by materializing its partition again.
    """
    uri = lake.table_uri("quarantine", contract.name)
    frame = delta.scan(lake, uri)
    result = ReplayResult()
    if frame is None:
        return result
    pending = frame.filter(pl.col(REPLAY_RUN_ID).is_null()).collect()
    blocked = _last_blocked_dates(lake, contract.name)
    on_blocked = pending.get_column(LANDING_DATE).is_in(list(blocked))
    result.skipped_blocked = int(on_blocked.sum())
    pending = pending.filter(~on_blocked)
    result.checked = pending.height
    if pending.is_empty():
        return result
    batch = pending.drop(RULES, ERRORS).with_columns(
        pl.when(pl.col(RAW_LINE).is_not_null())
        .then(pl.lit("unparseable line"))
        .otherwise(None)
        .alias(PARSE_ERROR)
    )
    passthrough = [
        *QUARANTINE_LINEAGE,
        RAW_LINE,
        *([RESCUED] if RESCUED in batch.columns else []),
        *_evolved_columns(contract, batch.drop(RUN_ID, QUARANTINED_AT, REPLAY_RUN_ID, REPLAYED_AT)),
    ]
    split = split_rows(
        contract, batch, passthrough, known_values=known_values(lake, contract, batch)
    )
    result.still_failing = split.invalid.height
    valid = split.valid.drop(SOURCE_SHA256, RAW_LINE)
    if valid.is_empty():
        return result
    _publish(lake, contract, _dedupe(contract, valid), run_id)
    result.promoted = valid.height
    marks = valid.select(LANDING_DATE, SOURCE_FILE, ROW_NUMBER).with_columns(
        pl.lit(run_id).alias(REPLAY_RUN_ID),
        pl.lit(datetime.now(UTC).replace(tzinfo=None)).alias(REPLAYED_AT),
    )
    table = delta.open_table(lake, uri)
    if table is None:  # removed while we ran
        return result
    table.merge(
        marks.to_arrow(),
        predicate=" AND ".join(f"t.{c} = s.{c}" for c in (LANDING_DATE, SOURCE_FILE, ROW_NUMBER))
        + " AND t._replay_run_id IS NULL",
        source_alias="s",
        target_alias="t",
        commit_properties=delta.commit_properties(step="quarantine replay", run_id=run_id),
    ).when_matched_update(
        {REPLAY_RUN_ID: f"s.{REPLAY_RUN_ID}", REPLAYED_AT: f"s.{REPLAYED_AT}"}
    ).execute()
    log.info(
        "replay %s: %d quarantined rows checked, %d promoted to silver, %d still failing",
        contract.name,
        result.checked,
        result.promoted,
        result.still_failing,
    )
    return result


def _last_blocked_dates(lake: Lake, source: str) -> set[str]:
    """Landing dates whose most recent silver run failed a blocking check."""
    frame = delta.scan(lake, lake.table_uri("_system", system.DQ_RESULTS))
    if frame is None:
        return set()
    latest = (
        frame.filter(pl.col("source") == source, pl.col("layer") == "silver")
        .with_columns(
            pl.col("checked_at").max().over("partition").alias("_latest"),
        )
        .filter(pl.col("checked_at") == pl.col("_latest"))
        .group_by("partition")
        .agg((pl.col("blocking") & ~pl.col("passed")).any().alias("blocked"))
        .filter("blocked")
        .collect()
    )
    return set(latest.get_column("partition").to_list())
