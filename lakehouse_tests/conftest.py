"""Shared fixtures: Jaffle Shop data generated once per session, a lake materialized once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

# In-process Dagster definitions read their first daily partition once, at import: tests pin it to
# a date before every feed they seed (a fresh demo ends yesterday; some tests replay 2018 dates).
os.environ.setdefault("LAKEHOUSE_START_DATE", "2018-09-01")


from lakehouse.core.lake import Lake
from lakehouse.core.seed import SeedResult, generate_jaffle_shop, seed
from lakehouse.defs.resources import LakeResource

DAYS = 10


@pytest.fixture(scope="session")
def jaffle_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One year of raw jafgen output, generated once per test session."""
    return generate_jaffle_shop(tmp_path_factory.mktemp("jafgen"), days=DAYS)


@dataclass
class Materialized:
    lake: Lake
    seeded: SeedResult
    results: list[dg.ExecuteInProcessResult]
    instance: dg.DagsterInstance


def resources_for(lake: Lake) -> dict:
    return {"lake": LakeResource(root=lake.root)}


def materialize_all(lake: Lake, instance: dg.DagsterInstance, dates: list[str] | None = None):
    from lakehouse.definitions import defs
    from lakehouse.defs.runs import materialize_landed

    return materialize_landed(
        defs, lake, instance=instance, resources=resources_for(lake), dates=dates
    )


@pytest.fixture(scope="session")
def materialized(tmp_path_factory: pytest.TempPathFactory, jaffle_raw: Path) -> Materialized:
    """A lake seeded with DAYS days of deliveries and materialized end to end through Dagster."""
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(str(root))
    seeded = seed(lake, days=DAYS, raw_dir=jaffle_raw)
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_all(lake, instance)
    return Materialized(lake, seeded, results, instance)


def run(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


TOKEN_DERIVED = ("_row_hash", "dbt_scd_id")
"""Columns computed from vault tokens (silver's row hash, the snapshot's version ids), beside
gold's surrogate keys (`*_sk`)."""


def detokenised(lake: Lake, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with each vault token replaced by the clear value it stands for and, if it holds
    tokens, without the columns computed from them. Tokens are random per lake: two lakes built
    from the same files compare through this."""
    from lakehouse.core import vault

    tokens = [
        c
        for c, dtype in frame.schema.items()
        if dtype == pl.String
        and frame.get_column(c).drop_nulls().str.starts_with(vault.TOKEN_PREFIX).any()
    ]
    if not tokens:
        return frame
    clear = vault.clear_values(lake, {t for c in tokens for t in frame.get_column(c).drop_nulls()})
    derived = [c for c in frame.columns if c in TOKEN_DERIVED or c.endswith("_sk")]
    return frame.drop(derived).with_columns(pl.col(c).replace(clear) for c in tokens)


def expected_revenue(lake: Lake, days: Sequence[str] | None = None) -> pl.DataFrame:
    """`gold/daily_store_revenue` as the landed orders (of `days`, default every landing date)
    make it, computed here with DuckDB over the landing files."""
    import duckdb

    from lakehouse.core.landing import list_landing_files

    files = [
        f.uri for f in list_landing_files(lake, "orders") if days is None or f.landing_date in days
    ]
    return duckdb.sql(
        "select store_id, cast(ordered_at as date) as order_date, count(*) as order_count, "
        "sum(cast(order_total as bigint)) as revenue "
        "from read_csv($files, all_varchar = true) group by all order by all",
        params={"files": files},
    ).pl()
