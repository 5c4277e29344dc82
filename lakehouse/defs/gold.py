"""Gold: the dbt project in `dbt/` as Dagster assets, each mart also published as a Delta table.

dbt sources carry the silver asset keys (`meta.dagster.asset_key`), so every mart's upstream chain
in the asset graph reaches the landing files; dbt tests become asset checks on the marts.

Gold follows what silver changed (`lakehouse.core.follow`), not the landing dates: marts tagged
`daily` in dbt (incremental by `order_date`) rebuild and publish exactly the event dates silver
changed since they last built, reading only those silver partitions; a late file for last month
rebuilds last month's dates. The other marts are rebuilt whole, those a changed source reaches.
The `gold_sensor` (daemon) and `lakehouse materialize` start ONE run for those changes, its steps
in order: the whole marts (the star's dimensions, which the daily facts read), the daily marts,
then the headline metrics (`gold_metrics`, from the semantic layer); a run launched by hand for a
partition range rebuilds that range too. dbt runs inside the step's process
(`lakehouse.core.dbt_build`) on a manifest parsed once: a one-day change costs dbt's own time.
"""

import json
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    dbt_assets,
)

from lakehouse.core import dbt_build, follow
from lakehouse.core.gold import (
    ensure_manifest,
    publish_marts,
    warehouse_columns,
)
from lakehouse.core.lake import Lake
from lakehouse.core.metrics import HEADLINE, publish_headline, semantic_layer
from lakehouse.defs.catalog import gold_storage, typed_schema
from lakehouse.defs.deprecation import (
    asset_tags,
    dbt_deprecation,
    describe,
    warn_deprecated_reads,
)
from lakehouse.defs.partitions import backfill_policy, daily_partitions
from lakehouse.defs.resources import LakeResource

GOLD_SCHEMA = "gold"
DAILY_TAG = "daily"
DAILY_CONSUMER = "gold_daily_marts"
WHOLE_CONSUMER = "gold_marts"
METRICS_CONSUMER = "gold_metrics"
METRICS_SOURCES = ("fct_orders", "fct_order_items", "customers")
"""The gold tables the semantic layer's headline metrics read."""
TRIGGER_TAG = "lakehouse/trigger"
SILVER_CHANGES = "silver_changes"
"""`TRIGGER_TAG` value of the gold sensor's runs, started for silver's changes."""
GOLD_TAG = "lakehouse/gold"
"""`SILVER_CHANGES` on a run whose gold steps take in silver's pending changes, not its
partitions: the gold sensor's runs and the landing sensor's (bronze, silver, then gold)."""
WAREHOUSE_POOL = "duckdb_warehouse"
"""DuckDB allows one writer per file: every warehouse writer runs in this pool (limit 1)."""


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

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = super().get_tags(dbt_resource_props)
        return {**tags, **asset_tags(dbt_deprecation(dbt_resource_props))}

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        description = super().get_description(dbt_resource_props)
        return describe(description, dbt_deprecation(dbt_resource_props))

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        # Gold follows silver's changed event dates (the gold sensor), which no partition
        # mapping can express: no automation condition.
        return None


translator = LakehouseDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def build_and_publish(
    context: dg.AssetExecutionContext,
    lake: Lake,
    dates: Sequence[str] | None = None,
    *,
    indirect_selection: str = "cautious",
) -> Iterator[Any]:
    """`dbt build` the step's selected marts in this process, then publish each as Delta (only
    `dates` if given) and report the marts and their dbt tests.

    Every dbt test of a mart built here is recorded as an evaluation of its asset check, also
    when the run's check selection left that check out (an automation run can select a mart
    with other assets' checks only): dbt runs the tests of its models anyway. `cautious`: a
    test runs only if every model it reads was selected; the daily marts' tests that read a
    dimension built in an earlier step or run run with the daily mart they test (`eager`).
    A failed model or error test fails the step before anything is published.
    """
    warn_deprecated_reads(context)
    selected = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
    args = ["--select", *(k.path[-1] for k in selected), "--indirect-selection", indirect_selection]
    shown = f"`dbt build {' '.join(args)}`"
    # The Python logger: the run's event log captures it, and `lakehouse materialize` prints it
    # (its runs' console logger shows warnings only).
    step_log = dg.get_dagster_logger()
    step_log.info(f"Running dbt command: {shown}")
    result = dbt_build.invoke(lake, ["build"], args, dates=dates)
    step_log.info(
        f"Finished dbt command: {shown} in {result.seconds:.2f} s"
        + (f" (parse {result.parse_seconds:.2f} s)" if result.parse_seconds else "")
    )
    checks = {spec.key for spec in context.assets_def.node_check_specs_by_output_name.values()}
    built, evaluations, failed = [], [], []
    for node in result.results:
        key = dg.AssetKey([GOLD_SCHEMA, node.name])
        if node.resource_type in GOLD_RESOURCES:
            if node.status == "success" and key in selected:
                built.append((key, node))
            elif node.status != "success":
                failed.append(f"{node.resource_type} {node.name}: {node.status} {node.message}")
        elif node.resource_type == "test":
            if node.status in ("fail", "error"):
                failed.append(f"test {node.name}: {node.status} {node.message}")
            attached = dg.AssetKey([GOLD_SCHEMA, (node.attached_to or "").split(".")[-1]])
            check = dg.AssetCheckKey(attached, node.name)
            if check in checks and attached in selected:
                evaluations.append(_evaluation(context, check, node))
    if failed or not result.success:
        yield from evaluations
        raise dg.Failure(
            description="dbt build failed: " + "; ".join(failed or ["see the dbt log"]),
            metadata={"dbt_log": str(dbt_build.target_dir(lake) / "dbt.log")},
        )
    # The DuckDB file is free once dbt's connection is closed: publish, then report.
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        published = publish_marts(
            lake,
            con,
            GOLD_SCHEMA,
            [k.path[-1] for k, _ in built],
            run_id=context.run.run_id,
            dates=dates,
        )
        columns = warehouse_columns(con, GOLD_SCHEMA, [k.path[-1] for k, _ in built])
        types = {k: columns[k.path[-1]] for k, _ in built}
    for key, node in built:
        declared = context.assets_def.specs_by_key[key].metadata.get("dagster/column_schema")
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                **published[key.path[-1]],
                "dagster/column_schema": typed_schema(declared, types[key]),
                "dbt_seconds": round(node.seconds, 3),
            },
        )
    yield from evaluations


def _evaluation(
    context: dg.AssetExecutionContext, check: dg.AssetCheckKey, node: dbt_build.NodeResult
) -> Any:
    """A dbt test's result as its asset check's result (an evaluation when not selected)."""
    severity = dg.AssetCheckSeverity.WARN if node.status == "warn" else dg.AssetCheckSeverity.ERROR
    fields = {
        "asset_key": check.asset_key,
        "check_name": check.name,
        "passed": node.status == "pass",
        "severity": severity,
        "metadata": {
            "status": node.status,
            "failures": node.failures or 0,
            "message": node.message,
        },
    }
    if check in context.selected_asset_check_keys:
        return dg.AssetCheckResult(**fields)
    return dg.AssetCheckEvaluation(**fields)


def follows_silver(run: dg.DagsterRun) -> bool:
    """Whether the run's gold steps take in silver's pending changes (and only those)."""
    return run.tags.get(GOLD_TAG) == SILVER_CHANGES


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
def gold_daily_marts(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
    """Daily marts: rebuild the event dates silver changed (and, run by hand, the run's range)."""
    the_lake = lake.lake()
    todo = follow.pending(the_lake, DAILY_CONSUMER, silver_sources(context.assets_def))
    dates: set[str] | None = set(todo.dates)
    if not follows_silver(context.run):
        dates |= set(context.partition_keys)
    if todo.whole:
        dates = None  # a change without dates: every date
    if dates is not None and not dates:
        context.log.info("gold daily marts: silver changed no event date; nothing to rebuild")
        _docs(context, the_lake, [])
        return
    context.log.info(
        "gold daily marts: rebuilding "
        + ("every date" if dates is None else f"{len(dates)} event date(s)")
    )
    yield from build_and_publish(
        context, the_lake, sorted(dates) if dates is not None else None, indirect_selection="eager"
    )
    follow.taken_in(the_lake, DAILY_CONSUMER, todo, run_id=context.run.run_id)
    _docs(context, the_lake)


def _docs(
    context: dg.AssetExecutionContext, lake: Lake, built: Sequence[str] | None = None
) -> None:
    """The mart catalog, after a build that changed what it shows (`dbt_build.generate_docs`):
    `built` (default: the step's marts) must be in it."""
    if built is None:
        built = [k.path[-1] for k in context.selected_asset_keys]
    try:
        docs = dbt_build.generate_docs(lake, built)
    except dbt_build.DbtBuildError as exc:  # the marts are built: the catalog waits
        context.log.warning(f"dbt docs not generated: {exc}")
    else:
        if docs is not None:
            context.log.info(f"dbt docs: the mart catalog is {docs}")


@dbt_assets(
    manifest=ensure_manifest(),
    exclude=f"tag:{DAILY_TAG}",
    name="gold_marts",
    dagster_dbt_translator=translator,
    pool=WAREHOUSE_POOL,
)
def gold_marts(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[Any]:
    """The unpartitioned marts, rebuilt whole (the run selects those whose sources changed).

    In a run that follows silver, nothing pending means another run took the changes in (or
    silver changed nothing): the step builds nothing, and gold steps after it in the run skip."""
    the_lake = lake.lake()
    todo = follow.pending(the_lake, WHOLE_CONSUMER, silver_sources(context.assets_def))
    if todo.empty and follows_silver(context.run):
        context.log.info("gold marts: no silver change pending; nothing to rebuild")
        return
    yield from build_and_publish(context, the_lake)
    follow.taken_in(the_lake, WHOLE_CONSUMER, todo, run_id=context.run.run_id)
    if not set(context.run.asset_selection or ()) & gold_daily_marts.keys:
        _docs(context, the_lake)  # else after the daily marts: once per run


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
    """The gold run silver's pending changes call for."""

    keys: list[dg.AssetKey]
    """What to build: the whole marts a changed source reaches, the daily marts, the metrics."""
    tags: dict[str, str]
    run_key: str

    @property
    def selection(self) -> dg.AssetSelection:
        """The marts without their dbt tests' asset checks: the build records every test as
        an evaluation of its check all the same (`build_and_publish`), and a run that selects
        checks writes an event per check planned and per check output (about a second)."""
        return dg.AssetSelection.assets(*self.keys).without_checks()


def buildable_marts(
    lake: Lake, assets_def: dg.AssetsDefinition, arriving: Set[str] = frozenset()
) -> list[dg.AssetKey]:
    """The marts of `assets_def` whose every silver source has a contract and a table (or is
    one of the `arriving` sources, whose silver the same run publishes first).

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
        and (
            source in arriving
            or delta.open_table(lake, lake.table_uri("silver", source)) is not None
        )
    }
    return [
        key
        for key in sorted(assets_def.keys, key=lambda k: k.to_user_string())
        if all(
            dep.path[-1] in present for dep in assets_def.asset_deps[key] if dep.path[0] == "silver"
        )
    ]


def reached_by(assets_def: dg.AssetsDefinition, sources: set[str]) -> set[dg.AssetKey]:
    """The marts of `assets_def` that read (directly or through other marts) any of `sources`."""
    reached: set[dg.AssetKey] = set()
    grown = True
    while grown:
        grown = False
        for key in assets_def.keys - reached:
            deps = assets_def.asset_deps[key]
            if any(d.path[0] == "silver" and d.path[-1] in sources for d in deps) or deps & reached:
                reached.add(key)
                grown = True
    return reached


def pending_gold_runs(lake: Lake) -> list[GoldRun]:
    """The gold run that would take in silver's changes not yet built: none when nothing changed.

    One run, its steps in dependency order: the whole marts a changed source reaches (the
    star's dimensions, which the daily facts read, among them), the daily marts over the
    changed event dates, then the headline metrics. A whole mart none of whose sources changed
    is not rebuilt. The run key names the silver versions it takes in.
    """
    keys: list[dg.AssetKey] = []
    tags = {TRIGGER_TAG: SILVER_CHANGES, GOLD_TAG: SILVER_CHANGES}
    versions: dict[str, dict[str, int]] = {}
    whole_keys = buildable_marts(lake, gold_marts)
    whole = follow.pending(lake, WHOLE_CONSUMER, silver_sources(gold_marts))
    if whole_keys and not whole.empty:
        reached = reached_by(gold_marts, whole.sources)
        keys += [k for k in whole_keys if k in reached]
        versions[WHOLE_CONSUMER] = whole.versions
    daily_keys = buildable_marts(lake, gold_daily_marts)
    daily = follow.pending(lake, DAILY_CONSUMER, silver_sources(gold_daily_marts))
    if daily_keys and not daily.empty:
        partitions = daily_partitions.get_partition_keys()
        if daily.whole or not daily.dates:
            # every date: the days silver holds (not every partition since the partitions'
            # start: Dagster records an event per mart and partition of the run)
            held = follow.held_dates(lake, silver_sources(gold_daily_marts))
            days = [partitions[0], partitions[-1]]
            if held is not None:
                days = [max(held[0], partitions[0]), min(held[1], partitions[-1])]
        else:
            days = sorted(daily.dates)
        inside = [d for d in days if partitions[0] <= d <= partitions[-1]]
        first, last = (inside[0], inside[-1]) if inside else (partitions[-1], partitions[-1])
        keys += daily_keys
        tags |= {
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        }
        versions[DAILY_CONSUMER] = daily.versions
    built = {k.path[-1] for k in [*whole_keys, *daily_keys]}
    metrics = follow.pending(lake, METRICS_CONSUMER, _metric_silver_sources())
    if set(METRICS_SOURCES) <= built and not metrics.empty:
        keys += sorted(gold_metrics.keys, key=lambda k: k.to_user_string())
        versions[METRICS_CONSUMER] = metrics.versions
    if not keys:
        return []
    return [GoldRun(keys, tags, f"gold:{json.dumps(versions, sort_keys=True)}")]


def gold_downstream_of(lake: Lake, sources: Set[str]) -> list[dg.AssetKey]:
    """The gold a run publishing silver `sources` takes on after them: the whole marts those
    sources reach, the daily marts (over the event dates silver then changed), the headline
    metrics; as `pending_gold_runs` selects them once silver has changed. The landing sensor's
    runs carry them with `GOLD_TAG`, so a landed file reaches gold in the run that loads it."""
    reached = reached_by(gold_marts, set(sources))
    whole = buildable_marts(lake, gold_marts, sources)
    keys = [k for k in whole if k in reached]
    daily = buildable_marts(lake, gold_daily_marts, sources)
    if set(sources) & set(silver_sources(gold_daily_marts)):
        keys += daily
    buildable = {k.path[-1] for k in [*whole, *daily]}
    if set(METRICS_SOURCES) <= buildable and set(sources) & set(_metric_silver_sources()):
        keys += sorted(gold_metrics.keys, key=lambda k: k.to_user_string())
    return keys
