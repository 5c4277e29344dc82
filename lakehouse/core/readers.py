"""Parse landing files into frames of strings, values exactly as landed.

Bronze keeps what arrived; typing happens in silver under the contract. Every reader returns a
LazyFrame whose columns are all `String`, plus `_row_number` (1-based data row in the file).

A line that cannot be parsed (wrong field count, unclosed quote, invalid UTF-8, a broken JSON
record) does not sink its file: it becomes a row whose landed columns are null, with the line as
delivered in `_raw_line` and the reason in `_parse_error` (both columns exist only when the file
has such a line). Silver quarantines those rows. A file that cannot be read at all (binary
content, broken compression, wrong format, mostly unparseable) raises `LandingFileError`.

Clean files take the fast path: a streaming count of bytes (or, for files with quotes, one
vectorised pass over the lines) proves every line has the header's field count and balanced
quotes, then polars scans the file. Only a file with a suspicious line (or a blank one, which
polars would read as a row of nulls) is parsed record by record in Python, blank lines skipped.
`landed_groups` does the same for many files at once: their lines are checked in one vectorised
pass, and clean files sharing a header are read by one scan, a few hundred files per query.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from lakehouse.core.contract import FileFormat
from lakehouse.core.errors import LandingFileError

ROW_NUMBER = "_row_number"
RAW_LINE = "_raw_line"
PARSE_ERROR = "_parse_error"
FILE_COLUMN = "_landed_file"
"""The local path of a row's file, in frames of `landed_groups` (several files per query)."""
READER_COLUMNS = (ROW_NUMBER, RAW_LINE, PARSE_ERROR, FILE_COLUMN)
"""Columns a reader adds; every other column of its frame is a landed column."""

MAX_QUOTED_LINES = 100
"""A quoted field may span at most this many physical lines before its quote counts as unclosed."""
_SNIFF_BYTES = 8192
_CHUNK_BYTES = 8 * 1024 * 1024
_FILES_PER_SCAN = 256


@contextmanager
def landed_frame(
    path: Path,
    fmt: FileFormat,
    *,
    display_path: str,
    columns: Sequence[str] | None = None,
) -> Iterator[pl.LazyFrame]:
    """Yield the file's rows as strings; a file that cannot be read raises LandingFileError.

    Gzip files (`*.gz`) are decompressed to a temporary file first so the scan still streams.
    `columns` (the contract's landed columns) lets a CSV whose header shares none of them be
    rejected as the wrong format instead of loading rows no rule could ever accept.
    """
    with _decompressed(path, display_path) as plain:
        if fmt.type != "parquet":
            _reject_binary(plain, display_path)
        try:
            if fmt.type == "csv":
                frame = _read_csv(plain, fmt, display_path, columns)
            elif fmt.type == "ndjson":
                frame = _read_ndjson(plain, display_path)
            else:
                frame = _scan(plain, fmt)
            frame.collect_schema()
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            raise LandingFileError(display_path, _reason(exc)) from exc
        yield frame


@dataclass(frozen=True)
class LandedGroup:
    """Landed files read by one query: their rows, each tagged with its file in FILE_COLUMN."""

    paths: tuple[Path, ...]
    frame: pl.LazyFrame
    fmt: FileFormat

    def split(self) -> list[LandedGroup]:
        """One group per file: a query that fails mid-file is retried to find the file."""
        if len(self.paths) == 1:
            return [self]
        return [LandedGroup((p,), _tagged(_scan(p, self.fmt), p), self.fmt) for p in self.paths]


@contextmanager
def landed_groups(
    files: Sequence[tuple[Path, str]],
    fmt: FileFormat,
    *,
    columns: Sequence[str] | None = None,
) -> Iterator[tuple[list[LandedGroup], dict[Path, LandingFileError]]]:
    """`landed_frame` over many (path, display path) files: groups of frames, and rejections.

    Plain CSV files whose lines all check out (one vectorised pass over all of them) are read
    a few hundred per query when they share a header: per-file queries would cost more in
    overhead than thousands of small daily files cost in work. Every other file is a group of
    its own, read by `landed_frame`.
    """
    shared: dict[tuple[str, ...], list[Path]] = {}
    rejected: dict[Path, LandingFileError] = {}
    if fmt.type == "csv":
        headers: dict[Path, list[str]] = {}
        for path, display_path in files:
            if path.suffix != ".gz":
                try:
                    header = _csv_header(path, fmt, display_path)
                    _check_header(header, columns, display_path)
                except (LandingFileError, OSError):
                    continue  # read alone: landed_frame rejects it with the reason
                headers[path] = header
        clean = _clean_files(list(headers), fmt, {p: len(h) for p, h in headers.items()})
        for path in clean:
            shared.setdefault(tuple(headers[path]), []).append(path)
    groups: list[LandedGroup] = []
    for paths in shared.values():
        for i in range(0, len(paths), _FILES_PER_SCAN):
            chunk = tuple(paths[i : i + _FILES_PER_SCAN])
            groups.append(LandedGroup(chunk, _scan_many(chunk, fmt), fmt))
    proven = {p for group in groups for p in group.paths}
    with ExitStack() as stack:
        for path, display_path in files:
            if path in proven:
                continue
            try:
                frame = stack.enter_context(
                    landed_frame(path, fmt, display_path=display_path, columns=columns)
                )
            except LandingFileError as exc:
                rejected[path] = exc
            else:
                groups.append(LandedGroup((path,), _tagged(frame, path), fmt))
        yield groups, rejected


def _tagged(frame: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    return frame.with_columns(pl.lit(str(path)).alias(FILE_COLUMN))


def _scan_many(paths: Sequence[Path], fmt: FileFormat) -> pl.LazyFrame:
    """One scan of clean CSV files sharing a header; row numbers count within each file.

    Clean files have one record per line and no blank line, so a file's n-th row is its n-th
    data line, as a one-file scan numbers it.
    """
    return (
        pl.scan_csv(
            list(paths),
            infer_schema=False,
            separator=fmt.delimiter,
            quote_char=fmt.quote_char or None,
            null_values=list(fmt.null_values),
            include_file_paths=FILE_COLUMN,
            raise_if_empty=True,
        )
        .with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(FILE_COLUMN).alias(ROW_NUMBER)
        )
        .select(ROW_NUMBER, pl.exclude(ROW_NUMBER))
    )


@contextmanager
def _decompressed(path: Path, display_path: str) -> Iterator[Path]:
    if path.suffix != ".gz":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="lakehouse-gunzip-") as tmp:
        plain = Path(tmp) / path.stem
        try:
            with gzip.open(path, "rb") as src, plain.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=8 * 1024 * 1024)
        except (OSError, EOFError) as exc:
            raise LandingFileError(display_path, f"broken gzip compression: {exc}") from exc
        yield plain


def _reject_binary(path: Path, display_path: str) -> None:
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head.strip():
        raise LandingFileError(display_path, "the file is empty")
    if b"\x00" in head:
        raise LandingFileError(display_path, "binary content (NUL bytes): not a text file")


def _scan(path: Path, fmt: FileFormat) -> pl.LazyFrame:
    kind = fmt.type
    if kind == "csv":
        return pl.scan_csv(
            path,
            infer_schema=False,
            separator=fmt.delimiter,
            quote_char=fmt.quote_char or None,
            null_values=list(fmt.null_values),
            row_index_name=ROW_NUMBER,
            row_index_offset=1,
            raise_if_empty=True,
        )
    if kind == "parquet":
        frame = pl.scan_parquet(path)
    elif kind == "ndjson":
        frame = pl.scan_ndjson(path, infer_schema_length=None)
    else:  # a JSON array of records
        frame = pl.read_json(path).lazy()
    return frame.select(pl.all().cast(pl.String)).with_row_index(ROW_NUMBER, offset=1)


# --- CSV ----------------------------------------------------------------------------------------


def _read_csv(
    path: Path, fmt: FileFormat, display_path: str, columns: Sequence[str] | None
) -> pl.LazyFrame:
    header = _csv_header(path, fmt, display_path)
    _check_header(header, columns, display_path)
    if _csv_is_clean(path, fmt, len(header)):
        return _scan(path, fmt)
    parsed = _parse_csv_carefully(path, fmt, header)
    parsed.reject_if_mostly_bad(display_path, "csv")
    return parsed.frame(header)


def _csv_header(path: Path, fmt: FileFormat, display_path: str) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline().rstrip(b"\r\n")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandingFileError(display_path, f"the header is not valid UTF-8: {exc}") from exc
    header = next(csv.reader([text], delimiter=fmt.delimiter, quotechar=fmt.quote_char or '"'))
    if not header or not any(h.strip() for h in header):
        raise LandingFileError(display_path, "the header line is empty")
    if len(set(header)) != len(header):
        raise LandingFileError(display_path, "the header names a column twice")
    return header


def _check_header(header: list[str], columns: Sequence[str] | None, display_path: str) -> None:
    if columns and not set(header) & set(columns):
        shown = ", ".join(f"`{c}`" for c in header[:5])
        raise LandingFileError(
            display_path,
            f"header ({shown}) has none of the contract's columns: wrong format or no header",
        )


def _csv_is_clean(path: Path, fmt: FileFormat, n_fields: int) -> bool:
    """Whether every line has the header's field count and balanced quotes (and valid UTF-8).

    Without quotes, byte counts settle it: the delimiters must number exactly `n_fields - 1`
    per line (a short line cannot hide, and polars rejects a long one). Otherwise, or when the
    counts disagree (a blank line, say), one vectorised pass over the lines decides.
    """
    counts = _byte_counts(path, fmt)
    if counts is None:
        return False
    lines, delimiters, quotes = counts
    if not quotes and n_fields > 1 and delimiters == (n_fields - 1) * lines:
        return True
    return path in _clean_files([path], fmt, {path: n_fields})


def _byte_counts(path: Path, fmt: FileFormat) -> tuple[int, int, int] | None:
    """(lines, delimiters, quote chars) in one streaming pass; None if the file is not UTF-8."""
    delimiter = fmt.delimiter.encode()
    quote = fmt.quote_char.encode() if fmt.quote_char else None
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = delimiters = quotes = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            try:
                if not chunk.isascii() or decoder.getstate()[0]:
                    decoder.decode(chunk)
            except UnicodeDecodeError:
                return None
            lines += chunk.count(b"\n")
            delimiters += chunk.count(delimiter)
            quotes += chunk.count(quote) if quote else 0
            last = chunk[-1:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    if not last.endswith(b"\n"):
        lines += 1
    return lines, delimiters, quotes


def _clean_files(paths: Sequence[Path], fmt: FileFormat, n_fields: dict[Path, int]) -> set[Path]:
    """The files among `paths` whose every line has its header's field count and balanced quotes.

    One vectorised pass over all the files' lines (a chunk of files per query: a query costs
    more in overhead than a small daily file costs in work). Only lines with a quote or an
    unexpected delimiter count are looked at one by one. A chunk that is not all valid UTF-8 is
    retried file by file, so one bad file does not cost the others their fast path.
    """
    clean: set[Path] = set()
    for i in range(0, len(paths), _FILES_PER_SCAN):
        chunk = list(paths[i : i + _FILES_PER_SCAN])
        suspects = _suspect_lines(chunk, fmt, n_fields)
        if suspects is None:
            if len(chunk) > 1:
                for path in chunk:
                    clean |= _clean_files([path], fmt, n_fields)
            continue
        for path in chunk:
            lines = suspects.get(str(path))
            if lines is None or _suspects_are_clean(lines, fmt, n_fields[path]):
                clean.add(path)
    return clean


def _suspect_lines(
    paths: list[Path], fmt: FileFormat, n_fields: dict[Path, int]
) -> dict[str, pl.DataFrame] | None:
    """Per file, its lines that may not have the header's field count (None: not UTF-8).

    That is a line with no content, an unquoted line with the wrong delimiter count, or a line
    with quotes that is not plainly a row of unquoted and wholly quoted fields of the right count.

    Header lines are included: a header's own field count is the expected one, so it is only a
    suspect when quoted, and then it passes the field count like any quoted line.
    """
    line = pl.col("line")
    expected = pl.col("path").replace_strict(
        {str(p): n_fields[p] - 1 for p in paths}, return_dtype=pl.Int64
    )
    delimiters = line.str.count_matches(fmt.delimiter, literal=True)
    if fmt.quote_char:
        quotes = line.str.count_matches(fmt.quote_char, literal=True)
        # A line whose every field is either unquoted or wholly quoted parses as csv.reader
        # would read it; with the quoted parts removed, its delimiters count its fields.
        q, d = _regex_char(fmt.quote_char), _regex_char(fmt.delimiter)
        quoted = f"{q}(?:[^{q}]|{q}{q})*{q}"
        field = f"(?:[^{q}{d}]*|{quoted})"
        settled = line.str.contains(f"^{field}(?:{d}{field})*$") & (
            line.str.replace_all(quoted, "").str.count_matches(fmt.delimiter, literal=True)
            == expected
        )
        odd = (quotes > 0) & ~settled
    else:
        quotes, odd = pl.lit(0), pl.lit(False)
    try:
        suspect = (
            pl.scan_lines(paths, include_file_paths="path")
            .with_columns(line.str.strip_chars_end("\r"))
            .filter(
                odd | ((quotes == 0) & (delimiters != expected)) | (line.str.strip_chars() == "")
            )
            .select("path", "line", quotes.alias("q"))
            .collect()
        )
    except pl.exceptions.PolarsError:  # invalid UTF-8 somewhere
        return None
    return {path: lines for (path,), lines in suspect.group_by("path")}


def _regex_char(char: str) -> str:
    return char if char.isalnum() or char.isspace() else "\\" + char


def _suspects_are_clean(suspect: pl.DataFrame, fmt: FileFormat, n_fields: int) -> bool:
    if (suspect.get_column("q") == 0).any() or (suspect.get_column("q") % 2 == 1).any():
        return False  # a wrong field count, an unbalanced quote, or a blank line
    # Quoted lines may hold delimiters inside quotes: count their fields properly.
    reader = csv.reader(
        suspect.get_column("line").to_list(),
        delimiter=fmt.delimiter,
        quotechar=fmt.quote_char,
        strict=True,
    )
    try:
        return all(len(fields) == n_fields for fields in reader)
    except csv.Error:
        return False


@dataclass
class _Parsed:
    """Records of one file parsed one by one: good rows and unparseable lines."""

    rows: list[dict[str, str | None]]
    row_numbers: list[int]
    bad: list[tuple[int, str, str]]
    """(row number, raw line, reason) of each line that could not be parsed."""

    def reject_if_mostly_bad(self, display_path: str, kind: str) -> None:
        total = len(self.rows) + len(self.bad)
        if len(self.bad) >= 2 and len(self.bad) * 2 > total:
            raise LandingFileError(
                display_path,
                f"{len(self.bad)} of {total} records cannot be parsed "
                f"(first: {self.bad[0][2]}): not a {kind} file",
            )

    def frame(self, columns: Sequence[str]) -> pl.LazyFrame:
        good = pl.DataFrame(
            {
                ROW_NUMBER: self.row_numbers,
                **{c: [r.get(c) for r in self.rows] for c in columns},
            },
            schema={ROW_NUMBER: pl.Int64, **dict.fromkeys(columns, pl.String)},
        )
        frames = [good]
        if self.bad:
            frames.append(
                pl.DataFrame(
                    self.bad,
                    schema={ROW_NUMBER: pl.Int64, RAW_LINE: pl.String, PARSE_ERROR: pl.String},
                    orient="row",
                )
            )
        return pl.concat(frames, how="diagonal").sort(ROW_NUMBER).lazy()


def _parse_csv_carefully(path: Path, fmt: FileFormat, header: list[str]) -> _Parsed:
    quote = fmt.quote_char
    nulls = set(fmt.null_values)
    lines = path.read_bytes().split(b"\n")
    parsed = _Parsed([], [], [])
    i, row = 1, 0
    while i < len(lines):
        raw = lines[i].rstrip(b"\r")
        if not raw.strip():
            i += 1
            continue
        row += 1
        text = _decode(raw)
        if text is None:
            parsed.bad.append((row, _shown(raw), "invalid UTF-8"))
            i += 1
            continue
        end = i
        if quote:  # a quoted field may span lines: join until the quotes balance
            while (
                text.count(quote) % 2 == 1 and end + 1 < len(lines) and end - i < MAX_QUOTED_LINES
            ):
                following = _decode(lines[end + 1].rstrip(b"\r"))
                if following is None:
                    break
                end += 1
                text += "\n" + following
        fields, reason = _split_record(text, fmt, len(header))
        if reason is not None and end > i:  # joining did not help: the first line is the defect
            end = i
            text = _decode(raw) or ""
            reason = "unclosed quote"
        if reason is not None:
            parsed.bad.append((row, text, reason))
            i = end + 1
            continue
        parsed.rows.append(
            {h: (None if v in nulls else v) for h, v in zip(header, fields, strict=True)}
        )
        parsed.row_numbers.append(row)
        i = end + 1
    return parsed


def _split_record(text: str, fmt: FileFormat, n_fields: int) -> tuple[list[str], str | None]:
    quote = fmt.quote_char
    if quote and text.count(quote) % 2 == 1:
        return [], "unclosed quote"
    try:
        fields = next(csv.reader([text], delimiter=fmt.delimiter, quotechar=quote, strict=True))
    except csv.Error as exc:
        return [], f"malformed quoting: {exc}"
    if len(fields) != n_fields:
        return fields, f"{len(fields)} fields, the header has {n_fields}"
    return fields, None


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _shown(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


# --- NDJSON -------------------------------------------------------------------------------------


def _read_ndjson(path: Path, display_path: str) -> pl.LazyFrame:
    try:
        frame = _scan(path, FileFormat(type="ndjson"))
        frame.collect_schema()
        frame.select(pl.len()).collect()
        return frame
    except pl.exceptions.PolarsError:
        pass
    parsed = _Parsed([], [], [])
    columns: dict[str, None] = {}
    row = 0
    for raw in path.read_bytes().split(b"\n"):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        row += 1
        text = _decode(raw)
        if text is None:
            parsed.bad.append((row, _shown(raw), "invalid UTF-8"))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            parsed.bad.append((row, text, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(record, dict):
            parsed.bad.append((row, text, "a JSON record must be an object"))
            continue
        columns.update(dict.fromkeys(record))
        parsed.rows.append({k: _json_text(v) for k, v in record.items()})
        parsed.row_numbers.append(row)
    parsed.reject_if_mostly_bad(display_path, "ndjson")
    return parsed.frame(list(columns))


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _reason(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot be parsed: {first_line}"
