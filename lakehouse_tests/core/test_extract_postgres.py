"""PostgreSQL extracts against a real server: incremental by cursor, snapshots, crashes, rows/s.

Every test drives the source table through a history the test writes itself (each version of
each row, with its own `updated_at`), extracts into a real landing zone, loads bronze and silver
with the platform's core, and checks where every version ended up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg2
import pytest
import yaml

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import Contract, load_contract, parse_contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.extract import ExtractError, extract
from lakehouse.core.extract.landed import STATE_KEY, read_state
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.silver import load_silver
from lakehouse_tests.servers import Postgres, postgres

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "sources"
PLANS_ALLOWED = {"free", "pro", "team"}
LAKEHOUSE = str(Path(sys.executable).parent / "lakehouse")


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    with postgres() as pg:
        yield pg


@pytest.fixture
def db(server: Postgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg2.extensions.cursor]:
    """A fresh `accounts` and `plans` table; SHOP_DB_URL points at the server."""
    dsn = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    monkeypatch.setenv("SHOP_DB_URL", dsn)
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS accounts, plans, big")
        cur.execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, plan text NOT "
            "NULL, balance numeric(12,2), active boolean, signed_up date, updated_at timestamptz "
            "NOT NULL)"
        )
        cur.execute(
            "CREATE TABLE plans (code text PRIMARY KEY, title text NOT NULL, monthly_cents "
            "integer NOT NULL, features jsonb)"
        )
        yield cur


def accounts_contract(tmp_path: Path, **source: object) -> Contract:
    raw = yaml.safe_load((CONTRACTS / "accounts.yaml").read_text())
    raw["source"].update(source)
    return parse_contract(raw, tmp_path / "accounts.yaml")


class History:
    """Every version the test writes to `accounts`, to compute what silver must hold."""

    def __init__(self, cur: psycopg2.extensions.cursor) -> None:
        self.cur = cur
        self.versions: list[dict] = []

    def put(self, id_: int, updated_at: str, *, plan: str = "free", balance: str = "10.00") -> None:
        row = {
            "id": id_,
            "email": f"user{id_}@example.com",
            "plan": plan,
            "balance": balance,
            "active": id_ % 2 == 0,
            "signed_up": "2024-01-01",
            "updated_at": updated_at,
        }
        self.cur.execute(
            "INSERT INTO accounts VALUES (%(id)s, %(email)s, %(plan)s, %(balance)s, %(active)s, "
            "%(signed_up)s, %(updated_at)s) ON CONFLICT (id) DO UPDATE SET plan = "
            "excluded.plan, balance = excluded.balance, updated_at = excluded.updated_at",
            row,
        )
        self.versions.append(row)

    def valid(self, row: dict) -> bool:
        return row["plan"] in PLANS_ALLOWED and Decimal(row["balance"]) >= 0

    def expected_silver(self) -> dict[int, tuple[str, Decimal]]:
        """Per key: its latest valid version (by updated_at), as (plan, balance)."""
        best: dict[int, dict] = {}
        for row in self.versions:
            if self.valid(row) and (
                row["id"] not in best or row["updated_at"] >= best[row["id"]]["updated_at"]
            ):
                best[row["id"]] = row
        return {k: (r["plan"], Decimal(r["balance"])) for k, r in best.items()}


def ts(second: int) -> str:
    return f"2024-03-01 09:00:{second:02d}+00"


def load(lake: Lake, contract: Contract) -> None:
    dates = sorted({f.landing_date for f in list_landing_files(lake, contract.name)})
    load_bronze(lake, contract, dates, run_id="test")
    load_silver(lake, contract, dates, run_id="test")


def bronze(lake: Lake, name: str) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri("bronze", name))


def silver(lake: Lake, name: str) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri("silver", name))


def quarantine(lake: Lake, name: str) -> pl.DataFrame:
    uri = lake.table_uri("quarantine", name)
    return pl.read_delta(uri) if Path(uri).exists() else pl.DataFrame()


def assert_traced(lake: Lake, history: History) -> None:
    """Each version written is in bronze exactly once, and ends in silver, quarantine or superseded."""
    landed = bronze(lake, "accounts").with_columns(pl.col("id").cast(pl.Int64))
    keyed = landed.select("id", "updated_at", "_source_file", "_row_number")
    versions = {(r["id"], r["updated_at"]) for r in history.versions}
    assert keyed.height == len(versions), "every version landed exactly once"
    in_silver = silver(lake, "accounts").select("id", "_source_file", "_row_number")
    held = quarantine(lake, "accounts")
    q = (
        set()
        if held.is_empty()
        else set(zip(held["_source_file"], held["_row_number"], strict=True))
    )
    s = set(zip(in_silver["_source_file"], in_silver["_row_number"], strict=True))
    latest = {r["id"]: r for r in history.versions}
    for row in keyed.iter_rows(named=True):
        where = (row["_source_file"], row["_row_number"])
        assert not (where in q and where in s)
        version = next(
            v
            for v in history.versions
            if v["id"] == row["id"] and ts_equal(v["updated_at"], row["updated_at"])
        )
        if not history.valid(version):
            assert where in q, f"invalid version {version} not quarantined"
        elif where not in s:  # superseded: a newer valid version of the key is in silver
            assert latest[row["id"]]["updated_at"] > version["updated_at"]


def ts_equal(written: str, landed: str) -> bool:
    """`2024-03-01 09:00:05+00` (as written) vs `2024-03-01 09:00:05.000000+00:00` (bronze)."""
    return landed.replace(".000000", "").replace("+00:00", "+00") == written


def silver_values(lake: Lake) -> dict[int, tuple[str, Decimal]]:
    rows = silver(lake, "accounts").select("id", "plan", "balance").iter_rows()
    return {i: (p, b) for i, p, b in rows}


def test_incremental_extracts_land_each_version_once_and_silver_follows(
    tmp_path: Path, db: psycopg2.extensions.cursor
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    contract = load_contract(CONTRACTS / "accounts.yaml")
    history = History(db)
    for i in range(1, 21):
        history.put(i, ts(i // 4))  # five rows share each cursor value
    history.put(21, ts(4), plan="gold")  # not an allowed plan: quarantined
    first = extract(lake, contract, landing_date="2024-03-01")
    assert first.rows == 21 and first.cursor == "2024-03-01 09:00:05+00"
    assert first.uri is not None and first.uri.endswith("2024-03-01/extract-000001.parquet")

    # between runs: updates, a row committed late at the last extract's cursor, a bad balance
    history.put(3, ts(30), plan="pro")
    history.put(7, ts(31), balance="-5.00")  # invalid: silver keeps its earlier version
    history.put(22, ts(5))  # same cursor as the boundary, landed by the next extract only
    history.put(21, ts(32), plan="team")  # the quarantined key, corrected
    second = extract(lake, contract, landing_date="2024-03-01")
    assert second.rows == 4, "the boundary rows already landed are not landed again"
    assert extract(lake, contract, landing_date="2024-03-02").uri is None  # nothing new

    history.put(3, ts(40), plan="team")
    history.put(23, ts(41))
    third = extract(lake, contract, landing_date="2024-03-02")
    assert third.rows == 2
    names = [f.relative_path for f in list_landing_files(lake, "accounts")]
    assert names == [
        "accounts/2024-03-01/extract-000001.parquet",
        "accounts/2024-03-01/extract-000002.parquet",
        "accounts/2024-03-02/extract-000003.parquet",
    ]

    load(lake, contract)
    assert silver_values(lake) == history.expected_silver()
    assert silver_values(lake)[7] == ("free", Decimal("10.00"))
    assert_traced(lake, history)
    held = quarantine(lake, "accounts")
    assert sorted(zip(held["id"], held["updated_at"].str.slice(0, 19), strict=True)) == [
        ("21", "2024-03-01 09:00:04"),
        ("7", "2024-03-01 09:00:31"),
    ]
    # silver stores the email pseudonymised, never as extracted
    assert not silver(lake, "accounts")["email"].str.contains("@").any()


def test_a_kill_between_extract_and_commit_neither_loses_nor_repeats(
    tmp_path: Path, db: psycopg2.extensions.cursor, server: Postgres
) -> None:
    """`lakehouse extract` killed with SIGKILL mid-write: nothing visible; the rerun lands it all."""
    lake = Lake(str(tmp_path / "lake"))
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    raw = yaml.safe_load((CONTRACTS / "accounts.yaml").read_text())
    raw["source"]["batch_rows"] = 50  # many batches: the kill lands long before the commit
    (contracts / "accounts.yaml").write_text(yaml.safe_dump(raw))
    contract = load_contract(contracts / "accounts.yaml")
    history = History(db)
    for i in range(1, 11):
        history.put(i, ts(i))
    assert extract(lake, contract, landing_date="2024-03-01").rows == 10
    db.execute(
        "INSERT INTO accounts SELECT g, 'user' || g || '@example.com', 'pro', 1, true, "
        "'2024-01-01', timestamptz '2024-03-01 10:00:00+00' + g * interval '1 ms' "
        "FROM generate_series(11, 20010) g"
    )
    env = {
        **os.environ,
        "LAKEHOUSE_ROOT": lake.root,
        "LAKEHOUSE_CONTRACTS": str(contracts),
        "SHOP_DB_URL": os.environ["SHOP_DB_URL"],
    }
    command = [LAKEHOUSE, "extract", "accounts", "--landing-date", "2024-03-02"]
    proc = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    seen = 0
    assert proc.stderr is not None
    for line in proc.stderr:
        if "rows read" in line:
            seen += 1
            if seen == 5:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the extract was killed mid-way"
    day = Path(lake.landing_uri("accounts")) / "2024-03-02"
    assert [p.name for p in day.iterdir() if not p.name.startswith(".")] == []
    assert any(p.name.endswith(".tmp") for p in day.iterdir()), "it died mid-write"

    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "20,000 rows landed" in done.stdout
    assert sorted(p.name for p in day.iterdir()) == ["extract-000002.parquet"]  # temp removed
    load(lake, contract)
    landed = bronze(lake, "accounts")
    assert landed.height == 20_010 and landed["id"].n_unique() == 20_010
    assert silver(lake, "accounts").height == 20_010


def test_a_snapshot_source_retracts_deleted_rows(
    tmp_path: Path, db: psycopg2.extensions.cursor
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    contract = load_contract(CONTRACTS / "plans.yaml")
    assert contract.delivery == "snapshot"
    db.execute(
        "INSERT INTO plans VALUES ('free', 'Free', 0, '{\"seats\": 1}'), ('pro', 'Pro', 1500, "
        "NULL), ('team', 'Team', 4900, '[\"sso\"]'), ('old', 'Legacy', -1, NULL), "
        "('internal', 'Staff', 0, NULL)"
    )
    first = extract(lake, contract, landing_date="2024-03-01")
    assert first.rows == 4  # the query leaves `internal` out
    load(lake, contract)
    assert sorted(silver(lake, "plans")["code"]) == ["free", "pro", "team"]
    assert quarantine(lake, "plans")["code"].to_list() == ["old"]
    features = dict(silver(lake, "plans").select("code", "features").iter_rows())
    assert features["free"] == '{"seats": 1}' and features["pro"] is None

    # unchanged: nothing lands, not even on a new day
    assert extract(lake, contract, landing_date="2024-03-02").unchanged_snapshot

    db.execute("DELETE FROM plans WHERE code = 'pro'")
    db.execute("UPDATE plans SET monthly_cents = 5900 WHERE code = 'team'")
    db.execute("INSERT INTO plans VALUES ('max', 'Max', 9900, NULL)")
    second = extract(lake, contract, landing_date="2024-03-02")
    assert second.rows == 4
    load(lake, contract)
    expected = {"free": 0, "team": 5900, "max": 9900}  # `old` is still invalid
    got = dict(silver(lake, "plans").select("code", "monthly_cents").iter_rows())
    assert got == expected

    # a second snapshot the same day replaces that day's file: the deleted key leaves again
    db.execute("DELETE FROM plans WHERE code = 'max'")
    assert extract(lake, contract, landing_date="2024-03-02").rows == 3
    assert [f.name for f in list_landing_files(lake, "plans", ["2024-03-02"])] == [
        "snapshot.parquet"
    ]
    load(lake, contract)
    assert dict(silver(lake, "plans").select("code", "monthly_cents").iter_rows()) == {
        "free": 0,
        "team": 5900,
    }

    db.execute("DELETE FROM plans")
    empty = extract(lake, contract, landing_date="2024-03-03")
    assert empty.uri is None and empty.rows == 0
    assert list_landing_files(lake, "plans", ["2024-03-03"]) == []


def test_the_landed_file_carries_the_position(
    tmp_path: Path, db: psycopg2.extensions.cursor
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    contract = load_contract(CONTRACTS / "accounts.yaml")
    history = History(db)
    history.put(1, ts(1))
    history.put(2, ts(1))
    result = extract(lake, contract, landing_date="2024-03-01")
    assert result.uri is not None
    state = read_state(Path(result.uri), "x")
    assert state["sequence"] == 1 and state["cursor"] == "2024-03-01 09:00:01+00"
    assert sorted(state["boundary_keys"]) == [["1"], ["2"]]
    assert STATE_KEY.decode() == "lakehouse.extract"
    with pytest.raises(ExtractError, match="before `2024-03-01`"):
        extract(lake, contract, landing_date="2024-02-28")


def test_bad_config_is_named(
    tmp_path: Path, db: psycopg2.extensions.cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    missing = accounts_contract(tmp_path, table="public.nope")
    with pytest.raises(ExtractError, match=r"cannot read table `public.nope`.*does not exist"):
        extract(lake, missing)
    no_cursor = accounts_contract(tmp_path, cursor="changed_at")
    with pytest.raises(ExtractError, match=r"`changed_at` \(primary key or cursor\) not in"):
        extract(lake, no_cursor)
    monkeypatch.delenv("SHOP_DB_URL")
    with pytest.raises(ConfigError, match="`SHOP_DB_URL` is not set"):
        extract(lake, load_contract(CONTRACTS / "accounts.yaml"))


def test_rows_per_second(tmp_path: Path, db: psycopg2.extensions.cursor) -> None:
    """The figure the README quotes: 500k rows of a 7-column table, one extract."""
    rows = 500_000
    db.execute(
        "INSERT INTO accounts SELECT g, 'user' || g || '@example.com', 'pro', g / 100.0, "
        "g %% 2 = 0, date '2024-01-01' + (g %% 365), timestamptz '2024-03-01 00:00:00+00' + "
        "g * interval '1 ms' FROM generate_series(1, %s) g",
        (rows,),
    )
    lake = Lake(str(tmp_path / "lake"))
    db.execute("ANALYZE accounts")
    import adbc_driver_postgresql.dbapi  # noqa: F401  (a process pays its imports once: ~3 s)
    import sqlalchemy  # noqa: F401  (polars imports it to inspect the connection)

    started = time.monotonic()
    result = extract(lake, load_contract(CONTRACTS / "accounts.yaml"), landing_date="2024-03-01")
    elapsed = time.monotonic() - started
    assert result.rows == rows
    assert result.uri is not None
    landed = pl.read_parquet(result.uri)
    assert landed.height == rows and landed["id"].n_unique() == rows
    assert landed["balance"][41] == "0.42"  # numeric, cast to text in SQL: exact
    print(f"\nextract: {rows:,} rows in {elapsed:.2f}s = {rows / elapsed:,.0f} rows/s")


def test_extracts_commit_on_s3(
    tmp_path: Path, db: psycopg2.extensions.cursor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an S3 landing zone (a real SeaweedFS): the same files, the position read back from S3,
    and a sequence number already taken refused by the conditional PUT."""
    from lakehouse.core.extract.landed import ParquetStage, commit
    from lakehouse_tests.servers import seaweedfs

    with seaweedfs(tmp_path / "s3") as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("LAKEHOUSE_PII_KEY", "a-test-secret-of-enough-characters")  # S3 root
        lake = Lake.from_env(f"s3://{s3.bucket}/lake")
        contract = load_contract(CONTRACTS / "accounts.yaml")
        history = History(db)
        for i in range(1, 6):
            history.put(i, ts(i))
        assert extract(lake, contract, landing_date="2024-03-01").rows == 5
        history.put(2, ts(20), plan="pro")
        history.put(6, ts(5))  # at the boundary, committed late
        second = extract(lake, contract, landing_date="2024-03-01")
        assert second.rows == 2 and second.uri is not None
        assert second.uri.endswith("2024-03-01/extract-000002.parquet")
        assert extract(lake, contract, landing_date="2024-03-01").uri is None

        stage = ParquetStage(tmp_path)
        stage.write(pl.DataFrame({"id": [1]}).to_arrow())
        stage.close({"sequence": 2})
        with pytest.raises(ExtractError, match="committed by another extract"):
            commit(lake, "accounts", "2024-03-01", stage, "extract-000002.parquet", replace=False)

        load(lake, contract)
        got = pl.read_delta(
            lake.table_uri("silver", "accounts"), storage_options=lake.storage_options
        )
        assert dict(got.select("id", "plan").iter_rows()) == {
            1: "free",
            2: "pro",
            3: "free",
            4: "free",
            5: "free",
            6: "free",
        }
