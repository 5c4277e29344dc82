"""Extracts as Dagster assets: `landing/<source>` of a database source is materialized by its extract.

For a contract with a `source:` block (`lakehouse.core.extract`), the landing asset is not an
external asset but the extract itself: each materialization lands the source's new rows as one
Parquet file (or nothing, when nothing changed). The landing sensor then loads that file into
bronze like any delivered file, and silver follows through automation. One schedule
(`extract_schedule`, RUNNING) extracts every such source; `LAKEHOUSE_EXTRACT_CRON` sets it
(default every 15 minutes).

A source served as a long-lived process (`lakehouse stream SOURCE`) is not run by Dagster:
`stream_reporter` records each of its micro-batches on the Dagster instance as runless
materializations of `landing/`, `bronze/` and `silver/<source>` (partition: the landing date),
so the asset catalog, freshness and automation see the stream like any other source.
"""

import os
from collections.abc import Sequence

import dagster as dg

from lakehouse.core.contract import Contract
from lakehouse.core.extract import extract, extracted_contracts
from lakehouse.core.extract.service import MicroBatch
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.sources import bronze_key, landing_key, silver_key

EXTRACT_CRON_ENV = "LAKEHOUSE_EXTRACT_CRON"
DEFAULT_EXTRACT_CRON = "*/15 * * * *"


def extract_asset(contract: Contract) -> dg.AssetsDefinition:
    """`landing/<source>`: one extract of the contract's source into its landing zone."""
    spec = contract.source
    assert spec is not None, f"`{contract.name}` is delivered as files"
    what = next(
        (getattr(spec, a) for a in ("table", "path", "stream") if getattr(spec, a, None)), "a query"
    )
    metadata: dict = {
        "contract": contract.path,
        "layout": "<source>/<YYYY-MM-DD>/extract-NNNNNN.parquet | snapshot.parquet",
        "mode": spec.mode,
    }
    if getattr(spec, "cursor", None):  # a stream has none
        metadata["cursor_column"] = spec.cursor

    @dg.asset(
        key=landing_key(contract.name),
        description=f"`{contract.name}` extracted from {spec.kind} ({what}, {spec.mode}) as "
        f"Parquet files: {contract.description}",
        group_name="landing",
        kinds={spec.kind, "parquet"},
        owners=[contract.owner],
        metadata=metadata,
        pool=f"extract_{contract.name}",
    )
    def _extract(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        the_lake = lake.lake()
        result = extract(the_lake, contract, progress=context.log.info)
        context.log.info(f"extract {result.summary}")
        meta: dict = {
            "dagster/uri": the_lake.landing_uri(contract.name),
            "rows": result.rows,
            "landing_date": result.landing_date,
            "seconds": round(result.seconds, 3),
            "rows_per_second": round(result.rows_per_second),
        }
        if result.uri is not None:
            meta["landed_file"] = result.uri
        if result.cursor is not None:
            meta["cursor"] = result.cursor
        return dg.MaterializeResult(metadata=meta)

    return _extract


def extract_assets(contracts: Sequence[Contract]) -> list[dg.AssetsDefinition]:
    return [extract_asset(c) for c in extracted_contracts(list(contracts))]


def served(contract: Contract) -> bool:
    """A stream source: `lakehouse stream` reads it and loads its bronze and silver itself, so
    neither the extract schedule nor the landing sensor may (one consumer, one writer)."""
    return contract.source is not None and contract.source.kind == "nats"


def extract_schedules(contracts: Sequence[Contract]) -> list[dg.ScheduleDefinition]:
    """One schedule over every extracted source but streams (none when there is none)."""
    keys = [landing_key(c.name) for c in extracted_contracts(list(contracts)) if not served(c)]
    if not keys:
        return []
    return [
        dg.ScheduleDefinition(
            name="extract_schedule",
            target=keys,
            cron_schedule=os.environ.get(EXTRACT_CRON_ENV, DEFAULT_EXTRACT_CRON),
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Extracts every database source's new rows into its landing zone.",
            tags={"lakehouse/trigger": "extract_schedule"},
        )
    ]


def stream_reporter(instance: dg.DagsterInstance, contract: Contract):
    """A `serve(report=...)` callback recording each micro-batch on `instance`."""

    def report(batch: MicroBatch) -> None:
        common = {"stream/micro_batch": batch.number, "stream/seconds": round(batch.seconds, 3)}
        if batch.slot_lag_bytes is not None:
            common["cdc/slot_lag_bytes"] = batch.slot_lag_bytes
            common["cdc/slot_lagging"] = batch.lagging
        events = []
        if batch.files:
            meta = {"rows": batch.rows, "landed_files": "\n".join(batch.files)}
            events.append((landing_key(contract.name), None, meta))
        if batch.bronze is not None:
            events.append(
                (bronze_key(contract.name), batch.landing_date, {"rows": batch.bronze.rows})
            )
        if batch.silver is not None:
            silver = batch.silver
            events.append(
                (
                    silver_key(contract.name),
                    batch.landing_date,
                    {
                        "accepted": silver.total("accepted"),
                        "quarantined": silver.total("quarantined"),
                        "blocked_dates": ", ".join(silver.blocked_dates) or "none",
                    },
                )
            )
        if not events:  # a lagging slot with nothing new: an observation of the landing asset
            instance.report_runless_asset_event(
                dg.AssetObservation(landing_key(contract.name), metadata=common)
            )
        for key, partition, meta in events:  # the extract's landing asset has no partitions
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key, partition=partition, metadata={**meta, **common})
            )

    return report
