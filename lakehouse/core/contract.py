"""Source contracts: one YAML file per source says what lands, how to type it and what is valid.

A contract is data, not code: adding a source is adding a YAML file (and files to land). Every
field is validated on load, and every error names the file and the field, e.g.
``orders.yaml: field `columns[3].type`: unknown type `integer`; types are ...``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
import yaml

from lakehouse.core.deprecation import Deprecation, parse_deprecation
from lakehouse.core.errors import ContractError
from lakehouse.core.extract.spec import SourceSpec, parse_source
from lakehouse.core.nested import ARRAY_INDEX, PARENT_ROW, Explode, Shape, check_path, parse_explode
from lakehouse.core.retention import Retention, parse_retention

CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "contracts"
"""The contracts shipped with the project (the Jaffle Shop feed); `LAKEHOUSE_CONTRACTS` overrides."""

FORMATS = ("csv", "ndjson", "json", "parquet")
DELIVERIES = ("events", "snapshot")
DRIFT_POLICIES = ("evolve", "rescue", "freeze")
PII_CLASSES = ("none", "name", "email", "phone", "address", "identifier", "free_text")
COLUMN_CHECKS = ("ge", "gt", "le", "lt", "isin", "str_matches", "str_length")
ON_MISSING = ("quarantine", "warn")
DEFAULT_NULL_VALUES = ("",)
"""Landed values that are null in silver whatever the contract says; `null_values` add to them."""
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_SIMPLE_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int32": pl.Int32(),
    "int64": pl.Int64(),
    "float64": pl.Float64(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "timestamp": pl.Datetime("us", "UTC"),
}
TEMPORAL_TYPES = ("date", "datetime", "timestamp")
TYPE_NAMES = (*_SIMPLE_TYPES, "decimal(p,s)")


def polars_type(type_name: str) -> pl.DataType:
    """The polars dtype of a contract type name (`string`, `int64`, `decimal(15,2)`, ...)."""
    if type_name in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[type_name]
    match = _DECIMAL.match(type_name)
    if match:
        return pl.Decimal(int(match[1]), int(match[2]))
    msg = f"unknown type `{type_name}`"
    raise ValueError(msg)


def parse_duration(text: str) -> timedelta:
    """Parse `26h`, `30m`, `2d` or `90s` into a timedelta."""
    match = _DURATION.match(str(text).strip())
    if not match:
        msg = f"`{text}` is not a duration like `26h`, `30m`, `2d`"
        raise ValueError(msg)
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
    return timedelta(**{unit: int(match[1])})


@dataclass(frozen=True)
class Reference:
    """A foreign key: this column's values must exist in `table`.`column` of silver.

    `on_missing` says what a value the referenced table lacks does to its row: `quarantine` (the
    default) fails the row (`<column>:references`); `warn` keeps the row valid and only counts it.
    """

    table: str
    column: str
    on_missing: Literal["quarantine", "warn"] = "quarantine"

    @property
    def warn_only(self) -> bool:
        return self.on_missing == "warn"


@dataclass(frozen=True)
class Column:
    """One column as landed (`name`) and as published in silver (`silver_name`)."""

    name: str
    type: str
    nullable: bool = True
    description: str = ""
    pii: str = "none"
    rename: str | None = None
    format: str | None = None
    checks: Mapping[str, Any] = field(default_factory=dict)
    references: Reference | None = None
    null_values: tuple[str, ...] = ()
    """Landed values of this column that are null in silver, besides the format's `null_values`."""
    subject: str | None = None
    """The data subject (a source declaring `subject:`) whose identifier this column holds: its
    values are tokenised like the subject's own key, so joins on them hold (`core.vault`)."""
    path: str | None = None
    """Nested JSON: where in the record the value is, e.g. `payload.customer.id` (`core.nested`)."""

    @property
    def silver_name(self) -> str:
        return self.rename or self.name

    @property
    def dtype(self) -> pl.DataType:
        return polars_type(self.type)

    @property
    def is_pii(self) -> bool:
        return self.pii != "none"


@dataclass(frozen=True)
class FileFormat:
    """How landing files of a source are parsed."""

    type: Literal["csv", "ndjson", "json", "parquet"] = "csv"
    delimiter: str = ","
    quote_char: str = '"'
    null_values: tuple[str, ...] = DEFAULT_NULL_VALUES
    """Landed values that are null in silver: `""` plus the contract's `format.null_values`."""


@dataclass(frozen=True)
class Anomalies:
    """`checks.anomalies`: each landing date's column profile against the same weekday of the
    trailing weeks (`lakehouse.core.anomaly`)."""

    on_fail: Literal["warn", "block"] = "warn"
    weeks: int = 4
    """Baseline: the same weekday in each of this many weeks before the date."""
    min_weeks: int = 3
    """A figure is judged once this many of those dates have a profile."""
    max_z: float = 3.5
    """A figure whose robust z-score is past this is an anomaly."""
    columns: tuple[str, ...] = ()
    """The columns to profile (landed or silver names); empty: every column."""


@dataclass(frozen=True)
class BatchChecks:
    """Rules over a whole batch (one landing-date partition); a failure blocks the publish."""

    max_quarantine_ratio: float = 0.05
    volume_min_ratio: float | None = None
    volume_max_ratio: float | None = None
    volume_window: int = 7
    files_rejected: Literal["warn", "block"] = "warn"
    """A landed file that cannot be read: a warning on its date, or (`block`) the date held back."""
    anomalies: Anomalies | None = None
    """Column profile anomaly detection; none unless the contract asks for it."""


@dataclass(frozen=True)
class Arrival:
    """When a day's delivery is due: `expected_by` (local time) + `grace`, in `timezone`."""

    expected_by: time
    timezone: str = "UTC"
    grace: timedelta = timedelta(0)


@dataclass(frozen=True)
class Contract:
    """Everything the platform knows about one source."""

    name: str
    description: str
    owner: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    path: str = ""
    format: FileFormat = field(default_factory=FileFormat)
    event_time: str | None = None
    dated_by: str | None = None
    """`dated_by: <column>` (a table without `event_time`): a row's event date is the one of the
    row that column references (an item's is its order's date). Silver stays unpartitioned;
    its changes are recorded at those dates, so gold rebuilds them (`core.dated`)."""
    ordering: str | None = None
    schema_drift: Literal["evolve", "rescue", "freeze"] = "rescue"
    delivery: Literal["events", "snapshot"] = "events"
    """`snapshot`: each delivery is the source's whole state; silver holds the latest one."""
    checks: BatchChecks = field(default_factory=BatchChecks)
    freshness_fail_after: timedelta | None = None
    freshness_warn_after: timedelta | None = None
    retention: Retention = field(default_factory=Retention)
    """How long each layer keeps the source's data (`lakehouse.core.retention`); default forever."""
    deprecated: Deprecation | None = None
    """`deprecated: {since, replaced_by, sunset}` (`lakehouse.core.deprecation`)."""
    arrival: Arrival | None = None
    """The delivery SLA of the landing zone (`arrival:`); None: no `arrival_late` alert."""
    since: str | None = None
    """The first landing date the source has data for (the daily partitions start there)."""
    source: SourceSpec | None = None
    """Where rows come from when not delivered as files (`lakehouse.core.extract`); None: files."""
    subject: str | None = None
    """`subject: <column>`: each row is about a data subject (named after the source) identified
    by that column; every column referencing it holds the same subject (erasure, tokens)."""
    explode: tuple[Explode, ...] = ()
    """Nested JSON: arrays of each record published as child sources `<name>__<array name>`."""
    parent: str | None = None
    """A child source (`explode:`): the source whose landed files it reads."""
    shape: Shape = field(default_factory=Shape)
    """How landed rows come out of nested records (`core.nested`); empty: as landed."""

    @property
    def landing_source(self) -> str:
        """The source whose landing folder holds this source's files."""
        return self.parent or self.name

    @property
    def silver_columns(self) -> tuple[str, ...]:
        return tuple(c.silver_name for c in self.columns)

    @property
    def landed_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def null_values(self, column: Column) -> tuple[str, ...]:
        """The landed values of `column` that silver types as null (`""`, format's, column's)."""
        return tuple(dict.fromkeys((*self.format.null_values, *column.null_values)))

    def column(self, silver_name: str) -> Column:
        for col in self.columns:
            if col.silver_name == silver_name:
                return col
        msg = f"contract `{self.name}` has no column `{silver_name}`"
        raise KeyError(msg)

    @property
    def pii_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.is_pii)


def load_contracts(directory: str | Path | None = None) -> list[Contract]:
    """Load and validate every `*.yaml` contract in `directory`, sorted by source name."""
    directory = Path(directory or os.environ.get("LAKEHOUSE_CONTRACTS") or CONTRACTS_DIR)
    if not directory.is_dir():
        raise ContractError(directory, "<directory>", "contracts directory does not exist")
    contracts = [load_contract(path) for path in sorted(directory.glob("*.y*ml"))]
    seen: dict[str, str] = {}
    for contract in contracts:
        if contract.name in seen:
            raise ContractError(
                contract.path,
                "name",
                f"source `{contract.name}` is already defined in {seen[contract.name]}",
            )
        seen[contract.name] = contract.path
    contracts += [child for c in contracts for child in child_contracts(c)]
    by_name = {c.name: c for c in contracts}
    contracts = [_resolve_subjects(c, by_name) for c in contracts]
    by_name = {c.name: c for c in contracts}
    for contract in contracts:
        _check_references(contract, by_name)
    return sorted(contracts, key=lambda c: c.name)


def _resolve_subjects(contract: Contract, by_name: Mapping[str, Contract]) -> Contract:
    """The contract with every column referencing a subject's key marked as that subject's."""
    columns = []
    for i, col in enumerate(contract.columns):
        ref, subject = col.references, col.subject
        if ref is not None and subject is None:
            target = by_name.get(ref.table)
            if target is not None and target.subject == ref.column:
                subject = target.name
        if subject is not None and by_name.get(subject, contract).subject is None:
            raise ContractError(
                contract.path,
                f"columns[{i}].subject",
                f"source `{subject}` declares no `subject:` (a key column naming its subjects)",
            )
        pii = col.pii if col.is_pii or subject is None else "identifier"
        columns.append(replace(col, subject=subject, pii=pii))
    return replace(contract, columns=tuple(columns))


def load_contract(path: str | Path) -> Contract:
    """Load and validate one contract file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(path, "<yaml>", f"not valid YAML: {exc}") from exc
    return parse_contract(raw, path)


def parse_contract(raw: Any, path: str | Path = "<contract>") -> Contract:
    """Validate a contract given as a mapping (the parsed YAML)."""
    reader = _Reader(path)
    if not isinstance(raw, dict):
        raise ContractError(path, "<root>", "a contract is a mapping of fields")
    reader.unknown(
        raw,
        "",
        {
            "name",
            "description",
            "owner",
            "format",
            "primary_key",
            "event_time",
            "dated_by",
            "ordering",
            "schema_drift",
            "columns",
            "checks",
            "freshness",
            "retention",
            "deprecated",
            "arrival",
            "since",
            "delivery",
            "source",
            "subject",
            "explode",
        },
    )
    name = reader.name(raw, "name")
    columns = tuple(reader.column(c, i) for i, c in enumerate(reader.list(raw, "columns")))
    subject = raw.get("subject")
    if subject is not None:
        if subject not in {c.silver_name for c in columns}:
            raise ContractError(path, "subject", f"`{subject}` is not a column of the contract")
        columns = tuple(
            replace(c, subject=name, pii=c.pii if c.is_pii else "identifier")
            if c.silver_name == subject
            else c
            for c in columns
        )
    if not columns:
        raise ContractError(path, "columns", "a contract needs at least one column")
    for attr, what in (("name", "landed"), ("silver_name", "silver")):
        seen: set[str] = set()
        for i, col in enumerate(columns):
            value = getattr(col, attr)
            if value in seen:
                field_name = f"columns[{i}].name" if attr == "name" else f"columns[{i}].rename"
                raise ContractError(path, field_name, f"{what} column `{value}` is named twice")
            seen.add(value)
    silver = {c.silver_name: c for c in columns}

    if "primary_key" not in raw or not raw["primary_key"]:
        raise ContractError(path, "primary_key", "a primary key is required (a column or a list)")
    pk = raw["primary_key"]
    pk = (pk,) if isinstance(pk, str) else tuple(pk)
    for key in pk:
        if key not in silver:
            raise ContractError(path, "primary_key", f"`{key}` is not a column of the contract")
        if silver[key].nullable:
            raise ContractError(
                path, "primary_key", f"key column `{key}` must be `nullable: false`"
            )

    event_time = raw.get("event_time")
    if event_time is not None:
        if event_time not in silver:
            raise ContractError(
                path, "event_time", f"`{event_time}` is not a column of the contract"
            )
        if silver[event_time].type not in TEMPORAL_TYPES:
            raise ContractError(
                path, "event_time", f"`{event_time}` must be of type date, datetime or timestamp"
            )
        if silver[event_time].nullable:
            raise ContractError(path, "event_time", f"`{event_time}` must be `nullable: false`")
    dated_by = raw.get("dated_by")
    if dated_by is not None:
        if event_time is not None:
            raise ContractError(
                path, "dated_by", "a source with `event_time` is dated by it: drop one of the two"
            )
        if dated_by not in silver or silver[dated_by].references is None:
            raise ContractError(
                path, "dated_by", f"`{dated_by}` must be a column of the contract with `references`"
            )
        if silver[dated_by].nullable:
            raise ContractError(path, "dated_by", f"`{dated_by}` must be `nullable: false`")
    ordering = raw.get("ordering")
    if ordering is not None and ordering not in silver:
        raise ContractError(path, "ordering", f"`{ordering}` is not a column of the contract")

    drift = raw.get("schema_drift", "rescue")
    if drift not in DRIFT_POLICIES:
        raise ContractError(
            path, "schema_drift", f"`{drift}` is not one of {', '.join(DRIFT_POLICIES)}"
        )
    if drift == "evolve" and any(c.is_pii for c in columns):
        raise ContractError(
            path,
            "schema_drift",
            "`evolve` would publish new, unclassified columns in clear beside this contract's PII "
            "columns: use `rescue` (their values pseudonymised in `_rescued`) or `freeze`",
        )

    freshness = raw.get("freshness") or {}
    reader.unknown(freshness, "freshness.", {"fail_after", "warn_after"})
    retention = parse_retention(raw.get("retention"), path, event_time=event_time)

    since = raw.get("since")
    if since is not None:
        try:
            since = date.fromisoformat(str(since)).isoformat()
        except ValueError:
            raise ContractError(path, "since", f"`{since}` is not a date (YYYY-MM-DD)") from None

    source = parse_source(raw.get("source"), path)
    delivery = raw.get("delivery", source.delivery if source else "events")
    if source is not None and delivery != source.delivery:
        raise ContractError(
            path, "delivery", f"source mode `{source.mode}` lands `{source.delivery}` deliveries"
        )
    fmt = raw.get("format") or ({"type": "parquet"} if source else {})
    if source is not None and fmt.get("type") != "parquet":
        raise ContractError(path, "format.type", f"a `{source.kind}` source lands parquet files")
    if delivery not in DELIVERIES:
        raise ContractError(path, "delivery", f"`{delivery}` is not one of {', '.join(DELIVERIES)}")

    return Contract(
        name=name,
        since=since,
        delivery=delivery,
        description=reader.text(raw, "description"),
        owner=reader.text(raw, "owner"),
        columns=columns,
        primary_key=pk,
        path=str(path),
        format=reader.file_format(fmt),
        source=source,
        event_time=event_time,
        dated_by=dated_by,
        ordering=ordering,
        schema_drift=drift,
        checks=reader.batch_checks(
            raw.get("checks") or {}, {n for c in columns for n in (c.name, c.silver_name)}
        ),
        freshness_fail_after=reader.duration(freshness, "fail_after", "freshness.fail_after"),
        freshness_warn_after=reader.duration(freshness, "warn_after", "freshness.warn_after"),
        retention=retention,
        deprecated=parse_deprecation(raw.get("deprecated"), path),
        arrival=_arrival(raw.get("arrival"), reader),
        subject=subject,
        explode=parse_explode(raw.get("explode"), path),
        shape=_shape(columns),
    )


def _shape(columns: tuple[Column, ...]) -> Shape:
    paths = tuple((c.name, c.path) for c in columns if c.path)
    roots = {p.partition(".")[0] for _, p in paths}
    return Shape(paths=paths, drop=tuple(sorted(roots - {c.name for c in columns})))


def child_contracts(parent: Contract) -> list[Contract]:
    """The child sources of `parent`'s `explode:` arrays (`core.nested`)."""
    children = []
    for i, item in enumerate(parent.explode):
        reader = _Reader(parent.path)
        keys = [replace(parent.column(k), references=None) for k in parent.primary_key]
        auto = [
            Column(
                PARENT_ROW, "int64", nullable=False, description="The record's row in its file."
            ),
            Column(ARRAY_INDEX, "int64", nullable=False, description="The element's position."),
        ]
        own = [reader.column(c, j) for j, c in enumerate(item.columns)]
        own = [c if c.path else replace(c, path=c.name) for c in own]
        columns = (*keys, *auto, *own)
        known = {c.silver_name for c in columns}
        for key in item.primary_key:
            if key not in known:
                raise ContractError(
                    parent.path, f"explode[{i}].primary_key", f"`{key}` is not a child column"
                )
        children.append(
            replace(
                parent,
                name=f"{parent.name}__{item.name}",
                description=f"{parent.description} One row per element of `{item.array}`.",
                columns=columns,
                primary_key=(*parent.primary_key, *item.primary_key),
                event_time=parent.event_time if parent.event_time in parent.primary_key else None,
                dated_by=None,
                ordering=None,
                explode=(),
                parent=parent.name,
                shape=Shape(
                    paths=tuple((c.name, c.path or c.name) for c in keys),
                    array=item.array,
                    element_paths=tuple((c.name, c.path) for c in own if c.path),
                ),
            )
        )
    return children


def _arrival(raw: Any, reader: _Reader) -> Arrival | None:
    """`arrival: {expected_by: "06:00", timezone: Europe/Paris, grace: 15m}`."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise reader.fail("arrival", "must be a mapping with `expected_by`")
    reader.unknown(raw, "arrival.", {"expected_by", "timezone", "grace"})
    if isinstance(raw.get("expected_by"), int):  # YAML 1.1 reads an unquoted 06:00 as 360
        raise reader.fail("arrival.expected_by", 'write the time in quotes, e.g. "06:00"')
    try:
        expected_by = time.fromisoformat(
            str(reader.text(raw, "expected_by", "arrival.expected_by"))
        )
    except ValueError:
        raise reader.fail(
            "arrival.expected_by", f"`{raw['expected_by']}` is not a time like `06:00`"
        ) from None
    zone = str(raw.get("timezone") or "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise reader.fail(
            "arrival.timezone", f"`{zone}` is not a time zone (e.g. `Europe/Paris`)"
        ) from None
    grace = reader.duration(raw, "grace", "arrival.grace") or timedelta(0)
    return Arrival(expected_by, zone, grace)


def _check_references(contract: Contract, by_name: Mapping[str, Contract]) -> None:
    if contract.dated_by is not None:
        ref = contract.column(contract.dated_by).references
        assert ref is not None  # parse_contract checked it
        target = by_name.get(ref.table)
        if target is not None and (
            target.event_time is None or target.primary_key != (ref.column,)
        ):
            raise ContractError(
                contract.path,
                "dated_by",
                f"`{contract.dated_by}` references `{ref.table}.{ref.column}`: dating by it needs "
                f"`{ref.table}` to have an `event_time` and `{ref.column}` as its whole primary key",
            )
    for i, col in enumerate(contract.columns):
        ref = col.references
        if ref is None:
            continue
        target = by_name.get(ref.table)
        if target is None:
            raise ContractError(
                contract.path, f"columns[{i}].references", f"source `{ref.table}` has no contract"
            )
        if ref.column not in target.silver_columns:
            raise ContractError(
                contract.path,
                f"columns[{i}].references",
                f"`{ref.table}` has no column `{ref.column}`",
            )
        if target.column(ref.column).is_pii and target.column(ref.column).subject is None:
            raise ContractError(
                contract.path,
                f"columns[{i}].references",
                f"`{ref.table}.{ref.column}` is PII (pseudonymised in silver): not a key to check",
            )


class _Reader:
    """Typed field access that turns every problem into a ContractError naming the field."""

    def __init__(self, path: str | Path) -> None:
        self.path = path

    def fail(self, field_name: str, problem: str) -> ContractError:
        return ContractError(self.path, field_name, problem)

    def unknown(self, raw: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        if not isinstance(raw, Mapping):
            raise self.fail(prefix.rstrip(".") or "<root>", "must be a mapping")
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    f"{prefix}{key}", f"unknown field; allowed here: {', '.join(sorted(allowed))}"
                )

    def text(self, raw: Mapping[str, Any], key: str, field_name: str | None = None) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field_name or key, "is required and must be a non-empty string")
        return value.strip()

    def name(self, raw: Mapping[str, Any], key: str, field_name: str | None = None) -> str:
        value = self.text(raw, key, field_name)
        if not _NAME.match(value):
            raise self.fail(
                field_name or key, f"`{value}` must be lowercase letters, digits and underscores"
            )
        return value

    def list(self, raw: Mapping[str, Any], key: str) -> list[Any]:
        value = raw.get(key)
        if not isinstance(value, list):
            raise self.fail(key, "is required and must be a list")
        return value

    def duration(self, raw: Mapping[str, Any], key: str, field_name: str) -> timedelta | None:
        if raw.get(key) is None:
            return None
        try:
            return parse_duration(raw[key])
        except ValueError as exc:
            raise self.fail(field_name, str(exc)) from exc

    def column(self, raw: Any, i: int) -> Column:
        where = f"columns[{i}]"
        if not isinstance(raw, Mapping):
            raise self.fail(where, "a column is a mapping with at least `name` and `type`")
        self.unknown(
            raw,
            f"{where}.",
            {
                "name",
                "type",
                "nullable",
                "description",
                "pii",
                "rename",
                "format",
                "checks",
                "references",
                "on_missing",
                "null_values",
                "subject",
                "path",
            },
        )
        name = self.text(raw, "name", f"{where}.name")
        type_name = self.text(raw, "type", f"{where}.type")
        try:
            polars_type(type_name)
        except ValueError:
            raise self.fail(
                f"{where}.type", f"unknown type `{type_name}`; types are {', '.join(TYPE_NAMES)}"
            ) from None
        rename = raw.get("rename")
        if rename is not None:
            rename = self.name(raw, "rename", f"{where}.rename")
        elif not _NAME.match(name):
            raise self.fail(
                f"{where}.name", f"`{name}` is not a valid silver column name; add `rename:`"
            )
        nullable = raw.get("nullable", True)
        if not isinstance(nullable, bool):
            raise self.fail(f"{where}.nullable", "must be true or false")
        pii = raw.get("pii", "none")
        if pii not in PII_CLASSES:
            raise self.fail(f"{where}.pii", f"`{pii}` is not one of {', '.join(PII_CLASSES)}")
        checks = raw.get("checks") or {}
        self.unknown(checks, f"{where}.checks.", set(COLUMN_CHECKS))
        if "str_matches" in checks:
            try:
                re.compile(checks["str_matches"])
            except re.error as exc:
                raise self.fail(f"{where}.checks.str_matches", f"invalid regex: {exc}") from None
        if "isin" in checks and not isinstance(checks["isin"], list):
            raise self.fail(f"{where}.checks.isin", "must be a list of allowed values")
        fmt = raw.get("format")
        if fmt is not None:
            if type_name not in TEMPORAL_TYPES:
                raise self.fail(
                    f"{where}.format",
                    f"applies to {', '.join(TEMPORAL_TYPES)} columns, not `{type_name}`",
                )
            if not isinstance(fmt, str) or "%" not in fmt:
                raise self.fail(
                    f"{where}.format", f"`{fmt}` must be a strftime pattern like `%d/%m/%Y %H:%M`"
                )
        on_missing = raw.get("on_missing")
        if on_missing is not None and raw.get("references") is None:
            raise self.fail(f"{where}.on_missing", "applies only to a column with `references`")
        if on_missing is not None and on_missing not in ON_MISSING:
            raise self.fail(
                f"{where}.on_missing", f"`{on_missing}` is not one of {', '.join(ON_MISSING)}"
            )
        references = None
        if raw.get("references") is not None:
            ref = str(raw["references"])
            if ref.count(".") != 1 or not all(ref.split(".")):
                raise self.fail(f"{where}.references", f"`{ref}` must be `<source>.<column>`")
            table, column = ref.split(".")
            references = Reference(table, column, on_missing or "quarantine")
        return Column(
            name=name,
            type=type_name,
            nullable=nullable,
            description=str(raw.get("description") or ""),
            pii=pii,
            rename=rename,
            format=raw.get("format"),
            checks=dict(checks),
            references=references,
            null_values=self.null_values(raw, f"{where}.null_values", ()),
            subject=self.name(raw, "subject", f"{where}.subject") if raw.get("subject") else None,
            path=check_path(raw["path"], f"{where}.path", self.path) if "path" in raw else None,
        )

    def file_format(self, raw: Mapping[str, Any]) -> FileFormat:
        self.unknown(raw, "format.", {"type", "delimiter", "quote_char", "null_values"})
        kind = raw.get("type", "csv")
        if kind not in FORMATS:
            raise self.fail("format.type", f"`{kind}` is not one of {', '.join(FORMATS)}")
        return FileFormat(
            type=kind,
            delimiter=str(raw.get("delimiter", ",")),
            quote_char=str(raw.get("quote_char", '"')),
            null_values=self.null_values(raw, "format.null_values", DEFAULT_NULL_VALUES),
        )

    def null_values(
        self, raw: Mapping[str, Any], field_name: str, base: tuple[str, ...]
    ) -> tuple[str, ...]:
        """`base` plus the listed null tokens (strings), in order, each once."""
        value = raw.get("null_values")
        if value is None:
            return base
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(field_name, 'must be a list of strings, e.g. ["NA", "N/A"]')
        return tuple(dict.fromkeys((*base, *value)))

    def batch_checks(self, raw: Mapping[str, Any], columns: set[str] | None = None) -> BatchChecks:
        self.unknown(
            raw, "checks.", {"max_quarantine_ratio", "volume", "files_rejected", "anomalies"}
        )
        rejected = raw.get("files_rejected", BatchChecks.files_rejected)
        if rejected not in ("warn", "block"):
            raise self.fail("checks.files_rejected", f"`{rejected}` is not one of: warn, block")
        ratio = raw.get("max_quarantine_ratio", BatchChecks.max_quarantine_ratio)
        if not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise self.fail("checks.max_quarantine_ratio", "must be a number between 0 and 1")
        volume = raw.get("volume") or {}
        self.unknown(volume, "checks.volume.", {"min_ratio", "max_ratio", "window"})
        return BatchChecks(
            max_quarantine_ratio=float(ratio),
            volume_min_ratio=volume.get("min_ratio"),
            volume_max_ratio=volume.get("max_ratio"),
            volume_window=int(volume.get("window", 7)),
            files_rejected=rejected,
            anomalies=self.anomalies(raw.get("anomalies"), columns),
        )

    def anomalies(self, raw: Any, known: set[str] | None = None) -> Anomalies | None:
        """`checks.anomalies`: `warn`, `block`, or a mapping of `Anomalies` fields."""
        if raw is None or raw is False:
            return None
        if raw in ("warn", "block"):
            return Anomalies(on_fail=raw)
        if raw is True:
            return Anomalies()
        if not isinstance(raw, Mapping):
            raise self.fail("checks.anomalies", "must be warn, block or a mapping")
        self.unknown(
            raw, "checks.anomalies.", {"on_fail", "weeks", "min_weeks", "max_z", "columns"}
        )
        on_fail = raw.get("on_fail", "warn")
        if on_fail not in ("warn", "block"):
            raise self.fail("checks.anomalies.on_fail", f"`{on_fail}` is not one of: warn, block")
        for name in ("weeks", "min_weeks"):
            value = raw.get(name, getattr(Anomalies, name))
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise self.fail(f"checks.anomalies.{name}", "must be a whole number of weeks >= 1")
        weeks, min_weeks = raw.get("weeks", Anomalies.weeks), raw.get("min_weeks", 3)
        if min_weeks > weeks:
            raise self.fail("checks.anomalies.min_weeks", f"must not exceed weeks ({weeks})")
        max_z = raw.get("max_z", Anomalies.max_z)
        if not isinstance(max_z, int | float) or isinstance(max_z, bool) or max_z <= 0:
            raise self.fail("checks.anomalies.max_z", "must be a positive number")
        columns = raw.get("columns") or []
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise self.fail("checks.anomalies.columns", "must be a list of column names")
        unknown = [c for c in columns if known is not None and c not in known]
        if unknown:
            raise self.fail(
                "checks.anomalies.columns", f"`{unknown[0]}` is not a column of the contract"
            )
        return Anomalies(on_fail, weeks, min_weeks, float(max_z), tuple(columns))
