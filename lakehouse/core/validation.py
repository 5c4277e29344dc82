"""Typing and row rules: turn landed strings into contract types and find every bad row's reasons.

Casting is done here (a value that does not cast is a row error, never a crash; a value equal to
one of the column's null tokens is null, not a cast failure); the value rules (nullability,
ranges, allowed values, patterns) are a pandera.polars schema generated from the contract. The
result splits a batch into valid rows and quarantined rows, each bad row carrying
every rule it failed and a message naming the column and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from lakehouse.core.contract import DEFAULT_NULL_VALUES, Column, Contract
from lakehouse.core.readers import MESSAGE_VALUE_CHARS, PARSE_ERROR, RAW_LINE

RULES = "_rules"
ERRORS = "_errors"
_ROW_ID = "__row_id"
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")
# ISO 8601 once a space between date and time became `T` (ISO has no space before the offset);
# `%#z` takes `Z`, `+02:00`, `+0200` and `+02`.
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
_OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
_ISO_EXAMPLE = "ISO 8601, e.g. 2024-01-02T03:04:05[Z|+01:00]; set `format:`"
_HAS_OFFSET = re.compile(r"%[:#]*z")


def expected_form(column: Column) -> str:
    """The contract type of `column` with the form its landed values must take, for messages."""
    if column.type in ("datetime", "timestamp", "date") and column.format:
        return f"{column.type} (format `{column.format}`)"
    if column.type in ("datetime", "timestamp"):
        return f"{column.type} ({_ISO_EXAMPLE})"
    if column.type == "date":
        return "date (YYYY-MM-DD; set `format:`)"
    if column.type == "boolean":
        return (
            "boolean (one of "
            + ", ".join(f"{t}/{f}" for t, f in zip(_TRUE, _FALSE, strict=True))
            + ")"
        )
    return column.type


def is_null_token(column: Column, null_values: Sequence[str] = DEFAULT_NULL_VALUES) -> pl.Expr:
    """True where the landed value of `column` is one of `null_values` (exact match)."""
    return pl.col(column.name).is_in(list(null_values)).fill_null(False)


def cast_expr(column: Column, null_values: Sequence[str] = DEFAULT_NULL_VALUES) -> pl.Expr:
    """The expression typing the landed string column `column.name` as `column.type`.

    Null on failure, and null where the landed value is one of `null_values` (pass
    `contract.null_values(column)`: `""`, the format's and the column's tokens).
    """
    return (
        pl.when(is_null_token(column, null_values))
        .then(pl.lit(None, column.dtype))
        .otherwise(_typed(column))
    )


def _typed(column: Column) -> pl.Expr:
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
    if column.type in ("datetime", "timestamp"):
        return _datetime(raw, column)
    return raw.cast(dtype, strict=False)


def _datetime(raw: pl.Expr, column: Column) -> pl.Expr:
    """`datetime`: naive; a value with an offset is converted to UTC, stored naive.

    `timestamp`: UTC; a value without an offset is taken as UTC.
    """
    aware = column.type == "timestamp"
    if column.format:
        naive_formats, offset_formats = (
            ((), (column.format,)) if _HAS_OFFSET.search(column.format) else ((column.format,), ())
        )
    else:
        raw = raw.str.replace(" ", "T", literal=True, n=1)  # the date-time separator, if any
        naive_formats, offset_formats = _NAIVE_FORMATS, _OFFSET_FORMATS
    parsed = []
    for fmt in naive_formats:
        value = raw.str.to_datetime(fmt, strict=False, time_unit="us")
        parsed.append(value.dt.replace_time_zone("UTC") if aware else value)
    for fmt in offset_formats:
        value = raw.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC")
        parsed.append(value if aware else value.dt.replace_time_zone(None))
    return pl.coalesce(parsed)


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
    warned: pl.DataFrame
    """Rows of `valid` whose `on_missing: warn` reference is missing from the referenced table:
    `valid`'s columns plus `_rules` (`<column>:references`) and `_errors`. They are also in
    `valid` (published); count and report them, do not quarantine them."""


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
    table holds; a value outside them fails the foreign-key rule (`<column>:references`), unless
    the reference is `on_missing: warn`: then the row stays valid and is also listed in `warned`.
    A landed value equal to one of the column's null tokens (`contract.null_values`) is null.
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
        cast_expr(c, contract.null_values(c)).alias(typed_name[c.silver_name])
        for c in contract.columns
    ).with_columns(
        (
            pl.col(c.name).is_not_null()
            & ~is_null_token(c, contract.null_values(c))
            & pl.col(typed_name[c.silver_name]).is_null()
        ).alias(cast_mask[c.name])
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
    warn_mask = {}  # `on_missing: warn`: counted, never a reason to quarantine
    for col in contract.columns:
        if col.references is None or col.silver_name not in known_values:
            continue
        masks = warn_mask if col.references.warn_only else fk_mask
        masks[col.silver_name] = f"__fk_failed_{col.silver_name}"
        work = work.with_columns(
            (
                pl.col(typed_name[col.silver_name]).is_not_null()
                & ~pl.col(typed_name[col.silver_name]).is_in(
                    known_values[col.silver_name].implode()
                )
                & ~pre_bad
            ).alias(masks[col.silver_name])
        )
        if not col.references.warn_only:
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
                    "column `{}`: {} is not a valid {}",
                    pl.lit(c.name),
                    _shown(pl.col(c.name), c),
                    pl.lit(expected_form(c)),
                )
            )
        )
    for silver_name, mask in fk_mask.items():
        ref = contract.column(silver_name).references
        rules.append(pl.when(pl.col(mask)).then(pl.lit(f"{silver_name}:references")))
        errors.append(
            pl.when(pl.col(mask)).then(
                pl.format(
                    "column `{}`: {} is not a `{}` of silver `{}`",
                    pl.lit(silver_name),
                    _shown(pl.col(typed_name[silver_name]), contract.column(silver_name)),
                    pl.lit(ref.column),
                    pl.lit(ref.table),
                )
            )
        )
    invalid = failed.with_columns(
        pl.concat_list(*rules, pl.col(RULES).fill_null([])).list.drop_nulls().alias(RULES),
        pl.concat_list(*errors, pl.col(ERRORS).fill_null([])).list.drop_nulls().alias(ERRORS),
    ).select(*contract.landed_columns, *passthrough, RULES, ERRORS)
    warned = _warned(contract, work.filter(~bad), warn_mask, typed_name, passthrough)
    return RowSplit(valid=valid, invalid=invalid, warned=warned)


def _warned(
    contract: Contract,
    valid_work: pl.DataFrame,
    warn_mask: Mapping[str, str],
    typed_name: Mapping[str, str],
    passthrough: Sequence[str],
) -> pl.DataFrame:
    """The valid rows with a missing `on_missing: warn` reference, with their rules and messages."""
    columns = [pl.col(typed_name[c.silver_name]).alias(c.silver_name) for c in contract.columns]
    if not warn_mask:
        return valid_work.clear().select(
            *columns,
            *passthrough,
            pl.lit(None, pl.List(pl.String)).alias(RULES),
            pl.lit(None, pl.List(pl.String)).alias(ERRORS),
        )
    rows = valid_work.filter(pl.any_horizontal(*warn_mask.values())).rechunk()
    rules, errors = [], []
    for silver_name, mask in warn_mask.items():
        ref = contract.column(silver_name).references
        rules.append(pl.when(pl.col(mask)).then(pl.lit(f"{silver_name}:references")))
        errors.append(
            pl.when(pl.col(mask)).then(
                pl.format(
                    "column `{}`: {} is not a `{}` of silver `{}` (on_missing: warn)",
                    pl.lit(silver_name),
                    _shown(pl.col(typed_name[silver_name]), contract.column(silver_name)),
                    pl.lit(ref.column),
                    pl.lit(ref.table),
                )
            )
        )
    return rows.select(
        *columns,
        *passthrough,
        pl.concat_list(*rules).list.drop_nulls().alias(RULES),
        pl.concat_list(*errors).list.drop_nulls().alias(ERRORS),
    )


def _shown(value: pl.Expr, column: Column) -> pl.Expr:
    """`column`'s value for a message (see `_message_value`)."""
    return _message_value(value, pl.lit(column.pii if column.is_pii else None, pl.String))


def _message_value(value: pl.Expr, pii_class: pl.Expr) -> pl.Expr:
    """A value as messages show it: a PII value (`pii_class` not null) is withheld, only its class
    and length stated; any other is quoted in backticks, cut at MESSAGE_VALUE_CHARS characters
    with its full length stated. Messages reach check samples, logs and alerts: no clear PII."""
    text = value.cast(pl.String)
    chars = text.str.len_chars()
    return (
        pl.when(text.is_null())
        .then(pl.lit("null"))
        .when(pii_class.is_not_null())
        .then(pl.format("(a `{}` value of {} characters, withheld)", pii_class, chars))
        .when(chars > MESSAGE_VALUE_CHARS)
        .then(pl.format("`{}…` ({} characters)", text.str.slice(0, MESSAGE_VALUE_CHARS), chars))
        .otherwise(pl.format("`{}`", text))
    )


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
    pii = {c.silver_name: c.pii for c in contract.pii_columns}
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
                "column `{}`: value {} fails `{}`",
                pl.col("column"),
                _message_value(
                    pl.col("failure_case"),
                    pl.col("column").replace_strict(pii, default=None, return_dtype=pl.String),
                ),
                pl.col("check"),
            ).alias("error"),
        )
        .group_by(_ROW_ID)
        .agg(pl.col("rule").alias(RULES), pl.col("error").alias(ERRORS))
    )
