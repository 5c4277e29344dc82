"""Gold: the dbt project in `dbt/` as Dagster assets, each mart also published as a Delta table.

dbt sources carry the silver asset keys (`meta.dagster.asset_key`), so every mart's upstream chain
in the asset graph reaches the landing files; dbt tests become asset checks on the marts.

Gold follows what silver changed (`lakehouse.core.follow`), not the landing dates: marts tagged
`daily` in dbt (incremental by `order_date`) rebuild and publish exactly the event dates silver
changed since they last built, reading only those silver partitions; a late file for last month
rebuilds last month's dates. The other marts are rebuilt whole, when a source of theirs changed.
The `gold_sensor` (daemon) and `lakehouse materialize` start those runs, whole marts first (the
star's dimensions, which the daily facts read), then the daily marts, then the headline metrics
(`gold_metrics`, from the semantic layer); a run launched by hand for a partition range rebuilds
that range too.
"""

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtCliResource,
    dbt_assets,
)

from lakehouse.core import follow
from lakehouse.core.dbt_silver_plugin import EVENT_DATES_ENV
from lakehouse.core.gold import (
    DBT_DIR,
    dbt_executable,
    ensure_manifest,
    publish_marts,
    warehouse_columns,
)
from lakehouse.core.lake import Lake
from lakehouse.core.metrics import HEADLINE, publish_headline, semantic_layer
from lakehouse.defs.catalog import gold_storage, typed_schema
from lakehouse.defs.partitions import backfill_policy, daily_partitions
from lakehouse.defs.resources import LakeResource

RUN_TARGET = DBT_DIR / "target" / "run"
"""dbt's target folder for builds: apart from the manifest the code location loads, which a build
would otherwise rewrite under a reader's feet."""
GOLD_SCHEMA = "gold"
DAILY_TAG = "daily"
DAILY_CONSUMER = "gold_daily_marts"
WHOLE_CONSUMER = "gold_marts"
METRICS_CONSUMER = "gold_metrics"
METRICS_SOURCES = ("fct_orders", "fct_order_items", "customers")
"""The gold tables the semantic layer's headline metrics read."""
TRIGGER_TAG = "lakehouse/trigger"
SILVER_CHANGES = "silver_changes"
"""`TRIGGER_TAG` value of gold runs started for silver's changes: they rebuild just those."""
WAREHOUSE_POOL = "duckdb_warehouse"
"""DuckDB allows one writer per file: every warehouse writer runs in this pool (limit 1)."""


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(
        project_dir=str(DBT_DIR), profiles_dir=str(DBT_DIR), dbt_executable=dbt_executable()
    )


GOLD_RESOURCES = ("model", "snapshot")
"""dbt resources that are gold assets: the star, the marts and the customers snapshot."""


class LakehouseDbtTranslator(DagsterDbtTranslator):
    """Models and snapshots are `gold/<name>`; sources keep the silver keys from their meta."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] in GOLD_RESOURCES:
            return dg.AssetKey([GOLD_SCHEMA, dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GOLD_SCHEMA if dbt_resource_props["resource_type"] in GOLD_RESOURCES else None

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        # columns' PII classes (contracts, through dbt lineage) as `pii` column tags
        from lakehouse.defs.serve import with_pii_tags

        metadata = with_pii_tags(dbt_resource_props, super().get_metadata(dbt_resource_props))
        if dbt_resource_props["resource_type"] in GOLD_RESOURCES:  # not dbt's parse database
            metadata = {**metadata, **gold_storage(dbt_resource_props["name"], GOLD_SCHEMA)}
        return metadata

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        # Gold follows silver's changed event dates (the gold sensor), which no partition
        # mapping can express: no automation condition.
        return None


translator = LakehouseDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def dbt_env(lake: Lake, dates: Sequence[str] | None = None) -> dict[str, str]:
    """The environment that points dbt's profile and the silver plugin at `lake` (and dates)."""
    return {**lake.env(), EVENT_DATES_ENV: ",".join(sorted(dates)) if dates else ""}


@contextmanager
def _environ_for_call(env: Mapping[str, str]) -> Iterator[None]:
    """Set `env` for one call and restore the process environment after it.

    dagster-dbt's `DbtCliResource.cli` has no environment argument: it copies `os.environ` when
    called and starts dbt right away. Setting the variables only around that call keeps one
    lake's settings from leaking into later steps, tests or other lakes in this process.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_and_publish(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    lake: Lake,
    dates: Sequence[str] | None = None,
    *,
    indirect_selection: str = "cautious",
) -> Iterator[Any]:
    """`dbt build` the selected marts, then publish each as Delta (only `dates` if given).

    Every dbt test of a mart built here is recorded as an evaluation of its asset check, also
    when the run's check selection left that check out (an automation run can select a mart
    with other assets' checks only): dbt runs the tests of its models anyway (`cautious` below
    overrides dagster-dbt's `empty` indirect selection), and dagster-dbt would log such a
    result as an AssetObservation, leaving the check "Not Evaluated".
    """
    Path(lake.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
    # One target folder (not dagster-dbt's per-invocation one) keeps dbt's partial parse warm;
    # warehouse writers run one at a time (pool `duckdb_warehouse`), so they never share it.
    with _environ_for_call(dbt_env(lake, dates)):
        # `cautious`: in a subset (a mart held back by a failed blocking check upstream), a test
        # runs only if every model it reads was selected. The daily marts' tests that read a
        # dimension (built by the whole marts' run, which goes first) run with any daily mart
        # they test (`eager`).
        invocation = dbt.cli(
            ["build", "--indirect-selection", indirect_selection],
            context=context,
            target_path=RUN_TARGET,
        )
    events = list(_check_evaluations_for_tests(context, invocation))
    # The DuckDB file is free only once dbt has exited: publish after the build, then report.
    keys = context.assets_def.keys_by_output_name
    marts = [keys[e.output_name].path[-1] for e in events if isinstance(e, dg.Output)]
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        published = publish_marts(
            lake, con, GOLD_SCHEMA, marts, run_id=context.run.run_id, dates=dates
        )
        types = {mart: warehouse_columns(con, GOLD_SCHEMA, mart) for mart in marts}
    for event in events:
        if isinstance(event, dg.Output):
            key = keys[event.output_name]
            declared = context.assets_def.specs_by_key[key].metadata.get("dagster/column_schema")
            yield event.with_metadata(
                {
                    **event.metadata,
                    **published[key.path[-1]],
                    "dagster/column_schema": typed_schema(declared, types[key.path[-1]]),
                }
            )
        else:
            yield event


def _check_evaluations_for_tests(
    context: dg.AssetExecutionContext, invocation: DbtCliInvocation
) -> Iterator[Any]:
    """The invocation's Dagster events, with a test of a mart built in this step that
    dagster-dbt logs as an AssetObservation (its check not selected) as that check's evaluation."""
    # every check the definition has (`check_keys` holds only the selected ones)
    checks = {spec.key for spec in context.assets_def.node_check_specs_by_output_name.values()}
    built = context.selected_asset_keys
    for raw in invocation.stream_raw_events():
        options = {
            "manifest": invocation.manifest,
            "dagster_dbt_translator": invocation.dagster_dbt_translator,
            "target_path": invocation.target_path,
            "project": invocation.project,
        }
        events = list(raw.to_default_asset_events(context=context, **options))
        if events and all(isinstance(e, dg.AssetObservation) for e in events):
            # without a context dagster-dbt reports a test as an AssetCheckEvaluation
            evaluations = [
                e
                for e in raw.to_default_asset_events(context=None, **options)
                if isinstance(e, dg.AssetCheckEvaluation)
                and e.asset_check_key in checks
                and e.asset_key in built
            ]
            if evaluations:
                events = evaluations
        yield from events


def silver_sources(assets_def: dg.AssetsDefinition) -> list[str]:
    """The silver tables a dbt assets definition reads."""
    return sorted({k.path[-1] for k in assets_def.dependency_keys if k.path[0] == "silver"})


@dbt_assets(
    manifest=ensure_manifest(),
    select=f"tag:{DAILY_TAG}",
    name="gold_daily_marts",
    dagster_dbt_translator=translator,
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    pool=WAREHOUSE_POOL,
)
def gold_daily_marts(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource
) -> Iterator[Any]:
    """Daily marts: rebuild the event dates silver changed (and, run by hand, the run's range)."""
    the_lake = lake.lake()
    todo = follow.pending(the_lake, DAILY_CONSUMER, silver_sources(context.assets_def))
    dates: set[str] | None = set(todo.dates)
    if context.run.tags.get(TRIGGER_TAG) != SILVER_CHANGES:
        dates |= set(context.partition_keys)
    if todo.whole:
        dates = None  # a change without dates: every date
    if dates is not None and not dates:
        context.log.info("gold daily marts: silver changed no event date; nothing to rebuild")
        return
    context.log.info(
        "gold daily marts: rebuilding "
        + ("every date" if dates is None else f"{len(dates)} event date(s)")
    )
    yield from build_and_publish(
        context,
        dbt,
        the_lake,
        sorted(dates) if dates is not None else None,
        indirect_selection="eager",
    )
    follow.taken_in(the_lake, DAILY_CONSUMER, todo, run_id=context.run.run_id)


@dbt_assets(
    manifest=ensure_manifest(),
    exclude=f"tag:{DAILY_TAG}",
    name="gold_marts",
    dagster_dbt_translator=translator,
    pool=WAREHOUSE_POOL,
)
def gold_marts(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource
) -> Iterator[Any]:
    """The unpartitioned marts, rebuilt whole."""
    the_lake = lake.lake()
    todo = follow.pending(the_lake, WHOLE_CONSUMER, silver_sources(context.assets_def))
    yield from build_and_publish(context, dbt, the_lake)
    follow.taken_in(the_lake, WHOLE_CONSUMER, todo, run_id=context.run.run_id)


@dg.multi_asset(
    name="gold_metrics",
    specs=[
        dg.AssetSpec(
            [GOLD_SCHEMA, "metrics", name],
            deps=[[GOLD_SCHEMA, t] for t in METRICS_SOURCES],
            group_name=GOLD_SCHEMA,
            kinds={"metricflow", "deltalake"},
            description=f"The `{name}` metric (dbt/models/semantic) per day, by store where it "
            "has one: the semantic layer's answer as a Delta table.",
        )
        for name in HEADLINE
    ],
    pool=WAREHOUSE_POOL,
)
def gold_metrics(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
    """The headline metrics, recomputed from the star after the gold marts' runs."""
    the_lake = lake.lake()
    todo = follow.pending(the_lake, METRICS_CONSUMER, _metric_silver_sources())
    layer = semantic_layer(the_lake.warehouse_path)
    published = publish_headline(layer, the_lake, run_id=context.run.run_id)
    for name, metadata in published.items():
        yield dg.MaterializeResult(asset_key=[GOLD_SCHEMA, "metrics", name], metadata=metadata)
    follow.taken_in(the_lake, METRICS_CONSUMER, todo, run_id=context.run.run_id)


def _metric_silver_sources() -> list[str]:
    return sorted({*silver_sources(gold_marts), *silver_sources(gold_daily_marts)})


@dataclass(frozen=True)
class GoldRun:
    """A gold run silver's pending changes call for."""

    assets_def: dg.AssetsDefinition
    keys: list[dg.AssetKey]
    """The marts to build: those whose every silver source exists."""
    tags: dict[str, str]
    run_key: str


def buildable_marts(lake: Lake, assets_def: dg.AssetsDefinition) -> list[dg.AssetKey]:
    """The marts of `assets_def` whose every silver source has a contract and a table.

    Gold is the team's dbt project: a mart over a source this lake does not have (the demo's
    Jaffle Shop marts in a lake of other sources, or before the first delivery) is not built.
    """
    from lakehouse.core import delta
    from lakehouse.core.contract import load_contracts

    contracts = {c.name for c in load_contracts()}
    present = {
        source
        for source in silver_sources(assets_def)
        if source in contracts
        and delta.open_table(lake, lake.table_uri("silver", source)) is not None
    }
    return [
        key
        for key in sorted(assets_def.keys, key=lambda k: k.to_user_string())
        if all(
            dep.path[-1] in present for dep in assets_def.asset_deps[key] if dep.path[0] == "silver"
        )
    ]


def pending_gold_runs(lake: Lake) -> list[GoldRun]:
    """The gold runs that would take in silver's changes not yet built: none when nothing changed.

    The whole marts' run comes first: the daily facts look up and test against the dimensions
    it builds (dim_customers, dim_stores, dim_dates). The headline metrics come last.
    """
    runs = []
    whole_keys = buildable_marts(lake, gold_marts)
    whole = follow.pending(lake, WHOLE_CONSUMER, silver_sources(gold_marts))
    if whole_keys and not whole.empty:
        runs.append(
            GoldRun(
                gold_marts,
                whole_keys,
                {TRIGGER_TAG: SILVER_CHANGES},
                f"{WHOLE_CONSUMER}:{json.dumps(whole.versions, sort_keys=True)}",
            )
        )
    daily_keys = buildable_marts(lake, gold_daily_marts)
    daily = follow.pending(lake, DAILY_CONSUMER, silver_sources(gold_daily_marts))
    if daily_keys and not daily.empty:
        keys = daily_partitions.get_partition_keys()
        if daily.whole or not daily.dates:
            first, last = keys[0], keys[-1]
        else:
            inside = [d for d in sorted(daily.dates) if keys[0] <= d <= keys[-1]]
            first, last = (inside[0], inside[-1]) if inside else (keys[-1], keys[-1])
        runs.append(
            GoldRun(
                gold_daily_marts,
                daily_keys,
                {
                    TRIGGER_TAG: SILVER_CHANGES,
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last,
                },
                f"{DAILY_CONSUMER}:{json.dumps(daily.versions, sort_keys=True)}",
            )
        )
    built = {k.path[-1] for run in runs for k in run.keys} | {
        k.path[-1] for k in [*whole_keys, *daily_keys]
    }
    metrics = follow.pending(lake, METRICS_CONSUMER, _metric_silver_sources())
    if set(METRICS_SOURCES) <= built and not metrics.empty:
        runs.append(
            GoldRun(
                gold_metrics,
                sorted(gold_metrics.keys, key=lambda k: k.to_user_string()),
                {TRIGGER_TAG: SILVER_CHANGES},
                f"{METRICS_CONSUMER}:{json.dumps(metrics.versions, sort_keys=True)}",
            )
        )
    return runs
