"""The rest of the lake as assets, so the UI is a complete catalog.

- `quarantine/<source>`: the rows silver refused, with every reason (written by the silver step);
- `_system/<table>`: the ledger, rejected files, check results, partition states, gold
  watermarks, alerts and their deliveries;

are external assets with a description, owner, storage location and column schema. The
`catalog_sensor` observes them: a table's row count, Delta version and schema when its version
moved, and each landing folder's files, bytes, dates and latest delivery when they changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from lakehouse.core import alerts, anomaly, delta, system, vault
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.quarantine import REPLAY_RUN_ID, REPLAYED_AT, RETIRED_AT, RETIRED_RUN_ID
from lakehouse.defs.resources import LakeResource, LazyS3Resource
from lakehouse.defs.sources import bronze_key, landing_key, silver_key

CATALOG_TICK_SECONDS = 60
PLATFORM_OWNER = "team:platform"
SYSTEM_TABLES: dict[str, str] = {
    system.INGEST_LEDGER: "One row per landed file loaded into bronze: path, size, sha256, rows, "
    "run.",
    system.REJECTED_FILES: "One row per landed file (or folder) that could not be read, with the "
    "reason.",
    system.DQ_RESULTS: "One row per partition x check x new outcome, with its counts.",
    system.PARTITION_STATE: "Per source and landing date: the fingerprint of its inputs and its "
    "outcome (published, held, blocked).",
    system.GOLD_WATERMARKS: "The silver version of each source the gold marts have built from.",
    alerts.ALERTS: "One row per alert raised or resolved (one incident: one firing row, one "
    "resolved row).",
    alerts.DELIVERIES: "One row per alert and sink it was delivered to (webhook, slack).",
    anomaly.COLUMN_PROFILES: "One row per source, landing date, column and figure (null rate, "
    "distinct count, mean, percentiles) profiled for `checks.anomalies`, with its baseline, "
    "robust z-score and verdict.",
}
"""Each `_system` table and what it holds; its columns come from the module that writes it."""
_SYSTEM_SCHEMAS = {**system.SCHEMAS, **alerts.SCHEMAS, **anomaly.SCHEMAS}
_QUARANTINE_COLUMNS = {
    "_rules": "the rules the row failed, e.g. `order_total:greater_than_or_equal_to(0)`",
    "_errors": "a message per failed rule, naming the column and value",
    "_source_file": "the landed file",
    "_row_number": "the row's 1-based data row in the file",
    "_landing_date": "the landing date (partition) it came with",
    "_run_id": "the run that quarantined it",
    "_raw_line": "the line as landed, when it could not be parsed",
    REPLAY_RUN_ID: "the run that replayed it into silver (closed)",
    REPLAYED_AT: "when it was replayed",
    RETIRED_RUN_ID: "the run that retired it: its file was redelivered (closed)",
    RETIRED_AT: "when it was retired",
}


def quarantine_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["quarantine", source])


def system_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["_system", table])


def _schema(columns: dict) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype).lower()) for name, dtype in columns.items()]
    )


def gold_storage(name: str, schema: str, lake: Lake | None = None) -> dict[str, str]:
    """Where a gold model lives: its warehouse table (`<database>.<schema>.<name>`, the DuckDB
    file's database) and its Delta copy under the lake root."""
    lake = lake or Lake.from_env()
    return {
        "dagster/table_name": f"{Path(lake.warehouse_path).stem}.{schema}.{name}",
        "dagster/uri": lake.table_uri("gold", name),
        "warehouse": lake.warehouse_path,
    }


def typed_schema(declared: object, types: dict[str, str]) -> dg.TableSchema:
    """The warehouse's columns and types (in its order), with what the dbt project declares
    of each column (`declared`: a TableSchema or its metadata value) kept: description,
    constraints, tags."""
    declared = getattr(declared, "schema", declared)
    columns = declared.columns if isinstance(declared, dg.TableSchema) else []
    known = {c.name: c for c in columns}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                kind.lower(),
                description=known[name].description if name in known else None,
                constraints=known[name].constraints if name in known else None,
                tags=known[name].tags if name in known else None,
            )
            for name, kind in types.items()
        ]
    )


def quarantine_spec(contract: Contract, lake: Lake) -> dg.AssetSpec:
    columns = [
        dg.TableColumn(c.name, "string", description=c.description) for c in contract.columns
    ]
    columns += [dg.TableColumn(n, "string", description=d) for n, d in _QUARANTINE_COLUMNS.items()]
    return dg.AssetSpec(
        key=quarantine_key(contract.name),
        deps=[bronze_key(contract.name)],
        description=f"`{contract.name}` rows that failed a row rule, as landed, with every "
        "reason; written by the silver step. Open rows have neither `_replay_run_id` nor "
        "`_retired_at`. Holds landed values: restrict access (PII is not pseudonymised here).",
        group_name="quarantine",
        kinds={"deltalake"},
        owners=[contract.owner],
        metadata={
            "dagster/uri": lake.table_uri("quarantine", contract.name),
            "dagster/column_schema": dg.TableSchema(columns=columns),
            "written_by": silver_key(contract.name).to_user_string(),
        },
    )


def system_spec(table: str, lake: Lake) -> dg.AssetSpec:
    description, columns = SYSTEM_TABLES[table], _SYSTEM_SCHEMAS[table]
    return dg.AssetSpec(
        key=system_key(table),
        description=description,
        group_name="system",
        kinds={"deltalake"},
        owners=[PLATFORM_OWNER],
        metadata={
            "dagster/uri": lake.table_uri("_system", table),
            "dagster/column_schema": _schema(columns),
        },
    )


VAULT_KEY = dg.AssetKey(["_restricted", "pii_vault"])


def vault_spec(lake: Lake) -> dg.AssetSpec:
    """The token vault: its schema and where it lives, never its values."""
    return dg.AssetSpec(
        key=VAULT_KEY,
        description="The PII token vault: one row per PII class and clear value, with its "
        "random token (silver and gold hold the tokens). Restricted: whoever reads it reads "
        "every clear PII value; only silver steps and erasure use it.",
        group_name="system",
        kinds={"deltalake"},
        owners=[PLATFORM_OWNER],
        metadata={
            "dagster/uri": vault.vault_uri(lake),
            "dagster/column_schema": _schema(vault.SCHEMA),
            "restricted": True,
        },
    )


def catalog_specs(contracts: Sequence[Contract], lake: Lake) -> list[dg.AssetSpec]:
    return [
        *(quarantine_spec(c, lake) for c in contracts),
        *(system_spec(t, lake) for t in SYSTEM_TABLES),
        vault_spec(lake),
    ]


def table_observation(
    lake: Lake, key: dg.AssetKey, uri: str
) -> tuple[int, dg.AssetObservation] | None:
    """(version, an observation with row count, version and schema) of a Delta table, if any."""
    table = delta.open_table(lake, uri)
    if table is None:
        return None
    rows, version = delta.table_stats(lake, uri) or (0, table.version())
    schema = pl.scan_delta(table).collect_schema()
    return version, dg.AssetObservation(
        asset_key=key,
        metadata={
            "dagster/row_count": rows,
            "delta_version": version,
            "dagster/uri": uri,
            "dagster/column_schema": _schema(dict(schema)),
        },
    )


def landing_observation(lake: Lake, source: str, client) -> tuple[str, dg.AssetObservation]:
    """(a fingerprint, an observation) of a source's landing folder: files, bytes, dates."""
    files = list_landing_files(lake, source, client=client)
    by_date: dict[str, list[int]] = {}
    for f in files:
        by_date.setdefault(f.landing_date, []).append(f.size)
    metadata: dict = {
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "landing_dates": len(by_date),
    }
    if by_date:
        latest = max(by_date)
        metadata["latest_landing_date"] = latest
        metadata["latest_date_files"] = len(by_date[latest])
        metadata["latest_date_bytes"] = sum(by_date[latest])
        arrived: dict[str, str] = {}
        if not lake.is_s3:  # local versions are mtimes in ns
            for f in files:
                arrived[f.landing_date] = max(arrived.get(f.landing_date, ""), f.version.zfill(20))
            arrived = {
                d: datetime.fromtimestamp(int(v) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                for d, v in arrived.items()
            }
        metadata["recent_dates"] = dg.MetadataValue.md(
            "| date | files | bytes | last arrival |\n|---|---|---|---|\n"
            + "\n".join(
                f"| {d} | {len(sizes)} | {sum(sizes)} | {arrived.get(d, '-')} |"
                for d, sizes in sorted(by_date.items())[-14:]
            )
        )
        if not lake.is_s3:
            newest = max(int(f.version) for f in files)
            metadata["last_arrival"] = dg.MetadataValue.timestamp(newest / 1e9)
    listing = json.dumps(sorted((f.relative_path, f.size, f.version) for f in files))
    return hashlib.sha256(listing.encode()).hexdigest()[:32], dg.AssetObservation(
        asset_key=landing_key(source), metadata=metadata
    )


def observe(lake: Lake, contracts: Sequence[Contract], seen: dict[str, object], client=None):
    """The observations whose fingerprint differs from `seen`, and the fingerprints now."""
    now: dict[str, object] = {}
    events = []
    tables = [(quarantine_key(c.name), lake.table_uri("quarantine", c.name)) for c in contracts]
    tables += [(system_key(t), lake.table_uri("_system", t)) for t in SYSTEM_TABLES]
    tables.append((VAULT_KEY, vault.vault_uri(lake)))
    for key, uri in tables:
        found = table_observation(lake, key, uri)
        if found is not None:
            now[key.to_user_string()], event = found
            if seen.get(key.to_user_string()) != now[key.to_user_string()]:
                events.append(event)
    for c in contracts:
        fingerprint, event = landing_observation(lake, c.name, client)
        now[landing_key(c.name).to_user_string()] = fingerprint
        if seen.get(landing_key(c.name).to_user_string()) != fingerprint:
            events.append(event)
    return events, now


def build_catalog_sensor(contracts: Sequence[Contract]) -> dg.SensorDefinition:
    @dg.sensor(
        name="catalog_sensor",
        description="Observes the landing folders (files, bytes, dates, latest delivery), the "
        "quarantine tables and the _system tables (row count, Delta version, schema) when they "
        "change.",
        minimum_interval_seconds=CATALOG_TICK_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def catalog_sensor(
        context: dg.SensorEvaluationContext, lake: LakeResource, s3: LazyS3Resource
    ) -> dg.SensorResult:
        the_lake = lake.lake()
        client = s3.get_client() if the_lake.is_s3 else None
        seen = json.loads(context.cursor) if context.cursor else {}
        events, now = observe(the_lake, contracts, seen, client)
        context.log.info(f"{len(events)} catalog observation(s)")
        return dg.SensorResult(asset_events=events, cursor=json.dumps(now))

    return catalog_sensor
