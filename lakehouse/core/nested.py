"""Nested JSON: contract columns read from a path inside a record, arrays exploded into child sources.

A column with `path: payload.customer.id` takes its landed value from that place in the record:
the first part is a field of the record, the rest a path inside it (JSON objects nest). A path
that is not there lands as null (so `nullable: false` quarantines the row with the column
named), a value of the wrong kind fails its cast like any landed text. The record's fields that
only serve paths are not landed columns of their own.

`explode:` turns an array of each record into a child source `<source>__<name>`: one row per
element, carrying the parent's key columns, `parent_row` (the record's row number in its file;
`_source_file` is the parent's file) and `array_index` (the element's position, from 0). The
child reads the parent's landed files and has its own bronze, silver, quarantine and checks;
its columns' paths are relative to the element. A record whose array is missing or empty has
no child rows (its own row is in the parent's silver or quarantine).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from lakehouse.core.errors import ContractError

PARENT_ROW = "parent_row"
ARRAY_INDEX = "array_index"
_ELEMENT = "_lakehouse_element"
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Explode:
    """`explode: [{name, array, primary_key, columns}]`: one child source per array."""

    name: str
    array: str
    primary_key: tuple[str, ...]
    columns: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Shape:
    """How a source's landed rows come out of nested records (empty: as the records are)."""

    paths: tuple[tuple[str, str], ...] = ()
    """(column, dotted path) read from each record."""
    drop: tuple[str, ...] = ()
    """Record fields that only serve paths."""
    array: str | None = None
    """A child source: the dotted path of the array whose elements are its rows."""
    element_paths: tuple[tuple[str, str], ...] = ()
    """A child source: (column, dotted path inside the element)."""

    def __bool__(self) -> bool:
        return bool(self.paths or self.array)


def check_path(path: object, where: str, file: object) -> str:
    if not isinstance(path, str) or not _PATH.match(path):
        raise ContractError(
            file, where, f"`{path}` is not a dotted path (e.g. payload.customer.id)"
        )
    return path


def parse_explode(raw: Any, file: object) -> tuple[Explode, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ContractError(file, "explode", "a list of {name, array, primary_key, columns}")
    out = []
    for i, item in enumerate(raw):
        where = f"explode[{i}]"
        if not isinstance(item, Mapping):
            raise ContractError(file, where, "a mapping with name, array and columns")
        for key in item:
            if key not in {"name", "array", "primary_key", "columns"}:
                raise ContractError(file, f"{where}.{key}", "unknown field")
        name = item.get("name")
        if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_]*$", name):
            raise ContractError(file, f"{where}.name", "the child's name (lower case, e.g. items)")
        columns = item.get("columns")
        if not isinstance(columns, list) or not columns:
            raise ContractError(file, f"{where}.columns", "the element's columns (a list)")
        pk = item.get("primary_key") or [ARRAY_INDEX]
        out.append(
            Explode(
                name=name,
                array=check_path(item.get("array"), f"{where}.array", file),
                primary_key=(pk,) if isinstance(pk, str) else tuple(pk),
                columns=tuple(columns),
            )
        )
    return tuple(out)


def _at(frame_columns: Sequence[str], text: pl.Expr | None, path: str) -> pl.Expr:
    """The value at dotted `path` of a record (text of its fields) as text; null if absent."""
    root, _, rest = path.partition(".")
    if text is None:
        if root not in frame_columns:
            return pl.lit(None, pl.String)
        text = pl.col(root)
        return text.str.json_path_match(f"$.{rest}") if rest else text
    return text.str.json_path_match(f"$.{path}")


def _elements(text: str | None) -> list[str] | None:
    try:
        value = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    return [json.dumps(v, sort_keys=True) for v in value]


def flatten(
    frame: pl.LazyFrame, shape: Shape, *, row_number: str, file_column: str
) -> pl.LazyFrame:
    """The landed rows of `shape` from a frame of records (fields as text, nested ones JSON)."""
    if not shape:
        return frame
    names = frame.collect_schema().names()
    frame = frame.with_columns(_at(names, None, p).alias(c) for c, p in shape.paths)
    if shape.array is None:
        return frame.drop([c for c in shape.drop if c not in dict(shape.paths)], strict=False)
    keep = [c for c, _ in shape.paths]
    return (
        frame.select(
            *keep,
            pl.col(file_column),
            pl.col(row_number).alias(PARENT_ROW),
            _at(names, None, shape.array)
            .map_elements(_elements, return_dtype=pl.List(pl.String))
            .alias(_ELEMENT),
        )
        .filter(pl.col(_ELEMENT).list.len() > 0)
        .explode(_ELEMENT)
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int64).over(file_column, PARENT_ROW).alias(ARRAY_INDEX),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(file_column).alias(row_number),
            pl.col(PARENT_ROW).cast(pl.String),
        )
        .with_columns(
            pl.col(ARRAY_INDEX).cast(pl.String),
            *(_at(names, pl.col(_ELEMENT), p).alias(c) for c, p in shape.element_paths),
        )
        .drop(_ELEMENT)
    )
