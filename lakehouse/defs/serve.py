"""Serving as assets: `serve/<role>` (one per policy role, `lakehouse/policies.yaml`), rebuilt
after gold (`lakehouse materialize`, the `serve_sensor` under the daemon), each with the
blocking PII gate `no_clear_pii`; PII classes as column tags on gold.

One multi-asset builds every role's DuckDB file (`lakehouse.core.serve`) and, when
`LAKEHOUSE_SERVE_POSTGRES` holds a DSN, loads PostgreSQL too. The gate fails a role's check when
gold, or that role's new file (for a role that may not read clear PII), holds a clear value
of a PII column sampled from the vault and bronze; such a file is not published.
"""

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import dagster as dg

from lakehouse.core.contract import load_contracts
from lakehouse.core.gold import ensure_manifest
from lakehouse.core.lake import Lake
from lakehouse.core.policies import Policy, gold_pii, load_policy
from lakehouse.core.serve import (
    POSTGRES_ENV,
    Served,
    serve,
    served_tables,
    serving_enabled,
    source_versions,
)
from lakehouse.defs.resources import LakeResource

SERVE_GROUP = "serve"
GATE = "no_clear_pii"
PII_TAG = "pii"


def serve_key(role: str) -> dg.AssetKey:
    return dg.AssetKey([SERVE_GROUP, role])


@cache
def _gold_classes() -> Mapping[str, Mapping[str, str]]:
    classes = {
        k: dict(v)
        for k, v in gold_pii(json.loads(ensure_manifest().read_text()), load_contracts()).items()
    }
    for key, cls in load_policy().pii.items():
        schema, table, column = key.split(".")
        if schema == "gold":
            classes.setdefault(table, {})[column] = cls
    return classes


def with_pii_tags(props: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A dbt model's metadata with its columns' PII classes as `pii` column tags."""
    schema = metadata.get("dagster/column_schema")
    classes = _gold_classes().get(props.get("name", ""), {})
    if not isinstance(schema, dg.TableSchema) or not classes:
        return dict(metadata)
    columns = [
        dg.TableColumn(
            c.name,
            c.type,
            description=c.description,
            constraints=c.constraints,
            tags={**c.tags, PII_TAG: classes[c.name]} if c.name in classes else c.tags,
        )
        for c in schema.columns
    ]
    return {**metadata, "dagster/column_schema": dg.TableSchema(columns, schema.constraints)}


def build_serve_assets(gold_keys: Sequence[dg.AssetKey], policy: Policy | None = None):
    """The `serve/<role>` assets of the policy, downstream of `gold_keys`."""
    from lakehouse.defs.gold import WAREHOUSE_POOL  # defs.gold reads this module's tags

    policy = policy or load_policy()
    postgres = bool(os.environ.get(POSTGRES_ENV))
    specs = [
        dg.AssetSpec(
            serve_key(role.name),
            deps=list(gold_keys),
            group_name=SERVE_GROUP,
            kinds={"duckdb", *({"postgres"} if postgres else set())},
            description=f"Role `{role.name}`: {role.description} Reads {', '.join(role.read)}"
            + ("; clear PII." if role.clear_pii else "; PII masked."),
            tags={"lakehouse/clear_pii": str(role.clear_pii).lower()},
        )
        for role in policy.roles.values()
    ]
    checks = [
        dg.AssetCheckSpec(
            GATE,
            asset=serve_key(role.name),
            blocking=True,
            description="No clear value of a contract's PII column (sampled from the vault and bronze) in "
            "gold" + ("" if role.clear_pii else f" nor in the `{role.name}` file") + ".",
        )
        for role in policy.roles.values()
    ]

    # the gate reads the warehouse file: after gold's writers, never beside them
    @dg.multi_asset(name="serve_roles", specs=specs, check_specs=checks, pool=WAREHOUSE_POOL)
    def serve_roles(context: dg.AssetExecutionContext, lake: LakeResource):
        served = serve(
            lake.lake(),
            load_policy(policy.path),
            load_contracts(),
            postgres_dsn=os.environ.get(POSTGRES_ENV) or None,
        )
        yield from serve_events(context, served)

    return serve_roles


def serve_events(context: dg.AssetExecutionContext, served: Served):
    """A materialization and a gate result per role."""
    loads = {}
    if served.postgres is not None:
        loads = {f.table: f for f in served.postgres.loads}
        for f in served.postgres.loads:
            context.log.info(
                f"postgres: {f.table} {f.rows} rows in {f.seconds:.3f}s "
                f"({f.rows_per_second:,.0f} rows/s, ADBC ingest)"
            )
    for store in served.stores:
        findings = [*served.gold_findings, *store.findings]
        metadata: dict[str, Any] = {
            "dagster/uri": store.path,
            "published": store.published,
            "written": store.written,
            "tables": dg.MetadataValue.json(store.tables),
            "seconds": round(store.seconds, 3),
        }
        if loads:
            metadata["postgres_rows"] = sum(f.rows for f in loads.values())
        yield dg.MaterializeResult(asset_key=serve_key(store.role), metadata=metadata)
        yield dg.AssetCheckResult(
            asset_key=serve_key(store.role),
            check_name=GATE,
            passed=not findings,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "clear_values_sampled": served.sample.size,
                "findings": dg.MetadataValue.md("\n".join(f"- {f}" for f in findings) or "none"),
                "published_in_clear_unclassified": dg.MetadataValue.json(
                    served.sample.published_in_clear
                ),
            },
        )


def build_serve_sensor(keys: Sequence[dg.AssetKey]) -> dg.SensorDefinition:
    """Under the daemon: a serve run once gold has taken in silver's changes and its tables
    moved since the last serve (one run per state of gold: the run key is its versions)."""

    @dg.sensor(
        name="serve_sensor",
        asset_selection=list(keys),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def serve_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        from lakehouse.defs.gold import pending_gold_runs

        the_lake = lake.lake()
        if not serving_enabled(the_lake):
            return dg.SkipReason("serving is off until the first `lakehouse serve`")
        if pending_gold_runs(the_lake):
            return dg.SkipReason("gold has silver's changes to take in first")
        tables = served_tables(the_lake, load_policy(), load_contracts())
        versions = source_versions(the_lake, [t for t in tables if t.schema != "silver"])
        if not versions:
            return dg.SkipReason("no gold table yet")
        state = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]
        return dg.RunRequest(run_key=f"serve:{state}", asset_selection=list(keys))

    return serve_sensor


def serve_after_gold(
    defs: dg.Definitions,
    lake: Lake,
    results: Sequence[dg.ExecuteInProcessResult],
    *,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """A serve run when one of `results` materialized gold and serving is on (none otherwise)."""
    built = serving_enabled(lake) and any(
        e.asset_key is not None and e.asset_key.path[0] == "gold"
        for r in results
        for e in r.get_asset_materialization_events()
    )
    if not built:
        return []
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    keys = [k for a in assets for k in a.keys if k.path[0] == SERVE_GROUP]
    return [
        dg.materialize(
            assets,
            selection=keys,
            instance=instance,
            resources=resources or defs.resources,
            raise_on_error=False,
            tags=dict(tags or {}),
        )
    ]
