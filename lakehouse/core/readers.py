"""Parse landing files into frames of strings, values exactly as landed.

Bronze keeps what arrived; typing happens in silver under the contract. Every reader returns a
LazyFrame whose columns are all `String`, plus `_row_number` (1-based data row in the file).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from lakehouse.core.contract import FileFormat
from lakehouse.core.errors import LandingFileError

ROW_NUMBER = "_row_number"


@contextmanager
def landed_frame(path: Path, fmt: FileFormat, *, display_path: str) -> Iterator[pl.LazyFrame]:
    """Yield the file's rows as strings; a file that cannot be read raises LandingFileError.

    Gzip files (`*.gz`) are decompressed to a temporary file first so the scan still streams.
    The header (or first record) is read eagerly, so an unreadable file fails here, not later.
    """
    with _decompressed(path, display_path) as plain:
        try:
            frame = _scan(plain, fmt)
            frame.collect_schema()
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            raise LandingFileError(display_path, _reason(exc)) from exc
        yield frame


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


def _reason(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot be parsed: {first_line}"
