"""Materialize the whole graph for every landed date, the way `make demo` and the tests do.

Runs through the same definitions the UI loads: one single-run backfill of the partitioned chain
(bronze, silver) over the landed date range; again for any silver asset Dagster skipped because a
source it references held back a date in that run; then the gold runs that silver's changes call
for (`pending_gold_runs`), the same ones the gold sensor starts under the daemon. Nothing
changed, nothing runs: `nothing_to_do` asks the core before any run starts.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from lakehouse.core.bronze import files_to_load
from lakehouse.core.contract import load_contracts
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.silver import dates_to_evaluate
from lakehouse.defs.gold import pending_gold_runs
from lakehouse.defs.partitions import daily_partitions
from lakehouse.defs.recovery import process_tags
from lakehouse.defs.sources import REPROCESS_TAG

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def landed_dates(lake: Lake) -> list[str]:
    """Every landing date that holds at least one file, over all contracted sources.

    Raises:
        ConfigError: a file landed before the first daily partition (it names the file).
    """
    files = [f for c in load_contracts() for f in list_landing_files(lake, c.name)]
    early = sorted(
        (f for f in files if f.landing_date < daily_partitions.start.strftime("%Y-%m-%d")),
        key=lambda f: f.relative_path,
    )
    if early:
        msg = (
            f"landing file `{early[0].relative_path}` (and {len(early) - 1} more) is dated before "
            f"the first daily partition `{daily_partitions.start:%Y-%m-%d}`: set `since:` in the "
            f"contract of `{early[0].source}` or LAKEHOUSE_START_DATE to `{early[0].landing_date}` "
            "or earlier"
        )
        raise ConfigError(msg)
    return sorted({f.landing_date for f in files})


def materialize_range(
    assets: list[dg.AssetsDefinition],
    first: str,
    last: str,
    *,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
    selection: Sequence[dg.AssetKey] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of the partitioned `assets` over the dates `first`..`last` (a single-run backfill)."""
    return dg.materialize(
        assets,
        selection=list(selection) if selection is not None else None,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config=QUIET,
        tags={
            **process_tags(),
            **(tags or {}),
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
    )


def materialize_landed(
    defs: dg.Definitions,
    lake: Lake,
    *,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any] | None = None,
    dates: list[str] | None = None,
    reprocess: Sequence[str] = (),
) -> list[dg.ExecuteInProcessResult]:
    """Run bronze + silver over `dates` (default: every landed date) as one run, then gold.

    `reprocess` names sources to load again even where nothing changed (`*`: every source).
    """
    dates = dates if dates is not None else landed_dates(lake)
    if not dates:
        return []
    if not reprocess and nothing_to_do(lake, dates):
        return []  # a no-op rerun starts no run at all: a Dagster run costs seconds
    resources = resources or defs.resources
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    # The chain: bronze and silver. Gold follows silver's changes in runs of its own.
    partitioned = [
        a
        for a in assets
        if a.partitions_def is not None and all(k.path[0] in ("bronze", "silver") for k in a.keys)
    ]
    tags = {REPROCESS_TAG: ",".join(reprocess)} if reprocess else {}
    results = [
        materialize_range(
            partitioned, dates[0], dates[-1], instance=instance, resources=resources, tags=tags
        )
    ]
    # A silver step whose referenced source held a date back in the same run is skipped by
    # Dagster (no output): run it again now that the referenced table is published.
    for _ in range(len(partitioned)):
        skipped = _skipped_assets(results[-1], partitioned)
        if not skipped:
            break
        results.append(
            materialize_range(
                partitioned,
                dates[0],
                dates[-1],
                instance=instance,
                resources=resources,
                selection=skipped,
                tags=tags,
            )
        )
    for run in pending_gold_runs(lake):
        results.append(
            dg.materialize(
                assets,
                selection=run.selection,
                resources=resources,
                instance=instance,
                raise_on_error=False,
                run_config=QUIET,
                tags={**process_tags(), **run.tags},
            )
        )
    return results


def nothing_to_do(lake: Lake, dates: Sequence[str]) -> bool:
    """No landed file to load, no silver date to evaluate, no gold run pending."""
    for contract in load_contracts():
        if files_to_load(lake, contract, dates) or dates_to_evaluate(lake, contract, dates):
            return False
    return not pending_gold_runs(lake)


def _skipped_assets(
    result: dg.ExecuteInProcessResult, assets: Sequence[dg.AssetsDefinition]
) -> list[dg.AssetKey]:
    """The silver assets whose steps Dagster skipped in `result`."""
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    return [
        key
        for a in assets
        if a.node_def.name in skipped
        for key in a.keys
        if key.path[0] == "silver"
    ]
