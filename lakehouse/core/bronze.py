"""Bronze: every landed file as a Delta table of strings plus lineage columns.

Append-only in spirit: a file's rows are only ever replaced by a reload of the same file
(replace-where on `_landing_date` and `_source_file`), so replaying a file is idempotent and
deleting a landed file never deletes data. Partitioned by `_landing_date`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
from deltalake import DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from lakehouse.core import delta, system
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.landing import LandingFile, fetched, list_landing_files, sha256_file
from lakehouse.core.readers import (
    FILE_COLUMN,
    READER_COLUMNS,
    ROW_NUMBER,
    LandedGroup,
    collected,
    landed_groups,
)

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
    files_unchanged: int = 0

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files_loaded)

    def rows_by_date(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files_loaded:
            out[f["landing_date"]] = out.get(f["landing_date"], 0) + f["rows"]
        return out


BATCH_BYTES = 512 << 20
"""Files are loaded in batches of about this many landed bytes, each batch one Delta commit."""
STATS_COLUMNS = (SOURCE_FILE, SOURCE_SHA256, ROW_NUMBER, RUN_ID)
"""Columns whose statistics each bronze data file records: what bronze is searched by."""


def reader_fingerprint(contract: Contract) -> str:
    """What bronze's rows of a file depend on in its contract: the format and landed columns."""
    relevant = (contract.format, contract.landed_columns)
    if contract.shape:  # nested JSON: where each column comes from in the record
        relevant += (contract.shape,)
    return hashlib.sha256(repr(relevant).encode()).hexdigest()[:16]


def _unchanged(
    lake: Lake, contract: Contract, files: list[LandingFile], dates: Sequence[str]
) -> set[str]:
    """Files whose last outcome (loaded or rejected) was for these very bytes and reader.

    The same size and version (mtime or ETag) as last time is the same file; a new version is
    hashed (local files) and is unchanged when its sha256 is.
    """
    reader = reader_fingerprint(contract)
    last = system.latest_outcomes(lake, contract.name, dates)
    same = set()
    for file in files:
        before = last.get(file.relative_path)
        if before is None or before.get("reader") != reader:
            continue
        if (before["size"] == file.size and before["version"] == file.version) or (
            not lake.is_s3 and before["sha256"] == sha256_file(file.uri)
        ):
            same.add(file.relative_path)
    return same


def files_to_load(
    lake: Lake, contract: Contract, landing_dates: Sequence[str]
) -> list[LandingFile]:
    """The landed files of `landing_dates` that `load_bronze` would read now."""
    files = list_landing_files(lake, contract.landing_source, landing_dates)
    unchanged = _unchanged(lake, contract, files, landing_dates) if files else set()
    return [f for f in files if f.relative_path not in unchanged]


@delta.reusing_tables()
def load_bronze(
    lake: Lake,
    contract: Contract,
    landing_dates: Sequence[str],
    *,
    run_id: str,
    reprocess: bool = False,
) -> BronzeResult:
    """Load every new or changed file landed for `contract` on `landing_dates` into bronze.

    Every landed file becomes one Parquet data file in its landing date's partition, written
    by polars; a batch of files (about BATCH_BYTES) is then one Delta commit that adds them and
    removes the data those files had from an earlier load. A file that fails to parse is
    rejected and the batch's other files still load. A file already loaded (or rejected) as it
    is now, by the same reader, is not read again unless `reprocess`.
    """
    uri = lake.table_uri("bronze", contract.name)
    files = list_landing_files(lake, contract.landing_source, landing_dates)
    result = BronzeResult()
    if not reprocess and files:
        unchanged = _unchanged(lake, contract, files, landing_dates)
        result.files_unchanged = len(unchanged)
        files = [f for f in files if f.relative_path not in unchanged]
        if unchanged:
            log.info(
                "bronze %s: %d file(s) unchanged since their last load, %d to load",
                contract.name,
                len(unchanged),
                len(files),
            )
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
        for row in (*loaded, *rejected):
            row["reader"] = reader_fingerprint(contract)
            row["source"] = contract.name  # a child source (`explode:`) reads its parent's files
        for row in rejected:
            log.warning("bronze %s: rejected %s: %s", contract.name, row["path"], row["reason"])
        result.files_loaded += loaded
        result.files_rejected += rejected
    system.record_ingest(lake, result.files_loaded, result.files_rejected)
    return result


def landed_row_counts(lake: Lake, contract: Contract) -> dict[str, int]:
    """Per landed file of `contract` (relative path): its data rows, as bronze reads them.

    A file whose latest ingest-ledger row is for its current size and version counts that row's
    `rows` (what bronze read); any other file is read now with bronze's reader, nothing
    written; a file that reader rejects counts 0.
    """
    files = list_landing_files(lake, contract.landing_source)
    if not files:
        return {}
    ledger = system.latest_ledger(lake, contract.name, sorted({f.landing_date for f in files}))
    known = {
        row["path"]: row for row in ledger.select("path", "size", "version", "rows").to_dicts()
    }
    counts: dict[str, int] = {}
    unread = []
    for file in files:
        row = known.get(file.relative_path)
        if row is not None and row["size"] == file.size and row["version"] == file.version:
            counts[file.relative_path] = row["rows"]
        else:
            unread.append(file)
    for batch in _batches(unread):
        counts.update(_count_rows(lake, contract, batch))
    return counts


def _count_rows(lake: Lake, contract: Contract, files: list[LandingFile]) -> dict[str, int]:
    counts = {f.relative_path: 0 for f in files}
    with ExitStack() as stack:
        fetches = [stack.enter_context(fetched(lake, file)) for file in files]
        by_path = {str(path): file for file, (path, _) in zip(files, fetches, strict=True)}
        groups, _ = stack.enter_context(
            landed_groups(
                [(path, f.relative_path) for f, (path, _) in zip(files, fetches, strict=True)],
                contract.format,
                columns=contract.landed_columns,
                shape=contract.shape,
            )
        )
        for group in groups:
            for _, rows in collected(group, _rows_per_file):
                if isinstance(rows, str):
                    continue
                for path, n in rows.iter_rows():  # a streamed file comes in batches
                    counts[by_path[path].relative_path] += n
    return counts


def _rows_per_file(group: LandedGroup) -> pl.LazyFrame:
    return group.frame.group_by(FILE_COLUMN).len()


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


@dataclass
class _Written:
    """Landed files parsed and written as data files, not yet committed."""

    actions: list[AddAction] = field(default_factory=list)
    schema: dict[str, pl.DataType] = field(default_factory=dict)
    ledger: list[dict] = field(default_factory=list)


def _load_batch(
    lake: Lake,
    contract: Contract,
    uri: str,
    files: list[LandingFile],
    run_id: str,
    ingested_at: datetime,
) -> tuple[list[dict], list[dict]]:
    """Load `files` in one commit; returns (ledger rows of loaded files, rejections)."""
    rejected: list[dict] = []
    written = _Written()
    try:
        with ExitStack() as stack:
            fetches = [stack.enter_context(fetched(lake, file)) for file in files]
            landed = {
                str(path): (file, sha256)
                for file, (path, sha256) in zip(files, fetches, strict=True)
            }
            groups, failures = stack.enter_context(
                landed_groups(
                    [(path, f.relative_path) for f, (path, _) in zip(files, fetches, strict=True)],
                    contract.format,
                    columns=contract.landed_columns,
                    shape=contract.shape,
                )
            )
            for path, error in failures.items():
                file, sha256 = landed[str(path)]
                rejected.append(
                    _ledger_row(
                        file, run_id, ingested_at, sha256=sha256, rows=0, reason=error.reason
                    )
                )
            for group in groups:
                rejected += _write_group(lake, uri, group, landed, written, run_id, ingested_at)
        if written.actions:
            _commit(lake, uri, written, run_id)
    except BaseException:
        delta.discard_files(lake, uri, written.actions)
        raise
    return written.ledger, rejected


def _write_group(
    lake: Lake,
    uri: str,
    group: LandedGroup,
    landed: dict[str, tuple[LandingFile, str]],
    written: _Written,
    run_id: str,
    ingested_at: datetime,
) -> list[dict]:
    """Parse a group of files in one query and write each as a data file; returns rejections.

    A defect found mid-file fails the whole query: the group is then parsed file by file, and a
    file whose fast read fails is parsed record by record (`readers.collected`), so only a file
    that cannot be read at all is rejected.
    """
    rejected = []
    for part, rows in collected(
        group,
        functools.partial(_with_lineage, part_of=landed, run_id=run_id, ingested_at=ingested_at),
    ):
        if isinstance(rows, str):
            file, sha256 = landed[str(part.paths[0])]
            rejected.append(
                _ledger_row(file, run_id, ingested_at, sha256=sha256, rows=0, reason=rows)
            )
            continue
        _write_rows(lake, uri, part, rows, landed, written, run_id, ingested_at)
    return rejected


def _with_lineage(
    group: LandedGroup,
    *,
    part_of: dict[str, tuple[LandingFile, str]],
    run_id: str,
    ingested_at: datetime,
) -> pl.LazyFrame:
    """The group's rows with bronze's lineage columns, each file's from its own landing file."""
    paths = [str(path) for path in group.paths]
    entries = [part_of[path] for path in paths]
    lineage = {
        SOURCE_FILE: [file.relative_path for file, _ in entries],
        SOURCE_SHA256: [sha256 for _, sha256 in entries],
        LANDING_DATE: [file.landing_date for file, _ in entries],
    }
    # One file: literals (polars' streaming engine runs `replace_strict` in memory, which would
    # make a streamed file's batches wait for the whole file).
    return group.frame.with_columns(
        *(
            (
                pl.lit(values[0], pl.String)
                if len(paths) == 1
                else pl.col(FILE_COLUMN).replace_strict(paths, values, return_dtype=pl.String)
            ).alias(name)
            for name, values in lineage.items()
        ),
        pl.col(ROW_NUMBER).cast(pl.Int64),
        pl.lit(ingested_at).alias(INGESTED_AT),
        pl.lit(run_id).alias(RUN_ID),
    ).drop(FILE_COLUMN)


def _write_rows(
    lake: Lake,
    uri: str,
    group: LandedGroup,
    rows: pl.DataFrame,
    landed: dict[str, tuple[LandingFile, str]],
    written: _Written,
    run_id: str,
    ingested_at: datetime,
) -> None:
    entries = [landed[str(path)] for path in group.paths]
    columns = [c for c in group.frame.collect_schema().names() if c not in READER_COLUMNS]
    by_file = _split_by_file(rows)
    ledger = {entry["path"]: entry for entry in written.ledger}
    parts = []
    for file, sha256 in entries:
        file_rows = by_file.get(file.relative_path)
        n = 0 if file_rows is None else file_rows.height
        if file_rows is not None:
            parts.append(({LANDING_DATE: file.landing_date}, file_rows))
        if file.relative_path in ledger:  # the next batch of a streamed file
            ledger[file.relative_path]["rows"] += n
            continue
        written.ledger.append(
            _ledger_row(file, run_id, ingested_at, sha256=sha256, rows=n, columns=columns)
        )
    for name, dtype in rows.schema.items():
        written.schema.setdefault(name, dtype)
    written.actions += delta.write_data_files(lake, uri, parts, stats_columns=STATS_COLUMNS)


def _split_by_file(rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The rows of each landed file: a scan yields each file's rows together, so they are
    sliced (no copy) along runs of `_source_file`, and any file seen in several runs joined."""
    runs: dict[str, list[pl.DataFrame]] = {}
    offset = 0
    for length, path in rows.get_column(SOURCE_FILE).rle().struct.unnest().iter_rows():
        runs.setdefault(path, []).append(rows.slice(offset, length))
        offset += length
    return {path: pl.concat(parts) if len(parts) > 1 else parts[0] for path, parts in runs.items()}


@delta.retry_conflicts
def _commit(lake: Lake, uri: str, written: _Written, run_id: str) -> None:
    """Add the written files and remove the data an earlier load of the same files left.

    The removals are decided on one snapshot of the table and committed on top of that same
    snapshot (`delta.commit_files` lands them on no other): a concurrent load of the same files
    or a compaction that commits in between makes this commit rerun against the table it left.
    """
    schema = pl.DataFrame(schema=written.schema).to_arrow().schema
    delta.add_columns(lake, uri, schema, run_id=run_id)
    replaced = {entry["path"] for entry in written.ledger}
    dates = sorted({entry["landing_date"] for entry in written.ledger})
    snapshot = delta.open_table(lake, uri)
    removes, rewritten = _replaced_data(lake, uri, snapshot, replaced, dates)
    try:
        delta.commit_files(
            lake,
            uri,
            snapshot,
            [*written.actions, *rewritten],
            removes,
            schema,
            partition_by=[LANDING_DATE],
            claims=[f"bronze/{date}" for date in dates],
            step="bronze load",
            run_id=run_id,
            files=len(replaced),
        )
    except BaseException:
        delta.discard_files(lake, uri, rewritten)
        raise


def _replaced_data(
    lake: Lake, uri: str, table: DeltaTable | None, replaced: set[str], dates: list[str]
) -> tuple[list[RemoveAction], list[AddAction]]:
    """Removals of the data files of `table` holding rows of `replaced` landed files, in `dates`.

    A data file whose `_source_file` statistics name one landed file holds only that file's rows
    (bronze writes one data file per landed file) and is removed whole. Any other data file of
    those dates that may hold some of their rows (statistics spanning several files, or none) is
    rewritten without them.
    """
    if table is None:
        return [], []
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    low, high = f"min.{SOURCE_FILE}", f"max.{SOURCE_FILE}"
    actions = actions.select(
        "path",
        "size_bytes",
        pl.col(f"partition.{LANDING_DATE}").alias("date"),
        (pl.col(low) if low in actions.columns else pl.lit(None, pl.String)).alias("low"),
        (pl.col(high) if high in actions.columns else pl.lit(None, pl.String)).alias("high"),
    ).filter(pl.col("date").is_in(dates))
    now = int(time.time() * 1000)
    removes: list[RemoveAction] = []
    mixed: list[tuple[str, str, int]] = []
    names = sorted(replaced)
    for path, size, date, low_value, high_value in actions.iter_rows():
        if low_value is not None and low_value == high_value:
            if low_value in replaced:
                removes.append(RemoveAction(path, True, now, size, {LANDING_DATE: date}))
        elif (
            low_value is None
            or high_value is None
            or any(low_value <= name <= high_value for name in names)
        ):
            mixed.append((path, date, size))
    rewritten: list[AddAction] = []
    for path, date, size in mixed:
        rows = pl.read_parquet(f"{uri}/{path}", storage_options=lake.storage_options or None)
        kept = rows.filter(~pl.col(SOURCE_FILE).is_in(names))
        if kept.height == rows.height:
            continue
        removes.append(RemoveAction(path, True, now, size, {LANDING_DATE: date}))
        if kept.height:
            kept = kept.with_columns(pl.lit(date).alias(LANDING_DATE))
            rewritten += delta.write_data_files(
                lake, uri, [({LANDING_DATE: date}, kept)], stats_columns=STATS_COLUMNS
            )
    return removes, rewritten


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
