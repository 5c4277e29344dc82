"""The stream service's publisher: micro-batch after micro-batch into bronze and silver, tables
compacted as files accumulate, silver equal to an independent computation after each one."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from lakehouse.core import delta
from lakehouse.core.extract import service
from lakehouse.core.extract.landed import ExtractResult
from lakehouse.core.lake import Lake
from lakehouse_tests.core.test_silver_increment import ALONE, CONTRACT, check, land

D1 = "2026-03-02"


def test_the_publisher_compacts_as_micro_batches_accumulate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lakehouse.core.silver_increment")
    monkeypatch.setattr(service, "COMPACT_FILES", 4)
    lake = Lake(str(tmp_path))
    reported: list[service.MicroBatch] = []
    publisher = service._Publisher(lake, CONTRACT, reported.append)
    files = {}
    try:
        for n in range(1, 13):
            clicks = [(f"e{n * 10 + i}", n * 10 + i, i) for i in range(10)]
            if n == 12:  # a later message updates a key of the first, compacted micro-batch
                clicks.append(("e11", 1000, 777))
            land(tmp_path, D1, n, clicks)
            uri = f"{lake.landing_uri('clicks')}/{D1}/extract-{n:06d}.parquet"
            publisher.submit(ExtractResult("clicks", "incremental", len(clicks), uri, D1, None))
            deadline = time.monotonic() + 30
            while len(reported) < n and time.monotonic() < deadline:
                publisher.check()
                time.sleep(0.02)
            assert len(reported) == n
            check(lake, reported[-1].silver)
            for layer in ("bronze", "silver"):
                table = delta.open_table(lake, lake.table_uri(layer, "clicks"))
                files.setdefault(layer, []).append(len(table.file_uris()))
    finally:
        publisher.close()
    # each table gained a file per micro-batch and was compacted whenever it held more than 4
    assert max(files["bronze"]) <= 5 and max(files["silver"]) <= 5, files
    assert min(files["bronze"][4:]) < 5 and files["bronze"][-1] < 12
    # every micro-batch after the first, compacted files or not, was evaluated on its own
    alone = [r for r in caplog.records if ALONE in r.message]
    assert len(alone) == 11
