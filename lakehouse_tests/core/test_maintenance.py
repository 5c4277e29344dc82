"""Maintenance primitives on real Delta tables: deleted rows unrecoverable after a zero-retention
vacuum and log expiry, zero retention refused without the writers held, and no row lost while a
real writer process appends and replaces partitions during compaction, vacuum and log expiry;
a bronze reload decided before a compaction is decided again after it, nothing kept twice, and
silver's MERGE rerun after a compaction of the files it read; tables in folders (gold metrics)
and the vault maintained like the others, none of their rows expiring."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from lakehouse.core import delta, maintenance, vault
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake

SECRET = "subject-4711@example.com"


def _all_bytes(root: Path) -> bytes:
    """Every byte under `root`, Parquet files decoded to text as well (values may be compressed)."""
    out = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        out.append(path.read_bytes())
        if path.suffix == ".parquet":
            out.append(str(pl.read_parquet(path).rows()).encode())
    return b"".join(out)


def test_zero_retention_vacuum_and_log_expiry_make_deleted_rows_unrecoverable(tmp_path):
    lake = Lake(str(tmp_path))
    uri = lake.table_uri("silver", "people")
    for day, email in [("2024-01-01", "a@example.com"), ("2024-01-02", SECRET)]:
        delta.append(
            lake, uri, pl.DataFrame({"d": [day], "email": [email]}), partition_by=["d"], step="w"
        )
    for i in range(3):
        delta.append(
            lake, uri, pl.DataFrame({"d": ["2024-01-03"], "email": [f"x{i}@example.com"]}), step="w"
        )
    assert SECRET.encode() in _all_bytes(Path(uri))
    assert maintenance.delete_partitions(lake, uri, "d", ["2024-01-02"], step="retention") == 1

    with pytest.raises(ConfigError, match="writers_held=True"):
        maintenance.vacuum(lake, uri, retention_hours=0)
    with pytest.raises(ConfigError, match="writers_held=True"):
        maintenance.expire_log(lake, uri, retention_hours=0)
    # At a retention of hours the deleted file is still there (time travel keeps it).
    assert maintenance.vacuum(lake, uri, retention_hours=24) == []
    assert SECRET.encode() in _all_bytes(Path(uri))

    assert maintenance.compact(lake, uri, step="compact") == 3
    removed = maintenance.vacuum(lake, uri, retention_hours=0, writers_held=True)
    assert len(removed) == 4  # the deleted partition's file and the three compacted ones
    assert maintenance.expire_log(lake, uri, retention_hours=0, writers_held=True) > 0

    assert SECRET.encode() not in _all_bytes(Path(uri))
    table = DeltaTable(uri)
    assert sorted(pl.scan_delta(table).collect()["email"]) == [
        "a@example.com",
        "x0@example.com",
        "x1@example.com",
        "x2@example.com",
    ]
    assert sorted(maintenance.live_files(lake, uri)) == sorted(
        p for p in maintenance.delta_files(lake, uri) if not p.startswith("_delta_log")
    )
    with pytest.raises(Exception):  # noqa: B017 - the old version's log is gone
        DeltaTable(uri, version=1).to_pyarrow_table()
    # The standing log retention is back at its previous value: later checkpoints keep history.
    assert table.metadata().configuration[maintenance.LOG_RETENTION] == "interval 30 days"


def _writer(root: str, uri: str, rounds: int, ready) -> None:
    """A bronze-like writer: appends one small file per round and replaces one partition."""
    lake = Lake(root)
    ready.set()
    for i in range(rounds):
        delta.append(
            lake,
            uri,
            pl.DataFrame({"d": [f"2024-01-0{i % 3 + 1}"], "i": [i], "kind": ["append"]}),
            partition_by=["d"],
            step="append",
        )
        if i % 5 == 4:
            delta.replace_where(
                lake,
                uri,
                pl.DataFrame({"d": ["2024-01-09"], "i": [i], "kind": ["replace"]}),
                "d = '2024-01-09'",
                partition_by=["d"],
                step="replace",
            )


def test_maintenance_beside_a_concurrent_writer_process_loses_no_row(tmp_path):
    lake = Lake(str(tmp_path))
    uri = lake.table_uri("bronze", "orders")
    delta.append(
        lake,
        uri,
        pl.DataFrame({"d": ["2024-01-01"], "i": [-1], "kind": ["seed"]}),
        partition_by=["d"],
    )
    rounds = 40
    context = multiprocessing.get_context("spawn")  # deltalake's runtime panics after fork
    ready = context.Event()
    writer = context.Process(target=_writer, args=(lake.root, uri, rounds, ready))
    writer.start()
    ready.wait(60)
    passes = 0
    while writer.is_alive() or passes == 0:
        maintenance.compact(lake, uri, step="compact")
        maintenance.checkpoint(lake, uri)
        maintenance.vacuum(lake, uri, retention_hours=1)
        maintenance.expire_log(lake, uri, retention_hours=1)
        passes += 1
    writer.join(60)
    assert writer.exitcode == 0
    assert passes > 1, "maintenance never overlapped the writer"
    rows = pl.scan_delta(DeltaTable(uri)).collect()
    appended = rows.filter(pl.col("kind") == "append").get_column("i").sort().to_list()
    assert appended == list(range(rounds))
    last_replace = max(i for i in range(rounds) if i % 5 == 4)
    assert rows.filter(pl.col("kind") == "replace").get_column("i").to_list() == [last_replace]
    assert rows.filter(pl.col("kind") == "seed").height == 1
    # Every file the table reads is on disk.
    on_disk = set(maintenance.delta_files(lake, uri))
    assert set(maintenance.live_files(lake, uri)) <= on_disk
    assert os.path.isdir(uri)


def _micro_batches(root: str, contracts: str, batches: int, ready) -> None:
    """A stream-like bronze writer: one small file per micro-batch on one landing date, loaded
    right away; every tenth batch redelivers (rewrites) an earlier file."""
    os.environ["LAKEHOUSE_CONTRACTS"] = contracts
    from lakehouse.core.bronze import load_bronze
    from lakehouse.core.contract import load_contracts

    (contract,) = load_contracts()
    lake = Lake(root)
    ready.set()
    for n in range(batches):
        _land(Path(root), f"batch-{n:03d}.csv", [(f"m{n}-{k}", n) for k in range(3)])
        if n % 10 == 9:
            _land(Path(root), f"batch-{n - 5:03d}.csv", [(f"m{n - 5}-0", 1000 + n)])
        load_bronze(lake, contract, [DAY], run_id=f"batch-{n}")


DAY = "2024-03-01"
EVENTS = """\
name: events
description: Stream-like events.
owner: team:data-eng
format: {type: csv}
primary_key: [id]
columns:
  - {name: id, type: string, nullable: false}
  - {name: amount, type: int64, nullable: false}
"""


def _land(root: Path, name: str, rows: list[tuple[str, int]]) -> None:
    folder = root / "landing" / "events" / DAY
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_text("id,amount\n" + "".join(f"{i},{a}\n" for i, a in rows))
    tmp.rename(folder / name)  # a file lands whole


def test_stream_bronze_compacted_beside_its_writer_keeps_every_landed_row(tmp_path):
    from datetime import date

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "events.yaml").write_text(EVENTS)
    lake = Lake(str(tmp_path / "lake"))
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    batches = 40
    writer = context.Process(
        target=_micro_batches, args=(lake.root, str(contracts), batches, ready)
    )
    writer.start()
    ready.wait(60)
    passes = []
    while writer.is_alive():
        passes.append(
            maintenance.maintain_table(
                lake,
                "bronze",
                "events",
                keep=None,
                history_hours=1,  # beside a writer: at least SAFE_RETENTION_HOURS
                today=date(2024, 3, 2),
                progress=lambda _: None,
            )
        )
    writer.join(60)
    assert writer.exitcode == 0
    assert sum(p.compacted for p in passes) > 0, "no compaction overlapped the writer"
    final = maintenance.maintain_table(
        lake,
        "bronze",
        "events",
        keep=None,
        history_hours=0,
        today=date(2024, 3, 2),
        writers_held=True,
        progress=lambda _: None,
    )
    # Independently: every row of every landed file as it is now, once.
    landed = pl.concat(
        pl.read_csv(p, schema_overrides={"amount": pl.String})
        for p in sorted((Path(lake.root) / "landing" / "events" / DAY).glob("*.csv"))
    )
    bronze = pl.read_delta(lake.table_uri("bronze", "events"))
    assert sorted(bronze.select("id", "amount").rows()) == sorted(
        landed.select("id", "amount").rows()
    )
    assert final.live_after == 1 and final.files_after == 1  # one partition, one file


def _bronze_rows(lake: Lake) -> list[tuple]:
    rows = pl.read_delta(lake.table_uri("bronze", "events"))
    return sorted(rows.select("_source_file", "_row_number", "id", "amount").rows())


def _landed_rows(lake: Lake) -> list[tuple]:
    """Independently: every row of every landed file as it is now, with its file and row."""
    folder = Path(lake.root) / "landing" / "events" / DAY
    return sorted(
        (f"events/{DAY}/{path.name}", number, row["id"], row["amount"])
        for path in folder.glob("*.csv")
        for number, row in enumerate(
            pl.read_csv(path, schema_overrides={"amount": pl.String}).iter_rows(named=True), 1
        )
    )


def test_a_reload_decided_before_a_compaction_is_decided_again_after_it(tmp_path, monkeypatch):
    """A redelivered file's reload reads bronze, a compaction rewrites the data files it is
    about to replace, and only then does the reload commit: the commit is refused and the
    reload decides again on the compacted table, so the file's old rows go and none is kept
    twice (delta-rs would have rebased the commit over the compaction)."""
    from lakehouse.core import bronze
    from lakehouse.core.contract import load_contracts

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "events.yaml").write_text(EVENTS)
    (contract,) = load_contracts(contracts)
    lake = Lake(str(tmp_path / "lake"))
    uri = lake.table_uri("bronze", "events")
    root = Path(lake.root)
    for n in range(3):
        _land(root, f"batch-{n:03d}.csv", [(f"m{n}-{k}", n) for k in range(3)])
        bronze.load_bronze(lake, contract, [DAY], run_id=f"batch-{n}")
        assert _bronze_rows(lake) == _landed_rows(lake)
    assert maintenance.compact(lake, uri, by_partition=bronze.LANDING_DATE) == 3
    _land(root, "batch-003.csv", [("m3-0", 3)])
    bronze.load_bronze(lake, contract, [DAY], run_id="batch-3")
    assert _bronze_rows(lake) == _landed_rows(lake)  # one compacted file and batch-003's

    decide = bronze._replaced_data
    decisions: list[int] = []
    compacted: list[int] = []

    def compacted_after_deciding(*args, **kwargs):
        decided = decide(*args, **kwargs)
        decisions.append(len(decided[0]))
        if not compacted:  # the maintenance pass beside the load commits first
            compacted.append(maintenance.compact(lake, uri, by_partition=bronze.LANDING_DATE))
        return decided

    monkeypatch.setattr(bronze, "_replaced_data", compacted_after_deciding)
    _land(root, "batch-001.csv", [("m1-0", 1001), ("m1-9", 1001)])  # a correction
    _land(root, "batch-004.csv", [("m4-0", 4)])  # and a new file in the same load
    loaded = bronze.load_bronze(lake, contract, [DAY], run_id="batch-4")

    assert compacted == [2], "the compaction did not rewrite the files the reload read"
    assert _bronze_rows(lake) == _landed_rows(lake)
    assert decisions == [1, 1], "the reload was not decided again on the compacted table"
    assert sorted(f["path"] for f in loaded.files_loaded) == [
        f"events/{DAY}/batch-001.csv",
        f"events/{DAY}/batch-004.csv",
    ]
    # The refused commit left no file behind: every data file is live or removed by a commit.
    log = Path(uri) / "_delta_log"
    removed = {
        action["remove"]["path"]
        for commit in log.glob("*.json")
        for action in map(json.loads, commit.read_text().splitlines())
        if "remove" in action
    }
    data = {p for p in maintenance.delta_files(lake, uri) if not p.startswith("_delta_log")}
    assert data == set(maintenance.live_files(lake, uri)) | removed


def test_a_silver_merge_on_a_snapshot_compacted_since_is_rerun(tmp_path, monkeypatch):
    """Silver's MERGE reads its target itself, so a compaction that commits between that read
    and the MERGE's commit (the partition's files rewritten into one) makes the MERGE conflict
    and the publish rerun: silver keeps one row per key, the corrected one."""
    from lakehouse.core import publish
    from lakehouse.core.bronze import load_bronze
    from lakehouse.core.contract import load_contracts
    from lakehouse.core.silver import load_silver
    from lakehouse_tests.small_lake import HEADER, deliver, deliver_reference_data, order, text

    contracts = {c.name: c for c in load_contracts()}
    day = "2024-04-01"
    lake = Lake(str(tmp_path))

    def load() -> None:
        for source in ("stores", "customers", "orders"):
            load_bronze(lake, contracts[source], [day], run_id="test")
            load_silver(lake, contracts[source], [day], run_id="test")

    def silver() -> list[tuple]:
        rows = pl.read_delta(lake.table_uri("silver", "orders"))
        return sorted(rows.select("id", "order_total").rows())

    deliver_reference_data(tmp_path, day)
    deliver(tmp_path, "orders", day, "a.csv", text([HEADER, order("o0", day), order("o1", day)]))
    load()
    deliver(tmp_path, "orders", day, "b.csv", text([HEADER, order("o2", day)]))
    load()  # inserts only: a second data file in the event date's partition
    uri = lake.table_uri("silver", "orders")
    assert len(maintenance.live_files(lake, uri)) == 2

    merge = publish._merge
    merges: list[int] = []

    def compacted_first(contract, table, *args, **kwargs):
        if not merges:  # the maintenance pass beside the publish commits first
            merges.append(maintenance.compact(lake, uri))
        merges.append(table.version())
        return merge(contract, table, *args, **kwargs)

    monkeypatch.setattr(publish, "_merge", compacted_first)
    total = order("o1", day).split(",")[-1]
    corrected = text([HEADER, order("o0", day), order("o1", day, order_total="999")])
    deliver(tmp_path, "orders", day, "a.csv", corrected)
    load()
    assert merges[0] == 2, "the compaction did not rewrite the partition's files"
    assert merges[1] < merges[2], "the MERGE was not rerun on the compacted table"
    # Independently, from the landed files: o0 and o2 as first landed, o1 corrected, once each.
    assert silver() == [("o0", int(total)), ("o1", 999), ("o2", int(total))]
    assert len(maintenance.live_files(lake, uri)) <= 2


@pytest.mark.s3
def test_primitives_on_s3_leave_only_live_files_and_no_old_version(tmp_path):
    from lakehouse_tests.servers import seaweedfs

    with seaweedfs(tmp_path / "s3") as server:
        env = server.env()
        lake = Lake(
            f"s3://{server.bucket}/m",
            storage_options={
                "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                "aws_endpoint_url": env["AWS_ENDPOINT_URL"],
                "aws_allow_http": "true",
                "aws_region": env["AWS_REGION"],
            },
            warehouse_path=str(tmp_path / "w.duckdb"),
        )
        uri = lake.table_uri("silver", "people")
        for day, email in [("2024-01-01", "a@example.com"), ("2024-01-02", SECRET)] * 2:
            delta.append(
                lake, uri, pl.DataFrame({"d": [day], "email": [email]}), partition_by=["d"]
            )
        delta.append(lake, lake.table_uri("gold", "metrics/m"), pl.DataFrame({"v": [1]}))
        assert maintenance.tables_in(lake, "silver") == ["people"]
        assert maintenance.tables_in(lake, "gold") == ["metrics/m"]  # in a folder
        assert maintenance.partition_rows(lake, uri, "d") == {"2024-01-01": 2, "2024-01-02": 2}
        assert maintenance.delete_partitions(lake, uri, "d", ["2024-01-02"], step="t") == 2
        assert maintenance.compact(lake, uri, by_partition="d", step="t") == 2
        maintenance.vacuum(lake, uri, retention_hours=0, writers_held=True)
        assert maintenance.expire_log(lake, uri, retention_hours=0, writers_held=True) > 0
        data = [p for p in maintenance.delta_files(lake, uri) if not p.startswith("_delta_log")]
        assert data == maintenance.live_files(lake, uri) and len(data) == 1
        rows = pl.read_delta(uri, storage_options=lake.storage_options)
        assert rows.get_column("email").to_list() == ["a@example.com"] * 2
        with pytest.raises(Exception):  # noqa: B017 - the old version's log is gone
            DeltaTable(uri, version=1, storage_options=lake.storage_options).to_pyarrow_table()


def test_tables_in_folders_and_the_vault_are_maintained_and_keep_every_row(tmp_path):
    lake = Lake(str(tmp_path))
    metrics = lake.table_uri("gold", "metrics/revenue")
    for day in range(1, 6):
        delta.append(lake, metrics, pl.DataFrame({"day": [f"2024-01-0{day}"], "revenue": [day]}))
    for i in range(5):  # one commit, one small file per mint
        vault.mint(lake, {"email": [f"person-{i}@example.com"]}, run_id=f"mint-{i}")
    assert maintenance.tables_in(lake, "gold") == ["metrics/revenue"]
    assert maintenance.tables_in(lake, maintenance.RESTRICTED) == ["pii_vault"]
    for layer, name, uri in (
        ("gold", "metrics/revenue", metrics),
        (maintenance.RESTRICTED, "pii_vault", vault.vault_uri(lake)),
    ):
        before, version = pl.read_delta(uri), DeltaTable(uri).version()
        report = maintenance.maintain_table(
            lake, layer, name, keep=None, history_hours=0, today=date.today(), writers_held=True
        )
        assert report.table == f"{layer}/{name}" and report.compacted == 5
        assert report.live_after == 1 and report.log_expired > 0
        on_disk = [p for p in maintenance.delta_files(lake, uri) if not p.startswith("_delta_log")]
        assert on_disk == maintenance.live_files(lake, uri)
        assert_frame_equal(pl.read_delta(uri), before, check_row_order=False)  # nothing expires
        with pytest.raises(Exception):  # noqa: B017 - the old version's log is gone
            pl.read_delta(uri, version=version)
