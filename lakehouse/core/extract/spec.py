"""The contract's `source:` block: where a source's rows come from when they are not files.

    source:
      kind: postgres            # files (the default: files delivered into the landing zone)
      dsn_env: SHOP_DB_URL      # environment variable holding postgresql://user:pw@host:port/db
      table: public.customers   # or `query: select ...` (one of the two)
      cursor: updated_at        # incremental: rows whose cursor is at or past the last extract's
      mode: incremental         # or snapshot: the whole table every run (its deletes reach silver)

Kept free of `contract.py` so that the contract can validate the block on load without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lakehouse.core.errors import ContractError

SOURCE_KINDS = ("files", "postgres")
MODES = ("incremental", "snapshot")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True)
class PostgresSource:
    """A PostgreSQL table or query, extracted in batches to Parquet files in the landing zone."""

    dsn_env: str
    table: str | None = None
    query: str | None = None
    cursor: str | None = None
    mode: Literal["incremental", "snapshot"] = "incremental"
    batch_rows: int = 100_000
    """Rows per Parquet row group (and per progress line); the driver fetches in bounded batches."""
    kind: Literal["postgres"] = "postgres"

    @property
    def delivery(self) -> Literal["events", "snapshot"]:
        """The contract `delivery` this mode implies: a snapshot replaces, increments add up."""
        return "snapshot" if self.mode == "snapshot" else "events"


SourceSpec = PostgresSource
"""Every extracted kind (files need no block)."""


def parse_source(raw: Any, path: object) -> SourceSpec | None:
    """Validate a contract's `source:` block; None for files. Errors name the file and field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ContractError(path, "source", "must be a mapping with at least `kind`")
    kind = raw.get("kind", "files")
    if kind not in SOURCE_KINDS:
        raise ContractError(
            path, "source.kind", f"`{kind}` is not one of {', '.join(SOURCE_KINDS)}"
        )
    if kind == "files":
        _unknown(raw, {"kind"}, path)
        return None
    return _postgres(raw, path)


def _unknown(raw: Mapping[str, Any], allowed: set[str], path: object) -> None:
    for key in raw:
        if key not in allowed:
            raise ContractError(
                path, f"source.{key}", f"unknown field; allowed here: {', '.join(sorted(allowed))}"
            )


def _postgres(raw: Mapping[str, Any], path: object) -> PostgresSource:
    _unknown(raw, {"kind", "dsn_env", "table", "query", "cursor", "mode", "batch_rows"}, path)
    dsn_env = raw.get("dsn_env")
    if not isinstance(dsn_env, str) or not _ENV_NAME.match(dsn_env):
        raise ContractError(
            path, "source.dsn_env", "is required: the environment variable holding the DSN"
        )
    table, query = raw.get("table"), raw.get("query")
    if (table is None) == (query is None):
        raise ContractError(path, "source.table", "give exactly one of `table` and `query`")
    if table is not None:
        parts = str(table).split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ContractError(
                path, "source.table", f"`{table}` must be `table` or `schema.table` (identifiers)"
            )
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise ContractError(path, "source.query", "must be a non-empty SELECT statement")
    cursor = raw.get("cursor")
    mode = raw.get("mode", "incremental" if cursor is not None else "snapshot")
    if mode not in MODES:
        raise ContractError(path, "source.mode", f"`{mode}` is not one of {', '.join(MODES)}")
    if mode == "incremental" and cursor is None:
        raise ContractError(
            path, "source.cursor", "mode `incremental` needs a cursor column (e.g. `updated_at`)"
        )
    if mode == "snapshot" and cursor is not None:
        raise ContractError(path, "source.cursor", "applies only to mode `incremental`")
    if cursor is not None and (not isinstance(cursor, str) or not _IDENTIFIER.match(cursor)):
        raise ContractError(path, "source.cursor", f"`{cursor}` is not a column name")
    batch_rows = raw.get("batch_rows", PostgresSource.batch_rows)
    if not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1:
        raise ContractError(path, "source.batch_rows", "must be a positive whole number")
    return PostgresSource(
        dsn_env=dsn_env,
        table=str(table) if table is not None else None,
        query=query.strip().rstrip(";") if query is not None else None,
        cursor=cursor,
        mode=mode,
        batch_rows=batch_rows,
    )
