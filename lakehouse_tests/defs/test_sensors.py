"""The landing sensor, one cursor scenario per test, on a real landing directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_aws.s3 import S3Resource

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.defs.resources import LakeResource
from lakehouse.defs.sensors import build_landing_sensor
from lakehouse.defs.sources import bronze_asset

SENSOR = build_landing_sensor(load_contracts())
BRONZE_ORDERS = bronze_asset(next(c for c in load_contracts() if c.name == "orders"))
HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"


def deliver(lake: Lake, source: str, day: str, name: str, body: str) -> Path:
    path = Path(lake.landing_uri(source)) / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def orders_csv(day: str, ids: range) -> str:
    rows = [f"o{i},c{i},{day}T10:00:00,s1,100,6,106" for i in ids]
    return HEADER + "\n".join(rows) + "\n"


def tick(lake: Lake, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"lake": LakeResource(root=lake.root), "s3": S3Resource()}
    )
    return SENSOR(context)


def requested(result: dg.SensorResult) -> list[tuple[str, str, list[str]]]:
    """(first date, last date, sources) of every run the tick requested."""
    out = []
    for request in result.run_requests or []:
        start = request.partition_key or request.tags["dagster/asset_partition_range_start"]
        end = request.partition_key or request.tags["dagster/asset_partition_range_end"]
        sources = sorted(k.path[1] for k in request.asset_selection if k.path[0] == "bronze")
        # each run takes its sources through bronze and silver
        silver = sorted(k.path[1] for k in request.asset_selection if k.path[0] == "silver")
        assert silver == sources
        out.append((start, end, sources))
    return out


def test_new_files_request_their_dates_with_consecutive_dates_in_one_run(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    deliver(lake, "orders", "2024-01-01", "a.csv", orders_csv("2024-01-01", range(2)))
    deliver(lake, "items", "2024-01-02", "a.csv", "id,order_id,sku\ni1,o1,p1\n")
    deliver(lake, "orders", "2024-01-05", "a.csv", orders_csv("2024-01-05", range(2)))
    first = tick(lake, None)
    assert requested(first) == [
        ("2024-01-01", "2024-01-02", ["items", "orders"]),
        ("2024-01-05", "2024-01-05", ["orders"]),
    ]
    # nothing new: nothing requested, and the run keys are stable for the same files
    assert requested(tick(lake, first.cursor)) == []
    assert [r.run_key for r in tick(lake, None).run_requests] == [
        r.run_key for r in first.run_requests
    ]
    # the range run is a single-run backfill of bronze for the touched sources
    assert first.run_requests[0].partition_key_range == dg.PartitionKeyRange(
        "2024-01-01", "2024-01-02"
    )


def test_changed_file_requests_only_its_date(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    deliver(lake, "orders", "2024-01-01", "a.csv", orders_csv("2024-01-01", range(2)))
    deliver(lake, "orders", "2024-01-02", "a.csv", orders_csv("2024-01-02", range(2)))
    first = tick(lake, None)
    deliver(lake, "orders", "2024-01-02", "a.csv", orders_csv("2024-01-02", range(5)))
    second = tick(lake, first.cursor)
    assert requested(second) == [("2024-01-02", "2024-01-02", ["orders"])]
    assert second.run_requests[0].run_key not in {r.run_key for r in first.run_requests}


def test_late_file_for_an_old_date_requests_that_date_only(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
        deliver(lake, "orders", day, "a.csv", orders_csv(day, range(2)))
    first = tick(lake, None)
    assert requested(first) == [("2024-03-01", "2024-03-03", ["orders"])]
    deliver(lake, "items", "2024-01-15", "late.csv", "id,order_id,sku\ni9,o9,p9\n")
    deliver(lake, "orders", "2024-03-04", "a.csv", orders_csv("2024-03-04", range(2)))
    assert requested(tick(lake, first.cursor)) == [
        ("2024-01-15", "2024-01-15", ["items"]),
        ("2024-03-04", "2024-03-04", ["orders"]),
    ]


def test_redelivered_identical_file_after_loading_is_a_no_op(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    body = orders_csv("2024-01-01", range(3))
    path = deliver(lake, "orders", "2024-01-01", "a.csv", body)
    first = tick(lake, None)
    assert requested(first) == [("2024-01-01", "2024-01-01", ["orders"])]
    # the run the sensor asked for loads the file (and records its sha256 in the ingest ledger)
    bronze = BRONZE_ORDERS
    result = dg.materialize(
        [bronze],
        partition_key="2024-01-01",
        resources={"lake": LakeResource(root=lake.root)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    # the same bytes delivered again: a new mtime, the same content -> no run
    path.unlink()
    deliver(lake, "orders", "2024-01-01", "a.csv", body)
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = tick(lake, first.cursor)
    assert requested(second) == []
    # the same size but other bytes is a change
    deliver(lake, "orders", "2024-01-01", "a.csv", body.replace("o2,", "o7,"))
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    assert requested(tick(lake, second.cursor)) == [("2024-01-01", "2024-01-01", ["orders"])]


def test_deleted_file_requests_nothing_and_deletes_no_data(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    path = deliver(lake, "orders", "2024-01-01", "a.csv", orders_csv("2024-01-01", range(4)))
    deliver(lake, "orders", "2024-01-01", "b.csv", orders_csv("2024-01-01", range(10, 12)))
    first = tick(lake, None)
    bronze = BRONZE_ORDERS
    resources = {"lake": LakeResource(root=lake.root)}
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(
        [bronze], partition_key="2024-01-01", resources=resources, instance=instance
    ).success
    path.unlink()
    second = tick(lake, first.cursor)
    assert requested(second) == []
    # even a reload of the date keeps the deleted file's rows: bronze never deletes
    assert dg.materialize(
        [bronze], partition_key="2024-01-01", resources=resources, instance=instance
    ).success
    rows = pl.read_delta(lake.table_uri("bronze", "orders"))
    assert rows.group_by("_source_file").len().sort("_source_file").rows() == [
        ("orders/2024-01-01/a.csv", 4),
        ("orders/2024-01-01/b.csv", 2),
    ]
    # delivering it again is an arrival
    deliver(lake, "orders", "2024-01-01", "a.csv", orders_csv("2024-01-01", range(4, 9)))
    assert requested(tick(lake, second.cursor)) == [("2024-01-01", "2024-01-01", ["orders"])]


def test_a_tick_over_10k_files_is_fast(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    sources = ["orders", "items", "customers", "tweets"]
    days = [f"2023-{m:02d}-{d:02d}" for m in range(1, 11) for d in range(1, 26)]  # 250 dates
    count = 0
    for source in sources:
        for day in days:
            folder = Path(lake.landing_uri(source)) / day
            folder.mkdir(parents=True)
            for n in range(10):
                (folder / f"part-{n}.csv").write_text("x\n1\n")
                count += 1
    assert count == 10_000
    started = time.perf_counter()
    first = tick(lake, None)
    elapsed = time.perf_counter() - started
    # ten stretches of consecutive dates (1st..25th of each month), every source in each
    assert requested(first) == [
        (f"2023-{m:02d}-01", f"2023-{m:02d}-25", sorted(sources)) for m in range(1, 11)
    ]
    assert sum(int(r.tags["lakehouse/files"]) for r in first.run_requests) == 10_000
    assert elapsed < 10, f"tick over 10k files took {elapsed:.2f}s"
    started = time.perf_counter()
    assert requested(tick(lake, first.cursor)) == []
    print(f"10k-file ticks: first {elapsed:.2f}s, second {time.perf_counter() - started:.2f}s")


def test_a_misnamed_folder_is_skipped_recorded_once_and_stops_nothing(tmp_path: Path) -> None:
    from lakehouse.core import landing, system

    lake = Lake(str(tmp_path))
    deliver(lake, "orders", "2024-02-29", "a.csv", orders_csv("2024-02-29", range(2)))
    deliver(lake, "orders", "2024-02-30", "a.csv", orders_csv("2024-02-30", range(3)))
    deliver(lake, "orders", "archive", "old.csv", orders_csv("2024-01-01", range(1)))
    deliver(lake, "items", "2024-03-01", "a.csv", "id,order_id,sku\ni1,o1,p1\n")
    first = tick(lake, None)
    assert requested(first) == [("2024-02-29", "2024-03-01", ["items", "orders"])]
    assert int(first.run_requests[0].tags["lakehouse/files"]) == 2
    rejected = system.read_table(lake, "rejected_files").sort("path")
    assert rejected.select("source", "path", "landing_date", "rows").rows() == [
        ("orders", "orders/2024-02-30", "2024-02-30", 0),
        ("orders", "orders/archive", "archive", 0),
    ]
    assert "not a valid landing date" in rejected.get_column("reason")[0]
    assert "day is out of range" in rejected.get_column("reason")[0]
    # later ticks, even in a new process (its warnings not yet given), add no second row
    assert requested(tick(lake, first.cursor)) == []
    landing._reported.clear()
    assert requested(tick(lake, first.cursor)) == []
    assert system.read_table(lake, "rejected_files").height == 2
    # the bronze run the sensor asked for loads the valid folders
    result = dg.materialize(
        [BRONZE_ORDERS],
        partition_key="2024-02-29",
        resources={"lake": LakeResource(root=lake.root)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert pl.read_delta(lake.table_uri("bronze", "orders")).height == 2


def test_a_sensor_without_a_cursor_starts_from_what_bronze_loaded(tmp_path: Path) -> None:
    """`make dev` after `make demo`: a new instance's sensor launches nothing for loaded files."""
    lake = Lake(str(tmp_path))
    for day in ("2024-01-01", "2024-01-02"):
        deliver(lake, "orders", day, "a.csv", orders_csv(day, range(3)))
    deliver(lake, "orders", "2024-01-02", "empty.csv", "")  # rejected: seen too
    assert dg.materialize(
        [BRONZE_ORDERS],
        partition_key="2024-01-01",
        resources={"lake": LakeResource(root=lake.root)},
        instance=dg.DagsterInstance.ephemeral(),
    ).success
    # a fresh sensor: only the date bronze has not loaded yet
    assert requested(tick(lake, None)) == [("2024-01-02", "2024-01-02", ["orders"])]
    assert dg.materialize(
        [BRONZE_ORDERS],
        partition_key="2024-01-02",
        resources={"lake": LakeResource(root=lake.root)},
        instance=dg.DagsterInstance.ephemeral(),
    ).success
    fresh = tick(lake, None)
    assert requested(fresh) == []
    # what arrives afterwards still runs: a changed file and a new date
    deliver(lake, "orders", "2024-01-01", "a.csv", orders_csv("2024-01-01", range(5)))
    deliver(lake, "orders", "2024-01-04", "a.csv", orders_csv("2024-01-04", range(2)))
    assert requested(tick(lake, fresh.cursor)) == [
        ("2024-01-01", "2024-01-01", ["orders"]),
        ("2024-01-04", "2024-01-04", ["orders"]),
    ]


def test_a_nested_file_loads_its_child_sources_in_the_same_run(tmp_path: Path) -> None:
    """A child source (`explode:`) has no landing folder of its own: the parent's new file
    requests the child's bronze too, in the parent's run."""
    nested = load_contracts(Path(__file__).resolve().parents[1] / "contracts/sources/nested")
    sensor = build_landing_sensor(nested)
    lake = Lake(str(tmp_path))
    record = '{"order_id": "w1", "payload": {"customer": {"id": 1}, "lines": []}}\n'
    deliver(lake, "web_orders", "2024-01-01", "a.ndjson", record)
    context = dg.build_sensor_context(
        resources={"lake": LakeResource(root=lake.root), "s3": S3Resource()}
    )
    assert requested(sensor(context)) == [
        ("2024-01-01", "2024-01-01", ["web_orders", "web_orders__lines"])
    ]
