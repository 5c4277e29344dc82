"""Silver's checks: the batch rules of a landing date and the checks of the published table.

Each check yields one `CheckOutcome` per landing-date partition; blocking ones hold the date back
(nothing of what it brought in the run is published). The names are shared by `_system/dq_results`
and the Dagster asset checks.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from lakehouse.core.contract import Contract

CHECK_ROW_RULES = "row_rules"
CHECK_REFERENCES = "references"
CHECK_VOLUME = "volume"
CHECK_QUARANTINE_RATIO = "quarantine_ratio"
CHECK_SCHEMA_DRIFT = "schema_drift"
CHECK_PRIMARY_KEY_UNIQUE = "primary_key_unique"
CHECK_SILVER_MATCHES_BRONZE = "silver_matches_bronze"
CHECK_RECONCILIATION = "reconciliation"
CHECK_FILES_REJECTED = "files_rejected"
CHECK_ANOMALIES = "anomalies"
"""Column profiles against the same weekday of past weeks (`lakehouse.core.anomaly`); only
for contracts with `checks.anomalies`."""
SILVER_CHECKS = (
    CHECK_FILES_REJECTED,
    CHECK_ROW_RULES,
    CHECK_REFERENCES,
    CHECK_QUARANTINE_RATIO,
    CHECK_VOLUME,
    CHECK_SCHEMA_DRIFT,
    CHECK_PRIMARY_KEY_UNIQUE,
    CHECK_SILVER_MATCHES_BRONZE,
    CHECK_RECONCILIATION,
)
BLOCKING_CHECKS = frozenset(
    {
        CHECK_QUARANTINE_RATIO,
        CHECK_VOLUME,
        CHECK_SCHEMA_DRIFT,
        CHECK_PRIMARY_KEY_UNIQUE,
        CHECK_SILVER_MATCHES_BRONZE,
        CHECK_RECONCILIATION,
    }
)
TABLE_CHECKS = frozenset({CHECK_PRIMARY_KEY_UNIQUE, CHECK_SILVER_MATCHES_BRONZE})
"""The checks of the published table: not evaluated on a date that published nothing."""
COUNTS = (
    "landed",
    "bronze_rows",
    "accepted",
    "quarantined",
    "duplicates",
    "superseded",
    "held",
)
"""The row counts of a landing date's evaluation, as `_system` tables store them."""
VOLUME_MIN_HISTORY = 3
"""The volume check needs this many earlier landing dates with rows before it judges a date."""


def blocking_checks(contract: Contract) -> frozenset[str]:
    """The checks that hold a landing date back for this contract: the fixed set, plus
    `files_rejected` where the contract says `checks: {files_rejected: block}` and `anomalies`
    where it says `checks: {anomalies: {on_fail: block}}`."""
    extra = set()
    if contract.checks.files_rejected == "block":
        extra.add(CHECK_FILES_REJECTED)
    if contract.checks.anomalies is not None and contract.checks.anomalies.on_fail == "block":
        extra.add(CHECK_ANOMALIES)
    return BLOCKING_CHECKS | extra


def silver_checks(contract: Contract) -> tuple[str, ...]:
    """The checks of the contract's silver table: `SILVER_CHECKS`, plus `anomalies` where the
    contract asks for it."""
    return SILVER_CHECKS + ((CHECK_ANOMALIES,) if contract.checks.anomalies else ())


@dataclass
class CheckOutcome:
    """One check on one landing-date partition."""

    check: str
    partition: str
    passed: bool
    rows_checked: int
    rows_failed: int
    detail: str = ""
    blocking: bool | None = None
    """Whether a failure holds the date back; by default, whether the check is in BLOCKING_CHECKS."""

    def __post_init__(self) -> None:
        if self.blocking is None:
            self.blocking = self.check in BLOCKING_CHECKS


@dataclass
class PartitionAudit:
    """Where every bronze row of one landing date ended."""

    landing_date: str
    landed: int = 0
    """Rows the ingest ledger recorded for the date's loaded files."""
    bronze_rows: int = 0
    references_failed: int = 0
    """Rows quarantined for a missing foreign key."""
    references_warned: int = 0
    """Valid rows published with a missing warn-only foreign key (`on_missing: warn`)."""
    quarantined: int = 0
    duplicates: int = 0
    """Valid rows superseded by a later version of their key in the same landing date."""
    superseded: int = 0
    """Valid rows that lost to a later version of their key from another landing date."""
    accepted: int = 0
    """Valid rows that are silver's row of their key."""
    files_rejected: list[str] = field(default_factory=list)
    """Landed files of the date that could not be read (`path: reason`)."""
    held: int = 0
    """Valid rows not published: the date is blocked, or the key they reference is held."""
    hold_reason: str = ""
    checks: list[CheckOutcome] = field(default_factory=list)
    unchanged: bool = False
    """Nothing the date depends on changed since its last outcome: it was not evaluated again."""

    @property
    def blocked(self) -> bool:
        return any(c.blocking and not c.passed for c in self.checks)

    def counts(self) -> dict[str, int]:
        """Where the date's rows ended, by `COUNTS` name (as `_system` stores them)."""
        return {name: getattr(self, name) for name in COUNTS}

    @property
    def status(self) -> str:
        if self.blocked:
            return "blocked"
        return "held" if self.held else "published"


def batch_rules(
    contract: Contract, audit: PartitionAudit, drift_problems: list[str], counts: dict[str, int]
) -> None:
    """The row-rule summaries and batch rules of one landing date, decided before the publish."""
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
            audit.references_failed + audit.references_warned == 0,
            rows,
            audit.references_failed + audit.references_warned,
            f"{audit.references_failed + audit.references_warned} of {rows} rows reference a key "
            f"missing from silver ({audit.references_failed} quarantined, "
            f"{audit.references_warned} kept: on_missing warn)",
        ),
        CheckOutcome(
            CHECK_FILES_REJECTED,
            date,
            not audit.files_rejected,
            len(audit.files_rejected),
            len(audit.files_rejected),
            "; ".join(audit.files_rejected) or "every landed file of the date could be read",
            blocking=CHECK_FILES_REJECTED in blocking_checks(contract),
        ),
        volume(contract, date, rows, counts),
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


def volume(contract: Contract, date: str, rows: int, counts: dict[str, int]) -> CheckOutcome:
    """The date's bronze rows against the median of the recent landing dates before it."""
    bounds = contract.checks
    low, high = bounds.volume_min_ratio, bounds.volume_max_ratio
    if low is None and high is None:
        return CheckOutcome(CHECK_VOLUME, date, True, rows, 0, "the contract sets no volume bounds")
    # counts are in date order: no sort per date
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


def table_checks(
    audit: PartitionAudit, *, duplicate_keys: int, expected: int, found: int, missing: int
) -> None:
    """Checks of the published table for one landing date, then the reconciliation.

    Args:
        duplicate_keys: keys held more than once among the rows the publish touched.
        expected: keys the date should hold in silver (its valid rows that won).
        found: keys silver holds from the date.
        missing: expected keys silver does not hold from the date, plus found keys not expected.
    """
    date = audit.landing_date
    audit.checks += [
        CheckOutcome(
            CHECK_PRIMARY_KEY_UNIQUE,
            date,
            duplicate_keys == 0,
            found,
            duplicate_keys,
            "one row per primary key among the published rows the run touched"
            + (f": {duplicate_keys} key(s) held twice" if duplicate_keys else ""),
        ),
        CheckOutcome(
            CHECK_SILVER_MATCHES_BRONZE,
            date,
            missing == 0,
            expected,
            missing,
            f"silver holds {found} key(s) from this date; its valid bronze rows make {expected}"
            + (f" ({missing} differ)" if missing else ""),
        ),
    ]
    reconcile(audit)


def reconcile(audit: PartitionAudit) -> None:
    """Every landed row of the date is in bronze, and every bronze row is accounted for once."""
    rows = audit.bronze_rows
    unaccounted = (
        rows - audit.quarantined - audit.duplicates - audit.superseded - audit.accepted - audit.held
    )
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
            f"+ superseded {audit.superseded} + held {audit.held}"
            + (f" (bronze off by {unaccounted})" if unaccounted else "")
            + (f" (landed off by {off_landed})" if off_landed else ""),
        )
    )
