"""Materialize the whole graph for every landed date, the way `make demo` and the tests do.

Two runs through the same definitions the UI loads: one single-run backfill of the partitioned
chain (bronze, silver) over the landed date range, then the gold marts whose upstream blocking
checks passed in the first run.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def landed_dates(lake: Lake) -> list[str]:
    """Every landing date that holds at least one file, over all contracted sources."""
    return sorted(
        {f.landing_date for c in load_contracts() for f in list_landing_files(lake, c.name)}
    )


def materialize_range(
    assets: list[dg.AssetsDefinition],
    first: str,
    last: str,
    *,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
) -> dg.ExecuteInProcessResult:
    """One run of the partitioned `assets` over the dates `first`..`last` (a single-run backfill)."""
    return dg.materialize(
        assets,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config=QUIET,
        tags={
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
) -> list[dg.ExecuteInProcessResult]:
    """Run bronze + silver over `dates` (default: every landed date) as one run, then gold."""
    dates = dates if dates is not None else landed_dates(lake)
    if not dates:
        return []
    resources = resources or defs.resources
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    partitioned = [a for a in assets if a.partitions_def is not None]
    unpartitioned = [a for a in assets if a.partitions_def is None]
    chain = materialize_range(
        partitioned, dates[0], dates[-1], instance=instance, resources=resources
    )
    # As under automation (all_deps_blocking_checks_passed): a mart downstream of a failed
    # blocking check does not run.
    failed = [
        e.asset_key for e in chain.get_asset_check_evaluations() if not e.passed and e.blocking
    ]
    marts = [key for a in unpartitioned for key in a.keys]
    selection = dg.AssetSelection.assets(*marts)
    if failed:
        selection = selection - dg.AssetSelection.assets(*failed).downstream()
    if not selection.resolve([*unpartitioned, *partitioned]):
        return [chain]
    gold = dg.materialize(
        [*unpartitioned, *partitioned],
        selection=selection,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        run_config=QUIET,
    )
    return [chain, gold]
