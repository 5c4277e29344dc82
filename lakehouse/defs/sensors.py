"""The landing sensor: new, changed and late files start the loads of their dates, to gold.

One sensor covers every contracted source, on local disk or S3. Its cursor is the ledger of
files seen (`lakehouse.core.arrivals`); each tick requests one run per stretch of consecutive
landing dates with arrivals (a single date is a partition, a stretch is a single-run partition
range). The run takes the sources touched through bronze and silver, then the gold they reach
over the event dates silver changed: one run start from a landed file to gold. Run keys come
from the files' identities, so the same delivery never runs twice. Silver tables that reference
a touched source follow through automation; the gold sensor below takes in whatever silver
change no run has built yet (automation's runs, a run that failed before gold).
"""

from collections.abc import Mapping, Sequence

import dagster as dg
import polars as pl

from lakehouse.core import system
from lakehouse.core.arrivals import Ledger, Load, identity, scan
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.landing import LandingFile, fetched, list_landing_files
from lakehouse.defs.automation import LANDING_RUN
from lakehouse.defs.gold import (
    GOLD_TAG,
    SILVER_CHANGES,
    gold_daily_marts,
    gold_downstream_of,
    gold_marts,
    gold_metrics,
    pending_gold_runs,
)
from lakehouse.defs.partitions import daily_partitions
from lakehouse.defs.recovery import UNFINISHED
from lakehouse.defs.resources import LakeResource, LazyS3Resource
from lakehouse.defs.sources import bronze_key, silver_check_keys, silver_key

MAX_FILES_PER_TICK = 20_000
"""Arrivals beyond this wait for the next tick, so one tick stays far inside the sensor timeout."""

TICK_SECONDS = 1
"""Tick on every pass of the daemon's sensor loop, which runs every 5 s at most: an interval of
5 s would skip every other pass (a tick starts a little after its pass), so a landed file would
wait up to 10 s for the tick that sees it instead of 5."""


def same_as_loaded(lake: Lake):
    """`same_content` for `arrivals.scan`: the file's sha256 equals the one bronze last loaded."""
    cache: dict[tuple[str, str], dict[str, str]] = {}

    def check(file: LandingFile) -> bool:
        key = (file.source, file.landing_date)
        if key not in cache:
            ledger = system.latest_ledger(lake, file.source, [file.landing_date])
            cache[key] = dict(zip(ledger["path"], ledger["sha256"], strict=True))
        loaded = cache[key].get(file.relative_path)
        if loaded is None:
            return False
        with fetched(lake, file) as (_, sha256):
            return sha256 == loaded

    return check


def ledger_from_lake(lake: Lake) -> Ledger:
    """The files bronze has already loaded or rejected, each at its last outcome, as a cursor.

    A sensor with no cursor yet (a new DAGSTER_HOME, `make dev` after `make demo`) starts from
    it, so it requests runs only for what the lake has not seen, not for every landed file.
    """
    frames = [
        frame.select("path", "source", "landing_date", "size", "version", "ingested_at")
        for frame in (
            system.read_table(lake, t) for t in (system.INGEST_LEDGER, system.REJECTED_FILES)
        )
        if not frame.is_empty()
    ]
    if not frames:
        return Ledger()
    latest = (
        pl.concat(frames)
        .sort("ingested_at")
        .group_by("path")
        .last()
        .filter(pl.col("version").is_not_null())  # a skipped folder, not a file
    )
    return Ledger(
        {
            row["path"]: identity(
                LandingFile(
                    source=row["source"],
                    landing_date=row["landing_date"],
                    name=row["path"].rsplit("/", 1)[-1],
                    uri="",
                    size=row["size"],
                    version=row["version"],
                )
            )
            for row in latest.iter_rows(named=True)
        }
    )


def loaded_sources(load: Load, children: Mapping[str, Sequence[str]]) -> list[str]:
    """The sources a load's run loads: its own and their child sources (`explode:`), which
    read the same landed files."""
    return [c for s in load.sources for c in (s, *children.get(s, ()))]


def run_request(
    load: Load,
    children: Mapping[str, Sequence[str]] | None = None,
    gold: Sequence[dg.AssetKey] = (),
    checks: Mapping[str, Sequence[dg.AssetCheckKey]] | None = None,
) -> dg.RunRequest:
    """One run for the load's bronze and silver assets over its dates (a partition or a
    partition range), then `gold` (`gold_downstream_of` the sources), which takes in what
    silver changed.

    `children`: source -> its child sources (`explode:`), which read the source's landed files:
    they load in the same run. `checks`: source -> its silver checks, the run's only selected
    checks (gold records its dbt tests as evaluations; see `GoldRun.selection`)."""
    sources = loaded_sources(load, children or {})
    assets = [*map(bronze_key, sources), *map(silver_key, sources), *gold]
    tags = {**LANDING_RUN, "lakehouse/files": str(len(load.files))}
    if gold:
        tags[GOLD_TAG] = SILVER_CHANGES
    selected = None if checks is None else [k for s in sources for k in checks.get(s, ())]
    if load.start == load.end:
        return dg.RunRequest(
            run_key=load.run_key,
            asset_selection=assets,
            asset_check_keys=selected,
            partition_key=load.start,
            tags=tags,
        )
    return dg.RunRequest(
        run_key=load.run_key,
        asset_selection=assets,
        asset_check_keys=selected,
        tags={
            **tags,
            "dagster/asset_partition_range_start": load.start,
            "dagster/asset_partition_range_end": load.end,
        },
    )


def build_landing_sensor(contracts: Sequence[Contract]) -> dg.SensorDefinition:
    sources = [c.name for c in contracts if not c.parent]  # a child reads its parent's folder
    checks = {c.name: silver_check_keys(c) for c in contracts}
    children: dict[str, list[str]] = {}
    for c in contracts:
        if c.parent:
            children.setdefault(c.parent, []).append(c.name)

    @dg.sensor(
        name="landing_sensor",
        description="Starts the loads of new, changed and late landing files of every source "
        "(local directory or S3) through bronze, silver and the gold they reach; deleted files "
        "start nothing.",
        minimum_interval_seconds=TICK_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=[
            *(bronze_key(c.name) for c in contracts),
            *(silver_key(c.name) for c in contracts),
            *gold_daily_marts.keys,
            *gold_marts.keys,
            *gold_metrics.keys,
        ],
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, lake: LakeResource, s3: LazyS3Resource
    ) -> dg.SensorResult:
        the_lake = lake.lake()
        client = s3.get_client() if the_lake.is_s3 else None
        # A folder that is not a landing date is skipped (warned once, recorded as rejected):
        # it never stops the tick for the other folders and sources.
        listing = [
            f
            for s in sources
            for f in list_landing_files(the_lake, s, client=client, warn=context.log.warning)
        ]
        first = daily_partitions.start.strftime("%Y-%m-%d")
        early = [f for f in listing if f.landing_date < first]
        if early:
            context.log.warning(
                f"{len(early)} landing file(s) dated before the first daily partition `{first}` "
                f"are not loaded (e.g. `{early[0].relative_path}`): set `since:` in the contract "
                "or LAKEHOUSE_START_DATE, then reload the code location"
            )
            listing = [f for f in listing if f.landing_date >= first]
        result = scan(
            listing,
            Ledger.decode(context.cursor) if context.cursor else ledger_from_lake(the_lake),
            limit=MAX_FILES_PER_TICK,
            same_content=same_as_loaded(the_lake),
        )
        loads = result.loads()
        context.log.info(
            f"{len(listing)} landed files, {len(result.arrivals)} new or changed "
            f"({result.deferred} deferred), {len(loads)} run(s)"
        )
        requests = []
        for load in loads:
            gold = gold_downstream_of(the_lake, set(loaded_sources(load, children)))
            requests.append(run_request(load, children, gold, checks))
        return dg.SensorResult(run_requests=requests, cursor=result.ledger.encode())

    return landing_sensor


GOLD_TICK_SECONDS = 15

_ACTIVE = [*UNFINISHED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.CANCELING]


@dg.sensor(
    name="gold_sensor",
    description="Starts the gold runs that silver's changes call for when no run is taking them "
    "in already: the daily marts for exactly the event dates silver changed, the whole marts "
    "when one of their sources changed.",
    minimum_interval_seconds=GOLD_TICK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=[*gold_daily_marts.keys, *gold_marts.keys, *gold_metrics.keys],
)
def gold_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    """One request per pending gold run; the run key names the silver versions it takes in, so
    the same changes never start two runs. While a run whose gold follows silver is queued or
    going (a landing run, this sensor's last one), the changes are its: the tick waits."""
    following = context.instance.get_runs_count(
        dg.RunsFilter(statuses=_ACTIVE, tags={GOLD_TAG: SILVER_CHANGES})
    )
    if following:
        return dg.SensorResult(skip_reason=f"{following} run(s) taking in silver's changes")
    runs = pending_gold_runs(lake.lake())
    if runs:
        context.log.info(f"{len(runs)} gold run(s) for silver's changes")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run.run_key,
                asset_selection=run.keys,
                asset_check_keys=[],  # see GoldRun.selection
                tags=run.tags,
            )
            for run in runs
        ]
    )
