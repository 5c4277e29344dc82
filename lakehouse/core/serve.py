"""Embedded serving: one DuckDB file per role, `<serve>/<role>.duckdb`, holding only what the
role may read (`lakehouse.core.policies`), masks and row filters applied.

A role's file is built from the gold (and silver) Delta tables as tables, never views over
files the role could read around: the file holds the masked values only. It is written under a
new name and renamed over the old one, so a reader sees the old file or the new, never half.
`<serve>` is `serve/` beside the warehouse file (`<root>/serve` for a local root).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from lakehouse.core import delta, vault
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.pii_scan import (
    ClearSample,
    Finding,
    sample_clear_values,
    scan_delta_tables,
    scan_duckdb_file,
)
from lakehouse.core.policies import Policy, Role, gold_pii, mask_sql, silver_pii

POSTGRES_ENV = "LAKEHOUSE_SERVE_POSTGRES"
"""A PostgreSQL DSN: when set, serving also loads that database (`lakehouse serve`, Dagster)."""
SERVED_INFO = "_served"
VAULT_RELATION = "_vault"
"""The vault's (token, value) pairs, registered in the in-memory build connection only."""
"""Table in each role file: one row per served table (source version, rows, masks applied)."""


@dataclass(frozen=True)
class ServedTable:
    schema: str
    """gold | metrics | silver"""
    name: str
    uri: str
    pii: Mapping[str, str]
    """PII column -> class (from the contracts through dbt lineage, and the policy)."""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def serve_dir(lake: Lake) -> Path:
    return Path(lake.warehouse_path).parent / "serve"


def serving_enabled(lake: Lake) -> bool:
    """Whether serving follows gold: the lake has been served (`<serve>` exists) or a
    PostgreSQL DSN is configured. The first `lakehouse serve` turns it on."""
    return serve_dir(lake).is_dir() or bool(os.environ.get(POSTGRES_ENV))


def role_path(lake: Lake, role: str) -> Path:
    return serve_dir(lake) / f"{role}.duckdb"


def served_tables(
    lake: Lake,
    policy: Policy,
    contracts: Sequence[Contract],
    manifest: Mapping | None = None,
) -> list[ServedTable]:
    """Every table the lake holds that serving can offer: gold marts (the dbt models and
    snapshots written as Delta), the headline metrics, silver tables; with their PII columns."""
    from lakehouse.core.gold import ensure_manifest
    from lakehouse.core.metrics import HEADLINE

    if manifest is None:
        manifest = json.loads(ensure_manifest().read_text())
    by_model = gold_pii(manifest, contracts)
    by_source = silver_pii(contracts)
    candidates = [
        *(
            ("gold", name, lake.table_uri("gold", name), by_model[name])
            for name in sorted(by_model)
        ),
        *(("metrics", m, lake.table_uri("gold", f"metrics/{m}"), {}) for m in HEADLINE),
        *(
            ("silver", c.name, lake.table_uri("silver", c.name), by_source[c.name])
            for c in contracts
        ),
    ]
    found = []
    for schema, name, uri, pii in candidates:
        table = delta.open_table(lake, uri)
        if table is None:
            continue
        columns = {f.name for f in table.schema().fields}
        declared = {
            key.rsplit(".", 1)[1]: cls
            for key, cls in policy.pii.items()
            if key.rsplit(".", 1)[0] == f"{schema}.{name}"
        }
        classes = {c: cls for c, cls in {**pii, **declared}.items() if c in columns}
        found.append(ServedTable(schema, name, uri, classes))
    return found


def role_select(
    role: Role,
    table: ServedTable,
    columns: Iterable[str],
    engine: str,
    tokens: Iterable[str] = (),
    vault_relation: str = f'"{VAULT_RELATION}"',
) -> str:
    """`select <masked columns> from <schema>.<table> [where <role's filter>]` in `engine`.

    `tokens`: PII columns holding vault tokens, looked up in `vault_relation` (token, value)
    where the role reads them clear or partially masked; a hashed token stays a hash of the
    token (a stable pseudonym no dictionary of clear values reverses)."""
    tokens = set(tokens)

    def expression(column: str) -> str:
        mask = role.mask(table.qualified, column, table.pii.get(column))
        value = None
        if column in tokens and mask in ("clear", "partial"):
            value = (
                f"coalesce((select v.value from {vault_relation} v "
                f'where v.token = "{column}"), "{column}")'
            )
        return mask_sql(column, mask, engine, value)

    select = ", ".join(expression(c) for c in columns)
    where = role.row_filter(table.qualified)
    return f'select {select} from "{table.schema}"."{table.name}"' + (
        f" where {where}" if where else ""
    )


@dataclass(frozen=True)
class RoleStore:
    role: str
    path: str
    tables: dict[str, int]
    """Served table -> rows the role sees."""
    seconds: float
    findings: list[Finding] = field(default_factory=list)
    """What the audit found in the new file; when not empty the old file stays in place."""
    written: bool = True
    """False when the file already held what the role reads now (nothing written)."""

    @property
    def published(self) -> bool:
        return not self.findings


Audit = Callable[[Role, Path], list[Finding]]
"""Looks at a role's new file before it replaces the old one; what it returns holds it back."""


def build_role_stores(
    lake: Lake,
    policy: Policy,
    tables: Sequence[ServedTable],
    roles: Sequence[str] | None = None,
    audit: Audit | None = None,
) -> list[RoleStore]:
    """Write `<serve>/<role>.duckdb` for each role (default: every role of the policy).

    A file built from the same role, classes and source versions is left as it is (nothing
    written). With `audit`, a new file replaces the old one only if the audit finds nothing in
    it (write-audit-publish: a file the gate would fail is never served)."""
    names = list(roles) if roles is not None else list(policy.roles)
    current = source_versions(lake, tables)
    kept = {}
    for name in names:
        role = policy.role(name)
        path = role_path(lake, name)
        held = _held_tables(path, _digest(role, tables, current))
        if held is not None:  # same policy, same classes, same source versions: nothing to write
            kept[name] = RoleStore(name, str(path), held, 0.0, written=False)
    if len(kept) == len(names):
        return [kept[n] for n in names]
    sources = duckdb.connect()  # in memory: the Delta tables as views, read once per role build
    try:
        versions = _register_sources(lake, sources, tables)
        return [
            kept.get(name) or _build_one(lake, sources, policy.role(name), tables, versions, audit)
            for name in names
        ]
    finally:
        sources.close()


def _digest(role: Role, tables: Sequence[ServedTable], versions: Mapping[str, int]) -> str:
    """What a role's file is a function of: the role, and each readable table's version and
    PII classes."""
    readable = {
        t.qualified: [versions[t.qualified], dict(sorted(t.pii.items()))]
        for t in tables
        if t.qualified in versions and role.may_read(t.qualified)
    }
    spec = {**asdict(role), "masks": dict(role.masks), "rows": dict(role.rows)}
    text = json.dumps({"role": spec, "tables": readable}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _held_tables(path: Path, digest: str) -> dict[str, int] | None:
    """The rows per table of the role file at `path` if it was built for `digest`."""
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.sql(
                f"select schema, table_name, row_count, build_digest from main.{SERVED_INFO}"
            ).fetchall()
    except duckdb.Error:
        return None
    if not rows or {r[3] for r in rows} != {digest}:
        return None
    return {f"{schema}.{table}": int(n) for schema, table, n, _ in rows}


def _register_sources(
    lake: Lake, con: duckdb.DuckDBPyConnection, tables: Sequence[ServedTable]
) -> dict[str, int]:
    versions = {}
    for schema in {t.schema for t in tables}:
        con.execute(f'create schema if not exists "{schema}"')
    for t in tables:
        table = delta.open_table(lake, t.uri)
        if table is None:
            continue
        versions[t.qualified] = table.version()
        source = f"src__{t.schema}__{t.name}"
        # a whole Arrow table: DuckDB pushes filters into a dataset, which fails on string views
        con.register(source, table.to_pyarrow_table())
        con.execute(f'create view "{t.schema}"."{t.name}" as select * from "{source}"')
    held = delta.open_table(lake, vault.vault_uri(lake))
    if held is not None and any(t.pii for t in tables):
        con.register(VAULT_RELATION, held.to_pyarrow_table(columns=[vault.TOKEN, vault.VALUE]))
    return versions


def _has_vault(con: duckdb.DuckDBPyConnection) -> bool:
    found = con.execute(
        "select count(*) from duckdb_views() where view_name = ?", [VAULT_RELATION]
    ).fetchone()
    return bool(found and found[0])


def _build_one(
    lake: Lake,
    sources: duckdb.DuckDBPyConnection,
    role: Role,
    tables: Sequence[ServedTable],
    versions: Mapping[str, int],
    audit: Audit | None,
) -> RoleStore:
    started = time.monotonic()
    final = role_path(lake, role.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.with_name(f".{final.name}.{os.getpid()}.new")
    scratch.unlink(missing_ok=True)
    rows: dict[str, int] = {}
    info = []
    quoted = str(scratch).replace("'", "''")
    sources.execute(f"attach '{quoted}' as served")
    try:
        for t in tables:
            if t.qualified not in versions or not role.may_read(t.qualified):
                continue
            described = sources.execute(f'describe "{t.schema}"."{t.name}"').fetchall()
            columns = [r[0] for r in described]
            tokens = (
                [r[0] for r in described if r[0] in t.pii and r[1] == "VARCHAR"]
                if _has_vault(sources)
                else []
            )
            sources.execute(f'create schema if not exists served."{t.schema}"')
            sources.execute(
                f'create table served."{t.schema}"."{t.name}" as '
                + role_select(role, t, columns, "duckdb", tokens)
            )
            count = sources.execute(
                f'select count(*) from served."{t.schema}"."{t.name}"'
            ).fetchone()
            rows[t.qualified] = int(count[0]) if count else 0
            masks = {
                c: role.mask(t.qualified, c, t.pii.get(c))
                for c in columns
                if role.mask(t.qualified, c, t.pii.get(c)) != "clear"
            }
            info.append(
                (
                    t.schema,
                    t.name,
                    versions[t.qualified],
                    rows[t.qualified],
                    json.dumps(masks, sort_keys=True),
                    role.row_filter(t.qualified),
                )
            )
        sources.execute(
            f"create table served.main.{SERVED_INFO} (schema varchar, table_name varchar, "
            "delta_version bigint, row_count bigint, masks varchar, row_filter varchar, "
            "built_at timestamptz, build_digest varchar)"
        )
        built = dt.datetime.now(dt.UTC)
        digest = _digest(role, tables, versions)
        for row in info:
            sources.execute(
                f"insert into served.main.{SERVED_INFO} values (?, ?, ?, ?, ?, ?, ?, ?)",
                [*row, built, digest],
            )
    finally:
        sources.execute("detach served")
    findings = audit(role, scratch) if audit is not None else []
    if findings:
        scratch.unlink()
    else:
        os.replace(scratch, final)
    return RoleStore(
        role.name, str(final), rows, time.monotonic() - started, findings, written=not findings
    )


@dataclass(frozen=True)
class Served:
    """One serve: the role files, what the PII gate found, PostgreSQL's load if configured."""

    stores: list[RoleStore]
    gold_findings: list[Finding]
    """Clear PII values found in gold's Delta tables."""
    sample: ClearSample
    """The clear values looked for."""
    postgres: Any = None
    """`lakehouse.core.serve_postgres.PostgresServed`, when a DSN was given and gold was clean."""

    @property
    def findings(self) -> list[Finding]:
        return [*self.gold_findings, *(f for s in self.stores for f in s.findings)]


def serve(
    lake: Lake,
    policy: Policy,
    contracts: Sequence[Contract],
    *,
    postgres_dsn: str | None = None,
    roles: Sequence[str] | None = None,
) -> Served:
    """Build every role's file behind the PII gate and, given a DSN, serve PostgreSQL.

    The gate samples clear values of the PII columns from the vault and bronze (`pii_scan`)
    and looks for them in gold (its Delta tables and the warehouse file) and in each new file
    of a role that may not read clear PII: such a file is not published, and gold holding one
    is not loaded into PostgreSQL.
    """
    tables = served_tables(lake, policy, contracts)
    sample = sample_clear_values(lake, contracts)
    gold = [(t.qualified, t.uri) for t in tables if t.schema != "silver"]
    gold_findings = scan_delta_tables(lake, gold, sample)
    if Path(lake.warehouse_path).exists():  # dbt's copy of gold (serve runs in its pool)
        gold_findings += scan_duckdb_file(lake.warehouse_path, sample, label="warehouse")

    def audit(role: Role, path: Path) -> list[Finding]:
        if role.clear_pii:
            return []
        return scan_duckdb_file(path, sample, label=f"serve/{role.name}.duckdb")

    stores = build_role_stores(lake, policy, tables, roles, audit)
    loaded = None
    if postgres_dsn and not gold_findings:
        from lakehouse.core.serve_postgres import serve_postgres

        loaded = serve_postgres(lake, policy, tables, postgres_dsn)
    return Served(stores, gold_findings, sample, loaded)


def source_versions(lake: Lake, tables: Sequence[ServedTable]) -> dict[str, int]:
    """The Delta version of each served table: what a serve built from."""
    versions = {}
    for t in tables:
        table = delta.open_table(lake, t.uri)
        if table is not None:
            versions[t.qualified] = table.version()
    return versions
