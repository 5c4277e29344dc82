"""Extracts land as Parquet files; the landed file is the commit and carries the extract's state.

An extract of `<source>` writes `<root>/landing/<source>/<YYYY-MM-DD>/<name>.parquet`, where
bronze, the ledger, the landing sensor and every check take it like any delivered file. What the
next extract must know (its sequence number, the cursor it reached) is stored in the file's own
Parquet key-value metadata (`lakehouse.extract`), so the data and the position become visible
together, in one atomic step:

- local disk: the file is written under a hidden temporary name and hard-linked to its final
  name (which fails if another extract took that name first), then the temporary name removed;
- S3: one PUT of the whole object (an object is visible whole or not at all).

A crash before that step leaves no visible file and no new position: the next extract starts
from the last landed file's position, so no row is lost and none is landed twice. Stale hidden
temporaries of a killed extract are removed by the next extract of the same folder.

Incremental extracts are numbered, `extract-000042.parquet`, one new file per extract that found
rows; a snapshot extract writes `snapshot.parquet`, replacing the day's earlier snapshot (a
corrected delivery, for bronze), and is not rewritten when the table has not changed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import (
    LandingFile,
    fetched,
    list_landing_files,
    s3_client,
    sha256_file,
    split_s3_uri,
)

log = logging.getLogger(__name__)

STATE_KEY = b"lakehouse.extract"
"""The Parquet key-value metadata entry holding the extract's state (JSON)."""
SNAPSHOT_NAME = "snapshot.parquet"
CURSOR_TEXT = "_lakehouse_cursor"
"""An extract's frames carry each row's cursor as text in this column (dropped before landing)."""
_INCREMENT = re.compile(r"^extract-(\d{6,})\.parquet$")
_TMP_PREFIX = ".extract-"


class ExtractError(LakehouseError):
    """An extract could not run or commit; nothing of it was landed."""


@dataclass(frozen=True)
class ExtractResult:
    """What one extract landed: `uri` is the landed file (None: nothing new was landed)."""

    source: str
    mode: str
    rows: int
    uri: str | None
    landing_date: str
    cursor: str | None
    seconds: float = 0.0
    unchanged_snapshot: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def landed(self, uri: str) -> ExtractResult:
        return replace(self, uri=uri)

    def unchanged(self) -> ExtractResult:
        return replace(self, unchanged_snapshot=True)

    def timed(self, started: float) -> ExtractResult:
        return replace(self, seconds=time.monotonic() - started)

    @property
    def summary(self) -> str:
        if self.uri is None:
            what = "snapshot unchanged" if self.unchanged_snapshot else "nothing new"
            return f"{self.source}: {what}, nothing landed ({self.seconds:.1f}s)"
        cursor = f", cursor at `{self.cursor}`" if self.cursor else ""
        return (
            f"{self.source}: {self.rows:,} rows landed in {self.uri} ({self.mode}{cursor}; "
            f"{self.seconds:.1f}s, {self.rows_per_second:,.0f} rows/s)"
        )


def text_value(value: object) -> str | None:
    """A record's value as it lands: strings as they are, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def increment_name(sequence: int) -> str:
    return f"extract-{sequence:06d}.parquet"


@dataclass(frozen=True)
class Committed:
    """The last landed extract of a source: its file and the state stored in it."""

    file: LandingFile
    state: dict[str, Any]

    @property
    def sequence(self) -> int:
        return int(self.state["sequence"])


def last_increment(lake: Lake, source: str) -> Committed | None:
    """The landed incremental extract with the highest sequence number, and its state."""
    numbered = [
        (int(m[1]), f)
        for f in list_landing_files(lake, source)
        if (m := _INCREMENT.match(f.name)) is not None
    ]
    if not numbered:
        return None
    _, file = max(numbered, key=lambda item: item[0])
    with fetched(lake, file) as (path, _):
        return Committed(file, read_state(path, file.relative_path))


def last_snapshot(lake: Lake, source: str) -> LandingFile | None:
    """The source's snapshot of the latest landing date, if any."""
    files = [f for f in list_landing_files(lake, source) if f.name == SNAPSHOT_NAME]
    return max(files, key=lambda f: f.landing_date) if files else None


def same_bytes(lake: Lake, file: LandingFile, local: Path) -> bool:
    """Whether a landed file holds exactly the bytes of a local file."""
    with fetched(lake, file) as (_, sha256):
        return sha256 == sha256_file(local)


def read_state(path: Path, display_path: str) -> dict[str, Any]:
    """The `lakehouse.extract` state stored in a landed Parquet file."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        msg = f"landed extract `{display_path}` cannot be read ({exc}): restore or remove it"
        raise ExtractError(msg) from exc
    if STATE_KEY not in metadata:
        msg = f"landed file `{display_path}` has no `{STATE_KEY.decode()}` metadata: not an extract"
        raise ExtractError(msg)
    return json.loads(metadata[STATE_KEY])


class ParquetStage:
    """A Parquet file being written, batch by batch, to a local temporary path."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}.parquet.tmp"
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self, state: dict[str, Any]) -> None:
        assert self._writer is not None, "close() after at least one write()"
        self._writer.add_key_value_metadata({STATE_KEY: json.dumps(state, sort_keys=True)})
        self._writer.close()
        self._writer = None

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.path.unlink(missing_ok=True)


@contextmanager
def staged(lake: Lake, source: str, landing_date: str) -> Iterator[ParquetStage]:
    """A ParquetStage beside its final place (local) or in a temporary folder (S3); removed after."""
    if lake.is_s3:
        with tempfile.TemporaryDirectory(prefix="lakehouse-extract-") as tmp:
            stage = ParquetStage(Path(tmp))
            try:
                yield stage
            finally:
                stage.discard()
        return
    folder = Path(lake.landing_uri(source)) / landing_date
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{_TMP_PREFIX}*.tmp"):  # left by an extract killed mid-write
        log.info("extract %s: removing %s, left by an interrupted extract", source, stale.name)
        stale.unlink(missing_ok=True)
    stage = ParquetStage(folder)
    try:
        yield stage
    finally:
        stage.discard()


def commit(
    lake: Lake, source: str, landing_date: str, stage: ParquetStage, name: str, *, replace: bool
) -> str:
    """Make the staged file visible as `name`: the commit. Returns its URI.

    `replace` (snapshots) overwrites a file of that name; otherwise the name must be free, else
    ExtractError (another extract committed it first).
    """
    uri = f"{lake.landing_uri(source)}/{landing_date}/{name}"
    if lake.is_s3:
        bucket, key = split_s3_uri(uri)
        client = s3_client(lake)
        extra = {} if replace else {"IfNoneMatch": "*"}
        try:
            with stage.path.open("rb") as body:
                client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise _taken(uri) from exc
            raise
        return uri
    target = Path(uri)
    if replace:
        os.replace(stage.path, target)  # atomic: readers see the old snapshot or the new one
        return uri
    try:
        os.link(stage.path, target)  # atomic and exclusive: the name is ours or the error says so
    except FileExistsError as exc:
        raise _taken(uri) from exc
    return uri


def _taken(uri: str) -> ExtractError:
    return ExtractError(
        f"`{uri}` was committed by another extract running at the same time; nothing of this "
        "one was landed: run it again"
    )


def not_before(source: str, day: str, last: str | None) -> None:
    """Extracts only move forward: ExtractError for a landing date before the last extract's."""
    if last is not None and day < last:
        msg = (
            f"source `{source}`: landing date `{day}` is before `{last}`, the landing "
            "date of its last extract: extracts only move forward"
        )
        raise ExtractError(msg)


def finish_snapshot(
    lake: Lake,
    source: str,
    kind: str,
    day: str,
    stage: ParquetStage,
    previous: LandingFile | None,
    say: Callable[[str], None],
    started: float,
) -> ExtractResult:
    """Land a staged snapshot as `<day>/snapshot.parquet`, unless empty or unchanged."""
    result = ExtractResult(source, "snapshot", stage.rows, None, day, None)
    if stage.rows == 0:
        say(
            f"extract {source}: the snapshot is empty; not landed (it would retract every key "
            "from silver): check the source"
        )
        return result.timed(started)
    stage.close({"version": 1, "source": source, "kind": kind, "mode": "snapshot"})
    if previous is not None and same_bytes(lake, previous, stage.path):
        say(
            f"extract {source}: snapshot unchanged since `{previous.relative_path}`; nothing landed"
        )
        return result.unchanged().timed(started)
    return result.landed(commit(lake, source, day, stage, SNAPSHOT_NAME, replace=True)).timed(
        started
    )


class Increment:
    """One incremental extract's bookkeeping: where the last landed extract stopped, where this
    one gets to, and the rows the last one already landed at its final cursor value."""

    def __init__(
        self,
        source: str,
        cursor_column: str,
        keys: Sequence[str],
        day: str,
        state: dict | None,
        sequence: int,
    ) -> None:
        self.source, self.cursor_column, self.keys, self.day = source, cursor_column, keys, day
        self.sequence = sequence
        self.cursor: str | None = state["cursor"] if state else None
        """The last landed extract's cursor (None: extract everything)."""
        self.reached = self.cursor
        self.reached_keys: list[list[str]] = (
            [list(k) for k in state["boundary_keys"]] if state else []
        )
        self._seen = None
        if state and state["boundary_keys"]:
            self._seen = pl.DataFrame(
                state["boundary_keys"], schema=[f"_k_{i}" for i in range(len(keys))], orient="row"
            ).with_columns(pl.lit(state["cursor"]).alias(CURSOR_TEXT))

    @classmethod
    def resume(
        cls,
        lake: Lake,
        source: str,
        cursor_column: str,
        keys: Sequence[str],
        day: str,
        say: Callable[[str], None],
    ) -> Increment:
        """Start from the last landed extract of `source` (every row, if there is none)."""
        previous = last_increment(lake, source)
        not_before(source, day, previous.file.landing_date if previous else None)
        state = previous.state if previous else None
        if state is not None and state.get("cursor_column") != cursor_column:
            say(
                f"extract {source}: the cursor column changed from "
                f"`{state.get('cursor_column')}` to `{cursor_column}`: extracting every row again"
            )
            state = None
        return cls(
            source, cursor_column, keys, day, state, previous.sequence + 1 if previous else 1
        )

    def admit(self, batch: pl.DataFrame, *, ordered: bool) -> pl.DataFrame:
        """The batch without the rows already landed; tracks the highest cursor and its keys.

        `ordered`: batches come sorted by the cursor (a query's ORDER BY), so a batch's last row
        holds the highest value; otherwise the values are compared as text (ISO 8601 in one
        form, or numbers of one width).
        """
        names = [f"_k_{i}" for i in range(len(self.keys))]
        as_text = batch.with_columns(
            pl.col(k).cast(pl.String).alias(n) for k, n in zip(self.keys, names, strict=True)
        )
        if self._seen is not None:
            as_text = as_text.join(self._seen, on=[*names, CURSOR_TEXT], how="anti")
        if as_text.is_empty():
            return as_text.drop(names)
        highest = as_text[CURSOR_TEXT][-1] if ordered else as_text[CURSOR_TEXT].max()
        moved = self.reached is None or (
            highest != self.reached if ordered else str(highest) > self.reached
        )
        if moved:
            self.reached, self.reached_keys = str(highest), []
        at = as_text.filter(pl.col(CURSOR_TEXT) == self.reached).select(names)
        self.reached_keys += [list(row) for row in at.rows()]
        return as_text.drop(names)

    def finish(
        self,
        lake: Lake,
        kind: str,
        stage: ParquetStage,
        say: Callable[[str], None],
        started: float,
    ) -> ExtractResult:
        """Land the staged rows as the next numbered extract, its new position inside it."""
        result = ExtractResult(self.source, "incremental", stage.rows, None, self.day, self.reached)
        if stage.rows == 0:
            say(f"extract {self.source}: no new rows since cursor `{self.cursor}`")
            return result.timed(started)
        stage.close(
            {
                "version": 1,
                "source": self.source,
                "kind": kind,
                "mode": "incremental",
                "sequence": self.sequence,
                "cursor_column": self.cursor_column,
                "cursor": self.reached,
                "boundary_keys": self.reached_keys,
                "rows": stage.rows,
                "extracted_at": datetime.now(UTC).isoformat(),
            }
        )
        uri = commit(
            lake, self.source, self.day, stage, increment_name(self.sequence), replace=False
        )
        return result.landed(uri).timed(started)
