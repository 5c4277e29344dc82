"""Per-source assets built from contracts: landing (external) -> bronze -> silver, with checks.

No per-source Python: every source gets the same three assets, named `[layer, source]`, with
the contract's description, owner and column docs, so the Dagster UI doubles as the catalog.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from lakehouse.core import delta, system
from lakehouse.core.bronze import LINEAGE_COLUMNS, BronzeResult, load_bronze
from lakehouse.core.checks import PartitionAudit, blocking_checks, silver_checks
from lakehouse.core.contract import Column, Contract
from lakehouse.core.drift import RESCUED
from lakehouse.core.lake import Lake
from lakehouse.core.maintenance import writer_pool
from lakehouse.core.publish import EVENT_DATE
from lakehouse.core.silver import SILVER_LINEAGE, SilverResult, load_silver
from lakehouse.defs.alerts import freshness_policy
from lakehouse.defs.automation import follows_upstream
from lakehouse.defs.deprecation import asset_tags, describe, warn_deprecated_reads
from lakehouse.defs.partitions import backfill_policy, daily_partitions
from lakehouse.defs.resources import LakeResource, shared_instance

_CHECK_DESCRIPTIONS = {
    "files_rejected": "Landed files of the landing date that could not be read at all "
    "(`_system/rejected_files` has each file's reason).",
    "row_rules": "Rows failing a row rule (parseable, type, null, range, allowed values, pattern, "
    "foreign key) are quarantined with every reason.",
    "references": "Rows whose foreign key (contract `references`) is missing from the referenced "
    "silver table are quarantined.",
    "volume": "Blocks a landing date whose row count is far outside the median of the recent "
    "landing dates (contract `checks.volume`).",
    "quarantine_ratio": "Blocks a landing date whose quarantined share exceeds the contract's limit.",
    "schema_drift": "Blocks a landing date with a file missing a required column, or with unknown "
    "columns under `schema_drift: freeze`.",
    "primary_key_unique": "Silver holds one row per primary key among the rows a run touched.",
    "silver_matches_bronze": "The keys silver holds from a landing date are exactly the keys its "
    "valid bronze rows win (silver is a function of bronze).",
    "reconciliation": "Landed rows (ingest ledger) = bronze = accepted + quarantined + duplicates "
    "+ superseded + held, per landing date.",
    "anomalies": "Each column's null rate and distinct count, and numeric columns' mean and "
    "percentiles, against the same weekday of the trailing weeks (robust z-score; contract "
    "`checks.anomalies`; `_system/column_profiles` has every figure).",
}
REPROCESS_TAG = "lakehouse/reprocess"
"""Run tag: a comma-separated list of sources (or `*`) to load again even where nothing changed."""


def reprocess_requested(context: dg.AssetExecutionContext, source: str) -> bool:
    wanted = context.run.tags.get(REPROCESS_TAG, "")
    return source in wanted.split(",") or wanted == "*"


def landing_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", source])


def bronze_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", source])


def silver_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["silver", source])


def landing_spec(contract: Contract, lake: Lake) -> dg.AssetSpec:
    """The landing folder of a source, as an external asset: lineage starts at the files."""
    return dg.AssetSpec(
        key=landing_key(contract.name),
        description=f"Files delivered for `{contract.name}`: {contract.description}",
        group_name="landing",
        kinds={contract.format.type},
        owners=[contract.owner],
        metadata={
            "dagster/uri": lake.landing_uri(contract.name),
            "layout": "<source>/<YYYY-MM-DD>/<file>",
            "contract": contract.path,
        },
    )


def _table_metadata(lake: Lake, uri: str) -> dict:
    stats = delta.table_stats(lake, uri)
    meta: dict = {"dagster/uri": uri}
    if stats is not None:
        meta["dagster/row_count"] = stats[0]
        meta["delta_version"] = stats[1]
    return meta


def _bronze_schema(contract: Contract) -> dg.TableSchema:
    columns = [
        dg.TableColumn(c.name, "string", description=c.description, tags=_pii_tags(c))
        for c in contract.columns
    ]
    columns += [
        dg.TableColumn(c, "string" if c != "_row_number" else "int64", description="lineage")
        for c in LINEAGE_COLUMNS
    ]
    return dg.TableSchema(columns=columns)


def _pii_tags(column: Column) -> dict[str, str]:
    """The column's PII class as a column tag (`pii: email`), shown in the catalog."""
    return {"pii": column.pii} if column.is_pii else {}


def _silver_schema(contract: Contract) -> dg.TableSchema:
    columns = [
        dg.TableColumn(
            c.silver_name,
            c.type,
            description=c.description + (f" (PII: {c.pii}, tokenised)" if c.is_pii else ""),
            constraints=dg.TableColumnConstraints(
                nullable=c.nullable, unique=contract.primary_key == (c.silver_name,)
            ),
            tags=_pii_tags(c),
        )
        for c in contract.columns
    ]
    columns += [dg.TableColumn(c, "string", description="lineage") for c in SILVER_LINEAGE]
    if contract.schema_drift == "rescue":
        columns.append(
            dg.TableColumn(RESCUED, "string", description="unknown landed columns, as JSON")
        )
    if contract.event_time:
        columns.append(
            dg.TableColumn(
                EVENT_DATE,
                "string",
                description=f"date of `{contract.event_time}`; storage partition",
            )
        )
    return dg.TableSchema(columns=columns)


def bronze_asset(contract: Contract) -> dg.AssetsDefinition:
    """`bronze/<source>`: every file landed on the partition's dates, values as landed."""

    @dg.asset(
        key=bronze_key(contract.name),
        deps=[landing_key(contract.name)],
        description=f"Raw `{contract.name}` rows as landed (strings) plus lineage columns; "
        "partitioned by landing date. " + contract.description,
        group_name="bronze",
        kinds={"polars", "deltalake"},
        owners=[contract.owner],
        partitions_def=daily_partitions,
        backfill_policy=backfill_policy,
        metadata={"dagster/column_schema": _bronze_schema(contract)},
        pool=writer_pool("bronze", contract.name),
    )
    def _bronze(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        the_lake = lake.lake()
        dates = context.partition_keys
        context.log.info(f"bronze {contract.name}: loading {len(dates)} landing date(s)")
        result = load_bronze(
            the_lake,
            contract,
            dates,
            run_id=context.run.run_id,
            reprocess=reprocess_requested(context, contract.name),
        )
        for rejected in result.files_rejected:
            context.log.warning(f"rejected landing file {rejected['path']}: {rejected['reason']}")
        context.log.info(
            f"bronze {contract.name}: {len(result.files_loaded)} file(s) loaded ({result.rows} "
            f"rows), {result.files_unchanged} unchanged, {len(result.files_rejected)} rejected"
        )
        for date, figures in _bronze_partition_metadata(the_lake, contract, dates, result).items():
            context.add_asset_metadata(figures, partition_key=date)
        return dg.MaterializeResult(
            metadata=_table_metadata(the_lake, the_lake.table_uri("bronze", contract.name))
        )

    return _bronze


def _bronze_partition_metadata(
    lake: Lake, contract: Contract, dates: Sequence[str], result: BronzeResult
) -> dict[str, dict[str, Any]]:
    """Each landing date's own figures (not the run's totals), for the partition page and plots:
    what this run loaded and rejected for the date, and what bronze holds for it now."""
    held: dict[str, list[int]] = {d: [0, 0] for d in dates}
    for date, rows in (
        system.latest_ledger(lake, contract.name, dates).select("landing_date", "rows").iter_rows()
    ):
        held[date][0] += 1
        held[date][1] += int(rows or 0)
    out = {}
    for date in dates:
        loaded = [f for f in result.files_loaded if f["landing_date"] == date]
        out[date] = {
            "files_loaded": len(loaded),
            "rows_loaded": sum(f["rows"] for f in loaded),
            "files_rejected": sum(f["landing_date"] == date for f in result.files_rejected),
            "date_files": held[date][0],
            "date_rows": held[date][1],
        }
    return out


def silver_check_keys(contract: Contract) -> list[dg.AssetCheckKey]:
    """The checks of `silver/<source>`."""
    return [dg.AssetCheckKey(silver_key(contract.name), name) for name in silver_checks(contract)]


def silver_asset(contract: Contract) -> dg.AssetsDefinition:
    """`silver/<source>`: typed, validated, deduplicated, PII tokenised; published only if audited."""
    key = silver_key(contract.name)
    lineage = dg.TableColumnLineage(
        deps_by_column={
            c.silver_name: [
                dg.TableColumnDep(asset_key=bronze_key(contract.name), column_name=c.name)
            ]
            for c in contract.columns
        }
    )

    @dg.asset(
        key=key,
        # Foreign keys are checked against the referenced silver tables: publish those first.
        deps=[
            bronze_key(contract.name),
            *sorted(
                {
                    silver_key(c.references.table)
                    for c in contract.columns
                    if c.references and c.references.table != contract.name
                },
                key=lambda k: k.to_user_string(),
            ),
        ],
        description=describe(
            contract.description
            + f" Primary key: {', '.join(contract.primary_key)}."
            + (
                f" Partitioned by the date of `{contract.event_time}`."
                if contract.event_time
                else ""
            ),
            contract.deprecated,
        ),
        tags=asset_tags(contract.deprecated),
        group_name="silver",
        kinds={"polars", "pandera", "deltalake"},
        owners=[contract.owner],
        partitions_def=daily_partitions,
        backfill_policy=backfill_policy,
        metadata={
            "dagster/column_schema": _silver_schema(contract),
            "dagster/column_lineage": lineage,
            "primary_key": list(contract.primary_key),
            "contract": contract.path,
        },
        check_specs=[
            dg.AssetCheckSpec(
                name,
                asset=key,
                blocking=name in blocking_checks(contract),
                description=_CHECK_DESCRIPTIONS[name],
                partitions_def=daily_partitions,
            )
            for name in silver_checks(contract)
        ],
        automation_condition=follows_upstream(),
        freshness_policy=freshness_policy(contract),
        pool=writer_pool("silver", contract.name),
        # A blocked landing date is not materialized: the step reports the published dates itself.
        output_required=False,
    )
    def _silver(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
        the_lake = lake.lake()
        warn_deprecated_reads(context)
        dates = context.partition_keys
        result = load_silver(
            the_lake,
            contract,
            dates,
            run_id=context.run.run_id,
            reprocess=reprocess_requested(context, contract.name),
            deployment=shared_instance(context.instance),
        )
        for date in result.blocked_dates + result.held_dates:
            audit = result.partitions[date]
            context.log.error(
                f"silver {contract.name}: landing date {date}: {audit.held} row(s) held: "
                f"{audit.hold_reason}"
            )
        table = _table_metadata(the_lake, the_lake.table_uri("silver", contract.name))
        table["changed_event_dates"] = len(result.changes)
        blocked = set(result.blocked_dates)
        if not blocked:
            for date in dates:
                context.add_asset_metadata(
                    _partition_metadata(result.partitions[date]), partition_key=date
                )
            yield dg.MaterializeResult(metadata=table)
        else:
            for date in dates:
                if date not in blocked:
                    context.log_event(
                        dg.AssetMaterialization(
                            asset_key=key,
                            partition=date,
                            metadata={**table, **_partition_metadata(result.partitions[date])},
                        )
                    )
        yield from _check_results(context, key, result, silver_checks(contract))

    return _silver


def _partition_metadata(audit: PartitionAudit) -> dict[str, Any]:
    """The date's own figures (not the run's totals), for the partition page and its plots."""
    return {
        "rows_accepted": audit.accepted,
        "rows_quarantined": audit.quarantined,
        "rows_duplicate": audit.duplicates,
        "rows_superseded": audit.superseded,
        "rows_held": audit.held,
        "status": audit.status,
        "evaluated": not audit.unchanged,
        **({"held_because": audit.hold_reason} if audit.hold_reason else {}),
    }


def _check_results(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    result: SilverResult,
    names: Sequence[str],
) -> Iterator[dg.AssetCheckResult]:
    """Check results per landing date.

    A one-date run yields that date's results (a failed blocking check fails the step). A range
    run logs one evaluation per evaluated date and yields a run summary per check at WARN
    severity: the dates decide for themselves, and one blocked date must not stop the others.
    """
    if not context.has_partition_key:
        for date, audit in result.evaluated.items():
            for outcome in audit.checks:
                if outcome.passed and not audit.held:
                    continue  # the run summary says it; one event per passed check costs ~10 ms
                context.log_event(
                    dg.AssetCheckEvaluation(
                        asset_key=key,
                        check_name=outcome.check,
                        passed=outcome.passed,
                        partition=date,
                        blocking=outcome.blocking,
                        severity=_severity(bool(outcome.blocking)),
                        metadata={
                            "rows_checked": outcome.rows_checked,
                            "rows_failed": outcome.rows_failed,
                            "detail": outcome.detail,
                        },
                    )
                )
    for name in names:
        yield _check_result(name, result, summary=not context.has_partition_key)


def _severity(blocking: bool) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN


def _check_result(name: str, result: SilverResult, *, summary: bool) -> dg.AssetCheckResult:
    outcomes = result.outcomes(name)
    failed = [o for o in outcomes if not o.passed]
    checked = sum(o.rows_checked for o in outcomes)
    failed_rows = sum(o.rows_failed for o in outcomes)
    metadata = {
        "rows_checked": checked,
        "rows_failed": failed_rows,
        "failure_rate": failed_rows / checked if checked else 0.0,
        "partitions_checked": len(outcomes),
        "partitions_unchanged": len(result.partitions) - len(result.evaluated),
        "partitions_failed": [o.partition for o in failed],
        "rule": _CHECK_DESCRIPTIONS[name],
    }
    if failed:
        metadata["detail"] = "; ".join(f"{o.partition}: {o.detail}" for o in failed[:10])
    if result.samples.get(name):
        metadata["sample"] = dg.MetadataValue.json(result.samples[name])
    return dg.AssetCheckResult(
        check_name=name,
        passed=not failed,
        severity=_severity(not summary and any(o.blocking for o in failed)),
        metadata=metadata,
        description="summary of the run's landing dates; each date has its own evaluation"
        if summary
        else None,
    )
