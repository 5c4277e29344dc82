"""Runs killed mid-way (kill -9, OOM, an evicted pod): mark them failed and free their pool slots.

A killed run stays STARTED in Dagster's instance storage with its concurrency-pool slots held, and
every pool here has limit 1: the next run that needs the pool would wait forever. Before it
starts, `lakehouse materialize` calls `recover_dead_runs`, which finds the unfinished runs whose
process is gone on this host, marks each FAILED and frees its slots. Runs of other hosts (run
pods) are left to the daemon's run monitoring (`run_monitoring` in dagster.yaml).

How a run's process is found:
- the pid is the one Dagster records on the run's RUN_START event (the run worker's own pid),
  else the `lakehouse/pid` tag that `lakehouse materialize` puts on its in-process runs;
- the run is on this host when the instance storage is a local SQLite file (DAGSTER_HOME), or when
  its `lakehouse/host` tag names this host (PostgreSQL storage is shared between hosts; an
  untagged run there is never touched);
- the process is gone when `os.kill(pid, 0)` finds no such process, the process is a zombie, or
  the pid now belongs to a process that started after the run did (read from /proc/<pid>/stat).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

log = logging.getLogger(__name__)

TAG_HOST = "lakehouse/host"
"""Run tag: the hostname of the process that runs the run in process (`lakehouse materialize`)."""
TAG_PID = "lakehouse/pid"
"""Run tag: the pid of that process."""

UNFINISHED = [
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.NOT_STARTED,
]
START_SLACK_SECONDS = 2.0
"""A process that started more than this after the run's start runs something else (pid reuse).
The boot time in /proc/stat has whole seconds."""


def process_tags() -> dict[str, str]:
    """The tags an in-process run should carry so that a later process can tell it died."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}


class RecoveredRun(str):
    """The id of a run marked failed by `recover_dead_runs` (a str), with why and its pid."""

    pid: int
    reason: str

    def __new__(cls, run_id: str, pid: int, reason: str) -> RecoveredRun:
        obj = super().__new__(cls, run_id)
        obj.pid = pid
        obj.reason = reason
        return obj

    @property
    def message(self) -> str:
        return f"recovered dead run {self} (pid {self.pid} gone): marked failed, pool slots freed"


@dataclass(frozen=True)
class RunProcess:
    """Where an unfinished run executes, as far as this host can tell."""

    run_id: str
    status: dg.DagsterRunStatus
    pid: int | None
    host: str | None  # None: unknown (another host's run, or no tag)
    started: float | None  # epoch seconds: the run's start, else its creation
    local: bool  # the run executes (or executed) on this host, in a process we can check


def run_process(instance: dg.DagsterInstance, record: dg.RunRecord) -> RunProcess:
    """The pid and host of an unfinished run (from its RUN_START event, else its tags)."""
    run = record.dagster_run
    pid: int | None = None
    started: float | None = None
    events = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    if events and events[0].event_log_entry.dagster_event is not None:
        pid = events[0].event_log_entry.dagster_event.pid
        started = events[0].event_log_entry.timestamp
    tagged_pid = _int(run.tags.get(TAG_PID))
    # Tags count only on runs executed in process: a re-execution launched from the UI copies the
    # tags of its parent but runs in another process (it has a remote origin).
    in_process = run.remote_job_origin is None
    if pid is None and in_process:
        pid = tagged_pid
        started = record.create_timestamp.timestamp()  # that process created the run
    this_host = socket.gethostname()
    host = run.tags.get(TAG_HOST) if in_process else None
    if host is None and _local_storage(instance):
        host = this_host
    return RunProcess(
        run_id=run.run_id,
        status=run.status,
        pid=pid,
        host=host,
        started=started if started is not None else record.create_timestamp.timestamp(),
        local=pid is not None and host == this_host,
    )


def process_gone(pid: int, started: float | None) -> bool:
    """True when no process `pid` runs the work started at `started` (epoch seconds)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # someone else's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return False  # no /proc: trust kill(0)
    state, start = stat
    if state in ("Z", "X"):
        return True
    return started is not None and start is not None and start > started + START_SLACK_SECONDS


def find_dead_runs(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Unfinished runs of this host whose process is gone.

    STARTED and STARTING runs, and NOT_STARTED runs that hold or wait for a pool slot.
    """
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED))
    if not records:
        return []
    slot_runs = _slot_run_ids(instance)
    dead = []
    for record in records:
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.NOT_STARTED and run.run_id not in slot_runs:
            continue
        proc = run_process(instance, record)
        if proc.local and proc.pid is not None and process_gone(proc.pid, proc.started):
            dead.append(proc)
    return dead


def recover_dead_runs(instance: dg.DagsterInstance) -> list[RecoveredRun]:
    """Mark every dead run of this host FAILED and free its pool slots; returns their ids.

    Each returned id is a `RecoveredRun` (a str) with `.pid` and `.message`.
    """
    recovered = []
    for proc in find_dead_runs(instance):
        run = instance.get_run_by_id(proc.run_id)
        if run is None or run.is_finished:
            continue
        reason = f"its process (pid {proc.pid} on {proc.host}) is gone"
        instance.report_run_failed(
            run,
            message=f"Marked failed by lakehouse: {reason}; its pool slots were freed.",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(proc.run_id)
        log.debug("recovered dead run %s: %s", proc.run_id, reason)
        recovered.append(RecoveredRun(proc.run_id, proc.pid or 0, reason))
    return recovered


def slot_holders(
    instance: dg.DagsterInstance, pools: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """The runs holding a slot of each pool (default: every pool the instance knows)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    keys = list(pools) if pools is not None else sorted(storage.get_concurrency_keys())
    return {
        key: list(dict.fromkeys(slot.run_id for slot in info.claimed_slots))
        for key, info in storage.get_concurrency_infos(keys).items()
    }


def describe_run(instance: dg.DagsterInstance, run_id: str) -> str:
    """E.g. "run `abc` (started 12:03:01, pid 123)", with the host when it is not this one."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return f"run `{run_id}` (deleted)"
    proc = run_process(instance, record)
    when = record.start_time or record.create_timestamp.timestamp()
    parts = [f"started {datetime.fromtimestamp(when).strftime('%H:%M:%S')}"]
    if proc.pid is not None:
        parts.append(f"pid {proc.pid}")
    if proc.host is not None and proc.host != socket.gethostname():
        parts.append(f"host {proc.host}")
    if record.dagster_run.is_finished:
        parts.append(str(record.dagster_run.status.value).lower())
    return f"run `{run_id}` ({', '.join(parts)})"


def slot_waits(instance: dg.DagsterInstance, run_ids: Sequence[str] | None = None) -> list[str]:
    """One message per pool a run (default: any) waits for while another run holds it."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    messages = []
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    for pool, info in sorted(infos.items()):
        waiting = {
            step.run_id
            for step in info.pending_steps
            if step.assigned_timestamp is None and (run_ids is None or step.run_id in run_ids)
        }
        holders = [r for r in dict.fromkeys(s.run_id for s in info.claimed_slots) if r]
        if waiting and holders and not set(holders) <= waiting:
            held_by = ", ".join(describe_run(instance, r) for r in holders if r not in waiting)
            messages.append(f"waiting for pool `{pool}`: held by {held_by}")
    return messages


def log_slot_waits(
    instance: dg.DagsterInstance,
    run_ids: Sequence[str] | None = None,
    logger: logging.Logger = log,
) -> list[str]:
    """Log (WARNING) and return `slot_waits`."""
    messages = slot_waits(instance, run_ids)
    for message in messages:
        logger.warning(message)
    return messages


@contextlib.contextmanager
def reporting_slot_waits(
    instance: dg.DagsterInstance, interval: float = 10.0, logger: logging.Logger = log
) -> Iterator[None]:
    """While the block runs, log every `interval` seconds which run holds a pool another waits for.

    Each message is logged once (again only if it changes). Wrap the in-process runs with it:
    `with reporting_slot_waits(instance): materialize_landed(...)`.
    """
    stop = threading.Event()
    seen: set[str] = set()

    def watch() -> None:
        while not stop.wait(interval):
            try:
                messages = slot_waits(instance)
            except Exception:  # a storage hiccup must never break the run being watched
                log.debug("slot wait check failed", exc_info=True)
                continue
            for message in messages:
                if message not in seen:
                    logger.warning(message)
            seen.clear()
            seen.update(messages)

    thread = threading.Thread(target=watch, name="lakehouse-slot-waits", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _slot_run_ids(instance: dg.DagsterInstance) -> set[str]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return set()
    holders = {r for runs in slot_holders(instance).values() for r in runs}
    return holders | set(storage.get_concurrency_run_ids())


def _local_storage(instance: dg.DagsterInstance) -> bool:
    """Instance storage in SQLite files under DAGSTER_HOME: every run it holds ran on this host."""
    return "sqlite" in type(instance.run_storage).__name__.lower()


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """(state, start time in epoch seconds) of a process from /proc, or None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return ("X", None) if os.path.isdir("/proc/self") else None
    except OSError:
        return None
    state = fields[0]
    try:
        ticks = int(fields[19])
        return state, _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return state, None


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
