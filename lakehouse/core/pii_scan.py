"""The PII gate's scan: clear values of the contracts' PII columns, sampled from the vault (every
value silver ever tokenised, whether or not bronze still holds its row: bronze expires) and from
bronze (values as landed, some not tokenised yet), looked for in gold's Delta tables and in the
served role files.

Values are compared whole (a cell equal to a sampled value). A sampled value that silver also
publishes in a column the contracts leave unclassified (an id used as `tweets.user_id`, PII, and
as `customers.id`, not) is not a secret of its PII column: it is left out of the sample and
reported, so the contract owner can classify that column. Findings name the table, the column
and the PII column the value came from, with a count; never the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from lakehouse.core import delta, vault
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake

SAMPLE_PER_COLUMN = 1000
MIN_LENGTH = 4
"""Shorter values (initials, `n/a`) are too common to be a person's."""


@dataclass(frozen=True)
class ClearSample:
    values: dict[str, list[str]]
    """`<source>.<column>` (a contract's PII column) -> distinct clear values."""
    published_in_clear: dict[str, list[str]] = field(default_factory=dict)
    """`<source>.<column>` -> unclassified silver columns that publish some of its values."""

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.values.values())

    def frame(self) -> pa.Table:
        origins = [o for o, vs in self.values.items() for _ in vs]
        return pa.table(
            {"origin": origins, "value": [v for vs in self.values.values() for v in vs]}
        )


@dataclass(frozen=True)
class Finding:
    where: str
    """`<store>: <schema>.<table>.<column>`"""
    origin: str
    """The PII column (`<source>.<column>`) whose clear values appear there."""
    rows: int

    def __str__(self) -> str:
        return f"{self.where}: {self.rows} row(s) hold clear values of {self.origin}"


def sample_clear_values(
    lake: Lake, contracts: Sequence[Contract], per_column: int = SAMPLE_PER_COLUMN
) -> ClearSample:
    """Up to `per_column` distinct clear values of each PII column from the vault (the column's
    token class: a class several columns share gives each the same values) and as many from
    bronze, spread over the values by their hash rather than the first ones in order."""
    values: dict[str, list[str]] = {}
    minted = delta.scan(lake, vault.vault_uri(lake))
    for contract in contracts:
        bronze = delta.scan(lake, lake.table_uri("bronze", contract.name))
        for column in contract.pii_columns:
            found: set[str] = set()
            if minted is not None:
                of_class = minted.filter(pl.col(vault.CLASS) == vault.token_class(column))
                found |= _distinct(of_class.select(vault.VALUE), vault.VALUE, per_column)
            if bronze is not None and column.name in bronze.collect_schema().names():
                found |= _distinct(bronze, column.name, per_column)
            if minted is not None or bronze is not None:
                values[f"{contract.name}.{column.name}"] = sorted(found)
    return _without_published(lake, contracts, values)


def _distinct(frame: pl.LazyFrame, column: str, limit: int) -> set[str]:
    found = (
        frame.select(pl.col(column).cast(pl.String))
        .drop_nulls()
        .filter(pl.col(column).str.len_chars() >= MIN_LENGTH)
        .unique()
        .sort(pl.col(column).hash(seed=0), column)
        .head(limit)
        .collect()
    )
    return set(found.get_column(column).to_list())


def _without_published(
    lake: Lake, contracts: Sequence[Contract], values: dict[str, list[str]]
) -> ClearSample:
    published: dict[str, set[str]] = {}
    kept = {origin: set(vs) for origin, vs in values.items()}
    for contract in contracts:
        table = delta.open_table(lake, lake.table_uri("silver", contract.name))
        if table is None:
            continue
        clear_columns = [c.silver_name for c in contract.columns if not c.is_pii]
        scan = pl.scan_delta(table)
        schema = scan.collect_schema()
        for column in clear_columns:
            if schema.get(column) != pl.String:
                continue
            for origin, vs in values.items():
                hits = (
                    scan.filter(pl.col(column).is_in(vs)).select(pl.col(column).unique()).collect()
                )
                if hits.height:
                    kept[origin] -= set(hits[column].to_list())
                    published.setdefault(origin, set()).add(f"silver.{contract.name}.{column}")
    return ClearSample(
        {origin: sorted(vs) for origin, vs in kept.items()},
        {origin: sorted(cols) for origin, cols in published.items()},
    )


def scan_delta_tables(
    lake: Lake, tables: Iterable[tuple[str, str]], sample: ClearSample
) -> list[Finding]:
    """Findings in Delta tables given as (label `<schema>.<table>`, uri)."""
    findings = []
    for label, uri in tables:
        table = delta.open_table(lake, uri)
        if table is None:
            continue
        scan = pl.scan_delta(table)
        strings = [c for c, t in scan.collect_schema().items() if t == pl.String]
        exprs = [
            pl.col(c).is_in(vs).sum().alias(f"{c}\x00{origin}")
            for c in strings
            for origin, vs in sample.values.items()
            if vs
        ]
        if not exprs:
            continue
        counts = scan.select(exprs).collect().row(0, named=True)
        for key, n in counts.items():
            if n:
                column, origin = key.split("\x00")
                findings.append(Finding(f"gold: {label}.{column}", origin, int(n)))
    return findings


def scan_duckdb_file(path: str | Path, sample: ClearSample, *, label: str) -> list[Finding]:
    """Findings in every string column of every table of a DuckDB file."""
    findings = []
    with duckdb.connect(str(path), read_only=True) as con:
        con.register("clear_sample", sample.frame())
        columns = con.sql(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR' and table_catalog = current_database()"
        ).fetchall()
        for schema, table, column in columns:
            hits = con.sql(
                f'select s.origin, count(*) from "{schema}"."{table}" t '
                f'join clear_sample s on t."{column}" = s.value group by 1 order by 1'
            ).fetchall()
            findings += [
                Finding(f"{label}: {schema}.{table}.{column}", origin, int(n)) for origin, n in hits
            ]
    return findings
