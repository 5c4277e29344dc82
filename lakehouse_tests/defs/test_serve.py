"""Serving the demo lake through Dagster: every role's file and PostgreSQL (a real cluster),
the PII gate passing on every role; the analyst sees its two stores' orders only and no clear
value sampled from the vault and bronze anywhere in its file; an analyst's PostgreSQL session is
refused the PII column."""

from __future__ import annotations

import os

import dagster as dg
import duckdb
import polars as pl
import psycopg2
import pytest
from psycopg2 import errors

from lakehouse.core.contract import load_contracts
from lakehouse.core.pii_scan import sample_clear_values
from lakehouse.core.serve import POSTGRES_ENV, role_path
from lakehouse.defs.gold import gold_daily_marts, gold_marts, gold_metrics
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.serve import GATE, build_serve_assets
from lakehouse_tests.conftest import Materialized
from lakehouse_tests.servers import postgres

STORES = ("Philadelphia", "Brooklyn")
"""The analyst's stores in lakehouse/policies.yaml."""


def test_serve_the_demo_lake(materialized: Materialized, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = materialized.lake
    gold = pl.read_delta(lake.table_uri("gold", "orders"))
    stores = pl.read_delta(lake.table_uri("gold", "dim_stores"))
    mine = stores.filter(pl.col("store_name").is_in(STORES))["store_id"]
    permitted = gold.filter(pl.col("store_id").is_in(mine.to_list()))
    assert permitted.height > 0

    with postgres() as pg:
        monkeypatch.setenv(POSTGRES_ENV, pg.url)
        assets = build_serve_assets([*gold_marts.keys, *gold_daily_marts.keys, *gold_metrics.keys])
        result = dg.materialize(
            [assets],
            resources={"lake": LakeResource(root=lake.root)},
            instance=materialized.instance,
            raise_on_error=False,
        )
        assert result.success
        gates = result.get_asset_check_evaluations()
        assert {e.asset_key.path[-1] for e in gates} == {"analyst", "pii_reader", "engineer"}
        assert all(e.check_name == GATE and e.passed for e in gates)

        admin = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("create role ana login in role analyst")
        ana = psycopg2.connect(host="127.0.0.1", port=pg.port, user="ana", dbname="postgres")
        ana.autocommit = True
        with ana.cursor() as cur:
            cur.execute("select count(*) from gold.orders")
            assert cur.fetchone() == (permitted.height,)
            cur.execute("select count(*) from analyst.customers")
            assert cur.fetchone()[0] > 0
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
                cur.execute("select customer_name_pseudonym from gold.customers")
        ana.close()
        admin.close()

    analyst = role_path(lake, "analyst")
    with duckdb.connect(str(analyst), read_only=True) as con:
        served = con.sql("select * from gold.orders").pl()
        tables = {
            r[0] for r in con.sql("select table_schema from information_schema.tables").fetchall()
        }
    assert served.height == permitted.height
    assert set(served["order_id"]) == set(permitted["order_id"])
    assert tables == {"gold", "metrics", "main"}  # no silver for analysts
    with duckdb.connect(str(analyst), read_only=True) as con:
        seen = {r[0] for r in con.sql("select store_name from gold.dim_stores").fetchall()}
        revenue = con.sql("select distinct store from metrics.revenue").fetchall()
    assert seen == set(STORES) & set(stores["store_name"])  # of the demo's six stores
    assert {r[0] for r in revenue} <= set(STORES)
    sample = sample_clear_values(lake, load_contracts())
    names = sample.values["customers.name"]
    assert len(names) > 100
    data = analyst.read_bytes()
    assert not [v for vs in sample.values.values() for v in vs if v.encode() in data]
    engineer = role_path(lake, "engineer")
    with duckdb.connect(str(engineer), read_only=True) as con:
        assert con.sql("select count(*) from silver.orders").fetchall()[0][0] > 0
    assert sorted(os.listdir(analyst.parent)) == [
        f"{r}.duckdb" for r in ("analyst", "engineer", "pii_reader")
    ]


def test_pii_classes_are_column_tags_in_the_catalog() -> None:
    from lakehouse.defs.sources import silver_asset

    def tags(spec: dg.AssetSpec) -> dict[str, str]:
        schema = spec.metadata["dagster/column_schema"]
        return {c.name: c.tags["pii"] for c in schema.columns if "pii" in c.tags}

    mart = next(s for s in gold_marts.specs if s.key.path == ["gold", "customers"])
    assert tags(mart)["customer_name_pseudonym"] == "name"
    tweets = next(c for c in load_contracts() if c.name == "tweets")
    (spec,) = silver_asset(tweets).specs
    assert tags(spec)["content"] == "free_text"
