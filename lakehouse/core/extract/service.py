"""A source as a long-lived service: read, land, then bronze and silver, over and over.

`serve` runs one source (`lakehouse stream SOURCE`): each read (a NATS stream's messages for at
most `window` seconds, or one extract of any other kind, e.g. a CDC slot's changes) lands what
arrived as one numbered Parquet file (the commit, `landed`); a second thread loads the landed
dates into bronze and silver with the same gates, quarantine and lineage as any delivered file
while the next read runs (reads that land while silver is busy are published together). Every
publish is handed to `report` in a thread of its own, so the next publish does not wait for it
(the Dagster deployment records it as materializations of landing, bronze and silver). A CDC source's slot lag is measured after every read and reported
with each publish; above `lag_warn_bytes` it is logged as a warning (the slot holds that much
WAL on the source database), and reported even when nothing landed.

Each micro-batch adds a data file to bronze and to silver; past `COMPACT_FILES` small data files
in a table the service compacts them after a publish (`lakehouse.core.maintenance.compact`, bronze
date by date), so reads (silver's key lookups, gold, the bench) do not slow down as the
day goes on.

A service killed at any point loses nothing and repeats nothing: the landed file carries the
stream position (acked after it), bronze and silver skip what they already hold, and a service
starting publishes the landed files bronze has not loaded yet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from lakehouse.core import delta, maintenance
from lakehouse.core.bronze import LANDING_DATE, BronzeResult, load_bronze
from lakehouse.core.contract import Contract
from lakehouse.core.extract.landed import ExtractResult
from lakehouse.core.lake import Lake
from lakehouse.core.silver import SilverResult, load_silver

log = logging.getLogger(__name__)

DEFAULT_LAG_WARN_BYTES = 1 << 30
"""A CDC slot holding more WAL than this (1 GiB) is reported as lagging."""
COMPACT_FILES = 64
"""A table of the source holding more small data files than this is compacted after a publish."""
COMPACT_TARGET_BYTES = 16 << 20
"""Small files are packed into files of about this size (16 MiB); bigger ones are left alone, so
a compaction rewrites about the same bytes however long the day has run."""


@dataclass
class MicroBatch:
    """One publish of the service: the extracts it took into bronze and silver, and their
    outcome. Extracts that land while silver is busy are published together."""

    number: int
    extracts: list[ExtractResult]
    bronze: BronzeResult | None = None
    silver: SilverResult | None = None
    seconds: float = 0.0
    slot_lag_bytes: int | None = None
    lagging: bool = False
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def landing_date(self) -> str:
        return self.extracts[-1].landing_date

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.extracts)

    @property
    def files(self) -> list[str]:
        return [e.uri for e in self.extracts if e.uri is not None]

    @property
    def summary(self) -> str:
        line = f"micro-batch {self.number}: {self.rows:,} rows in {len(self.files)} landed file(s)"
        if self.silver is not None:
            line += (
                f"; silver holds {self.silver.total('accepted'):,} rows of {self.landing_date}, "
                f"{self.silver.total('quarantined'):,} quarantined"
            )
        if self.slot_lag_bytes is not None:
            line += f"; slot lag {self.slot_lag_bytes:,} bytes"
        return f"{line} ({self.seconds:.2f}s)"


class _Publisher:
    """Bronze and silver in their own thread, so the next micro-batch is read meanwhile.

    Landed extracts queue up by landing date; each turn publishes every queued date at once.
    An error stops the service (`check` raises it in the reading loop).
    """

    def __init__(self, lake: Lake, contract: Contract, report: Callable[[MicroBatch], None]):
        self.lake, self.contract, self.report = lake, contract, report
        self.run_id = f"stream-{uuid.uuid4().hex[:12]}"
        self._queue: dict[str, list[ExtractResult]] = {}
        self._wake = threading.Condition()
        self._closing = False
        self._busy = False
        self._error: BaseException | None = None
        self.published = 0
        self.slot_lag: int | None = None
        """A CDC source's slot lag after the latest read (bytes of WAL)."""
        self.lag_warn_bytes = DEFAULT_LAG_WARN_BYTES
        self._reports = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-report")
        """Reports run in order beside the next publish, which does not wait for them."""
        self._thread = threading.Thread(target=self._run, name="stream-publish", daemon=True)
        self._thread.start()

    def submit(self, result: ExtractResult) -> None:
        with self._wake:
            self._queue.setdefault(result.landing_date, []).append(result)
            self._wake.notify()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Publish what is queued, then stop."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        self._reports.shutdown(wait=True)
        self.check()

    def _run(self) -> None:
        try:
            # The service's tables stay open from one publish to the next: each is brought up
            # to date with the commits since (no log replay, no listing of every file).
            with delta.reusing_tables():
                while True:
                    with self._wake:
                        while not self._queue and not self._closing:
                            self._wake.wait()
                        if not self._queue:
                            return
                        todo, self._queue = self._queue, {}
                    for day, extracts in sorted(todo.items()):
                        self._publish(day, extracts)
        except BaseException as exc:  # surfaced in the reading loop
            self._error = exc

    def _publish(self, day: str, extracts: list[ExtractResult]) -> None:
        started = time.monotonic()
        self.published += 1
        lag = self.slot_lag
        batch = MicroBatch(self.published, extracts, slot_lag_bytes=lag)
        batch.lagging = (lag or 0) > self.lag_warn_bytes
        batch.bronze = load_bronze(self.lake, self.contract, [day], run_id=self.run_id)
        batch.silver = load_silver(self.lake, self.contract, [day], run_id=self.run_id)
        self._compact()
        batch.seconds = time.monotonic() - started
        if batch.bronze.files_loaded or batch.bronze.files_rejected or batch.silver.evaluated:
            self._reports.submit(self._report, batch)

    def _report(self, batch: MicroBatch) -> None:
        try:
            self.report(batch)
        except BaseException as exc:  # surfaced in the reading loop
            self._error = exc

    def _compact(self) -> None:
        for layer, column in (("bronze", LANDING_DATE), ("silver", None)):
            uri = self.lake.table_uri(layer, self.contract.name)
            table = delta.open_table(self.lake, uri)
            if table is None:
                continue
            files = pl.DataFrame(table.get_add_actions(flatten=True))
            small = 0 if files.is_empty() else (files["size_bytes"] < COMPACT_TARGET_BYTES).sum()
            if small <= COMPACT_FILES:
                continue
            removed = maintenance.compact(
                self.lake,
                uri,
                by_partition=column,
                target_size=COMPACT_TARGET_BYTES,
                step="stream compact",
                run_id=self.run_id,
            )
            log.info(
                "stream %s: %s compacted, %d small file(s) rewritten",
                self.contract.name,
                layer,
                removed,
            )


def _lag(contract: Contract) -> int | None:
    from lakehouse.core.extract.cdc import names, slot_lag
    from lakehouse.core.extract.postgres import dsn_from_env

    return slot_lag(dsn_from_env(contract, contract.source), names(contract)[0])  # type: ignore[arg-type]


def serve(
    lake: Lake,
    contract: Contract,
    *,
    every: float = 1.0,
    window: float = 1.0,
    max_batches: int | None = None,
    report: Callable[[MicroBatch], None] | None = None,
    lag_warn_bytes: int = DEFAULT_LAG_WARN_BYTES,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Run `contract`'s source as a service until `max_batches` reads or `stop()`.

    First every landed file bronze has not loaded yet (left by a service that died) is
    published; then each read (a NATS micro-batch of at most `window` seconds, or one extract)
    that lands rows is queued for bronze and silver while the next read runs. `every`: seconds
    to wait after a read that found nothing. Returns the number of reads.
    """
    assert contract.source is not None, f"`{contract.name}` is delivered as files"
    cdc = contract.source.mode == "cdc"
    say = report or (lambda batch: log.info(batch.summary))
    publisher = _Publisher(lake, contract, say)
    publisher.lag_warn_bytes = lag_warn_bytes

    def landed(result: ExtractResult) -> None:
        publisher.check()
        if cdc:
            lag = publisher.slot_lag = _lag(contract)
            if (lag or 0) > lag_warn_bytes:
                log.warning(
                    "stream %s: replication slot holds %s bytes of WAL on the source database "
                    "(over %s): the service falls behind or was stopped",
                    contract.name,
                    f"{lag:,}",
                    f"{lag_warn_bytes:,}",
                )
                if result.uri is None:  # nothing to publish: reported on its own
                    say(MicroBatch(0, [result], slot_lag_bytes=lag, lagging=True))
        if result.uri is not None:
            publisher.submit(result)

    def done(reads: int) -> bool:
        return (max_batches is not None and reads >= max_batches) or bool(stop and stop())

    for day in sorted({f.landing_date for f in _unloaded(lake, contract)}):
        publisher.submit(ExtractResult(contract.name, "catch-up", 0, None, day, None))
    try:
        if contract.source.kind == "nats":
            return asyncio.run(_serve_nats(lake, contract, landed, done, every, window))
        from lakehouse.core.extract import extract

        reads = 0
        while not done(reads):
            result = extract(lake, contract)
            landed(result)
            reads += 1
            if result.uri is None and not done(reads):
                time.sleep(every)
        return reads
    finally:
        publisher.close()


def _unloaded(lake: Lake, contract: Contract) -> list:
    """Landed files of the source that bronze has not loaded as they are now."""
    from lakehouse.core.bronze import files_to_load
    from lakehouse.core.landing import list_landing_files

    dates = sorted({f.landing_date for f in list_landing_files(lake, contract.name)})
    return files_to_load(lake, contract, dates) if dates else []


async def _serve_nats(
    lake: Lake,
    contract: Contract,
    landed: Callable[[ExtractResult], None],
    done: Callable[[int], bool],
    every: float,
    window: float,
) -> int:
    """The NATS loop: one consumer for the service's life, a drain per read."""
    from lakehouse.core.extract.nats import JetStreamConsumer, drain

    consumer = await JetStreamConsumer(contract, contract.source, fetch_timeout=0.2).open()  # type: ignore[arg-type]
    reads = 0
    try:
        while not done(reads):
            day = datetime.now(UTC).date().isoformat()
            result = await drain(lake, contract, day, log.info, consumer, max_seconds=window)
            landed(result)
            reads += 1
            if result.uri is None and not done(reads):
                await asyncio.sleep(every)
    finally:
        await consumer.close()
    return reads
