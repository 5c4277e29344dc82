"""The Dagster code location: every contract's assets, the dbt marts, checks, sensors, resources.

This is the one entry point the UI (`make dev`), the daemon, the CLI and the tests load.
"""

from __future__ import annotations

import warnings

import dagster as dg

from lakehouse.core import long_lived
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.defs.alerts import build_alerts_sensor
from lakehouse.defs.automation import automation_sensor
from lakehouse.defs.catalog import build_catalog_sensor, catalog_specs
from lakehouse.defs.extract import extract_assets, extract_schedules, served
from lakehouse.defs.gold import gold_daily_marts, gold_marts, gold_metrics
from lakehouse.defs.lineage import lineage_sensor
from lakehouse.defs.maintenance import maintenance_jobs, maintenance_schedules
from lakehouse.defs.resources import LakeResource, LazyS3Resource
from lakehouse.defs.sensors import build_landing_sensor, gold_sensor
from lakehouse.defs.serve import build_serve_assets, build_serve_sensor
from lakehouse.defs.sources import bronze_asset, landing_spec, silver_asset

# Single-run backfill policies are "beta" in Dagster 1.13; the platform depends on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
# Partitioned asset checks are "preview": silver reports each landing date's checks on its own.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions() -> dg.Definitions:
    contracts = load_contracts()
    lake = Lake.from_env()
    maintenance = maintenance_jobs(contracts)
    serve_roles = build_serve_assets([*gold_marts.keys, *gold_daily_marts.keys, *gold_metrics.keys])
    return dg.Definitions(
        assets=[
            *(landing_spec(c, lake) for c in contracts if c.source is None),
            *extract_assets(contracts),  # the landing asset of a database source is its extract
            *(bronze_asset(c) for c in contracts),
            *(silver_asset(c) for c in contracts),
            gold_daily_marts,
            gold_marts,
            gold_metrics,
            serve_roles,
            *catalog_specs(contracts, lake),
        ],
        sensors=[
            build_landing_sensor([c for c in contracts if not served(c)]),
            gold_sensor,
            automation_sensor,
            build_alerts_sensor(contracts),
            build_catalog_sensor(contracts),
            lineage_sensor,
            build_serve_sensor(sorted(serve_roles.keys, key=lambda k: k.to_user_string())),
        ],
        jobs=maintenance,
        schedules=[*extract_schedules(contracts), *maintenance_schedules(maintenance)],
        # A run's steps are short and I/O-bound; a process per step would cost seconds of start-up
        # each. Runs still run side by side (the run queue), and on Kubernetes each run is a pod.
        executor=dg.in_process_executor,
        resources={
            "lake": LakeResource(),
            # Lists an S3 landing zone; endpoint, keys and region come from the AWS_* variables.
            "s3": LazyS3Resource(),
        },
    )


defs = build_definitions()
long_lived.freeze(collect=False)  # the definitions live as long as the process
