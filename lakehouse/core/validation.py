"""Typing and row rules: turn landed strings into contract types and find every bad row's reasons.

Casting is done here (a value that does not cast is a row error, never a crash); the value rules
(nullability, ranges, allowed values, patterns) are a pandera.polars schema generated from the
contract. The result splits a batch into valid rows and quarantined rows, each bad row carrying
every rule it failed and a message naming the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from lakehouse.core.contract import Column, Contract

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


def split_rows(contract: Contract, batch: pl.DataFrame, passthrough: list[str]) -> RowSplit:
    """Type `batch` (landed strings) per contract and split it on the row rules.

    `passthrough` columns (lineage, rescued data) are carried unchanged on both sides.
    """
    landed = batch.with_row_index(_ROW_ID)
    for col in contract.columns:  # a column absent from every file is all-null, not an error here
        if col.name not in landed.columns:
            landed = landed.with_columns(pl.lit(None, pl.String).alias(col.name))
    typed_name = {c.silver_name: f"__typed_{c.silver_name}" for c in contract.columns}
    work = landed.with_columns(
        cast_expr(c).alias(typed_name[c.silver_name]) for c in contract.columns
    )
    typed = work.select(
        _ROW_ID, *[pl.col(typed_name[c.silver_name]).alias(c.silver_name) for c in contract.columns]
    )

    # Cast failures: a value was given but is not of the contract's type.
    cast_errors = [
        pl.when(pl.col(c.name).is_not_null() & pl.col(typed_name[c.silver_name]).is_null()).then(
            pl.format(
                "column `{}`: `{}` is not a valid {}",
                pl.lit(c.name),
                pl.col(c.name),
                pl.lit(c.type),
            )
        )
        for c in contract.columns
        if c.type != "string"
    ]
    errors = work.select(
        _ROW_ID,
        pl.concat_list(cast_errors).list.drop_nulls().alias(ERRORS)
        if cast_errors
        else pl.lit([], pl.List(pl.String)).alias(ERRORS),
    )
    cast_failed = errors.filter(pl.col(ERRORS).list.len() > 0).with_columns(
        pl.col(ERRORS).list.eval(pl.lit("castable")).alias(RULES)
    )

    candidates = typed.join(cast_failed.select(_ROW_ID), on=_ROW_ID, how="anti")
    rule_failures = _pandera_failures(contract, candidates)
    failures = pl.concat([cast_failed.select(_ROW_ID, RULES, ERRORS), rule_failures])
    failures = failures.group_by(_ROW_ID).agg(
        pl.col(RULES).list.explode(keep_nulls=False, empty_as_null=False),
        pl.col(ERRORS).list.explode(keep_nulls=False, empty_as_null=False),
    )

    bad_ids = failures.get_column(_ROW_ID)
    valid = (
        typed.filter(~pl.col(_ROW_ID).is_in(bad_ids.implode()))
        .join(landed.select(_ROW_ID, *passthrough), on=_ROW_ID)
        .drop(_ROW_ID)
    )
    invalid = (
        landed.join(failures, on=_ROW_ID)
        .sort(_ROW_ID)
        .select(*contract.landed_columns, *passthrough, RULES, ERRORS)
    )
    return RowSplit(valid=valid, invalid=invalid)


def _pandera_failures(contract: Contract, typed: pl.DataFrame) -> pl.DataFrame:
    empty = pl.DataFrame(
        schema={_ROW_ID: pl.UInt32, RULES: pl.List(pl.String), ERRORS: pl.List(pl.String)}
    )
    if typed.is_empty():
        return empty
    try:
        pandera_schema(contract).validate(typed.drop(_ROW_ID), lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return empty
    cases = cases.filter(pl.col("index").is_not_null())
    positions = typed.select(_ROW_ID).with_row_index("index")
    return (
        cases.with_columns(pl.col("index").cast(pl.UInt32))
        .join(positions, on="index")
        .select(
            _ROW_ID,
            pl.format("{}:{}", pl.col("column"), pl.col("check")).alias("rule"),
            pl.format(
                "column `{}`: value `{}` fails `{}`",
                pl.col("column"),
                pl.col("failure_case").fill_null("null"),
                pl.col("check"),
            ).alias("error"),
        )
        .group_by(_ROW_ID)
        .agg(pl.col("rule").alias(RULES), pl.col("error").alias(ERRORS))
    )
