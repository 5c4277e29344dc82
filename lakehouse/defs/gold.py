"""Gold: the dbt project in `dbt/` as Dagster assets, each mart also published as a Delta table.

dbt sources carry the silver asset keys (`meta.dagster.asset_key`), so every mart's upstream chain
in the asset graph reaches the landing files; dbt tests become asset checks on the marts.
"""

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from lakehouse.core.gold import publish_marts
from lakehouse.core.lake import PROJECT_DIR
from lakehouse.defs.resources import LakeResource

DBT_DIR = PROJECT_DIR / "dbt"
MANIFEST = DBT_DIR / "target" / "manifest.json"
GOLD_SCHEMA = "gold"
WAREHOUSE_POOL = "duckdb_warehouse"
"""DuckDB allows one writer per file: every warehouse writer runs in this pool (limit 1)."""


def dbt_executable() -> str:
    """The `dbt` installed beside this Python (the venv's), else the one on PATH."""
    dbt = Path(sys.executable).with_name("dbt")
    return str(dbt) if dbt.exists() else "dbt"


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(
        project_dir=str(DBT_DIR), profiles_dir=str(DBT_DIR), dbt_executable=dbt_executable()
    )


def ensure_manifest() -> Path:
    """Parse the dbt project if its manifest is missing or older than any project file."""
    sources = [
        p for p in DBT_DIR.rglob("*") if p.suffix in (".sql", ".yml") and "target" not in p.parts
    ]
    newest = max(p.stat().st_mtime for p in sources)
    if not MANIFEST.exists() or MANIFEST.stat().st_mtime < newest:
        subprocess.run(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_DIR),
                "--profiles-dir",
                str(DBT_DIR),
            ],
            check=True,
            cwd=DBT_DIR,
        )
    return MANIFEST


class LakehouseDbtTranslator(DagsterDbtTranslator):
    """Marts are `gold/<model>`; sources keep the silver keys from their meta."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "model":
            return dg.AssetKey([GOLD_SCHEMA, dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GOLD_SCHEMA if dbt_resource_props["resource_type"] == "model" else None

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition:
        return (
            dg.AutomationCondition.eager()
            & dg.AutomationCondition.all_deps_blocking_checks_passed()
        )


translator = LakehouseDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


@dbt_assets(manifest=ensure_manifest(), dagster_dbt_translator=translator, pool=WAREHOUSE_POOL)
def gold_marts(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource
) -> Iterator[Any]:
    """Build the selected marts with `dbt build`, then publish each as a Delta table."""
    the_lake = lake.lake()
    os.environ.update(the_lake.env())  # dbt's profile and silver plugin read these
    Path(the_lake.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
    # `cautious`: in a subset (a mart held back by a failed blocking check upstream), a test
    # runs only if every model it reads was selected.
    events = list(dbt.cli(["build", "--indirect-selection", "cautious"], context=context).stream())
    # The DuckDB file is free only once dbt has exited: publish after the build, then report.
    keys = context.assets_def.keys_by_output_name
    marts = [keys[e.output_name].path[-1] for e in events if isinstance(e, dg.Output)]
    with duckdb.connect(the_lake.warehouse_path, read_only=True) as con:
        published = publish_marts(the_lake, con, GOLD_SCHEMA, marts, run_id=context.run_id)
    for event in events:
        if isinstance(event, dg.Output):
            yield event.with_metadata(
                {**event.metadata, **published[keys[event.output_name].path[-1]]}
            )
        else:
            yield event
