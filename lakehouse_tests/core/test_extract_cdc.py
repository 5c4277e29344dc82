"""PostgreSQL change data capture against a real server with `wal_level=logical`.

Inserts, updates and deletes land in commit order; a consumer that dies between reading and
committing, and a PostgreSQL restart, neither lose a change nor land one twice; silver holds
each key's latest change, a deleted key marked `delete`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import polars as pl
import psycopg2
import pytest

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import Contract, load_contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.extract import cdc, extract, service
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.silver import load_silver
from lakehouse_tests.servers import Postgres, postgres

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "sources"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Postgres]:
    with postgres(logical=True) as pg:
        monkeypatch.setenv("SHOP_DB_URL", f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")
        yield pg


def sql(pg: Postgres, *statements: str) -> list[tuple]:
    with closing(psycopg2.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")) as c:
        c.autocommit = True
        cur = c.cursor()
        rows: list[tuple] = []
        for statement in statements:
            cur.execute(statement)
            rows = cur.fetchall() if cur.description else []
        return rows


def create_accounts(pg: Postgres) -> None:
    sql(
        pg,
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text, plan text, "
        "balance numeric(12,2), updated_at timestamptz DEFAULT now())",
        "ALTER TABLE accounts REPLICA IDENTITY FULL",
    )


def changes(lake: Lake) -> pl.DataFrame:
    files = [f.uri for f in list_landing_files(lake, "accounts_cdc")]
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def publish(lake: Lake, contract: Contract) -> pl.DataFrame:
    dates = sorted({f.landing_date for f in list_landing_files(lake, contract.name)})
    load_bronze(lake, contract, dates, run_id="test")
    load_silver(lake, contract, dates, run_id="test")
    return pl.read_delta(lake.table_uri("silver", contract.name))


def test_changes_land_once_across_a_crash_and_a_restart(
    tmp_path: Path, server: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = load_contract(CONTRACTS / "accounts_cdc.yaml")
    lake = Lake(str(tmp_path / "lake"))
    create_accounts(server)
    first = extract(lake, contract, landing_date="2024-06-01")  # creates the slot
    assert first.uri is None and first.rows == 0
    assert sql(server, "SELECT slot_name, plugin FROM pg_replication_slots") == [
        ("lakehouse_accounts", "pgoutput")
    ]

    sql(
        server,
        "INSERT INTO accounts (id, email, plan, balance) SELECT g, 'u' || g || '@x.io', "
        "'free', g FROM generate_series(1, 5) g",
        "UPDATE accounts SET plan = 'pro', balance = 99.5 WHERE id IN (2, 3)",
        "DELETE FROM accounts WHERE id = 4",
    )
    second = extract(lake, contract, landing_date="2024-06-01")
    assert second.rows == 8
    landed = changes(lake)
    assert landed["change_op"].to_list() == ["insert"] * 5 + ["update"] * 2 + ["delete"]
    assert landed["change_lsn"].to_list() == sorted(landed["change_lsn"].to_list())
    assert landed.filter(pl.col("change_op") == "delete")["email"].to_list() == ["u4@x.io"]
    assert extract(lake, contract, landing_date="2024-06-01").rows == 0

    # the consumer dies after reading, before its commit: nothing landed, nothing confirmed
    sql(
        server,
        "UPDATE accounts SET plan = 'team' WHERE id = 1",
        "INSERT INTO accounts (id, email, plan, balance) VALUES (6, 'u6@x.io', 'free', 6)",
    )

    def die(*args: object, **kwargs: object) -> str:
        raise SystemExit("killed between read and commit")

    with monkeypatch.context() as patched:
        patched.setattr(cdc, "commit", die)
        with pytest.raises(SystemExit):
            extract(lake, contract, landing_date="2024-06-02")
    assert list_landing_files(lake, "accounts_cdc", ["2024-06-02"]) == []
    third = extract(lake, contract, landing_date="2024-06-02")
    assert third.rows == 2, "the changes the dead consumer read come again, once"

    # a clean restart may rewind the slot: the stored position drops what was landed
    server.restart()
    sql(server, "DELETE FROM accounts WHERE id = 5", "UPDATE accounts SET balance = 0 WHERE id = 6")
    fourth = extract(lake, contract, landing_date="2024-06-03")
    assert fourth.rows == 2
    landed = changes(lake)
    assert landed.height == 12  # 8 + 2 + 2: each change exactly once
    assert landed.select("change_lsn", "id", "change_op").is_duplicated().sum() == 0

    silver = publish(lake, contract)
    live = {
        (int(i), p, b) for i, p, b in sql(server, "SELECT id, plan, balance::text FROM accounts")
    }
    rows = silver.filter(pl.col("change_op") != "delete").select("id", "plan", "balance")
    assert {(i, p, str(b)) for i, p, b in rows.iter_rows()} == live
    deleted = silver.filter(pl.col("change_op") == "delete")["id"].sort().to_list()
    assert deleted == [4, 5]

    lag = cdc.slot_lag(
        f"postgresql://postgres@127.0.0.1:{server.port}/postgres", "lakehouse_accounts"
    )
    assert lag is not None and lag >= 0
    from lakehouse.cli import main  # the platform drops what it created

    monkeypatch.setenv("LAKEHOUSE_CONTRACTS", str(CONTRACTS))
    monkeypatch.setenv("LAKEHOUSE_ROOT", lake.root)
    assert main(["extract", "accounts_cdc", "--drop-slot"]) == 0
    assert sql(server, "SELECT count(*) FROM pg_replication_slots") == [(0,)]
    assert sql(server, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert not cdc.drop_slot(contract)  # already gone


def test_cdc_consumer_killed_mid_read_and_a_restart_lose_nothing(
    tmp_path: Path, server: Postgres
) -> None:
    """`lakehouse extract` killed with SIGKILL while it reads the slot, then a PostgreSQL restart:
    silver ends equal to the table as PostgreSQL returns it, every change landed once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    contract = load_contract(CONTRACTS / "accounts_cdc.yaml")
    lake = Lake(str(tmp_path / "lake"))
    create_accounts(server)
    assert extract(lake, contract, landing_date="2024-06-01").rows == 0  # creates the slot
    batches = [
        f"INSERT INTO accounts (id, email, plan, balance) SELECT g, 'u' || g || '@x.io', 'free', "
        f"g FROM generate_series({k * 1000 + 1}, {k * 1000 + 1000}) g"
        for k in range(40)
    ]
    sql(
        server,
        *batches,
        "UPDATE accounts SET plan = 'pro', balance = balance + 1 WHERE id % 7 = 0",
        "DELETE FROM accounts WHERE id % 11 = 0",
    )
    env = {
        **os.environ,
        "LAKEHOUSE_ROOT": lake.root,
        "LAKEHOUSE_CONTRACTS": str(CONTRACTS),
    }
    command = [str(Path(sys.executable).with_name("lakehouse")), "extract", "accounts_cdc"]
    active = "SELECT active FROM pg_replication_slots WHERE slot_name = 'lakehouse_accounts'"
    consumer = subprocess.Popen(
        [*command, "--landing-date", "2024-06-02"], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while sql(server, active) != [(True,)] and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # reading: 40k inserts, 5.7k updates, 3.6k deletes take seconds to decode
    os.kill(consumer.pid, signal.SIGKILL)
    consumer.wait()
    assert list_landing_files(lake, "accounts_cdc", ["2024-06-02"]) == [], (
        "the extract committed before it was killed"
    )
    while sql(server, active) != [(False,)] and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the dead consumer

    sql(server, "UPDATE accounts SET plan = 'team' WHERE id % 13 = 0")
    server.restart()  # a clean restart may rewind the slot's confirmed position
    sql(
        server,
        "DELETE FROM accounts WHERE id % 17 = 0",
        "INSERT INTO accounts (id, email, plan, balance) VALUES (11, 'back@x.io', 'free', 1)",
    )
    done = subprocess.run(
        [*command, "--landing-date", "2024-06-02"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    while extract(lake, contract, landing_date="2024-06-03").rows:  # whatever remains
        pass

    landed = changes(lake)
    live = sql(server, "SELECT id, plan, balance::text FROM accounts")
    inserted = 40_000 + 1
    updated = sum(1 for i in range(1, 40_001) if i % 7 == 0)  # before the deletes
    updated += sum(1 for i in range(1, 40_001) if i % 13 == 0 and i % 11)
    deleted = sum(1 for i in range(1, 40_001) if i % 11 == 0)
    deleted += sum(1 for i in range(1, 40_001) if i % 17 == 0 and i % 11)
    counts = dict(landed.group_by("change_op").len().iter_rows())
    assert counts == {"insert": inserted, "update": updated, "delete": deleted}
    assert landed.select("change_lsn", "id", "change_op").is_duplicated().sum() == 0

    silver = publish(lake, contract)
    rows = silver.filter(pl.col("change_op") != "delete").select("id", "plan", "balance")
    assert {(i, p, str(b)) for i, p, b in rows.iter_rows()} == {(int(i), p, b) for i, p, b in live}
    gone = set(range(1, 40_001)) - {int(r[0]) for r in live}
    assert set(silver.filter(pl.col("change_op") == "delete")["id"]) == gone

    # as a service: the next change is published to silver and the slot's lag reported with it
    sql(server, "UPDATE accounts SET plan = 'pro' WHERE id = 1")
    reported: list[service.MicroBatch] = []
    assert service.serve(lake, contract, max_batches=1, report=reported.append) == 1
    assert [b.rows for b in reported] == [1] and reported[0].slot_lag_bytes is not None
    assert not reported[0].lagging
    silver = pl.read_delta(lake.table_uri("silver", contract.name))
    assert silver.filter(pl.col("id") == 1)["plan"].to_list() == ["pro"]
    sql(server, "CREATE TABLE other (x int)", "INSERT INTO other SELECT generate_series(1, 1000)")
    reported.clear()  # WAL the slot holds back (another table's) over the threshold: lagging
    service.serve(lake, contract, max_batches=1, report=reported.append, lag_warn_bytes=0)
    assert [b.lagging for b in reported] == [True] and reported[0].slot_lag_bytes > 0


def test_cdc_needs_logical_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with postgres() as pg:
        monkeypatch.setenv("SHOP_DB_URL", f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")
        sql(pg, "CREATE TABLE accounts (id bigint PRIMARY KEY)")
        contract = load_contract(CONTRACTS / "accounts_cdc.yaml")
        with pytest.raises(ConfigError, match="needs `wal_level = logical`"):
            extract(Lake(str(tmp_path)), contract)
