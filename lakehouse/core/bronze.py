"""Bronze: every landed file as a Delta table of strings plus lineage columns.

Append-only in spirit: a file's rows are only ever replaced by a reload of the same file
(replace-where on `_landing_date` and `_source_file`), so replaying a file is idempotent and
deleting a landed file never deletes data. Partitioned by `_landing_date`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

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


def load_bronze(
    lake: Lake, contract: Contract, landing_dates: Sequence[str], *, run_id: str
) -> BronzeResult:
    """Load every file landed for `contract` on `landing_dates` into bronze, one commit per file."""
    uri = lake.table_uri("bronze", contract.name)
    files = list_landing_files(lake, contract.name, landing_dates)
    result = BronzeResult()
    ingested_at = datetime.now(UTC).replace(tzinfo=None)
    for i, file in enumerate(files, 1):
        log.info(
            "bronze %s: file %d/%d %s (%d bytes)",
            contract.name,
            i,
            len(files),
            file.relative_path,
            file.size,
        )
        loaded, rejected = _load_file(lake, contract, uri, file, run_id, ingested_at)
        if rejected is not None:
            log.warning(
                "bronze %s: rejected %s: %s", contract.name, file.relative_path, rejected["reason"]
            )
            result.files_rejected.append(rejected)
        else:
            result.files_loaded.append(loaded)
    system.record_ingest(lake, result.files_loaded, result.files_rejected)
    return result


def _load_file(
    lake: Lake, contract: Contract, uri: str, file: LandingFile, run_id: str, ingested_at: datetime
) -> tuple[dict | None, dict | None]:
    """Load one file; returns (ledger row, None) or, for an unreadable file, (None, rejection)."""
    with fetched(lake, file) as (local_path, sha256):
        try:
            with landed_frame(
                local_path,
                contract.format,
                display_path=file.relative_path,
                columns=contract.landed_columns,
            ) as frame:
                columns = [c for c in frame.collect_schema().names() if c not in READER_COLUMNS]
                rows = frame.with_columns(
                    pl.col(ROW_NUMBER).cast(pl.Int64),
                    pl.lit(file.relative_path).alias(SOURCE_FILE),
                    pl.lit(sha256).alias(SOURCE_SHA256),
                    pl.lit(ingested_at).alias(INGESTED_AT),
                    pl.lit(run_id).alias(RUN_ID),
                    pl.lit(file.landing_date).alias(LANDING_DATE),
                )
                predicate = (
                    f"{LANDING_DATE} = {delta.sql_literal(file.landing_date)} AND "
                    f"{SOURCE_FILE} = {delta.sql_literal(file.relative_path)}"
                )
                delta.replace_where(
                    lake,
                    uri,
                    rows,
                    predicate,
                    partition_by=[LANDING_DATE],
                    step="bronze load",
                    run_id=run_id,
                    file=file.relative_path,
                )
        except LandingFileError as exc:
            return None, _ledger_row(
                file, run_id, ingested_at, sha256=sha256, rows=0, reason=exc.reason
            )
        except pl.exceptions.PolarsError as exc:  # a defect found mid-file: nothing was committed
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return None, _ledger_row(
                file,
                run_id,
                ingested_at,
                sha256=sha256,
                rows=0,
                reason=f"cannot be parsed: {reason}",
            )
    count = bronze_rows(lake, contract.name, [file.landing_date], files=[file.relative_path])
    return _ledger_row(file, run_id, ingested_at, sha256=sha256, rows=count, columns=columns), None


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


def bronze_rows(
    lake: Lake, source: str, landing_dates: Sequence[str], *, files: Sequence[str] | None = None
) -> int:
    """Rows in bronze for the given landing dates (and files), read from the pruned partitions."""
    frame = delta.scan(
        lake,
        lake.table_uri("bronze", source),
        partition_column=LANDING_DATE,
        partitions=landing_dates,
    )
    if frame is None:
        return 0
    if files is not None:
        frame = frame.filter(pl.col(SOURCE_FILE).is_in(list(files)))
    return int(frame.select(pl.len()).collect().item())
