"""The lakehouse on S3 (a real SeaweedFS server): landing -> gold on s3://, and the landing
sensor picking up new, changed and late files from the bucket."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_aws.s3 import S3Resource
from polars.testing import assert_frame_equal

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.seed import seed
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.sensors import build_landing_sensor
from lakehouse_tests.conftest import materialize_all
from lakehouse_tests.servers import S3Server, seaweedfs

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LAKEHOUSE_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("LAKEHOUSE_PII_KEY", "an-s3-deployment-secret")  # S3 is not local
    return s3


def s3_lake(root: str) -> Lake:
    return Lake.from_env(root)


def landed_orders(lake: Lake, s3: S3Server) -> pl.DataFrame:
    """Every landed order row, fetched from the bucket with plain boto3 + polars."""
    client = s3.client()
    frames = []
    for file in list_landing_files(lake, "orders"):
        key = file.uri.removeprefix(f"s3://{s3.bucket}/")
        body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        frames.append(pl.read_csv(body, infer_schema=False))
    return pl.concat(frames)


def test_whole_chain_landing_to_gold_on_s3(s3_env: S3Server, jaffle_raw: Path) -> None:
    lake = s3_lake(f"s3://{s3_env.bucket}/chain")
    assert lake.is_s3 and lake.storage_options["aws_endpoint_url"] == s3_env.endpoint
    seeded = seed(lake, days=2, raw_dir=jaffle_raw)
    results = materialize_all(lake, dg.DagsterInstance.ephemeral())
    assert [r.success for r in results] == [True, True]  # the chain, then one gold run
    # every layer is a Delta table in the bucket
    keys = {
        o["Key"]
        for page in s3_env.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=s3_env.bucket, Prefix="chain/lake/")
        for o in page.get("Contents", [])
    }
    for table in ("bronze/orders", "silver/orders", "gold/daily_store_revenue", "gold/orders"):
        assert f"chain/lake/{table}/_delta_log/00000000000000000000.json" in keys
    for contract in load_contracts():
        bronze = pl.read_delta(
            lake.table_uri("bronze", contract.name), storage_options=lake.storage_options
        )
        assert bronze.height == seeded.rows[contract.name]
    con = duckdb.connect()
    con.register("landed", landed_orders(lake, s3_env))
    expected = con.sql(
        "select store_id, cast(ordered_at as date) as order_date, count(*) as order_count, "
        "sum(cast(order_total as bigint)) as revenue from landed group by all order by all"
    ).pl()
    gold = pl.read_delta(
        lake.table_uri("gold", "daily_store_revenue"), storage_options=lake.storage_options
    ).sort("store_id", "order_date")
    assert expected.height > 0
    assert_frame_equal(gold.select(expected.columns), expected, check_dtypes=False)


def test_sensor_on_s3_picks_up_new_changed_and_late_files(s3_env: S3Server) -> None:
    lake = s3_lake(f"s3://{s3_env.bucket}/sensed")
    client = s3_env.client()
    sensor = build_landing_sensor(load_contracts())
    resources = {"lake": LakeResource(root=lake.root), "s3": S3Resource()}

    def put(source: str, day: str, name: str, body: str) -> None:
        client.put_object(
            Bucket=s3_env.bucket, Key=f"sensed/landing/{source}/{day}/{name}", Body=body.encode()
        )

    def tick(cursor: str | None) -> tuple[list[tuple[str, str, list[str]]], str]:
        result = sensor(dg.build_sensor_context(cursor=cursor, resources=resources))
        runs = [
            (
                r.partition_key or r.tags["dagster/asset_partition_range_start"],
                r.partition_key or r.tags["dagster/asset_partition_range_end"],
                sorted(k.path[1] for k in r.asset_selection if k.path[0] == "bronze"),
            )
            for r in result.run_requests or []
        ]
        return runs, result.cursor

    put("orders", "2024-05-01", "a.csv", "id\n1\n")
    put("items", "2024-05-02", "a.csv", "id\n1\n")
    runs, cursor = tick(None)
    assert runs == [("2024-05-01", "2024-05-02", ["items", "orders"])]
    runs, cursor = tick(cursor)
    assert runs == []
    # identical bytes uploaded again: the same ETag, nothing to do
    put("orders", "2024-05-01", "a.csv", "id\n1\n")
    runs, cursor = tick(cursor)
    assert runs == []
    # changed content of an existing file, and a late file for an old date
    put("orders", "2024-05-01", "a.csv", "id\n1\n2\n")
    put("orders", "2024-03-10", "late.csv", "id\n9\n")
    runs, cursor = tick(cursor)
    assert runs == [
        ("2024-03-10", "2024-03-10", ["orders"]),
        ("2024-05-01", "2024-05-01", ["orders"]),
    ]
    # a deleted object starts nothing
    client.delete_object(Bucket=s3_env.bucket, Key="sensed/landing/items/2024-05-02/a.csv")
    runs, cursor = tick(cursor)
    assert runs == []
