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
pass, and clean files sharing a header are read by one scan, a few hundred files (at most
GROUP_BYTES) per query. Whatever polars fails on when a group is collected (`collected`), the
file is read again record by record: a fast path that was wrong never costs a file.

The careful parser streams: it reads a line at a time and spills every CAREFUL_CHUNK_ROWS records
to a temporary Arrow file, so its memory stays bounded whatever the file's size. Values quoted in
messages are cut at MESSAGE_VALUE_CHARS characters, with the full length stated (`quoted`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import json
import logging
import queue
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import polars as pl

from lakehouse.core.contract import DEFAULT_NULL_VALUES, FileFormat
from lakehouse.core.errors import LandingFileError
from lakehouse.core.nested import Shape, flatten

log = logging.getLogger(__name__)

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
GROUP_BYTES = 64 << 20
"""Clean files read by one query hold at most about this many bytes: a group is collected whole."""
CAREFUL_CHUNK_ROWS = 50_000
"""The careful parser spills its records to disk every this many records..."""
CAREFUL_CHUNK_CHARS = 32 << 20
"""...or every this many characters of values, whichever comes first."""
CAREFUL_SEGMENT_BYTES = 64 << 20
"""A suspect or big CSV is read in segments of about this many bytes, each checked on its own:
clean ones are read by polars, suspect ones record by record. Memory is bounded by a segment."""
STREAM_BATCH_ROWS = 250_000
"""A file read record by record (or a Parquet file) is handed on in batches of this many rows:
its consumer's memory is bounded by a batch, not by the file."""
MESSAGE_VALUE_CHARS = 200
"""A value quoted in a message is cut at this many characters, its full length stated."""

csv.field_size_limit(2**31 - 1)  # the default (131,072 characters) would make a long field a defect


def quoted(value: str, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """`value` in backticks for a message; a long one cut, e.g. "`aaaa…` (1000000 characters)"."""
    if len(value) <= limit:
        return f"`{value}`"
    return f"`{value[:limit]}…` ({len(value)} characters)"


def shortened(text: str, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """A message cut at `limit` characters, its full length stated."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def error_reason(exc: BaseException) -> str:
    """What a read error says, as a rejection reason: its first line, cut, and its kind."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    kind = type(exc).__name__
    return f"cannot be parsed: {kind}: {shortened(first)}" if first else f"cannot be parsed: {kind}"


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
    with _decompressed(path, display_path) as plain, closing(_Spill()) as spill:
        frame, _ = _open(plain, fmt, display_path, columns, spill, careful=False)
        yield frame


def _open(
    plain: Path,
    fmt: FileFormat,
    display_path: str,
    columns: Sequence[str] | None,
    spill: _Spill,
    *,
    careful: bool,
) -> tuple[pl.LazyFrame, bool]:
    """The frame of a (decompressed) file, and whether it took the fast path (a polars scan).

    `careful` parses a CSV record by record without trying the fast path (its lines are known
    to be suspect)."""
    _reject_empty(plain, display_path)
    if fmt.type != "parquet":
        _reject_binary(plain, display_path)
    try:
        if fmt.type == "csv":
            frame, fast = _read_csv(plain, fmt, display_path, columns, spill, careful=careful)
        elif fmt.type == "ndjson":
            frame, fast = _read_ndjson(plain, display_path, spill)
        else:
            frame, fast = _scan(plain, fmt), False
        frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise LandingFileError(display_path, error_reason(exc)) from exc
    return frame, fast


def _careful(
    plain: Path, fmt: FileFormat, display_path: str, columns: Sequence[str] | None, spill: _Spill
) -> pl.LazyFrame:
    """The file parsed record by record (after its fast read failed); LandingFileError if junk."""
    try:
        if fmt.type == "csv":
            header = _csv_header(plain, fmt, display_path)
            _check_header(header, columns, display_path)
            return _parse_csv_carefully(plain, fmt, header, spill).frame(display_path, "csv")
        return _parse_ndjson_carefully(plain, spill).frame(display_path, "ndjson")
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise LandingFileError(display_path, error_reason(exc)) from exc


@dataclass(frozen=True)
class LandedGroup:
    """Landed files read by one query: their rows, each tagged with its file in FILE_COLUMN."""

    paths: tuple[Path, ...]
    frame: pl.LazyFrame
    fmt: FileFormat
    fallbacks: Mapping[Path, Callable[[], pl.LazyFrame]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Per file read by polars: its careful (record by record) read, for when polars fails."""
    streamed: bool = False
    """The frame reads spilled or columnar data (no parse can fail mid-way): `collected` hands
    it on in batches of STREAM_BATCH_ROWS rows."""
    shape: Shape = field(default_factory=Shape)
    """Nested records: `frame` is given as read and holds the shape's rows (`core.nested`)."""

    def __post_init__(self) -> None:
        if self.shape:
            shaped = flatten(self.frame, self.shape, row_number=ROW_NUMBER, file_column=FILE_COLUMN)
            object.__setattr__(self, "frame", shaped)

    def split(self) -> list[LandedGroup]:
        """One group per file: a query that fails mid-file is retried to find the file."""
        if len(self.paths) == 1:
            return [self]
        return [
            LandedGroup(
                (p,),
                _tagged(_scan(p, self.fmt), p),
                self.fmt,
                {p: self.fallbacks[p]} if p in self.fallbacks else {},
                shape=self.shape,
            )
            for p in self.paths
        ]

    def careful(self) -> LandedGroup | None:
        """A one-file group read record by record (None: it has no other reader).

        Raises LandingFileError when the file is junk (mostly unparseable, say)."""
        if len(self.paths) != 1 or self.paths[0] not in self.fallbacks:
            return None
        path = self.paths[0]
        frame = _tagged(self.fallbacks[path](), path)
        return LandedGroup((path,), frame, self.fmt, streamed=True, shape=self.shape)


def collected(
    group: LandedGroup, query: Callable[[LandedGroup], pl.LazyFrame] = lambda g: g.frame
) -> Iterator[tuple[LandedGroup, pl.DataFrame | str]]:
    """Collect `query(group)`: (the group read, its rows or why its file is rejected), per part.

    A query that fails is retried file by file, so one file's defect costs no other file. A file
    whose fast read fails for any reason polars gives is read again record by record: its good
    lines are rows, its bad lines rows with `_raw_line` and `_parse_error`. Only a file that cannot
    be read that way either is rejected, with what went wrong. A streamed group (a file read
    record by record, or Parquet) comes in batches: a big file never sits in memory whole.
    """
    if group.streamed:
        yield from _batches(group, query)
        return
    try:
        rows: pl.DataFrame | None = query(group).collect()
    except pl.exceptions.PolarsError as exc:
        rows, error = None, exc
    if rows is not None:
        yield group, rows
        return
    if len(group.paths) > 1:
        for single in group.split():
            yield from collected(single, query)
        return
    log.info(
        "fast read of %s failed (%s): reading it record by record",
        group.paths[0],
        error_reason(error),
    )
    try:
        careful = group.careful()
    except LandingFileError as exc:
        yield group, exc.reason
        return
    if careful is None:
        yield group, error_reason(error)
        return
    yield from _batches(careful, query)


def _batches(
    group: LandedGroup, query: Callable[[LandedGroup], pl.LazyFrame]
) -> Iterator[tuple[LandedGroup, pl.DataFrame | str]]:
    """A streamed one-file group's rows in batches of STREAM_BATCH_ROWS; a read error before the
    first batch rejects the file, one after it (earlier batches already handed on) is raised.

    polars' streaming engine hands each batch over here and waits until the consumer has taken
    the one before (a queue of one): with `collect_batches` a slow consumer (bronze writing a
    data file per batch) let the engine run ahead and buffer the whole file.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(batch: pl.DataFrame) -> bool:
        handoff.put(batch)
        return stop.is_set()

    def run() -> None:
        try:
            query(group).sink_batches(put, chunk_size=STREAM_BATCH_ROWS, engine="streaming")
            handoff.put(_DONE)
        except BaseException as exc:  # handed to the consumer's thread
            handoff.put(exc)

    worker = threading.Thread(target=run, name="lakehouse-batches", daemon=True)
    worker.start()
    handed_on = False
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, pl.exceptions.PolarsError):
                if handed_on:
                    raise LandingFileError(str(group.paths[0]), error_reason(item)) from item
                yield group, error_reason(item)
                return
            if isinstance(item, BaseException):
                raise item
            handed_on = True
            yield group, item
    finally:
        stop.set()
        while worker.is_alive():  # let a waiting engine finish
            with suppress(queue.Empty):
                handoff.get(timeout=0.05)
        worker.join()


_DONE = object()


@contextmanager
def landed_groups(
    files: Sequence[tuple[Path, str]],
    fmt: FileFormat,
    *,
    columns: Sequence[str] | None = None,
    shape: Shape | None = None,
) -> Iterator[tuple[list[LandedGroup], dict[Path, LandingFileError]]]:
    """`landed_frame` over many (path, display path) files: groups of frames, and rejections.

    Plain CSV files whose lines all check out (one vectorised pass over all of them) are read
    a few hundred per query when they share a header: per-file queries would cost more in
    overhead than thousands of small daily files cost in work. Every other file is a group of
    its own, read by `landed_frame`. `shape`: the rows of nested records (`core.nested`).
    """
    shape = shape or Shape()
    shared: dict[tuple[str, ...], list[Path]] = {}
    rejected: dict[Path, LandingFileError] = {}
    suspect: set[Path] = set()
    displays = dict(files)
    if fmt.type == "csv":
        headers: dict[Path, list[str]] = {}
        for path, display_path in files:
            if path.suffix != ".gz":
                try:
                    if not 0 < path.stat().st_size <= CAREFUL_SEGMENT_BYTES:
                        continue  # empty: rejected alone; big: read in segments
                    header = _csv_header(path, fmt, display_path)
                    _check_header(header, columns, display_path)
                except (LandingFileError, OSError):
                    continue  # read alone: _open rejects it with the reason
                headers[path] = header
        clean = _clean_files(list(headers), fmt, {p: len(h) for p, h in headers.items()})
        suspect = set(headers) - clean
        for path in clean:
            shared.setdefault(tuple(headers[path]), []).append(path)
    with ExitStack() as stack:
        spill = stack.enter_context(closing(_Spill()))
        groups: list[LandedGroup] = []
        for paths in shared.values():
            for chunk in _chunks(paths):
                fallbacks = {
                    p: functools.partial(_careful, p, fmt, displays[p], columns, spill)
                    for p in chunk
                }
                groups.append(
                    LandedGroup(chunk, _scan_many(chunk, fmt), fmt, fallbacks, shape=shape)
                )
        proven = {p for group in groups for p in group.paths}
        for path, display_path in files:
            if path in proven:
                continue
            try:
                plain = stack.enter_context(_decompressed(path, display_path))
                frame, fast = _open(
                    plain, fmt, display_path, columns, spill, careful=path in suspect
                )
            except LandingFileError as exc:
                rejected[path] = exc
                continue
            fallbacks = {}
            if fast and fmt.type in ("csv", "ndjson"):
                fallbacks[path] = functools.partial(
                    _careful, plain, fmt, display_path, columns, spill
                )
            groups.append(
                LandedGroup(
                    (path,), _tagged(frame, path), fmt, fallbacks, streamed=not fast, shape=shape
                )
            )
        yield groups, rejected


def _chunks(paths: Sequence[Path]) -> Iterator[tuple[Path, ...]]:
    """Runs of at most _FILES_PER_SCAN files and about GROUP_BYTES bytes (one file at least)."""
    chunk: list[Path] = []
    size = 0
    for path in paths:
        bytes_ = path.stat().st_size
        if chunk and (len(chunk) >= _FILES_PER_SCAN or size + bytes_ > GROUP_BYTES):
            yield tuple(chunk)
            chunk, size = [], 0
        chunk.append(path)
        size += bytes_
    if chunk:
        yield tuple(chunk)


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
            null_values=list(DEFAULT_NULL_VALUES),
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


def _reject_empty(path: Path, display_path: str) -> None:
    if path.stat().st_size == 0:
        raise LandingFileError(display_path, "empty file")


def _reject_binary(path: Path, display_path: str) -> None:
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
        blank = not head.strip()
        while blank and (more := fh.read(_CHUNK_BYTES)):
            blank = not more.strip()
    if blank:
        raise LandingFileError(display_path, "empty file: nothing but blank lines")
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
            null_values=list(DEFAULT_NULL_VALUES),
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
    return frame.select(as_text(frame.collect_schema())).with_row_index(ROW_NUMBER, offset=1)


def as_text(schema: pl.Schema) -> list[pl.Expr]:
    """Every column as text; nested values (objects, arrays) as JSON, as the careful read has."""
    out = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Struct):
            out.append(pl.col(name).struct.json_encode())
        elif isinstance(dtype, pl.List | pl.Array):
            quoted = name.replace("\\", "\\\\").replace("'", "\\'")
            text = pl.struct(name).struct.json_encode().str.json_path_match(f"$['{quoted}']")
            out.append(text.alias(name))
        else:
            out.append(pl.col(name).cast(pl.String))
    return out


# --- CSV ----------------------------------------------------------------------------------------


def _read_csv(
    path: Path,
    fmt: FileFormat,
    display_path: str,
    columns: Sequence[str] | None,
    spill: _Spill,
    *,
    careful: bool,
) -> tuple[pl.LazyFrame, bool]:
    header = _csv_header(path, fmt, display_path)
    _check_header(header, columns, display_path)
    small = path.stat().st_size <= CAREFUL_SEGMENT_BYTES  # a big file is read in segments
    if not careful and small and _csv_is_clean(path, fmt, len(header)):
        return _scan(path, fmt), True
    return _parse_csv_carefully(path, fmt, header, spill).frame(display_path, "csv"), False


def _csv_header(path: Path, fmt: FileFormat, display_path: str) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline().rstrip(b"\r\n")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandingFileError(
            display_path, f"the header is not valid UTF-8 (byte {exc.start})"
        ) from exc
    header = next(csv.reader([text], delimiter=fmt.delimiter, quotechar=fmt.quote_char or '"'))
    if not header or not any(h.strip() for h in header):
        raise LandingFileError(display_path, "the header line is empty")
    if len(set(header)) != len(header):
        raise LandingFileError(display_path, "the header names a column twice")
    return header


def _check_header(header: list[str], columns: Sequence[str] | None, display_path: str) -> None:
    if columns and not set(header) & set(columns):
        shown = ", ".join(quoted(c, 50) for c in header[:5])
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
    unexpected delimiter count are looked at one by one. A chunk whose lines cannot be scanned
    (invalid UTF-8, say) is retried file by file, so one bad file does not cost the others their
    fast path; a file that cannot be scanned alone is not clean (parsed record by record).
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
    """Per file, its lines that may not have the header's field count (None: no line scan).

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
    except pl.exceptions.PolarsError as exc:  # invalid UTF-8, most likely: polars says which
        log.debug("line scan of %d file(s) failed: %s", len(paths), error_reason(exc))
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


class _Spill:
    """A temporary directory for the careful parser's chunks, made on first use."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._count = 0

    def new_file(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="lakehouse-careful-")
        self._count += 1
        return Path(self._dir) / f"chunk-{self._count}.arrow"

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class _Records:
    """Records of one file parsed one by one, good rows and unparseable lines, in file order.

    Values are kept column by column and spilled to an Arrow file every CAREFUL_CHUNK_ROWS
    records (or CAREFUL_CHUNK_CHARS characters): memory is bounded by a chunk, not the file.
    `columns` fixes the landed columns (CSV: the header); None collects them as records name
    them (NDJSON).
    """

    def __init__(self, spill: _Spill, columns: Sequence[str] | None = None) -> None:
        self.spill = spill
        self.columns: dict[str, None] = dict.fromkeys(columns or ())
        self.good = 0
        self.bad = 0
        self.first_reason: str | None = None
        self.files: list[Path] = []
        self._start_chunk()

    def _start_chunk(self) -> None:
        self._rows: list[int] = []
        self._values: dict[str, list[str | None]] = {c: [] for c in self.columns}
        self._raw: list[str | None] = []
        self._errors: list[str | None] = []
        self._chars = 0

    def add(self, row: int, values: Mapping[str, str | None]) -> None:
        for name in values:
            if name not in self._values:
                self._values[name] = [None] * len(self._rows)
                self.columns.setdefault(name)
        for name, column in self._values.items():
            column.append(values.get(name))
        self._rows.append(row)
        self._raw.append(None)
        self._errors.append(None)
        self.good += 1
        self._chars += sum(len(v) for v in values.values() if v)
        self._maybe_spill()

    def add_bad(self, row: int, raw: str, reason: str) -> None:
        for column in self._values.values():
            column.append(None)
        self._rows.append(row)
        self._raw.append(raw)
        self._errors.append(reason)
        self.bad += 1
        self.first_reason = self.first_reason or reason
        self._chars += len(raw)
        self._maybe_spill()

    def add_frame(self, frame: pl.DataFrame) -> None:
        """Records read by polars (ROW_NUMBER and the columns, all good): spilled as they are."""
        self._spill()
        path = self.spill.new_file()
        frame.write_ipc(path)
        self.files.append(path)
        self.good += frame.height

    def _maybe_spill(self) -> None:
        if len(self._rows) >= CAREFUL_CHUNK_ROWS or self._chars >= CAREFUL_CHUNK_CHARS:
            self._spill()

    def _spill(self) -> None:
        if not self._rows:
            return
        chunk = pl.DataFrame(
            {
                ROW_NUMBER: self._rows,
                **self._values,
                RAW_LINE: self._raw,
                PARSE_ERROR: self._errors,
            },
            schema={
                ROW_NUMBER: pl.Int64,
                **dict.fromkeys(self._values, pl.String),
                RAW_LINE: pl.String,
                PARSE_ERROR: pl.String,
            },
        )
        path = self.spill.new_file()
        chunk.write_ipc(path)
        self.files.append(path)
        self._start_chunk()

    def frame(self, display_path: str, kind: str) -> pl.LazyFrame:
        """The records as a frame (RAW_LINE/PARSE_ERROR only if a line was bad).

        Raises LandingFileError when most records (two at least) cannot be parsed."""
        self._spill()
        total = self.good + self.bad
        if self.bad >= 2 and self.bad * 2 > total:
            raise LandingFileError(
                display_path,
                f"{self.bad} of {total} records cannot be parsed "
                f"(first: {self.first_reason}): not a {kind} file",
            )
        keep = [ROW_NUMBER, *self.columns, *((RAW_LINE, PARSE_ERROR) if self.bad else ())]
        if not self.files:
            return pl.LazyFrame(schema={ROW_NUMBER: pl.Int64, **dict.fromkeys(keep[1:], pl.String)})
        chunks = [pl.scan_ipc(path) for path in self.files]
        frame = chunks[0] if len(chunks) == 1 else pl.concat(chunks, how="diagonal")
        return frame.select(
            pl.col(c) if c in frame.collect_schema() else pl.lit(None, pl.String).alias(c)
            for c in keep
        )


class _Lines:
    """The lines of a binary file one at a time (line ends removed), with push-back."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._back: deque[bytes] = deque()

    def next(self) -> bytes | None:
        if self._back:
            return self._back.popleft()
        line = self._fh.readline()
        if not line:
            return None
        return (line[:-1] if line.endswith(b"\n") else line).rstrip(b"\r")

    def push_back(self, lines: Sequence[bytes]) -> None:
        self._back.extendleft(reversed(lines))


def _parse_csv_carefully(path: Path, fmt: FileFormat, header: list[str], spill: _Spill) -> _Records:
    """Parse a suspect (or big) CSV: good records are rows, bad lines bad rows, in bounded memory.

    The file is cut into segments of about CAREFUL_SEGMENT_BYTES at line ends where the quotes
    seen so far balance (so no quoted field spans two segments). A segment whose lines all check
    out (`_csv_is_clean`) is read by polars; only a suspect one is parsed line by line
    (`_parse_lines`). Where the quotes never balance again (an unclosed quote), the rest of the
    file is parsed line by line: slower, never wrong. A big file with one bad line costs one
    segment's line parse, not the file's.
    """
    records = _Records(spill, header)
    quote = (fmt.quote_char or "").encode()
    rows = 0
    with path.open("rb") as fh:
        header_line = fh.readline()
        while True:
            start = fh.tell()
            block = fh.read(CAREFUL_SEGMENT_BYTES)
            if not block:
                break
            block += fh.readline()
            while quote and block.count(quote) % 2 == 1:
                more = fh.readline()
                if not more or len(block) > 4 * CAREFUL_SEGMENT_BYTES:
                    fh.seek(start)  # the quotes do not balance: the rest, line by line
                    rows += _parse_lines(fh, fmt, header, records, rows)
                    return records
                block += more
            rows += _parse_segment(header_line + block, fmt, header, records, rows, spill)
    return records


def _parse_segment(
    data: bytes, fmt: FileFormat, header: list[str], records: _Records, offset: int, spill: _Spill
) -> int:
    """One segment (with the header line): by polars if it checks out, else line by line."""
    segment = spill.new_file().with_suffix(".csv")
    segment.write_bytes(data)
    try:
        if _csv_is_clean(segment, fmt, len(header)):
            try:
                frame = _scan(segment, fmt).collect()
            except pl.exceptions.PolarsError:
                frame = None
            if frame is not None and frame.columns[1:] == header:
                records.add_frame(frame.with_columns(pl.col(ROW_NUMBER).cast(pl.Int64) + offset))
                return frame.height
        with segment.open("rb") as fh:
            fh.readline()  # the header
            return _parse_lines(fh, fmt, header, records, offset)
    finally:
        segment.unlink(missing_ok=True)


def _parse_lines(
    fh: BinaryIO, fmt: FileFormat, header: list[str], records: _Records, offset: int
) -> int:
    """Parse records line by line from `fh` to its end (rows numbered after `offset`); returns
    how many records it read.

    A quoted field may span lines: a line with an odd number of quotes is joined with the next
    ones (at most MAX_QUOTED_LINES) until its quotes balance; if that does not make a record,
    the first line alone is the defect (an unclosed quote) and the next lines are read again.
    """
    quote = fmt.quote_char
    nulls = set(DEFAULT_NULL_VALUES)
    lines = _Lines(fh)
    before = records.good + records.bad
    for row, raw, text in _decoded_lines(lines, records, offset):
        row += offset
        joined: list[bytes] = []
        if quote:  # a quoted field may span lines: join until the quotes balance
            while text.count(quote) % 2 == 1 and len(joined) < MAX_QUOTED_LINES:
                following = lines.next()
                if following is None:
                    break
                decoded = _decode(following)
                if decoded is None:
                    lines.push_back([following])
                    break
                joined.append(following)
                text += "\n" + decoded
        fields, reason = _split_record(text, fmt, len(header))
        if reason is not None and joined:  # joining did not help: the first line is the defect
            lines.push_back(joined)
            text = _decode(raw) or ""
            reason = "unclosed quote"
        if reason is not None:
            records.add_bad(row, text, reason)
            continue
        records.add(
            row, {h: (None if v in nulls else v) for h, v in zip(header, fields, strict=True)}
        )
    return records.good + records.bad - before


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


def _read_ndjson(path: Path, display_path: str, spill: _Spill) -> tuple[pl.LazyFrame, bool]:
    try:
        frame = _scan(path, FileFormat(type="ndjson"))
        frame.collect_schema()
        frame.select(pl.len()).collect()
        return frame, True
    except pl.exceptions.PolarsError as exc:
        log.info(
            "polars cannot read %s (%s): reading it record by record",
            display_path,
            error_reason(exc),
        )
    return _parse_ndjson_carefully(path, spill).frame(display_path, "ndjson"), False


def _decoded_lines(
    lines: _Lines, records: _Records, offset: int = 0
) -> Iterator[tuple[int, bytes, str]]:
    """(1-based data row, raw bytes, text) of each non-blank line; a line that is not UTF-8 is
    recorded as a bad record (numbered after `offset`) and skipped."""
    row = 0
    while (raw := lines.next()) is not None:
        if not raw.strip():
            continue
        row += 1
        text = _decode(raw)
        if text is None:
            records.add_bad(row + offset, _shown(raw), "invalid UTF-8")
            continue
        yield row, raw, text


def _parse_ndjson_carefully(path: Path, spill: _Spill) -> _Records:
    records = _Records(spill)
    with path.open("rb") as fh:
        for row, _raw, text in _decoded_lines(_Lines(fh), records):
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                records.add_bad(row, text, f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(record, dict):
                records.add_bad(row, text, "a JSON record must be an object")
                continue
            records.add(row, {k: _json_text(v) for k, v in record.items()})
    return records


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)
