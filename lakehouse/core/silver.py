"""Silver: write-audit-publish from bronze to a typed, deduplicated, PII-safe Delta table.

For a set of landing dates (the Dagster partitions of a run), in bounded chunks of dates:

1. skip the dates nothing changed for: same landed file versions, same contract, last outcome
   published (`_system/partition_state` keeps each date's fingerprint and outcome);
2. read the bronze rows of the other dates (partition-pruned), apply the schema-drift policy,
   type every column, run the row rules;
3. bring `quarantine/<source>` in line with the rows that fail (`lakehouse.core.quarantine`);
4. audit each landing date as a batch (quarantine ratio, volume, drift): a date that fails a
   blocking rule publishes nothing of what it brought, and silver keeps what it published before;
   rows whose foreign key points at a key held back that way are held too, not quarantined;
5. dedupe the passing rows on the primary key and publish them (`lakehouse.core.publish`): silver
   then holds, for every key they affect, the latest valid version among bronze's rows;
6. check the published rows (one per key, the keys the dates' bronze rows make) and reconcile.

A date that only gained new files since its last published evaluation (a stream's micro-batch)
is evaluated on those files alone, with the same outcome (`lakehouse.core.silver_increment`).

Every bronze row of a date ends in exactly one place (accepted, quarantined, a duplicate within
the date, superseded by a later version from another date, or held), and `PartitionAudit`
counts each.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from lakehouse.core import anomaly, delta, drift, pii, system, vault
from lakehouse.core.bronze import LANDING_DATE, SOURCE_FILE, SOURCE_SHA256
from lakehouse.core.checks import (
    CHECK_REFERENCES,
    CHECK_ROW_RULES,
    COUNTS,
    TABLE_CHECKS,
    PartitionAudit,
    batch_rules,
    table_checks,
)
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.publish import (
    ROW_HASH,
    PublishResult,
    latest_per_key,
    prepare,
    publish,
)
from lakehouse.core.quarantine import write_quarantine
from lakehouse.core.readers import RAW_LINE, ROW_NUMBER
from lakehouse.core.silver_increment import publish_new_files
from lakehouse.core.validation import ERRORS, RULES, split_rows

log = logging.getLogger(__name__)

WAITING_FOR = "__waiting_for"
SILVER_LINEAGE = (SOURCE_FILE, ROW_NUMBER, LANDING_DATE, ROW_HASH)
"""Lineage kept in silver: deterministic, so replaying a partition leaves rows identical."""
QUARANTINE_LINEAGE = (SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER, LANDING_DATE)

MAX_CHUNK_ROWS = 1_000_000
"""Silver processes landing dates in chunks of about this many bronze rows: its peak memory follows
the chunk (TPC-H lineitem, 16 columns: 7.2 GiB with chunks of 4M rows)."""


@dataclass
class SilverResult:
    """What one silver run did, per landing date."""

    partitions: dict[str, PartitionAudit] = field(default_factory=dict)
    samples: dict[str, list[dict]] = field(default_factory=dict)
    """A few failing rows per check, for the asset check metadata."""
    changes: dict[str, list[int]] = field(default_factory=dict)
    """Event date -> [inserted, updated, deleted] over every publish of the run."""
    versions: list[int] = field(default_factory=list)
    """The silver versions the run committed."""

    def total(self, attr: str) -> int:
        return sum(getattr(p, attr) for p in self.partitions.values())

    @property
    def evaluated(self) -> dict[str, PartitionAudit]:
        """The dates evaluated in this run (not skipped as unchanged)."""
        return {d: p for d, p in self.partitions.items() if not p.unchanged}

    @property
    def blocked_dates(self) -> list[str]:
        return sorted(d for d, p in self.partitions.items() if p.blocked)

    @property
    def held_dates(self) -> list[str]:
        return sorted(d for d, p in self.partitions.items() if p.held)

    def outcomes(self, check: str) -> list:
        return [c for p in self.evaluated.values() for c in p.checks if c.check == check]

    def add_changes(self, published: PublishResult) -> None:
        for day, counts in published.changes.items():
            into = self.changes.setdefault(day, [0, 0, 0])
            for i, n in enumerate(counts):
                into[i] += n
        if published.version is not None:
            self.versions.append(published.version)


def contract_fingerprint(contract: Contract) -> str:
    """What silver's output depends on in a contract (and the PII key), as a short hash."""
    relevant = (
        contract.columns,
        contract.primary_key,
        contract.format,
        contract.event_time,
        contract.ordering,
        contract.schema_drift,
        contract.checks,
        pii.key_id(),
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()[:16]


def _fingerprints(
    contract: Contract,
    ledger: pl.DataFrame,
    dates: Sequence[str],
    rejected: dict[str, list[dict]] | None = None,
) -> dict[str, str]:
    """Per landing date: a hash of the contract and of every file version loaded (or rejected)."""
    base = contract_fingerprint(contract)
    files: dict[str, list[str]] = {d: [] for d in dates}
    for date, rows in (rejected or {}).items():
        files.setdefault(date, []).extend(f"{r['path']}:{r['sha256']}:rejected" for r in rows)
    for path, date, sha, rows in ledger.select(
        "path", "landing_date", "sha256", "rows"
    ).iter_rows():
        files.setdefault(date, []).append(f"{path}:{sha}:{rows}")
    return {
        d: hashlib.sha256("\n".join([base, *sorted(files.get(d, []))]).encode()).hexdigest()[:24]
        for d in dates
    }


@delta.reusing_tables()
def load_silver(
    lake: Lake,
    contract: Contract,
    landing_dates: Sequence[str],
    *,
    run_id: str,
    reprocess: bool = False,
    deployment: Sequence[str] = (),
) -> SilverResult:
    """Promote the bronze rows of `landing_dates` to silver (write-audit-publish).

    Dates nothing changed for are skipped unless `reprocess`; a run that changes nothing writes
    nothing (no Delta version, no `_system` row). A source with PII columns refuses to load with
    the development key outside local development (`pii.check_key`; `deployment` says what the
    caller knows of it).
    """
    if contract.pii_columns:
        pii.check_key(pii.not_local(lake, deployment))
    result = SilverResult()
    dates = sorted(set(landing_dates))
    triage = _triage(lake, contract, dates, reprocess=reprocess)
    counts, ledger, previous = triage.counts, triage.ledger, triage.previous
    result.partitions.update(triage.skipped)
    todo = triage.todo
    if todo:
        log.info(
            "silver %s: %d landing date(s) to evaluate, %d unchanged",
            contract.name,
            len(todo),
            len(dates) - len(todo),
        )
    if not reprocess:
        todo = [d for d in todo if not publish_new_files(lake, contract, d, triage, run_id, result)]
    blocked_before = {d for d, s in previous.items() if s["status"] == "blocked"}
    blocked_before |= system.blocked_dates(lake, "silver", contract.name) - set(dates)
    for chunk in _chunks(counts, todo):
        _load_chunk(
            lake, contract, chunk, run_id, result, counts, ledger, blocked_before, triage.rejected
        )
    _record(lake, contract, result, previous, triage.fingerprints, run_id)
    return result


@dataclass
class _Triage:
    todo: list[str]
    skipped: dict[str, PartitionAudit]
    counts: dict[str, int]
    ledger: pl.DataFrame
    fingerprints: dict[str, str]
    previous: dict[str, dict]
    rejected: dict[str, list[dict]]


def _triage(lake: Lake, contract: Contract, dates: list[str], *, reprocess: bool) -> _Triage:
    """Which dates to evaluate: those with rows whose inputs or last outcome call for it."""
    counts = _bronze_counts(lake, contract)
    ledger = system.latest_ledger(lake, contract.name, dates)
    rejected = system.rejected_now(lake, contract.name, dates)
    fingerprints = _fingerprints(contract, ledger, dates, rejected)
    previous = system.latest_states(lake, "silver", contract.name, dates)
    todo, skipped = [], {}
    latest = latest_snapshot(contract, counts)
    for date in dates:
        before = previous.get(date)
        if not counts.get(date) and before is None and date not in rejected:
            skipped[date] = PartitionAudit(date, unchanged=True)
        elif latest is not None and date < latest:
            # a snapshot source: only the latest delivery is the source's state
            skipped[date] = PartitionAudit(date, unchanged=True)
        elif (
            not reprocess
            and before is not None
            and before["fingerprint"] == fingerprints[date]
            and before["status"] == "published"
        ):
            skipped[date] = _from_state(date, before)
        else:
            todo.append(date)
    return _Triage(todo, skipped, counts, ledger, fingerprints, previous, rejected)


def latest_snapshot(contract: Contract, counts: dict[str, int]) -> str | None:
    """For a `delivery: snapshot` source, its latest landing date holding rows; else None."""
    if contract.delivery != "snapshot":
        return None
    held = [d for d, n in counts.items() if n]
    return max(held) if held else None


def dates_to_evaluate(lake: Lake, contract: Contract, landing_dates: Sequence[str]) -> list[str]:
    """The landing dates `load_silver` would evaluate now (the others it would skip)."""
    return _triage(lake, contract, sorted(set(landing_dates)), reprocess=False).todo


def _from_state(date: str, state: dict) -> PartitionAudit:
    audit = PartitionAudit(date, unchanged=True)
    for name in COUNTS:
        setattr(audit, name, int(state.get(name) or 0))
    return audit


def _record(
    lake: Lake,
    contract: Contract,
    result: SilverResult,
    previous: dict[str, dict],
    fingerprints: dict[str, str],
    run_id: str,
) -> None:
    """One `_system` row per new outcome: a date evaluated to the same outcome writes nothing."""
    now = datetime.now(UTC).replace(tzinfo=None)
    states, dq = [], []
    for date, audit in result.evaluated.items():
        outcome = _outcome(audit)
        before = previous.get(date)
        if (
            before is not None
            and before["fingerprint"] == fingerprints[date]
            and before["outcome"] == outcome
        ):
            continue
        counts = audit.counts()
        states.append(
            {
                "layer": "silver",
                "source": contract.name,
                "landing_date": date,
                "fingerprint": fingerprints[date],
                "status": audit.status,
                "outcome": outcome,
                **counts,
                "detail": audit.hold_reason
                or "; ".join(c.detail for c in audit.checks if c.blocking and not c.passed),
                "run_id": run_id,
                "recorded_at": now,
            }
        )
        dq += [
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
                **counts,
                "detail": c.detail,
                "checked_at": now,
            }
            for c in audit.checks
        ]
    system.record_states(lake, states)
    system.record_dq_results(lake, dq)


def _outcome(audit: PartitionAudit) -> str:
    """A hash of what an evaluation concluded: its counts and each check's verdict."""
    facts = (
        audit.status,
        tuple(audit.counts().values()),
        tuple((c.check, c.passed, c.rows_failed) for c in audit.checks),
    )
    return hashlib.sha256(repr(facts).encode()).hexdigest()[:16]


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


def _passthrough(contract: Contract, batch: pl.DataFrame) -> list[str]:
    return [
        *QUARANTINE_LINEAGE,
        RAW_LINE,
        *([drift.RESCUED] if drift.RESCUED in batch.columns else []),
        *drift.evolved_columns(contract, batch),
    ]


def _validate(
    lake: Lake, contract: Contract, batch: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(valid typed rows without the quarantine-only columns, invalid landed rows, valid rows
    whose warn-only reference (`on_missing: warn`) is missing, with `_rules` and `_errors`)."""
    if RAW_LINE not in batch.columns:
        batch = batch.with_columns(pl.lit(None, pl.String).alias(RAW_LINE))
    split = split_rows(
        contract,
        batch,
        _passthrough(contract, batch),
        known_values=known_values(lake, contract, batch),
    )
    return (
        split.valid.drop(SOURCE_SHA256, RAW_LINE),
        split.invalid,
        split.warned.drop(SOURCE_SHA256, RAW_LINE, strict=False),
    )


def _load_chunk(
    lake: Lake,
    contract: Contract,
    dates: list[str],
    run_id: str,
    result: SilverResult,
    counts: dict[str, int],
    ledger: pl.DataFrame,
    blocked_before: set[str],
    rejected: dict[str, list[dict]],
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
    for date, rows in ledger.group_by("landing_date").agg(pl.col("rows").sum()).iter_rows():
        if date in audits:
            audits[date].landed = int(rows or 0)
    for date, files in rejected.items():
        if date in audits:
            audits[date].files_rejected = [f"`{f['path']}`: {f['reason']}" for f in files]
    if batch.is_empty():
        for audit in audits.values():
            batch_rules(contract, audit, [], counts)
            table_checks(audit, duplicate_keys=0, expected=0, found=0, missing=0)
        return
    log.info(
        "silver %s: %d bronze rows over %d landing dates", contract.name, batch.height, len(dates)
    )
    for date, rows in batch.group_by(LANDING_DATE).len().iter_rows():
        audits[date].bronze_rows = rows

    batch, drift_problems = drift.apply_policy(
        contract, batch, ledger.filter(pl.col("landing_date").is_in(dates))
    )
    versions = batch.select(SOURCE_FILE, SOURCE_SHA256).unique()
    valid, invalid, warned = _validate(lake, contract, batch)
    for date, rows in warned.group_by(LANDING_DATE).len().iter_rows():
        audits[date].references_warned = rows

    # Rows whose only fault is a reference to a key held back with a blocked date wait with it.
    waiting, invalid = _split_waiting(lake, contract, invalid)
    is_fk = pl.col(RULES).list.eval(pl.element().str.ends_with(":references")).list.any()
    for date, rows, fk in invalid.group_by(LANDING_DATE).agg(pl.len(), is_fk.sum()).iter_rows():
        audits[date].quarantined = rows
        audits[date].references_failed = fk
    _sample(result, CHECK_ROW_RULES, invalid)
    _sample(result, "quarantine_ratio", invalid)
    _sample(
        result,
        CHECK_REFERENCES,
        pl.concat(
            [
                frame.select(SOURCE_FILE, ROW_NUMBER, RULES, ERRORS)
                for frame in (invalid.filter(is_fk), warned)
            ]
        ),
    )
    write_quarantine(lake, contract, invalid, dates, versions, run_id=run_id)

    for audit in audits.values():
        batch_rules(
            contract, audit, [p for d, p in drift_problems if d == audit.landing_date], counts
        )
    if contract.checks.anomalies is not None:
        for date, outcome in anomaly.check(
            lake, contract, valid, dates, LANDING_DATE, run_id=run_id
        ).items():
            audits[date].checks.append(outcome)
    blocked = [d for d in dates if audits[d].blocked]
    for date in blocked:
        audits[date].held = (
            valid.filter(pl.col(LANDING_DATE) == date).height
            + waiting.filter(pl.col(LANDING_DATE) == date).height
        )
        audits[date].hold_reason = "blocked: " + "; ".join(
            f"{c.check}: {c.detail}" for c in audits[date].checks if c.blocking and not c.passed
        )
        log.warning(
            "silver %s: landing date %s blocked (%s); nothing it brought is published",
            contract.name,
            date,
            audits[date].hold_reason,
        )
    for date, rows, reason in (
        waiting.filter(~pl.col(LANDING_DATE).is_in(blocked))
        .group_by(LANDING_DATE)
        .agg(pl.len(), pl.col(WAITING_FOR).first())
        .iter_rows()
    ):
        audits[date].held = rows
        audits[date].hold_reason = f"{rows} row(s) reference keys held back: {reason}"
        log.warning("silver %s: landing date %s: %s", contract.name, date, audits[date].hold_reason)

    open_dates = [d for d in dates if d not in blocked]
    candidates = valid.filter(pl.col(LANDING_DATE).is_in(open_dates))
    winners = candidates
    if not candidates.select(contract.primary_key).is_unique().all():
        winners = latest_per_key(contract, candidates)
    per_date = dict(winners.group_by(LANDING_DATE).len().iter_rows())
    for date, rows in candidates.group_by(LANDING_DATE).len().iter_rows():
        audits[date].duplicates = rows - per_date.get(date, 0)

    frozen = _typed_keys(contract, waiting.filter(~pl.col(LANDING_DATE).is_in(blocked)))
    exclude = set(dates) | blocked_before | set(blocked)
    stale = open_dates
    fallback = lambda keys: _older_versions(lake, contract, keys, exclude)  # noqa: E731
    if contract.delivery == "snapshot" and open_dates:
        # The latest snapshot is the whole state: every row of an earlier one is stale, and a key
        # it lacks leaves silver (no older version stands in for it).
        stale = [d for d in counts if d <= max(open_dates)]
        fallback = lambda keys: pl.DataFrame()  # noqa: E731
    published = publish(
        lake,
        contract,
        prepare(lake, contract, winners),
        stale,
        fallback=fallback,
        frozen=frozen,
        run_id=run_id,
    )
    assert published is not None  # no `admit`: a publish always goes on
    result.add_changes(published)
    _table_checks(contract, audits, open_dates, blocked, published)


def _table_checks(
    contract: Contract,
    audits: dict[str, PartitionAudit],
    open_dates: list[str],
    blocked: list[str],
    published: PublishResult,
) -> None:
    keys = list(contract.primary_key)
    after = published.keys
    duplicated = after.filter(pl.struct(keys).is_duplicated()) if not after.is_empty() else after
    won = published.won
    for date in open_dates:
        audit = audits[date]
        expected = (
            won.filter(pl.col(LANDING_DATE) == date).select(keys) if not won.is_empty() else won
        )
        found = (
            after.filter(pl.col(LANDING_DATE) == date).select(keys)
            if not after.is_empty()
            else after
        )
        differ = (
            expected.join(found, on=keys, how="anti").height
            + found.join(expected, on=keys, how="anti").height
            if not expected.is_empty() or not found.is_empty()
            else 0
        )
        offered = audit.bronze_rows - audit.quarantined - audit.duplicates - audit.held
        audit.accepted = expected.height
        audit.superseded = offered - expected.height
        dups = (
            duplicated.filter(pl.col(LANDING_DATE) == date).select(keys).n_unique()
            if not duplicated.is_empty()
            else 0
        )
        table_checks(
            audit, duplicate_keys=dups, expected=expected.height, found=found.height, missing=differ
        )
    for date in blocked:
        audit = audits[date]
        table_checks(audit, duplicate_keys=0, expected=0, found=0, missing=0)
        for check in audit.checks:
            if check.check in TABLE_CHECKS:
                check.detail = "not evaluated: nothing of the date was published"


def _typed_keys(contract: Contract, rows: pl.DataFrame) -> pl.DataFrame:
    """The primary keys of landed (string) rows, typed as silver holds them."""
    columns = [contract.column(k) for k in contract.primary_key]
    if rows.is_empty():
        return pl.DataFrame(schema={c.silver_name: c.dtype for c in columns})
    return rows.select(
        pl.col(c.name).cast(c.dtype, strict=False).alias(c.silver_name) for c in columns
    )


def _older_versions(
    lake: Lake, contract: Contract, keys: pl.DataFrame, exclude: set[str]
) -> pl.DataFrame:
    """The latest valid bronze row per key among landing dates outside `exclude`, prepared."""
    bronze = delta.scan(lake, lake.table_uri("bronze", contract.name))
    if bronze is None or keys.is_empty():
        return pl.DataFrame()
    first = contract.column(contract.primary_key[0])
    wanted = keys.get_column(first.silver_name).cast(pl.String).unique()
    if first in vault.tokenised_columns(contract):  # silver holds the key as tokens
        wanted = pl.Series(list(vault.clear_values(lake, wanted).values()), dtype=pl.String)
    rows = bronze.filter(
        pl.col(first.name).is_in(wanted.implode()), ~pl.col(LANDING_DATE).is_in(list(exclude))
    ).collect()
    if rows.is_empty():
        return pl.DataFrame()
    ledger = system.latest_ledger(
        lake, contract.name, rows.get_column(LANDING_DATE).unique().to_list()
    )
    rows, _ = drift.apply_policy(contract, rows, ledger)
    valid, _, _ = _validate(lake, contract, rows)
    older = prepare(lake, contract, latest_per_key(contract, valid))
    older = older.join(keys, on=list(contract.primary_key), how="semi")
    log.info(
        "silver %s: %d older version(s) found for %d retracted key(s)",
        contract.name,
        older.height,
        keys.height,
    )
    return older


def _split_waiting(
    lake: Lake, contract: Contract, invalid: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split off the invalid rows whose only failures are references to held-back keys.

    A key is held back when the referenced source's bronze holds it on a landing date whose
    last evaluation was blocked: the row waits in bronze for that date, it is not quarantined.
    Returns (waiting rows with `__waiting_for`, the rest).
    """
    reasons = []
    for col in contract.columns:
        ref = col.references
        if ref is None or ref.table == contract.name or invalid.is_empty():
            continue
        values = held_values(lake, ref.table, ref.column)
        if values.is_empty():
            continue
        hit = pl.col(col.name).is_in(values.implode())
        reasons.append(
            pl.when(hit).then(
                pl.lit(f"`{ref.table}.{ref.column}` held back with a blocked landing date")
            )
        )
    if not reasons:
        return invalid.clear().with_columns(pl.lit(None, pl.String).alias(WAITING_FOR)), invalid
    only_refs = (
        pl.col(RULES).list.eval(~pl.element().str.ends_with(":references")).list.any().not_()
    )
    marked = invalid.with_columns(pl.coalesce(*reasons).alias(WAITING_FOR))
    mask = only_refs & pl.col(WAITING_FOR).is_not_null()
    return marked.filter(mask), marked.filter(~mask).drop(WAITING_FOR)


def held_values(lake: Lake, source: str, column: str) -> pl.Series:
    """Values of `source`'s silver column `column` held back in bronze with blocked dates."""
    blocked = system.blocked_dates(lake, "silver", source)
    if not blocked:
        return pl.Series([], dtype=pl.String)
    from lakehouse.core.contract import load_contracts

    contract = next((c for c in load_contracts() if c.name == source), None)
    bronze = delta.scan(
        lake, lake.table_uri("bronze", source), partition_column=LANDING_DATE, partitions=blocked
    )
    if contract is None or bronze is None:
        return pl.Series([], dtype=pl.String)
    landed = contract.column(column).name
    if landed not in bronze.collect_schema().names():
        return pl.Series([], dtype=pl.String)
    return bronze.select(pl.col(landed).drop_nulls().unique()).collect().to_series()


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
        tokens = None
        if col.subject is not None:  # silver holds the subject's key as tokens
            tokens = vault.lookup(lake, vault.token_class(col), wanted.cast(pl.String).to_list())
            wanted = pl.Series(list(tokens.values()), dtype=pl.String)
        held = (
            frame.select(pl.col(ref.column).cast(pl.String))
            .filter(pl.col(ref.column).is_in(wanted.implode()))
            .unique()
            .collect()
            .get_column(ref.column)
        )
        if tokens is not None:
            clear = {token: value for value, token in tokens.items()}
            held = held.replace_strict(clear, default=None, return_dtype=pl.String)
        out[col.silver_name] = held.cast(col.dtype, strict=False)
    return out
