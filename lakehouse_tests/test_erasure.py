"""Erasure proof: after `lakehouse erase`, no byte under the data root (landing aside) holds the
subject's clear values or tokens; old versions cannot be read; everyone else is untouched; gold
holds what the landing files say without the subject, and knows its aggregates must follow.

A small lake through Dagster (two landing dates, a quarantined order and customer of the subject),
Dagster's own storage on disk in the test's directory. The erasure is killed midway through
its purge once (exit 3) and finished by running the same command again.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import psycopg2
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from lakehouse.cli import main
from lakehouse.core import follow, maintenance, system
from lakehouse.core.lake import Lake
from lakehouse.core.serve import POSTGRES_ENV
from lakehouse.core.serve_postgres import libpq_uri
from lakehouse.core.vault import vault_uri
from lakehouse_tests.conftest import materialize_all
from lakehouse_tests.servers import postgres
from lakehouse_tests.small_lake import HEADER, deliver, order, text

pytestmark = pytest.mark.slow

DAYS = ("2018-09-03", "2018-09-04")
GONE, KEPT = "cust-gone-7f3a91", "cust-kept-2b6c04"
GONE_NAME, KEPT_NAME = "Gordon Goneaway", "Kim Keeper"
GONE_TWEET = "Gordon loves the nutellaphone jaffle"
KEPT_TWEET = "Kim prefers the tangaroo"


def deliver_lake(root: Path) -> None:
    day1, day2 = DAYS
    deliver(
        root,
        "stores",
        day1,
        "stores.csv",
        text(["id,name,opened_at,tax_rate", "s1,Philly,2016-09-01T00:00:00,0.06"]),
    )
    deliver(
        root,
        "customers",
        day1,
        "customers.csv",
        text(["id,name", f"{KEPT},{KEPT_NAME}", f"{GONE},{GONE_NAME}"]),
    )
    # a second customers delivery with a row of the subject that fails (no name): quarantined
    others = [f"cust-other-{i:02d},Other Person {i:02d}" for i in range(20)]
    deliver(root, "customers", day2, "customers.csv", text(["id,name", *others, f"{GONE},"]))
    for day in DAYS:
        lines = [HEADER]
        for i in range(20):
            who = GONE if i % 2 else KEPT
            lines.append(
                order(
                    f"{day}-{i}", day, customer=who, subtotal=str(100 + i), order_total=str(106 + i)
                )
            )
        # an order of the subject that fails a rule: quarantined with its clear values
        lines.append(order(f"{day}-bad", day, customer=GONE, subtotal="-5"))
        deliver(root, "orders", day, "orders.csv", text(lines))
        deliver(
            root,
            "tweets",
            day,
            "tweets.csv",
            text(
                [
                    "id,user_id,tweeted_at,content",
                    f"t-{day}-1,{GONE},{day}T10:00:00,{GONE_TWEET}",
                    f"t-{day}-2,{KEPT},{day}T11:00:00,{KEPT_TWEET}",
                ]
            ),
        )


def decoded(path: Path) -> bytes:
    """A file's bytes, plus its decoded content for Parquet and DuckDB files (compressed)."""
    raw = path.read_bytes()
    if path.suffix == ".parquet":
        return raw + pl.read_parquet(path).write_ndjson().encode()
    if raw[8:12] == b"DUCK":
        with duckdb.connect(str(path), read_only=True) as con:
            tables = con.sql(
                "select table_schema, table_name from information_schema.tables "
                "where table_type = 'BASE TABLE'"
            ).fetchall()
            parts = [con.sql(f'select * from "{s}"."{t}"').pl().write_ndjson() for s, t in tables]
        return raw + "".join(parts).encode()
    return raw


def scan(roots: list[Path], needles: list[str]) -> dict[str, list[str]]:
    """Each needle -> the files (landing aside) whose bytes hold it."""
    found: dict[str, list[str]] = {n: [] for n in needles}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if "landing" in path.relative_to(root).parts:
                continue
            content = decoded(path)
            for needle in needles:
                if needle.encode() in content:
                    found[needle].append(str(path.relative_to(root)))
    return found


class Interrupted(Exception):
    """The process dying midway, injected."""


def interrupt(monkeypatch, module, name: str, after: int) -> None:
    """Make `module.name` fail on its call number `after` + 1 (the first `after` calls run)."""
    real, calls = getattr(module, name), []

    def dying(*args, **kwargs):
        calls.append(name)
        if len(calls) > after:
            raise Interrupted(f"killed at {name} #{len(calls)}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)


def silver(lake: Lake, source: str) -> pl.DataFrame:
    return pl.read_delta(lake.table_uri("silver", source))


def served_values(pg, needles: list[str]) -> set[str]:
    """The needles some served PostgreSQL table holds as a whole value (any text column)."""
    with psycopg2.connect(libpq_uri(pg.url)) as con, con.cursor() as cur:
        cur.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema in ('gold', 'metrics', '_restricted') "
            "and data_type in ('text', 'character varying')"
        )
        found = set()
        for schema, table, column in cur.fetchall():
            cur.execute(
                f'select distinct "{column}" from "{schema}"."{table}" where "{column}" = any(%s)',
                [needles],
            )
            found |= {r[0] for r in cur.fetchall()}
    return found


def test_an_erased_subject_leaves_no_byte_behind(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    root, home = tmp_path / "root", tmp_path / "dagster"
    home.mkdir()
    deliver_lake(root)
    lake = Lake(str(root))
    with dg.instance_for_test(temp_dir=str(home)) as instance, postgres() as pg:
        materialize_all(lake, instance)
        # gold served: role files and PostgreSQL (the vault's pairs in _restricted) hold him too
        monkeypatch.setenv(POSTGRES_ENV, pg.url)
        assert main(["--root", str(root), "serve"]) == 0
        assert served_values(pg, [GONE, GONE_NAME]) == {GONE, GONE_NAME}
        quarantined = pl.read_delta(lake.table_uri("quarantine", "orders"))
        assert quarantined.height == 2 and set(quarantined.get_column("customer")) == {GONE}
        vault = pl.read_delta(vault_uri(lake))
        gone_tokens = vault.filter(pl.col("value").is_in([GONE, GONE_NAME, GONE_TWEET]))
        assert gone_tokens.height == 3
        tokens = gone_tokens.get_column("token").to_list()
        needles = [GONE, GONE_NAME, GONE_TWEET, *tokens]
        # the scan sees the subject everywhere before the erasure (it can fail)
        before = scan([root, home], needles)
        assert all(before.values()), before
        # no clear PII in Dagster's storage or the warehouse, even with quarantined PII rows
        assert scan([home], [GONE, GONE_NAME, GONE_TWEET, KEPT, KEPT_NAME]) == {
            n: [] for n in [GONE, GONE_NAME, GONE_TWEET, KEPT, KEPT_NAME]
        }
        versions = {
            s: DeltaTable(lake.table_uri("silver", s)).version() for s in ("orders", "tweets")
        }
        theirs = pl.any_horizontal(pl.col(pl.String).is_in(tokens).fill_null(value=False))
        kept_before = {
            s: silver(lake, s).filter(~theirs) for s in ("customers", "orders", "tweets")
        }

        assert main(["--root", str(root), "erase", "--subject", "customers:nobody"]) == 1
        assert "no such subject" in capsys.readouterr().out
        assert main(["--root", str(root), "erase", "--subject", "products:x"]) == 2
        erase_gone = ["--root", str(root), "erase", "--subject", f"customers:{GONE}"]
        with monkeypatch.context() as patch:  # killed midway through the purge
            interrupt(patch, maintenance, "expire_log", 1)
            assert main(erase_gone) == 3
        assert "run the same `lakehouse erase` again" in capsys.readouterr().err
        assert scan([root], [GONE_NAME])[GONE_NAME]  # old versions still hold him
        assert main(erase_gone) == 0
        out = capsys.readouterr().out
        assert "finished the interrupted erasure" in out
        # the landing zone is never modified: the report names every file still holding him
        for day in DAYS:
            assert f"orders/{day}/orders.csv" in out and f"tweets/{day}/tweets.csv" in out
        assert (root / "landing" / "orders" / DAYS[0] / "orders.csv").read_text().count(GONE) == 11

        after = scan([root, home], needles)
        assert after == {n: [] for n in needles}, after
        # served again from gold without him: PostgreSQL holds neither his values nor tokens
        assert "serving again" in out
        assert served_values(pg, needles) == set()
        assert served_values(pg, [KEPT, KEPT_NAME]) == {KEPT, KEPT_NAME}
        # an old version cannot be read any more
        for source, version in versions.items():
            with pytest.raises(Exception):  # noqa: B017 - the log entries are gone
                pl.read_delta(lake.table_uri("silver", source), version=version)
        # everybody else's rows are unchanged, byte for byte
        for source, rows in kept_before.items():
            assert_frame_equal(silver(lake, source), rows, check_row_order=False)
        assert pl.read_delta(lake.table_uri("quarantine", "orders")).height == 0
        assert pl.read_delta(lake.table_uri("bronze", "orders")).get_column(
            "customer"
        ).unique().to_list() == [KEPT]

        # gold's rows equal the landing files without the subject (nor quarantined orders)
        orders = pl.concat(
            pl.read_csv(p, infer_schema=False)
            for p in sorted((root / "landing" / "orders").rglob("*.csv"))
        )
        expected = sorted(
            (r["id"], int(r["order_total"]))
            for r in orders.iter_rows(named=True)
            if r["customer"] == KEPT and int(r["subtotal"]) >= 0
        )
        with duckdb.connect(lake.warehouse_path, read_only=True) as con:
            facts = con.sql(
                "select order_id, order_total from gold.fct_orders order by 1"
            ).fetchall()
            dims = con.sql("select customer_id from gold.dim_customers").fetchall()
        assert facts == expected
        published = pl.read_delta(lake.table_uri("gold", "fct_orders"))
        assert sorted(published.select("order_id", "order_total").iter_rows()) == expected
        assert len(dims) == 21  # the other customers, none of them touched
        # gold's aggregates (revenue per day) follow at the next build: silver says it changed
        for consumer in ("gold_marts", "gold_daily_marts"):
            assert "orders" in follow.pending(lake, consumer, ["orders"]).sources

        log = system.read_table(lake, system.ERASURE_LOG)
        assert log.height == 1 and log.get_column("rows").item() > 0
        text_of_log = log.write_json()
        assert GONE not in text_of_log and not any(t in text_of_log for t in tokens)
        assert "silver/orders" in json.loads(text_of_log)[0]["tables"]
