"""The semantic layer: the metrics defined once in `dbt/models/semantic/`, asked for without SQL.

MetricFlow (dbt-metricflow) plans each query from dbt's `semantic_manifest.json` and renders
DuckDB SQL; the SQL runs read-only on the warehouse file, so asking for a metric never takes the
warehouse's writer lock. MetricFlow's Python entry points are internal classes, not a stable API:
this module is the only one that imports them.

Users name dimensions by their short names (`store`, `product_type`, `customer_cohort`) and grains
`day`, `week`, `month`; the module maps them to MetricFlow's names (`store__store_name`,
`metric_time__week`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake

DIMENSIONS = {
    "store": "store__store_name",
    "product_type": "product__product_type",
    "customer_cohort": "customer__cohort",
}
"""Short dimension name -> MetricFlow's qualified name."""
GRAINS = ("day", "week", "month")
HEADLINE = (
    "revenue",
    "order_count",
    "average_order_value",
    "items_sold",
    "new_customers",
    "drink_revenue_share",
)
"""The metrics published as Delta tables under `<root>/lake/gold/metrics/`."""


class MetricsError(LakehouseError):
    """A metric query names something the semantic layer does not have, or cannot run."""


@dataclass(frozen=True)
class MetricInfo:
    """A metric as `lakehouse metrics list` shows it."""

    name: str
    label: str
    description: str
    owner: str
    type: str
    dimensions: tuple[str, ...]
    """The short names of the dimensions it can be broken down by."""


@dataclass
class MetricResult:
    """A query's rows (one column per dimension and metric) and how long it took."""

    frame: pl.DataFrame
    sql: str
    seconds: float


class _UnusedSqlClient:
    """MetricFlow wants a SQL client to plan with; it only renders SQL here (see `explain`)."""

    def __init__(self) -> None:
        from metricflow.protocols.sql_client import SqlEngine
        from metricflow.sql.render.duckdb_renderer import DuckDbSqlPlanRenderer

        self.sql_engine_type = SqlEngine.DUCKDB
        self.sql_plan_renderer = DuckDbSqlPlanRenderer()

    def query(self, *args: Any, **kwargs: Any) -> Any:
        msg = "the semantic layer runs MetricFlow's SQL itself"
        raise NotImplementedError(msg)

    execute = dry_run = query

    def close(self) -> None:
        return None

    def render_bind_parameter_key(self, bind_parameter_key: str) -> str:
        return f"${bind_parameter_key}"


class SemanticLayer:
    """The metrics of a parsed dbt project (`semantic_manifest.json`) over a DuckDB warehouse."""

    def __init__(self, semantic_manifest: Path, warehouse: str) -> None:
        if not semantic_manifest.exists():
            msg = f"no semantic manifest at `{semantic_manifest}`: run `dbt parse` in dbt/"
            raise MetricsError(msg)
        self.manifest_path = semantic_manifest
        self.warehouse = warehouse

    @cached_property
    def _raw(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    @cached_property
    def _engine(self) -> Any:
        from metricflow.engine.metricflow_engine import MetricFlowEngine
        from metricflow_semantics.model.dbt_manifest_parser import (
            parse_manifest_from_dbt_generated_manifest,
        )
        from metricflow_semantics.model.semantic_manifest_lookup import SemanticManifestLookup

        for name in ("metricflow", "metricflow_semantics"):
            # MetricFlow logs every planning step at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        manifest = parse_manifest_from_dbt_generated_manifest(self.manifest_path.read_text())
        return MetricFlowEngine(SemanticManifestLookup(manifest), _UnusedSqlClient())

    @cached_property
    def _database(self) -> str:
        """The DuckDB catalog name the manifest's relations use (the file dbt parsed with)."""
        for model in self._raw.get("semantic_models", []):
            database = (model.get("node_relation") or {}).get("database")
            if database:
                return str(database)
        return "warehouse"

    def metrics(self) -> list[MetricInfo]:
        """Every public metric, by name."""
        out = []
        for metric in self._engine.list_metrics():
            qualified = {d.dunder_name for d in metric.dimensions}
            meta = (metric.config.meta if metric.config else None) or {}
            out.append(
                MetricInfo(
                    name=metric.name,
                    label=metric.label or metric.name,
                    description=metric.description or "",
                    owner=str(meta.get("owner", "")),
                    type=str(getattr(metric.type, "value", metric.type)),
                    dimensions=tuple(d for d, q in DIMENSIONS.items() if q in qualified),
                )
            )
        return sorted(out, key=lambda m: m.name)

    def query(
        self,
        metrics: Sequence[str],
        *,
        by: Sequence[str] = (),
        grain: str = "day",
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> MetricResult:
        """`metrics` per `grain` period (and per `by` dimension), from `since` to `until` inclusive.

        Periods are labelled by their first day (weeks start on Monday). MetricFlow widens the
        range to whole periods: a week that `since` falls in counts all its days.
        """
        started = time.monotonic()
        sql = self.sql(metrics, by=by, grain=grain, since=since, until=until)
        with self.connect() as con:
            frame = self._rows(con, sql, metrics, by, grain)
        return MetricResult(frame, sql, time.monotonic() - started)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the warehouse attached read-only, as MetricFlow's SQL names it."""
        if not Path(self.warehouse).exists():
            msg = f"no warehouse at `{self.warehouse}`: materialize gold first"
            raise MetricsError(msg)
        con = duckdb.connect()
        con.execute(f"attach '{_quoted(self.warehouse)}' as \"{self._database}\" (read_only)")
        return con

    def _rows(
        self,
        con: duckdb.DuckDBPyConnection,
        sql: str,
        metrics: Sequence[str],
        by: Sequence[str],
        grain: str,
    ) -> pl.DataFrame:
        """Run MetricFlow's `sql` on `con` (see `connect`); columns named as users name them."""
        try:
            frame = con.sql(sql).pl()
        except duckdb.CatalogException as exc:
            msg = f"the warehouse lacks a gold table the metrics read ({exc}): materialize gold"
            raise MetricsError(msg) from exc
        columns = {f"metric_time__{grain}": grain, **{DIMENSIONS[d]: d for d in by}}
        frame = frame.rename({k: v for k, v in columns.items() if k in frame.columns})
        # DuckDB sums integers as DECIMAL(38,0): counts and cents are whole numbers
        whole = [c for c, t in frame.schema.items() if isinstance(t, pl.Decimal) and t.scale == 0]
        frame = frame.with_columns(pl.col(grain).cast(pl.Date), pl.col(whole).cast(pl.Int64))
        order = [grain, *by, *metrics]
        return frame.select(order).sort([grain, *by], nulls_last=True)

    def headline_queries(self) -> dict[str, tuple[list[str], str]]:
        """Each headline metric -> (its `by`, the SQL of it per day): rendered once per semantic
        manifest and kept beside it, so publishing the metrics needs no MetricFlow planning."""
        digest = hashlib.sha256(self.manifest_path.read_bytes()).hexdigest()
        cache = self.manifest_path.with_name(f"headline_sql.{digest[:16]}.json")
        if cache.exists():
            return {k: (v[0], v[1]) for k, v in json.loads(cache.read_text()).items()}
        known = {m.name: m for m in self.metrics()}
        queries = {}
        for name in HEADLINE:
            by = ["store"] if "store" in known[name].dimensions else []
            queries[name] = (by, self.sql([name], by=by, grain="day"))
        partial = cache.with_name(f".{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps(queries))
        os.replace(partial, cache)  # atomic: a concurrent reader sees all of it or nothing
        return queries

    def sql(
        self,
        metrics: Sequence[str],
        *,
        by: Sequence[str] = (),
        grain: str = "day",
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> str:
        """The DuckDB SQL MetricFlow renders for the query (see `query`)."""
        from metricflow.engine.metricflow_engine import MetricFlowQueryRequest

        self._check(metrics, by, grain, since, until)
        request = MetricFlowQueryRequest.create(
            metric_names=list(metrics),
            group_by_names=[f"metric_time__{grain}", *(DIMENSIONS[d] for d in by)],
            time_constraint_start=_start(since),
            time_constraint_end=_start(until),
        )
        return self._engine.explain(request).sql_statement.sql

    def _check(
        self,
        metrics: Sequence[str],
        by: Sequence[str],
        grain: str,
        since: dt.date | None,
        until: dt.date | None,
    ) -> None:
        known = {m.name: m for m in self.metrics()}
        if not metrics:
            msg = f"name at least one metric; metrics are {_listed(known)}"
            raise MetricsError(msg)
        unknown = [m for m in metrics if m not in known]
        if unknown:
            msg = f"no metric {_listed(unknown)}; metrics are {_listed(known)}"
            raise MetricsError(msg)
        if grain not in GRAINS:
            msg = f"no grain `{grain}`; grains are {_listed(GRAINS)}"
            raise MetricsError(msg)
        for dimension in by:
            if dimension not in DIMENSIONS:
                msg = f"no dimension `{dimension}`; dimensions are {_listed(DIMENSIONS)}"
                raise MetricsError(msg)
            lacking = [m for m in metrics if dimension not in known[m].dimensions]
            if lacking:
                valid = set.intersection(*(set(known[m].dimensions) for m in metrics))
                msg = f"metric {_listed(lacking)} has no dimension `{dimension}`; " + (
                    f"valid for {_listed(metrics)}: {_listed(sorted(valid))}"
                    if valid
                    else f"{_listed(metrics)} share no dimension"
                )
                raise MetricsError(msg)
        if since and until and since > until:
            msg = f"--since {since} is after --until {until}"
            raise MetricsError(msg)


def publish_headline(layer: SemanticLayer, lake: Lake, *, run_id: str) -> dict[str, dict[str, Any]]:
    """Each headline metric per day (and per store where it has one) as the Delta table
    `<root>/lake/gold/metrics/<metric>`, for dashboards that read tables; returns its metadata.
    A table that already holds the rows gets no new version."""
    from lakehouse.core.gold import publish_table, side_by_side

    queries = layer.headline_queries()
    with layer.connect() as con:  # one attach of the warehouse for every metric
        frames = {
            name: layer._rows(con, sql, [name], by, "day") for name, (by, sql) in queries.items()
        }
    return side_by_side(
        lambda name: publish_table(lake, f"metrics/{name}", frames[name].to_arrow(), run_id=run_id),
        list(frames),
    )


def semantic_layer(warehouse: str) -> SemanticLayer:
    """The project's semantic layer over `warehouse` (dbt parsed first if its files changed)."""
    from lakehouse.core.gold import ensure_manifest

    manifest = ensure_manifest()
    return SemanticLayer(manifest.with_name("semantic_manifest.json"), warehouse)


def parse_date(value: str | None, option: str) -> dt.date | None:
    """An ISO date given on the command line, with a clear error."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        msg = f"{option} `{value}` is not a date (YYYY-MM-DD)"
        raise MetricsError(msg) from None


def render(frame: pl.DataFrame, fmt: str) -> str:
    """The rows as an aligned `table`, `csv` or `json` (a list of objects)."""
    if fmt == "csv":
        return frame.write_csv().rstrip("\n")
    if fmt == "json":
        return json.dumps(frame.to_dicts(), default=str, indent=2)
    if fmt != "table":
        msg = f"no format `{fmt}`; formats are `table`, `csv`, `json`"
        raise MetricsError(msg)
    cells = [[_cell(v) for v in row] for row in frame.rows()]
    widths = [
        max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
        for i, c in enumerate(frame.columns)
    ]
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    lines = ["  ".join(c.ljust(w) for c, w in zip(frame.columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if num else v.ljust(w)
                for v, w, num in zip(row, widths, numeric, strict=True)
            )
        )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _start(day: dt.date | None) -> dt.datetime | None:
    return None if day is None else dt.datetime.combine(day, dt.time())


def _listed(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _quoted(path: str) -> str:
    return path.replace("'", "''")
