"""Roles proof on a real PostgreSQL started by the test: gold served from its Delta tables with
ADBC ingest, access generated from the policy. An analyst's session is refused the clear PII
columns and sees only its stores' rows; a pii_reader sees every row and the clear values; a
second serve (new gold) replaces the tables and keeps the access."""

from __future__ import annotations

import hashlib

import polars as pl
import psycopg2
import pytest
from psycopg2 import errors

from lakehouse.core.serve_postgres import libpq_uri, serve_postgres
from lakehouse_tests.core.test_serve import gold_lake, orders, people, tokenised_gold_lake
from lakehouse_tests.servers import postgres


def session(port: int, user: str):
    con = psycopg2.connect(host="127.0.0.1", port=port, user=user, dbname="postgres")
    con.autocommit = True
    return con


def rows(con, query: str) -> pl.DataFrame:
    with con.cursor() as cur:
        cur.execute(query)
        names = [d[0] for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row")


def test_postgres_roles_proof(tmp_path) -> None:
    lake, policy, tables = gold_lake(tmp_path, customers=40, order_rows=300)
    with postgres() as pg:
        served = serve_postgres(lake, policy, tables, pg.url)
        assert {f.table: f.rows for f in served.loads} == {"gold.customers": 40, "gold.orders": 300}
        admin = session(pg.port, "postgres")
        with admin.cursor() as cur:
            # how a team adds people: a login role per person, member of a policy role
            cur.execute("create role alice login in role analyst")
            cur.execute("create role bob login in role pii_reader")
            cur.execute("create role mallory login")
        clear, all_orders = people(40), orders(300)

        alice = session(pg.port, "alice")
        for column in ("customer_name", "customer_email"):
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
                rows(alice, f"select {column} from gold.customers")
        with pytest.raises(errors.InsufficientPrivilege):
            rows(alice, "select * from gold.customers")
        got = rows(alice, "select customer_id, spend from gold.customers order by 1")
        assert got.equals(clear.select("customer_id", "spend"))
        permitted = all_orders.filter(pl.col("store_id").is_in(["s1", "s2"]))
        assert rows(alice, "select * from gold.orders order by order_id").equals(permitted)
        masked = rows(alice, "select * from analyst.customers order by customer_id")
        assert masked["customer_name"].null_count() == 40
        assert set(masked["customer_email"]) == {"z***@example.org"}
        assert rows(alice, "select count(*) as n from analyst.orders")["n"][0] == permitted.height
        # a clear value cannot be asked for by value either
        assert (
            rows(
                alice,
                "select count(*) as n from analyst.customers "
                "where customer_email = 'zq007.private@example.org'",
            )["n"][0]
            == 0
        )

        bob = session(pg.port, "bob")
        assert rows(bob, "select * from gold.customers order by customer_id").equals(clear)
        assert rows(bob, "select * from pii_reader.orders order by order_id").equals(all_orders)

        # a hash mask is the hex SHA-256 of the text, as in the DuckDB files (joins across hold)
        with admin.cursor() as cur:
            cur.execute("create role carol login in role marketing")
        carol = session(pg.port, "carol")
        hashed = rows(carol, "select * from marketing.customers order by customer_id")
        assert hashed["customer_email"].to_list() == [
            hashlib.sha256(e.encode()).hexdigest() for e in clear["customer_email"]
        ]
        carol.close()

        mallory = session(pg.port, "mallory")
        for query in ("select * from gold.orders", "select * from analyst.orders"):
            with pytest.raises(errors.InsufficientPrivilege):
                rows(mallory, query)

        # gold moves on: the next serve swaps the tables in, access regenerated
        orders(600).write_delta(lake.table_uri("gold", "orders"), mode="overwrite")
        serve_postgres(lake, policy, tables, libpq_uri(pg.url))
        permitted = orders(600).filter(pl.col("store_id").is_in(["s1", "s2"]))
        assert rows(alice, "select * from gold.orders order by order_id").equals(permitted)
        assert rows(alice, "select count(*) as n from analyst.orders")["n"][0] == 400
        with pytest.raises(errors.InsufficientPrivilege):
            rows(alice, "select customer_email from gold.customers")
        for con in (admin, alice, bob, mallory):
            con.close()


def test_postgres_views_show_the_values_behind_vault_tokens(tmp_path) -> None:
    """Gold holds vault tokens: the pii_reader's view shows the clear values, the analyst's the
    partial mask of the clear e-mail, the base table tokens only; the vault is loaded into
    `_restricted` and no login reads it."""
    lake, policy, tables, clear, tokenised = tokenised_gold_lake(tmp_path)
    with postgres() as pg:
        serve_postgres(lake, policy, tables, pg.url)
        admin = session(pg.port, "postgres")
        with admin.cursor() as cur:
            cur.execute("create role alice login in role analyst")
            cur.execute("create role bob login in role pii_reader")
        bob, alice = session(pg.port, "bob"), session(pg.port, "alice")
        view = rows(bob, "select * from pii_reader.customers order by customer_id")
        assert view.equals(clear)
        table = rows(bob, "select * from gold.customers order by customer_id")
        assert table.equals(tokenised)
        masked = rows(alice, "select * from analyst.customers order by customer_id")
        assert masked["customer_email"].to_list() == ["z***@example.org"] * 40
        assert masked["customer_name"].null_count() == 40
        for con in (alice, bob):
            with pytest.raises(errors.InsufficientPrivilege):
                rows(con, "select * from _restricted.pii_vault")
        for con in (admin, alice, bob):
            con.close()
