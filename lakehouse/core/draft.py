"""Draft a contract from the files landed for a source: `lakehouse contract draft SOURCE`.

The landed files (`<root>/landing/<source>/<YYYY-MM-DD>/`) are read with bronze's readers, so
every value is inferred from exactly the strings silver will type. A type is proposed only if
silver's own cast (`validation.cast_expr`) accepts every landed value of the column, so the
draft materializes as it is. What the files cannot tell (descriptions, the owner, PII) is left
as placeholders marked `# TODO`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from lakehouse.core.contract import Column, FileFormat
from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import LandingFile, fetched, list_landing_files
from lakehouse.core.readers import PARSE_ERROR, READER_COLUMNS, landed_frame
from lakehouse.core.validation import cast_expr

NULL_TOKENS = ("NA", "N/A", "null", "-")
"""Landed values taken for nulls when a column holds them (they go to `format.null_values`)."""
DELIMITERS = (",", ";", "\t", "|")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OFFSET = re.compile(r"(?i)\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}(:?\d{2})?)$")
"""A time with an offset (`...03:04:05Z`, `...03:04+02:00`): a `timestamp`, not a `datetime`."""
_BOOLEAN_WORDS = {"true", "false", "t", "f", "yes", "no", "y", "n"}
_MAX_KEY_PAIR_COLUMNS = 40
"""Key pairs are searched among the first this many candidate columns."""
_PII_HINTS = (
    ("email", "email"),
    ("mail", "email"),
    ("phone", "phone"),
    ("mobile", "phone"),
    ("address", "address"),
    ("street", "address"),
    ("zip", "address"),
    ("postcode", "address"),
    ("first_name", "name"),
    ("last_name", "name"),
    ("full_name", "name"),
    ("name", "name"),
    ("ssn", "identifier"),
    ("passport", "identifier"),
    ("iban", "identifier"),
    ("comment", "free_text"),
    ("note", "free_text"),
    ("text", "free_text"),
)


class DraftError(LakehouseError):
    """A contract cannot be drafted (nothing landed, mixed formats, no key, file exists)."""


@dataclass(frozen=True)
class DraftColumn:
    name: str
    """As landed."""
    silver_name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class Draft:
    source: str
    fmt: FileFormat
    columns: tuple[DraftColumn, ...]
    primary_key: tuple[str, ...]
    primary_key_note: str
    event_time: str | None
    since: str
    files: int
    rows: int

    @property
    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.columns)} columns from {self.files} file(s), "
            f"{self.rows} rows, format {self.fmt.type}, primary key "
            f"[{', '.join(self.primary_key)}], event_time {self.event_time or '-'}, "
            f"since {self.since}"
        )


def snake_case(name: str) -> str:
    """A valid contract column name for a landed name: `Order ID` -> `order_id`."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    if not text:
        text = "column"
    if not text[0].isalpha():
        text = f"c_{text}"
    return text


def file_format(files: Sequence[LandingFile]) -> str:
    """The format of the landed files, by extension (`.gz` stripped); all must agree."""
    kinds: dict[str, str] = {}
    for file in files:
        name = file.name.lower().removesuffix(".gz")
        kind = _EXTENSIONS.get(Path(name).suffix)
        if kind is None:
            raise DraftError(
                f"{file.relative_path}: unknown extension; expected one of "
                f"{', '.join(sorted(_EXTENSIONS))} (optionally .gz)"
            )
        kinds.setdefault(kind, file.relative_path)
    if len(kinds) > 1:
        shown = ", ".join(f"{k} ({p})" for k, p in kinds.items())
        raise DraftError(f"the landed files mix formats: {shown}")
    return next(iter(kinds))


def sniff_delimiter(lines: Sequence[str]) -> str:
    """The delimiter among `,` `;` tab `|` that splits the lines into the most, equal fields."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return ","
    best, best_fields = ",", 0
    for delim in DELIMITERS:
        counts = {_count_outside_quotes(line, delim) for line in lines}
        header = _count_outside_quotes(lines[0], delim)
        if header > best_fields and (len(counts) == 1 or len(lines) == 1):
            best, best_fields = delim, header
    if best_fields == 0:  # no consistent split: the delimiter most frequent in the header
        counts = {d: _count_outside_quotes(lines[0], d) for d in DELIMITERS}
        best = max(DELIMITERS, key=lambda d: counts[d]) if any(counts.values()) else ","
    return best


def _count_outside_quotes(line: str, delim: str) -> int:
    count, quoted = 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == delim and not quoted:
            count += 1
    return count


def _first_lines(path: Path, n: int = 20) -> list[str]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        return [line.rstrip("\r\n") for line in itertools.islice(handle, n)]


def landed_rows(lake: Lake, files: Sequence[LandingFile], fmt: FileFormat) -> pl.DataFrame:
    """Every parseable landed row, all columns strings, across files (columns unioned)."""
    frames = []
    for file in files:
        with (
            fetched(lake, file) as (local, _),
            landed_frame(local, fmt, display_path=file.relative_path) as frame,
        ):
            rows = frame.collect()
        if PARSE_ERROR in rows.columns:
            rows = rows.filter(pl.col(PARSE_ERROR).is_null())
        rows = rows.drop([c for c in READER_COLUMNS if c in rows.columns])
        frames.append(rows.select(pl.all().cast(pl.String)))
    return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()


def infer_type(values: pl.Series) -> str:
    """The narrowest contract type silver's cast accepts for every (non-null) value."""
    values = values.drop_nulls()
    if values.is_empty():
        return "string"
    stripped = values.str.strip_chars()
    lower = set(stripped.str.to_lowercase().unique().to_list())
    if lower <= _BOOLEAN_WORDS and not lower <= {"1", "0"}:
        return "boolean"
    frame = values.to_frame("v")
    for type_name in ("int64", "float64", "date", "timestamp", "datetime"):
        if type_name == "date" and not stripped.str.contains(_DATE.pattern).all():
            continue
        if type_name == "timestamp" and not stripped.str.contains(_OFFSET.pattern).any():
            continue
        cast = frame.select(cast_expr(Column("v", type_name)).alias("t")).get_column("t")
        if cast.null_count() == 0:
            return type_name
    return "string"


def _unique(rows: pl.DataFrame, columns: Sequence[str]) -> bool:
    key = rows.select(columns)
    if key.null_count().sum_horizontal().item() > 0:
        return False
    return key.n_unique() == key.height


def infer(lake: Lake, source: str, *, primary_key: Sequence[str] | None = None) -> Draft:
    """Infer the contract of `source` from every file landed for it."""
    files = list_landing_files(lake, source)
    if not files:
        raise DraftError(f"nothing has landed for `{source}` under {lake.landing_uri(source)}")
    kind = file_format(files)
    delimiter = ","
    if kind == "csv":
        with fetched(lake, files[0]) as (local, _):
            delimiter = sniff_delimiter(_first_lines(local))
    rows = landed_rows(lake, files, FileFormat(type=kind, delimiter=delimiter))
    if not rows.columns:
        raise DraftError(f"the files landed for `{source}` have no columns")

    # Null tokens: empty values are always null; the usual tokens are null where they occur.
    tokens = [
        t
        for t in NULL_TOKENS
        if any(rows.get_column(c).eq(t).any() for c in rows.columns)  # exact, as silver matches
    ]
    nulled = rows.select(
        pl.when(pl.col(c).is_in(["", *tokens])).then(None).otherwise(pl.col(c)).alias(c)
        for c in rows.columns
    )

    silver_names: dict[str, str] = {}
    taken: set[str] = {c for c in rows.columns if _NAME.match(c)}
    for name in rows.columns:
        if _NAME.match(name):
            silver_names[name] = name
            continue
        base = candidate = snake_case(name)
        n = 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        silver_names[name] = candidate

    types = {c: infer_type(nulled.get_column(c)) for c in rows.columns}
    non_null = {c: nulled.get_column(c).null_count() == 0 and rows.height > 0 for c in rows.columns}
    typed = nulled.select(
        cast_expr(Column(c, types[c])).alias(c) for c in rows.columns
    )  # uniqueness as silver sees the keys

    note = ""
    if primary_key:
        by_either = {**{v: k for k, v in silver_names.items()}, **{c: c for c in rows.columns}}
        unknown = [k for k in primary_key if k not in by_either]
        if unknown:
            raise DraftError(
                f"--primary-key: `{'`, `'.join(unknown)}` not among the landed columns "
                f"({', '.join(rows.columns)})"
            )
        key_landed = [by_either[k] for k in primary_key]
        if not _unique(typed, key_landed):
            note = "given with --primary-key; NOT unique and non-null over the landed rows"
        else:
            note = "given with --primary-key; unique and non-null over the landed rows"
    else:
        candidates = [c for c in rows.columns if non_null[c] and types[c] != "float64"]
        key_landed = next(([c] for c in candidates if _unique(typed, [c])), [])
        if not key_landed:
            pairs = itertools.combinations(candidates[:_MAX_KEY_PAIR_COLUMNS], 2)
            key_landed = next((list(p) for p in pairs if _unique(typed, list(p))), [])
        if not key_landed:
            raise DraftError(
                f"`{source}`: no column or column pair is unique and non-null over the "
                f"{rows.height} landed rows; pass --primary-key COLS"
            )
        note = "inferred: unique and non-null over the landed rows"

    event_time = next(
        (c for c in rows.columns if types[c] in ("date", "datetime", "timestamp") and non_null[c]),
        None,
    )
    columns = tuple(
        DraftColumn(
            name=c,
            silver_name=silver_names[c],
            type=types[c],
            nullable=not (non_null[c] or c in key_landed or c == event_time),
        )
        for c in rows.columns
    )
    return Draft(
        source=source,
        fmt=FileFormat(type=kind, delimiter=delimiter, null_values=tuple(tokens)),
        columns=columns,
        primary_key=tuple(silver_names[c] for c in key_landed),
        primary_key_note=note,
        event_time=silver_names[event_time] if event_time else None,
        since=files[0].landing_date,
        files=len(files),
        rows=rows.height,
    )


def _q(value: str) -> str:
    """A YAML scalar: plain when safe, else a JSON (= YAML double-quoted) string."""
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value) and value.lower() not in {
        "true", "false", "yes", "no", "on", "off", "null", "y", "n", "none", "~",
    }:  # fmt: skip
        return value
    return json.dumps(value)


def _pii_hint(name: str) -> str:
    lowered = name.lower()
    for word, pii in _PII_HINTS:
        if word in lowered:
            return pii
    return ""


def render(draft: Draft) -> str:
    """The draft as contract YAML, with `# TODO` comments for what the files cannot tell."""
    fmt = draft.fmt
    fmt_parts = [f"type: {fmt.type}"]
    if fmt.type == "csv" and fmt.delimiter != ",":
        fmt_parts.append(f"delimiter: {json.dumps(fmt.delimiter)}")
    if fmt.null_values:
        fmt_parts.append(f"null_values: [{', '.join(json.dumps(v) for v in fmt.null_values)}]")
    lines = [
        f"# Drafted by `lakehouse contract draft {draft.source}` from {draft.files} landed "
        f"file(s), {draft.rows} rows.",
        "# Review every line, above all the TODOs, before you rely on it.",
        f"name: {draft.source}",
        f'description: "TODO: what one row of {draft.source} is"  # TODO: description',
        'owner: "team:TODO"  # TODO: owner, a Dagster owner: team:<name> or an email',
        f"since: {draft.since}  # the earliest landing date",
        f"format: {{{', '.join(fmt_parts)}}}",
        f"primary_key: [{', '.join(_q(k) for k in draft.primary_key)}]  # {draft.primary_key_note}",
    ]
    if draft.event_time:
        lines.append(
            f"event_time: {_q(draft.event_time)}  # the first non-null date/datetime/timestamp"
        )
    else:
        lines.append("# event_time: none (no non-null date, datetime or timestamp column)")
    lines += ["schema_drift: rescue", "columns:"]
    for col in draft.columns:
        parts = [f"name: {_q(col.name)}"]
        if col.silver_name != col.name:
            parts.append(f"rename: {_q(col.silver_name)}")
        parts += [f"type: {col.type}", f"nullable: {'true' if col.nullable else 'false'}"]
        parts += ['description: ""', "pii: none"]
        hint = _pii_hint(col.silver_name)
        pii_todo = f"pii (maybe {hint}?)" if hint else "pii"
        lines.append(f"  - {{{', '.join(parts)}}}  # TODO: description, {pii_todo}")
    lines.append(
        "# TODO pii: one of none, name, email, phone, address, identifier, free_text "
        "(PII columns are pseudonymised in silver)"
    )
    return "\n".join(lines) + "\n"


def draft_contract(lake: Lake, source: str, *, primary_key: Sequence[str] | None = None) -> str:
    """The YAML text of a contract drafted from the files landed for `source`."""
    return render(infer(lake, source, primary_key=primary_key))


def write_draft(
    lake: Lake,
    source: str,
    directory: str | Path,
    *,
    primary_key: Sequence[str] | None = None,
) -> tuple[Path, Draft]:
    """Write the draft to `<directory>/<source>.yaml`; an existing file raises DraftError."""
    path = Path(directory) / f"{source}.yaml"
    if path.exists():
        raise DraftError(f"{path} already exists: not overwritten (remove it or pass --out DIR)")
    draft = infer(lake, source, primary_key=primary_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as out:
        out.write(render(draft))
    return path, draft
