"""Table maintenance as Dagster jobs: one job per source, one for gold and `_system`, each scheduled.

`maintain_<source>` runs one op per table of the source, one after the other (bronze, quarantine,
silver): expired partitions deleted (the contract's `retention:`), small files compacted (a
stream's micro-batches included), a checkpoint, vacuum and log expiry at the contract's
`retention.history` (`lakehouse.core.maintenance.maintain_table`). Each op runs in its table's
writer pool, so no writer of that table runs beside it: a vacuum even at zero history cannot take
a writer's files, and compaction never conflicts with a replace of the same partitions.
`maintain_shared` does the same (no expiry, the default history) for every gold table, those in
folders (`gold/metrics/*`) included (warehouse pool), and every `_system` table (appends only,
which never conflict with compaction; no row of a `_system` table expires: the ingest ledger is
what makes loads idempotent), then for the PII vault (`_restricted/pii_vault`): compacted,
checkpointed, vacuumed and its log expired at the shortest history of the sources it holds
values of (`maintenance.restricted_history_hours`); none of its rows expires (an erasure is
what deletes them), and its appends (token mints) never conflict with compaction.

The schedules run daily (`LAKEHOUSE_MAINTENANCE_CRON`, default 03:30 UTC) and are RUNNING; the
run queue (at most 4 runs at once) spreads the jobs out.
"""

import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from datetime import date as Date

import dagster as dg

from lakehouse.core import maintenance
from lakehouse.core.contract import Contract
from lakehouse.core.retention import DEFAULT_HISTORY
from lakehouse.defs.resources import LakeResource

MAINTENANCE_CRON_ENV = "LAKEHOUSE_MAINTENANCE_CRON"
DEFAULT_MAINTENANCE_CRON = "30 3 * * *"
SOURCE_LAYERS = ("bronze", "quarantine", "silver")
SHARED_JOB = "maintain_shared"

log = logging.getLogger("lakehouse.maintenance")


def job_name(source: str) -> str:
    return f"maintain_{source}"


def _today() -> Date:
    return datetime.now(UTC).date()


def table_op(contract: Contract, layer: str) -> dg.OpDefinition:
    """The maintenance pass of `layer/<source>`, in the table's writer pool."""
    keep = contract.retention.of(layer)

    @dg.op(
        name=f"maintain_{layer}_{contract.name}",
        description=f"Maintain `{layer}/{contract.name}`: expire partitions older than "
        f"{keep.days if keep else '(never)'} day(s), compact, checkpoint, vacuum and expire the "
        f"log at {contract.retention.history_hours:g} h.",
        ins={"after": dg.In(dg.Nothing)},
        pool=maintenance.writer_pool(layer, contract.name),
        tags={"lakehouse/maintenance": layer},
    )
    def _maintain(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        report = maintenance.maintain_table(
            lake.lake(),
            layer,
            contract.name,
            keep=keep,
            history_hours=contract.retention.history_hours,
            today=_today(),
            # The op holds the table's writer pool, unless the instance enforces no pools.
            writers_held=not context.instance.is_ephemeral,
            progress=_progress(context),
            run_id=context.run.run_id,
        )
        _report(context, report)

    return _maintain


def _progress(context: dg.OpExecutionContext) -> Callable[[str], None]:
    """Each progress line to the run's log and to Python logging (the CLI prints the latter)."""

    def progress(line: str) -> None:
        context.log.info(line)
        log.info(line)

    return progress


def _report(context: dg.OpExecutionContext, report: maintenance.TablePass) -> None:
    context.add_output_metadata(
        {
            "table": report.table,
            "expired_rows": sum(report.expired.values()),
            "expired_partitions": len(report.expired),
            "files_before": report.files_before,
            "files_after": report.files_after,
            "live_files": report.live_after,
            "seconds": round(report.seconds, 2),
        }
    )


def source_job(contract: Contract) -> dg.JobDefinition:
    """`maintain_<source>`: its bronze, quarantine and silver tables, one at a time."""
    ops = [table_op(contract, layer) for layer in SOURCE_LAYERS]

    @dg.job(
        name=job_name(contract.name),
        description=f"Retention and maintenance of `{contract.name}`'s tables, one at a time.",
        tags={"lakehouse/trigger": "maintenance"},
    )
    def _job() -> None:
        previous = None
        for op in ops:
            previous = op(previous) if previous is not None else op()

    return _job


def _shared_op(layer: str, history_hours: float) -> dg.OpDefinition:
    @dg.op(
        name=f"maintain_{layer.strip('_')}_tables",
        description=f"Compact, checkpoint, vacuum and expire the log of every {layer} table "
        f"at {history_hours:g} h.",
        ins={"after": dg.In(dg.Nothing)},
        pool=maintenance.writer_pool(layer, ""),
    )
    def _maintain(context: dg.OpExecutionContext, lake: LakeResource) -> None:
        the_lake = lake.lake()
        for name in maintenance.tables_in(the_lake, layer):
            maintenance.maintain_table(
                the_lake,
                layer,
                name,
                keep=None,
                history_hours=history_hours,
                today=_today(),
                progress=_progress(context),
                run_id=context.run.run_id,
            )

    return _maintain


def shared_job(contracts: Sequence[Contract]) -> dg.JobDefinition:
    """`maintain_shared`: gold, then `_system`, then the restricted vault."""
    default = DEFAULT_HISTORY.total_seconds() / 3600
    gold, system = _shared_op("gold", default), _shared_op("_system", default)
    restricted = _shared_op(maintenance.RESTRICTED, maintenance.restricted_history_hours(contracts))

    @dg.job(
        name=SHARED_JOB,
        description="Maintenance of the gold, `_system` and restricted (vault) tables.",
        tags={"lakehouse/trigger": "maintenance"},
    )
    def _job() -> None:
        restricted(system(gold()))

    return _job


def maintenance_jobs(contracts: Sequence[Contract]) -> list[dg.JobDefinition]:
    return [*(source_job(c) for c in contracts), shared_job(contracts)]


def maintenance_schedules(jobs: Sequence[dg.JobDefinition]) -> list[dg.ScheduleDefinition]:
    """A daily schedule per maintenance job (RUNNING); the run queue spreads them out."""
    cron = os.environ.get(MAINTENANCE_CRON_ENV, DEFAULT_MAINTENANCE_CRON)
    return [_schedule(job, cron) for job in jobs]


def _schedule(job: dg.JobDefinition, cron: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        execution_timezone="UTC",
        description=f"Runs `{job.name}` daily.",
    )
