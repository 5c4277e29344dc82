"""Typing and row rules: turn landed strings into contract types and find every bad row's reasons.

Casting is done here (a value that does not cast is a row error, never a crash); the value rules
(nullability, ranges, allowed values, patterns) are a pandera.polars schema generated from the
contract. The result splits a batch into valid rows and quarantined rows, each bad row carrying
every rule it failed and a message naming the column and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from lakehouse.core.contract import Column, Contract
from lakehouse.core.readers import PARSE_ERROR, RAW_LINE

RULES = "_rules"
ERRORS = "_errors"
_ROW_ID = "__row_id"
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")


def cast_expr(column: Column) -> pl.Expr:
    """The expression typing the landed string column `column.name` as `column.type` (null on failure)."""
    raw = pl.col(column.name).str.strip_chars()
    dtype = column.dtype
    if column.type == "string":
        return pl.col(column.name)
    if column.type == "boolean":
        lower = raw.str.to_lowercase()
        return (
            pl.when(lower.is_in(_TRUE))
            .then(True)
            .when(lower.is_in(_FALSE))
            .then(False)
            .otherwise(None)
        )
    if column.type == "date":
        return raw.str.to_date(column.format or "%Y-%m-%d", strict=False)
    if column.type == "datetime":
        formats = (column.format,) if column.format else _DATETIME_FORMATS
        return pl.coalesce([raw.str.to_datetime(f, strict=False, time_unit="us") for f in formats])
    return raw.cast(dtype, strict=False)


def pandera_schema(contract: Contract) -> pa.DataFrameSchema:
    """The pandera.polars schema of the contract's silver columns (types, nulls, value checks)."""
    columns = {}
    for col in contract.columns:
        checks = []
        spec = col.checks
        for name, factory in (
            ("ge", pa.Check.ge),
            ("gt", pa.Check.gt),
            ("le", pa.Check.le),
            ("lt", pa.Check.lt),
            ("isin", pa.Check.isin),
            ("str_matches", pa.Check.str_matches),
        ):
            if name in spec:
                checks.append(factory(spec[name]))
        if "str_length" in spec:
            bounds = spec["str_length"]
            checks.append(pa.Check.str_length(bounds.get("min"), bounds.get("max")))
        columns[col.silver_name] = pa.Column(col.dtype, checks=checks, nullable=col.nullable)
    return pa.DataFrameSchema(columns, name=contract.name)


@dataclass
class RowSplit:
    """A typed batch split into rows that passed every row rule and rows that did not."""

    valid: pl.DataFrame
    """Typed silver columns plus the passthrough (lineage) columns."""
    invalid: pl.DataFrame
    """The landed (string) columns and passthrough columns, plus `_rules` and `_errors` lists."""


def split_rows(
    contract: Contract,
    batch: pl.DataFrame,
    passthrough: Sequence[str],
    *,
    known_values: Mapping[str, pl.Series] | None = None,
) -> RowSplit:
    """Type `batch` (landed strings) per contract and split it on the row rules.

    `passthrough` columns (lineage, rescued data) are carried unchanged on both sides.
    `known_values` maps a silver column with `references` to the values its referenced silver
    table holds; a value outside them fails the foreign-key rule (`<column>:references`).
    A row carrying a reader `_parse_error` fails `parseable`. Checks run as boolean masks over
    the whole batch; messages are built for the failing rows only.
    """
    known_values = known_values or {}
    landed = batch
    for name in (*contract.landed_columns, PARSE_ERROR, RAW_LINE):  # absent everywhere: all null
        if name not in landed.columns:
            landed = landed.with_columns(pl.lit(None, pl.String).alias(name))
    typed_name = {c.silver_name: f"__typed_{c.silver_name}" for c in contract.columns}
    casts = [c for c in contract.columns if c.type != "string"]
    cast_mask = {c.name: f"__cast_failed_{c.name}" for c in casts}
    work = landed.with_columns(
        cast_expr(c).alias(typed_name[c.silver_name]) for c in contract.columns
    ).with_columns(
        (pl.col(c.name).is_not_null() & pl.col(typed_name[c.silver_name]).is_null()).alias(
            cast_mask[c.name]
        )
        for c in casts
    )
    pre_bad = work.select(
        pl.any_horizontal(pl.col(PARSE_ERROR).is_not_null(), *cast_mask.values()).alias("m")
    ).get_column("m")
    typed = work.select(
        pl.col(typed_name[c.silver_name]).alias(c.silver_name) for c in contract.columns
    )

    # Value rules (pandera) over the rows that parsed and cast; map their positions back.
    candidates = pre_bad.not_().arg_true()
    rule_failures = _pandera_failures(contract, typed.filter(~pre_bad), candidates)
    bad = pre_bad | pl.Series(range(work.height)).is_in(rule_failures.get_column(_ROW_ID).implode())

    # Foreign keys: values that the referenced silver table does not hold.
    fk_mask = {}
    for col in contract.columns:
        if col.references is None or col.silver_name not in known_values:
            continue
        fk_mask[col.silver_name] = f"__fk_failed_{col.silver_name}"
        work = work.with_columns(
            (
                pl.col(typed_name[col.silver_name]).is_not_null()
                & ~pl.col(typed_name[col.silver_name]).is_in(
                    known_values[col.silver_name].implode()
                )
                & ~pre_bad
            ).alias(fk_mask[col.silver_name])
        )
        bad = bad | work.get_column(fk_mask[col.silver_name])

    valid = work.filter(~bad).select(
        *[pl.col(typed_name[c.silver_name]).alias(c.silver_name) for c in contract.columns],
        *passthrough,
    )
    # rechunk: polars 2.1 concat_list panics on a multi-chunk frame (`i < self.len()`).
    failed = work.with_row_index(_ROW_ID).filter(bad).rechunk()
    if rule_failures.height:
        failed = failed.join(rule_failures, on=_ROW_ID, how="left", maintain_order="left")
    else:
        failed = failed.with_columns(
            pl.lit(None, pl.List(pl.String)).alias(RULES),
            pl.lit(None, pl.List(pl.String)).alias(ERRORS),
        )
    rules = [pl.when(pl.col(PARSE_ERROR).is_not_null()).then(pl.lit("parseable"))]
    errors = [
        pl.when(pl.col(PARSE_ERROR).is_not_null()).then(
            pl.format("unparseable line: {}", pl.col(PARSE_ERROR))
        )
    ]
    for c in casts:
        rules.append(pl.when(pl.col(cast_mask[c.name])).then(pl.lit(f"{c.silver_name}:castable")))
        errors.append(
            pl.when(pl.col(cast_mask[c.name])).then(
                pl.format(
                    "column `{}`: `{}` is not a valid {}",
                    pl.lit(c.name),
                    pl.col(c.name),
                    pl.lit(c.type),
                )
            )
        )
    for silver_name, mask in fk_mask.items():
        ref = contract.column(silver_name).references
        rules.append(pl.when(pl.col(mask)).then(pl.lit(f"{silver_name}:references")))
        errors.append(
            pl.when(pl.col(mask)).then(
                pl.format(
                    "column `{}`: `{}` is not a `{}` of silver `{}`",
                    pl.lit(silver_name),
                    pl.col(typed_name[silver_name]),
                    pl.lit(ref.column),
                    pl.lit(ref.table),
                )
            )
        )
    invalid = failed.with_columns(
        pl.concat_list(*rules, pl.col(RULES).fill_null([])).list.drop_nulls().alias(RULES),
        pl.concat_list(*errors, pl.col(ERRORS).fill_null([])).list.drop_nulls().alias(ERRORS),
    ).select(*contract.landed_columns, *passthrough, RULES, ERRORS)
    return RowSplit(valid=valid, invalid=invalid)


def _pandera_failures(
    contract: Contract, typed: pl.DataFrame, positions: pl.Series
) -> pl.DataFrame:
    """(row position in the batch, rules, messages) of every row failing a pandera check."""
    empty = pl.DataFrame(
        schema={_ROW_ID: pl.UInt32, RULES: pl.List(pl.String), ERRORS: pl.List(pl.String)}
    )
    if typed.is_empty():
        return empty
    try:
        pandera_schema(contract).validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return empty
    cases = cases.filter(pl.col("index").is_not_null())
    if cases.is_empty():
        return empty
    return (
        cases.with_columns(
            positions.cast(pl.UInt32)
            .gather(pl.Series(cases.get_column("index"), dtype=pl.UInt32))
            .alias(_ROW_ID)
        )
        .select(
            _ROW_ID,
            pl.format("{}:{}", pl.col("column"), pl.col("check")).alias("rule"),
            pl.format(
                "column `{}`: value `{}` fails `{}`",
                pl.col("column"),
                pl.col("failure_case").cast(pl.String).fill_null("null"),
                pl.col("check"),
            ).alias("error"),
        )
        .group_by(_ROW_ID)
        .agg(pl.col("rule").alias(RULES), pl.col("error").alias(ERRORS))
    )
