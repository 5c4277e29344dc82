"""Bronze: every landed file as a Delta table of strings plus lineage columns.

Append-only in spirit: a file's rows are only ever replaced by a reload of the same file
(replace-where on `_landing_date` and `_source_file`), so replaying a file is idempotent and
deleting a landed file never deletes data. Partitioned by `_landing_date`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from lakehouse.core import delta, system
from lakehouse.core.contract import Contract
from lakehouse.core.errors import LandingFileError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import LandingFile, fetched, list_landing_files
from lakehouse.core.readers import READER_COLUMNS, ROW_NUMBER, landed_frame

log = logging.getLogger(__name__)

SOURCE_FILE = "_source_file"
SOURCE_SHA256 = "_source_sha256"
INGESTED_AT = "_ingested_at"
RUN_ID = "_run_id"
LANDING_DATE = "_landing_date"
LINEAGE_COLUMNS = (SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER, INGESTED_AT, RUN_ID, LANDING_DATE)
"""Columns bronze adds to every landed row; every other column is a landed column."""


@dataclass
class BronzeResult:
    """What one bronze load did."""

    files_loaded: list[dict] = field(default_factory=list)
    files_rejected: list[dict] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files_loaded)

    def rows_by_date(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files_loaded:
            out[f["landing_date"]] = out.get(f["landing_date"], 0) + f["rows"]
        return out


BATCH_BYTES = 256 << 20
"""Files are loaded in batches of about this many landed bytes, each batch one Delta commit.

The Delta writer holds a partition's rows until the batch ends, and every landing date is a
partition: the batch size bounds bronze's memory (about 5x the landed bytes)."""
FILES_PER_QUERY = 64


@delta.reusing_tables()
def load_bronze(
    lake: Lake, contract: Contract, landing_dates: Sequence[str], *, run_id: str
) -> BronzeResult:
    """Load every file landed for `contract` on `landing_dates` into bronze.

    Files go in batches (about BATCH_BYTES each), every batch one streamed write and one Delta
    commit. A batch that fails mid-file commits nothing and is retried file by file, so only the
    defective file is rejected.
    """
    uri = lake.table_uri("bronze", contract.name)
    files = list_landing_files(lake, contract.name, landing_dates)
    result = BronzeResult()
    ingested_at = datetime.now(UTC).replace(tzinfo=None)
    for batch in _batches(files):
        log.info(
            "bronze %s: %d file(s), %d bytes, landing dates %s .. %s",
            contract.name,
            len(batch),
            sum(f.size for f in batch),
            batch[0].landing_date,
            batch[-1].landing_date,
        )
        loaded, rejected = _load_batch(lake, contract, uri, batch, run_id, ingested_at)
        for row in rejected:
            log.warning("bronze %s: rejected %s: %s", contract.name, row["path"], row["reason"])
        result.files_loaded += loaded
        result.files_rejected += rejected
    system.record_ingest(lake, result.files_loaded, result.files_rejected)
    return result


def _batches(files: list[LandingFile]) -> list[list[LandingFile]]:
    batches: list[list[LandingFile]] = []
    size = 0
    for file in files:
        if not batches or size + file.size > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(file)
        size += file.size
    return batches


def _load_batch(
    lake: Lake,
    contract: Contract,
    uri: str,
    files: list[LandingFile],
    run_id: str,
    ingested_at: datetime,
) -> tuple[list[dict], list[dict]]:
    """Load `files` in one commit; returns (ledger rows of loaded files, rejections)."""
    loaded: list[dict] = []
    rejected: list[dict] = []
    with ExitStack() as stack:
        readable: list[tuple[LandingFile, str, list[str], pl.LazyFrame]] = []
        for file in files:
            local_path, sha256 = stack.enter_context(fetched(lake, file))
            try:
                frame = stack.enter_context(
                    landed_frame(
                        local_path,
                        contract.format,
                        display_path=file.relative_path,
                        columns=contract.landed_columns,
                    )
                )
            except LandingFileError as exc:
                rejected.append(
                    _ledger_row(file, run_id, ingested_at, sha256=sha256, rows=0, reason=exc.reason)
                )
                continue
            columns = [c for c in frame.collect_schema().names() if c not in READER_COLUMNS]
            rows = _with_lineage(frame, file, sha256, run_id, ingested_at)
            readable.append((file, sha256, columns, rows))
        if not readable:
            return loaded, rejected
        try:
            _replace_files(lake, uri, [r[0] for r in readable], [r[3] for r in readable], run_id)
            written = readable
        except pl.exceptions.PolarsError:
            if len(readable) == 1:
                written = []
                rejected.append(_parse_rejection(readable[0], run_id, ingested_at))
            else:  # a defect found mid-file: nothing was committed; isolate it file by file
                written = []
                for entry in readable:
                    try:
                        _replace_files(lake, uri, [entry[0]], [entry[3]], run_id)
                        written.append(entry)
                    except pl.exceptions.PolarsError:
                        rejected.append(_parse_rejection(entry, run_id, ingested_at))
    counts = _rows_per_file(lake, uri, [entry[0] for entry in written])
    for file, sha256, columns, _ in written:
        loaded.append(
            _ledger_row(
                file,
                run_id,
                ingested_at,
                sha256=sha256,
                rows=counts.get(file.relative_path, 0),
                columns=columns,
            )
        )
    return loaded, rejected


def _with_lineage(
    frame: pl.LazyFrame, file: LandingFile, sha256: str, run_id: str, ingested_at: datetime
) -> pl.LazyFrame:
    return frame.with_columns(
        pl.col(ROW_NUMBER).cast(pl.Int64),
        pl.lit(file.relative_path).alias(SOURCE_FILE),
        pl.lit(sha256).alias(SOURCE_SHA256),
        pl.lit(ingested_at).alias(INGESTED_AT),
        pl.lit(run_id).alias(RUN_ID),
        pl.lit(file.landing_date).alias(LANDING_DATE),
    )


def _replace_files(
    lake: Lake, uri: str, files: list[LandingFile], frames: list[pl.LazyFrame], run_id: str
) -> None:
    """Replace the bronze rows of `files` with `frames` in one streamed write and one commit."""
    dates = sorted({f.landing_date for f in files})
    predicate = (
        f"{delta.in_predicate(LANDING_DATE, dates)} AND "
        f"{delta.in_predicate(SOURCE_FILE, [f.relative_path for f in files])}"
    )
    delta.replace_where(
        lake,
        uri,
        frames[0] if len(frames) == 1 else lambda: _stream(frames),
        predicate,
        partition_by=[LANDING_DATE],
        step="bronze load",
        run_id=run_id,
        files=len(files),
    )


def _stream(frames: list[pl.LazyFrame]) -> pa.RecordBatchReader:
    """The rows of every frame as one stream of Arrow batches, columns aligned by name.

    Frames are collected a chunk of files at a time: polars opens every source of one query at
    once, so one query over thousands of files exhausts its thread pool.
    """
    schemas = [frame.collect_schema() for frame in frames]
    schema: dict[str, pl.DataType] = {}
    for frame_schema in schemas:
        for name, dtype in frame_schema.items():
            schema.setdefault(name, dtype)
    aligned = [
        frame
        if list(frame_schema) == list(schema)
        else frame.select(
            pl.col(name) if name in frame_schema else pl.lit(None, dtype).alias(name)
            for name, dtype in schema.items()
        )
        for frame, frame_schema in zip(frames, schemas, strict=True)
    ]
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(0, len(aligned), FILES_PER_QUERY):
            # Small daily files parse faster collected than streamed; a chunk stays small.
            chunk = pl.concat(aligned[i : i + FILES_PER_QUERY]).collect()
            yield from chunk.to_arrow().cast(arrow_schema).to_batches()

    return pa.RecordBatchReader.from_batches(arrow_schema, batches())


def _parse_rejection(entry: tuple, run_id: str, ingested_at: datetime) -> dict:
    file, sha256 = entry[0], entry[1]
    try:
        entry[3].select(pl.len()).collect()
    except pl.exceptions.PolarsError as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
    else:
        reason = "the file could not be written to bronze"
    return _ledger_row(
        file, run_id, ingested_at, sha256=sha256, rows=0, reason=f"cannot be parsed: {reason}"
    )


def _rows_per_file(lake: Lake, uri: str, files: list[LandingFile]) -> dict[str, int]:
    """Bronze rows of each of `files`, from the Delta log where it can tell, else a pruned scan.

    The write replaced every row of `files`, so a data file whose `_source_file` statistics are
    exactly one of them (min = max) holds only that file's rows; its `num_records` counts them.
    Dates with a data file holding several source files (or no statistics) are scanned.
    """
    if not files:
        return {}
    table = delta.open_table(lake, uri)
    if table is None:
        return {}
    wanted = {f.relative_path for f in files}
    dates = {f.landing_date for f in files}
    counts: dict[str, int] = {}
    unresolved: set[str] = set()
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    lo, hi = f"min.{SOURCE_FILE}", f"max.{SOURCE_FILE}"
    for date, low, high, rows in actions.select(
        f"partition.{LANDING_DATE}",
        pl.col(lo) if lo in actions.columns else pl.lit(None, pl.String),
        pl.col(hi) if hi in actions.columns else pl.lit(None, pl.String),
        "num_records",
    ).iter_rows():
        if date not in dates:
            continue
        if low is not None and low == high and rows is not None:
            if low in wanted:
                counts[low] = counts.get(low, 0) + rows
        else:
            unresolved.add(date)
    if unresolved:
        scanned = (
            pl.scan_delta(table)
            .filter(
                pl.col(LANDING_DATE).is_in(sorted(unresolved)),
                pl.col(SOURCE_FILE).is_in(sorted(wanted)),
            )
            .group_by(SOURCE_FILE)
            .len()
            .collect()
        )
        for path, rows in scanned.iter_rows():
            counts[path] = rows  # a scanned date's count is complete: it replaces partial sums
    return counts


def _ledger_row(
    file: LandingFile,
    run_id: str,
    ingested_at: datetime,
    *,
    sha256: str | None,
    rows: int,
    columns: list[str] | None = None,
    reason: str | None = None,
) -> dict:
    return {
        "source": file.source,
        "path": file.relative_path,
        "landing_date": file.landing_date,
        "size": file.size,
        "version": file.version,
        "sha256": sha256,
        "rows": rows,
        "columns": columns or [],
        "run_id": run_id,
        "ingested_at": ingested_at,
        "reason": reason,
    }
