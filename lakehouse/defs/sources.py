"""Per-source assets built from contracts: landing (external) -> bronze -> silver, with checks.

No per-source Python: every source gets the same three assets, named `[layer, source]`, with
the contract's description, owner and column docs, so the Dagster UI doubles as the catalog.
"""

import dagster as dg

from lakehouse.core import delta
from lakehouse.core.bronze import LINEAGE_COLUMNS, load_bronze
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.silver import (
    BLOCKING_CHECKS,
    EVENT_DATE,
    RESCUED,
    SILVER_CHECKS,
    SILVER_LINEAGE,
    SilverResult,
    load_silver,
)
from lakehouse.defs.automation import follows_upstream
from lakehouse.defs.partitions import backfill_policy, daily_partitions
from lakehouse.defs.resources import LakeResource

_CHECK_DESCRIPTIONS = {
    "row_rules": "Rows failing a row rule (parseable, type, null, range, allowed values, pattern, "
    "foreign key) are quarantined with every reason.",
    "references": "Rows whose foreign key (contract `references`) is missing from the referenced "
    "silver table are quarantined.",
    "volume": "Blocks a landing date whose row count is far outside the median of the recent "
    "landing dates (contract `checks.volume`).",
    "quarantine_ratio": "Blocks a landing date whose quarantined share exceeds the contract's limit.",
    "schema_drift": "Blocks a landing date with a file missing a required column, or with unknown "
    "columns under `schema_drift: freeze`.",
    "primary_key_unique": "Published rows hold one row per primary key.",
    "reconciliation": "Landed rows (ingest ledger) = bronze = accepted + quarantined + duplicates "
    "+ held, per landing date.",
}


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
        dg.TableColumn(c.name, "string", description=c.description) for c in contract.columns
    ]
    columns += [
        dg.TableColumn(c, "string" if c != "_row_number" else "int64", description="lineage")
        for c in LINEAGE_COLUMNS
    ]
    return dg.TableSchema(columns=columns)


def _silver_schema(contract: Contract) -> dg.TableSchema:
    columns = [
        dg.TableColumn(
            c.silver_name,
            c.type,
            description=c.description + (f" (PII: {c.pii}, pseudonymised)" if c.is_pii else ""),
            constraints=dg.TableColumnConstraints(
                nullable=c.nullable, unique=contract.primary_key == (c.silver_name,)
            ),
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
        pool=f"delta_bronze_{contract.name}",
    )
    def _bronze(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        the_lake = lake.lake()
        dates = context.partition_keys
        context.log.info(f"bronze {contract.name}: loading {len(dates)} landing date(s)")
        result = load_bronze(the_lake, contract, dates, run_id=context.run_id)
        for rejected in result.files_rejected:
            context.log.warning(f"rejected landing file {rejected['path']}: {rejected['reason']}")
        return dg.MaterializeResult(
            metadata={
                **_table_metadata(the_lake, the_lake.table_uri("bronze", contract.name)),
                "files_loaded": len(result.files_loaded),
                "files_rejected": len(result.files_rejected),
                "rows_loaded": result.rows,
            }
        )

    return _bronze


def silver_asset(contract: Contract) -> dg.AssetsDefinition:
    """`silver/<source>`: typed, validated, deduplicated, pseudonymised; published only if audited."""
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
        description=contract.description
        + f" Primary key: {', '.join(contract.primary_key)}."
        + (f" Partitioned by the date of `{contract.event_time}`." if contract.event_time else ""),
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
                blocking=name in BLOCKING_CHECKS,
                description=_CHECK_DESCRIPTIONS[name],
            )
            for name in SILVER_CHECKS
        ],
        automation_condition=follows_upstream(),
        pool=f"delta_silver_{contract.name}",
    )
    def _silver(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        the_lake = lake.lake()
        dates = context.partition_keys
        result = load_silver(the_lake, contract, dates, run_id=context.run_id)
        if result.blocked_dates:
            context.log.error(
                f"silver {contract.name}: blocked landing dates "
                f"{', '.join(result.blocked_dates)}: nothing of them was published"
            )
        return dg.MaterializeResult(
            metadata={
                **_table_metadata(the_lake, the_lake.table_uri("silver", contract.name)),
                "rows_accepted": result.total("accepted"),
                "rows_quarantined": result.total("quarantined"),
                "rows_duplicate": result.total("duplicates"),
                "rows_held": result.total("held"),
                "blocked_partitions": result.blocked_dates,
            },
            check_results=[_check_result(name, result) for name in SILVER_CHECKS],
        )

    return _silver


def _check_result(name: str, result: SilverResult) -> dg.AssetCheckResult:
    outcomes = result.outcomes(name)
    failed = [o for o in outcomes if not o.passed]
    checked = sum(o.rows_checked for o in outcomes)
    failed_rows = sum(o.rows_failed for o in outcomes)
    metadata = {
        "rows_checked": checked,
        "rows_failed": failed_rows,
        "failure_rate": failed_rows / checked if checked else 0.0,
        "partitions_checked": len(outcomes),
        "partitions_failed": [o.partition for o in failed],
        "rule": _CHECK_DESCRIPTIONS[name],
    }
    if failed:
        metadata["detail"] = "; ".join(f"{o.partition}: {o.detail}" for o in failed[:10])
    if result.samples.get(name):
        metadata["sample"] = dg.MetadataValue.json(result.samples[name])
    blocking = name in BLOCKING_CHECKS
    return dg.AssetCheckResult(
        check_name=name,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )
