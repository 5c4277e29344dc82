"""A NATS JetStream stream against a real nats-server: micro-batches land each message once,
across a consumer that dies after reading and before its commit and ack."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contract
from lakehouse.core.extract import extract
from lakehouse.core.extract import nats as nats_extract
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.silver import load_silver
from lakehouse_tests.servers import nats_server

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "sources"


@pytest.fixture
def nats_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with nats_server(tmp_path / "nats") as url:
        monkeypatch.setenv("EVENTS_NATS_URL", url)
        yield url


def publish(url: str, first: int, count: int, *, bad: int | None = None) -> None:
    """Publish clicks `first`..`first+count-1` (a message id each: JetStream dedupes resends)."""
    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        for i in range(first, first + count):
            body = {"event_id": f"e{i}", "page": f"/p/{i % 9}", "ms": -1 if i == bad else i}
            await js.publish(
                "events.click", json.dumps(body).encode(), headers={"Nats-Msg-Id": f"e{i}"}
            )
        await js.publish("events.other", b"{}")  # another subject: not this source's
        await nc.close()

    asyncio.run(run())


def landed(lake: Lake) -> pl.DataFrame:
    files = [f.uri for f in list_landing_files(lake, "clicks")]
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal")


def test_each_message_lands_once_across_a_dead_consumer(
    tmp_path: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = load_contract(CONTRACTS / "clicks.yaml")
    lake = Lake(str(tmp_path / "lake"))
    publish(nats_url, 1, 1200, bad=7)
    first = extract(lake, contract, landing_date="2024-07-01")
    assert first.rows == 1200  # three fetches of at most 500
    print(f"\nnats drain: 1,200 messages in {first.seconds:.2f}s (incl. a 1 s idle fetch)")
    assert extract(lake, contract, landing_date="2024-07-01").rows == 0

    publish(nats_url, 1190, 300)  # 11 resends (deduped by message id), 289 new

    def die(*args: object, **kwargs: object) -> str:
        raise SystemExit("killed after reading, before commit and ack")

    with monkeypatch.context() as patched:
        patched.setattr(nats_extract, "commit", die)
        with pytest.raises(SystemExit):
            extract(lake, contract, landing_date="2024-07-02")
    assert list_landing_files(lake, "clicks", ["2024-07-02"]) == []
    time.sleep(2.5)  # ack_wait: 2s, then JetStream delivers the unacked messages again
    again = extract(lake, contract, landing_date="2024-07-02")
    assert again.rows == 289

    # the consumer dies after its commit, before its ack: the redelivered messages are dropped
    publish(nats_url, 1490, 10)
    with monkeypatch.context() as patched:
        patched.setattr(nats_extract.JetStreamConsumer, "ack_through", die)
        with pytest.raises(SystemExit):
            extract(lake, contract, landing_date="2024-07-03")
    assert len(list_landing_files(lake, "clicks", ["2024-07-03"])) == 1
    time.sleep(2.5)
    assert extract(lake, contract, landing_date="2024-07-03").rows == 0

    rows = landed(lake)
    assert rows.height == 1499 and rows["event_id"].n_unique() == 1499
    assert rows["stream_seq"].to_list() == sorted(rows["stream_seq"].to_list())
    assert set(rows["subject"]) == {"events.click"}

    dates = ["2024-07-01", "2024-07-02", "2024-07-03"]
    load_bronze(lake, contract, dates, run_id="test")
    load_silver(lake, contract, dates, run_id="test")
    silver = pl.read_delta(lake.table_uri("silver", "clicks"))
    assert silver.height == 1498  # every click but the one with a negative duration
    held = pl.read_delta(lake.table_uri("quarantine", "clicks"))
    assert held["event_id"].to_list() == ["e7"]
    assert dict(silver.select("event_id", "ms").iter_rows())["e1400"] == 1400


def consumer_pending(url: str) -> int:
    """Messages the service's consumer was sent and has not acknowledged."""
    import nats

    async def run() -> int:
        nc = await nats.connect(url)
        info = await nc.jetstream().consumer_info("EVENTS", "lakehouse_clicks")
        await nc.close()
        return info.num_ack_pending

    return asyncio.run(run())


def test_stream_service_killed_mid_batch_holds_each_message_once(
    tmp_path: Path, nats_url: str
) -> None:
    """`lakehouse stream` killed with SIGKILL while a micro-batch is read and not acked; the
    restarted service lands the rest: silver holds every published click once, reported to
    Dagster."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    import dagster as dg

    publish(nats_url, 1, 400)
    lake = Lake(str(tmp_path / "lake"))
    env = {
        **os.environ,
        "LAKEHOUSE_ROOT": lake.root,
        "LAKEHOUSE_CONTRACTS": str(CONTRACTS),
        "EVENTS_NATS_URL": nats_url,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    command = [str(Path(sys.executable).with_name("lakehouse")), "stream", "clicks"]
    publishing = threading.Event()
    published = [400]

    def keep_publishing() -> None:  # 40 clicks every 0.1 s while the service runs
        while not publishing.is_set():
            publish(nats_url, published[0] + 1, 40)
            published[0] += 40
            time.sleep(0.1)

    def start() -> subprocess.Popen:
        log = (tmp_path / "service.log").open("a")
        return subprocess.Popen([*command, "--every", "0.1"], env=env, stdout=log, stderr=log)

    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    kills = 0
    try:
        for _ in range(2):  # killed after a commit, while the next batch is read and not acked
            files = len(list_landing_files(lake, "clicks"))
            service = start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                len(list_landing_files(lake, "clicks")) > files and consumer_pending(nats_url)
            ):
                time.sleep(0.05)
            os.kill(service.pid, signal.SIGKILL)
            service.wait()
            kills += consumer_pending(nats_url) > 0
    finally:
        publishing.set()
        publisher.join()
    assert kills == 2, "the service was never killed with a batch in flight"
    expected = {f"e{i}" for i in range(1, published[0] + 1)}
    service = start()
    try:
        deadline = time.monotonic() + 90
        silver = pl.DataFrame()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            uri = lake.table_uri("silver", "clicks")
            if Path(uri, "_delta_log").is_dir():
                silver = pl.read_delta(uri)
                if silver.height >= len(expected):
                    break
    finally:
        service.kill()
        service.wait()
    assert silver.height == len(expected) == silver["event_id"].n_unique()
    assert set(silver["event_id"]) == expected  # each once: none lost, none twice
    rows = landed(lake)
    assert rows.height == len(expected) and rows["stream_seq"].n_unique() == len(expected)
    bronze = pl.read_delta(lake.table_uri("bronze", "clicks"))
    assert bronze.height == len(expected)
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        reported = instance.fetch_materializations(dg.AssetKey(["silver", "clicks"]), limit=1000)
        assert reported.records, "the service reports its micro-batches to Dagster"
        meta = reported.records[0].asset_materialization.metadata
        assert meta["accepted"].value > 0
