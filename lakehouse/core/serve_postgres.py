"""Team serving: gold (and silver, for the roles that read it) loaded into PostgreSQL, access
generated from the policy (`lakehouse.core.policies`).

For every served table `<schema>.<table>` (schemas `gold`, `metrics`, `silver`):
- the rows are loaded from its Delta table with ADBC ingest (Arrow batches, binary COPY) into a
  new table, swapped in for the old one in the same transaction as the grants below, so readers
  see the old table or the new one;
- row-level security is on: a role sees no row of it without a policy, and each role that may
  read the table gets one (`true`, or its row filter);
- a role gets SELECT on the columns it may read in clear only: selecting a masked column of the
  table is `permission denied`;
- `<role>.<table>` (`<role>.<schema>_<table>` outside gold) is the masking view: every column,
  masked per policy, rows filtered by the same policy. Its owner, the no-login role
  `<role>_masking`, reads the whole table, subject to the role's row policy.

Roles are no-login group roles: people log in as their own users, members of them
(`create role alice login in role analyst`). The loading user must be able to create roles
(a superuser, or CREATEROLE and owner of the schemas).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg2
import pyarrow as pa
from psycopg2 import sql

from lakehouse.core import delta, vault
from lakehouse.core.lake import Lake
from lakehouse.core.policies import Policy, Role
from lakehouse.core.serve import ServedTable, role_select

MASKING_SUFFIX = "_masking"
VAULT_SCHEMA, VAULT_TABLE = "_restricted", "pii_vault"
"""Where the vault's (token, value) pairs are loaded: read only by the masking views' owners,
so a role's view shows the clear value behind a token where the role reads it clear or partial."""


@dataclass(frozen=True)
class LoadFigure:
    table: str
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


@dataclass(frozen=True)
class PostgresServed:
    loads: list[LoadFigure]
    roles: list[str]
    seconds: float


def libpq_uri(dsn: str) -> str:
    """`postgresql+psycopg2://...` (SQLAlchemy style) or `postgres://` as a libpq URI."""
    scheme, sep, rest = dsn.partition("://")
    if sep and scheme.split("+")[0] in ("postgresql", "postgres"):
        return f"postgresql://{rest}"
    return dsn


def view_name(table: ServedTable) -> str:
    return table.name if table.schema == "gold" else f"{table.schema}_{table.name}"


def serve_postgres(
    lake: Lake, policy: Policy, tables: Sequence[ServedTable], dsn: str
) -> PostgresServed:
    """Load every table some role may read and (re)generate roles, grants, RLS and views."""
    started = time.monotonic()
    uri = libpq_uri(dsn)
    wanted = [t for t in tables if any(r.may_read(t.qualified) for r in policy.roles.values())]
    loads = []
    staged = []
    held = delta.open_table(lake, vault.vault_uri(lake))
    vault_table = (
        ServedTable(VAULT_SCHEMA, VAULT_TABLE, vault.vault_uri(lake), {})
        if held is not None and any(t.pii for t in wanted)
        else None
    )
    with adbc.connect(uri) as ingest:
        for t in [*wanted, *([vault_table] if vault_table else [])]:
            table = delta.open_table(lake, t.uri)
            if table is None:
                continue
            staging = f"{t.name}__loading"
            with ingest.cursor() as cur:
                cur.execute(f'create schema if not exists "{t.schema}"')
                cur.execute(f'drop table if exists "{t.schema}"."{staging}"')
                ingest.commit()
                dataset = table.to_pyarrow_dataset()
                if t is vault_table:
                    dataset = dataset.to_table(columns=[vault.TOKEN, vault.VALUE])
                began = time.monotonic()
                rows = cur.adbc_ingest(
                    staging,
                    _batches(dataset),
                    mode="create",
                    db_schema_name=t.schema,
                )
                ingest.commit()
            if t is vault_table:
                continue
            loads.append(LoadFigure(t.qualified, int(rows or 0), time.monotonic() - began))
            tokens = (
                [f.name for f in dataset.schema if f.name in t.pii and _is_text(f.type)]
                if vault_table
                else []
            )
            staged.append((t, staging, [f.name for f in dataset.schema], tokens))
    with psycopg2.connect(uri) as con, con.cursor() as cur:
        for role in policy.roles.values():
            _ensure_role(cur, role.name)
            _ensure_role(cur, role.name + MASKING_SUFFIX)
            cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(role.name)))
            cur.execute(
                sql.SQL("grant usage on schema {} to {}").format(
                    sql.Identifier(role.name), sql.Identifier(role.name)
                )
            )
        # every table first: a row filter may read another served table (a subquery), and
        # dropping that table drops the policies that depend on it
        if vault_table is not None:
            _swap_in(cur, vault_table, f"{VAULT_TABLE}__loading")
            _restrict_vault(cur, policy)
        for t, staging, _, _ in staged:
            _swap_in(cur, t, staging)
        for t, _, columns, tokens in staged:
            _generate_access(cur, policy, t, columns, tokens)
    return PostgresServed(loads, list(policy.roles), time.monotonic() - started)


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or dtype == pa.string_view()


def _restrict_vault(cur: Any, policy: Policy) -> None:
    """Nobody reads the vault but the masking views' owners (no login)."""
    schema = sql.Identifier(VAULT_SCHEMA)
    target = sql.SQL("{}.{}").format(schema, sql.Identifier(VAULT_TABLE))
    cur.execute(sql.SQL("revoke all on schema {} from public").format(schema))
    cur.execute(sql.SQL("revoke all on {} from public").format(target))
    for role in policy.roles.values():
        masking = sql.Identifier(role.name + MASKING_SUFFIX)
        cur.execute(sql.SQL("grant usage on schema {} to {}").format(schema, masking))
        cur.execute(sql.SQL("grant select on {} to {}").format(target, masking))


def _batches(dataset: Any) -> pa.RecordBatchReader:
    schema = dataset.schema
    return pa.RecordBatchReader.from_batches(schema, dataset.to_batches())


def _ensure_role(cur: Any, name: str) -> None:
    cur.execute("select 1 from pg_roles where rolname = %s", [name])
    if cur.fetchone() is None:
        cur.execute(sql.SQL("create role {} nologin").format(sql.Identifier(name)))


def _swap_in(cur: Any, t: ServedTable, staging: str) -> None:
    """Replace the table by its staged load (its views and policies go with the old one)."""
    schema, name = sql.Identifier(t.schema), sql.Identifier(t.name)
    target = sql.SQL("{}.{}").format(schema, name)
    cur.execute(sql.SQL("drop table if exists {} cascade").format(target))
    cur.execute(
        sql.SQL("alter table {}.{} rename to {}").format(schema, sql.Identifier(staging), name)
    )


def _generate_access(
    cur: Any, policy: Policy, t: ServedTable, columns: list[str], tokens: list[str]
) -> None:
    """Row-level security, column grants, row policies and masking views of one table."""
    schema = sql.Identifier(t.schema)
    target = sql.SQL("{}.{}").format(schema, sql.Identifier(t.name))
    cur.execute(sql.SQL("revoke all on schema {} from public").format(schema))
    cur.execute(sql.SQL("alter table {} enable row level security").format(target))
    for role in policy.roles.values():
        if role.may_read(t.qualified):
            _grant(cur, role, t, target, columns, tokens)


def _grant(
    cur: Any,
    role: Role,
    t: ServedTable,
    target: sql.Composable,
    columns: list[str],
    tokens: list[str],
) -> None:
    who, masking = sql.Identifier(role.name), sql.Identifier(role.name + MASKING_SUFFIX)
    schema = sql.Identifier(t.schema)
    for grantee in (who, masking):
        cur.execute(sql.SQL("grant usage on schema {} to {}").format(schema, grantee))
    clear = [c for c in columns if role.mask(t.qualified, c, t.pii.get(c)) == "clear"]
    if clear:
        cur.execute(
            sql.SQL("grant select ({}) on {} to {}").format(
                sql.SQL(", ").join(map(sql.Identifier, clear)), target, who
            )
        )
    cur.execute(sql.SQL("grant select on {} to {}").format(target, masking))
    using = role.row_filter(t.qualified) or "true"
    cur.execute(
        sql.SQL("create policy {} on {} for select to {}, {} using ({})").format(
            sql.Identifier(f"{role.name}_rows"), target, who, masking, sql.SQL(using)
        )
    )
    view = sql.SQL("{}.{}").format(sql.Identifier(role.name), sql.Identifier(view_name(t)))
    cur.execute(sql.SQL("drop view if exists {}").format(view))
    # the role's filter is applied by RLS on the table (the view runs as its owner, `masking`)
    vault_relation = f'"{VAULT_SCHEMA}"."{VAULT_TABLE}"'
    select = role_select(_without_filter(role), t, columns, "postgres", tokens, vault_relation)
    cur.execute(sql.SQL("create view {} as {}").format(view, sql.SQL(select)))
    cur.execute(sql.SQL("alter view {} owner to {}").format(view, masking))
    cur.execute(sql.SQL("grant select on {} to {}").format(view, who))


def _without_filter(role: Role) -> Role:
    return replace(role, rows={})
