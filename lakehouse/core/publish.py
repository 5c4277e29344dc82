"""Silver's publish: make silver hold, for every key a batch affects, the latest valid version.

Silver is a function of bronze: for every primary key, the latest valid version (by the
contract's `ordering`, ties broken by landing date, file and row) among the rows bronze holds
now. A batch (the valid winners of some landing dates) affects the keys it holds and the keys
silver holds *from* those landing dates, whose rows may have been corrected or retracted.

For each affected key the publish compares three candidates: the batch's row, the row silver
holds now if it comes from another landing date (still backed by bronze), and, only when silver's
row came from a reprocessed date and the batch offers nothing newer, the best valid row of the
other landing dates in bronze (`fallback`). The winner becomes an exact change:

    insert   a key silver does not hold
    update   a key whose row changed in place (same event date)
    move     a key whose event date changed: deleted from its old partition, inserted in the new
    delete   a key no bronze row holds any more (a retraction)
    nothing  the winner is the row silver holds, byte for byte (`_row_hash`)

All changes are one MERGE, pinned to the event-date partitions they touch; no change, no commit.
The event dates changed travel in the commit's own metadata (`CHANGES_KEY`), so whoever follows
silver (gold) reads exactly which dates a version changed, atomically with the data. A table
dated by a reference (`dated_by:`, items by their order) records its changes at the referenced
rows' dates (`lakehouse.core.dated`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake

from lakehouse.core import dated, delta
from lakehouse.core.bronze import LANDING_DATE, SOURCE_FILE
from lakehouse.core.contract import Contract
from lakehouse.core.lake import Lake
from lakehouse.core.readers import ROW_NUMBER
from lakehouse.core.vault import tokenise

log = logging.getLogger(__name__)

EVENT_DATE = "_event_date"
ROW_HASH = "_row_hash"
"""A hash of the published row (data and lineage): an identical row is never an update."""
CHANGES_KEY = "lakehouse.changes"
"""Commit metadata of a silver publish: JSON `{event_date: [inserted, updated, deleted]}`."""
WHOLE_TABLE = "*"
"""The change key of a table without event dates."""
CREATE_STEP = "silver create"
"""The `step` of the commit that creates silver empty: it changes no date."""
_OP = "__op"
_TARGET = "__target_date"
_TAG = "__candidate"


@dataclass
class PublishResult:
    """What one publish changed."""

    changes: dict[str, list[int]] = field(default_factory=dict)
    """Event date (or `*`) -> [inserted, updated, deleted]; a move counts at both dates."""
    version: int | None = None
    """The silver version the publish committed (None when nothing changed)."""
    keys: pl.DataFrame = field(default_factory=pl.DataFrame)
    """After the publish: the silver rows (keys, event date, landing date) of the affected keys."""
    affected: int = 0
    won: pl.DataFrame = field(default_factory=pl.DataFrame)
    """The batch (or older) rows that are silver's row of their key: keys and landing date."""

    def total(self, index: int) -> int:
        return sum(v[index] for v in self.changes.values())


def order_columns(contract: Contract) -> list[str]:
    """Sort order that makes the last row of a key its latest version."""
    return [
        *([contract.ordering] if contract.ordering else []),
        LANDING_DATE,
        SOURCE_FILE,
        ROW_NUMBER,
    ]


def latest_per_key(
    contract: Contract, rows: pl.DataFrame, *, tiebreak: Sequence[str] = ()
) -> pl.DataFrame:
    """One row per primary key: the latest by the contract's ordering, then by landing position
    (then by `tiebreak`: the last of equal rows wins)."""
    if rows.is_empty():
        return rows
    return rows.sort([*order_columns(contract), *tiebreak], nulls_last=False).unique(
        subset=list(contract.primary_key), keep="last", maintain_order=True
    )


def prepare(lake: Lake, contract: Contract, rows: pl.DataFrame) -> pl.DataFrame:
    """Valid rows as silver stores them: PII and subject identifiers as vault tokens (minted
    when new), event date, row hash."""
    rows = tokenise(lake, contract, rows)
    if contract.event_time:
        rows = rows.with_columns(
            pl.col(contract.event_time).cast(pl.Date).cast(pl.String).alias(EVENT_DATE)
        )
    data = [c for c in rows.columns if c != ROW_HASH]
    return rows.with_columns(
        rows.select(data).hash_rows(seed=7).reinterpret(signed=True).alias(ROW_HASH)
    )


def _state_columns(contract: Contract, available: Sequence[str]) -> list[str]:
    wanted = [
        *contract.primary_key,
        *([EVENT_DATE] if contract.event_time else []),
        *([contract.dated_by] if contract.dated_by else []),
        *order_columns(contract),
        ROW_HASH,
    ]
    return [c for c in dict.fromkeys(wanted) if c in available]


def current_state(
    lake: Lake,
    contract: Contract,
    keys: pl.DataFrame,
    dates: Sequence[str],
    *,
    event_dates: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Silver's rows for `keys` and every row silver holds from landing `dates`.

    A key-column scan: only the keys, event date, ordering, lineage and row hash are read; of
    the `event_dates` partitions only when given (else of the whole table, as a key may sit in
    any partition). Every matching row is returned, duplicates included.
    """
    frame = delta.scan(
        lake,
        lake.table_uri("silver", contract.name),
        partition_column=EVENT_DATE if contract.event_time and event_dates is not None else None,
        partitions=list(event_dates) if event_dates is not None else None,
    )
    if frame is None:
        return pl.DataFrame()
    names = frame.collect_schema().names()
    columns = _state_columns(contract, names)
    first = contract.primary_key[0]
    wanted = (
        keys.get_column(first).unique() if not keys.is_empty() else pl.Series([], dtype=pl.String)
    )
    from_dates = pl.col(LANDING_DATE).is_in(list(dates))
    found = (
        frame.select(columns).filter(pl.col(first).is_in(wanted.implode()) | from_dates).collect()
    )
    if ROW_HASH not in found.columns:  # a table written before row hashes: every row differs
        found = found.with_columns(pl.lit(None, pl.Int64).alias(ROW_HASH))
    if len(contract.primary_key) > 1 and not keys.is_empty():
        key_cols = list(contract.primary_key)
        wanted_keys = keys.select(key_cols).unique().with_columns(pl.lit(True).alias("__wanted"))
        found = (
            found.join(wanted_keys, on=key_cols, how="left", maintain_order="left")
            .filter(pl.col("__wanted").fill_null(False) | from_dates)
            .drop("__wanted")
        )
    return found


Fallback = Callable[[pl.DataFrame], pl.DataFrame]
"""Given keys, the latest valid row per key among bronze's other landing dates (prepared)."""


@delta.retry_conflicts
def publish(
    lake: Lake,
    contract: Contract,
    batch: pl.DataFrame,
    dates: Sequence[str],
    *,
    fallback: Fallback,
    frozen: pl.DataFrame | None = None,
    admit: Callable[[pl.DataFrame], bool] | None = None,
    run_id: str,
    step: str = "silver publish",
) -> PublishResult | None:
    """Bring silver's rows of the keys `batch` affects to their latest valid version.

    A publish that only inserts keys silver does not hold appends them (no MERGE, whose cost
    follows the table, not the batch); any other change is one MERGE. Both claim the table
    (`commit_properties`), so a concurrent publish of the same keys conflicts and is rerun.

    Args:
        batch: The valid rows of landing `dates`, one per key, as `prepare` returns them.
        dates: The landing dates the batch stands for: silver rows from them that the batch
            no longer holds are retracted (or replaced by an older version from another date).
        fallback: Looks up older versions in bronze's other landing dates.
        frozen: Keys whose silver rows stay as they are (their new rows are held back).
        admit: Given silver's rows of the batch's keys and of `dates` as read, whether to go
            on; when it says no, nothing is written and the publish returns None.
    """
    keys = list(contract.primary_key)
    uri = lake.table_uri("silver", contract.name)
    read_version = delta.table_version(lake, uri)
    state = current_state(lake, contract, batch.select(keys), dates)
    if admit is not None and not admit(state):
        return None
    if frozen is not None and not frozen.is_empty() and not state.is_empty():
        state = state.join(frozen.select(keys).unique(), on=keys, how="anti")
    plan = _plan(contract, batch, state, dates, fallback)
    result = PublishResult(affected=plan.affected, won=plan.won)
    if plan.source.is_empty():
        result.keys = state
        return result
    metadata: dict[str, str] = {}
    if contract.dated_by:
        upserts = plan.source.filter(pl.col(_OP) == "upsert")
        plan.changes, metadata = dated.changes(
            lake,
            contract,
            upserts.select(*keys, contract.dated_by),
            plan.source.filter(pl.col(_OP) == "delete").select(keys),
            state,
        )
    result.changes = plan.changes
    metadata[CHANGES_KEY] = json.dumps(plan.changes, sort_keys=True)
    properties = delta.commit_properties(
        claims=[f"silver/{contract.name}"], step=step, run_id=run_id, **metadata
    )
    data_columns = [c for c in plan.source.columns if c not in (_OP, _TARGET)]
    schema = plan.source.select(data_columns).to_arrow().schema
    if delta.open_table(lake, uri) is None:
        # Created empty first (safe to race), so the first publish is a MERGE like any other.
        delta.create_table(
            lake,
            uri,
            schema,
            partition_by=[EVENT_DATE] if contract.event_time else None,
            step=CREATE_STEP,
            run_id=run_id,
        )
    delta.add_columns(lake, uri, schema, run_id=run_id)
    table = delta.open_table(lake, uri)
    assert table is not None
    appended = plan.inserts_only and table.version() == read_version
    if appended:
        # The state was read at this very version: the keys are new to it, and a concurrent
        # publish committed since conflicts on the claim.
        write_deltalake(
            table,
            plan.source.select(data_columns).to_arrow(),
            mode="append",
            schema_mode="merge",
            partition_by=[EVENT_DATE] if contract.event_time else None,
            commit_properties=properties,
        )
    else:
        _merge(contract, table, plan.source, data_columns, properties)
    result.version = delta.table_version(lake, uri)
    result.keys = (
        # nothing else committed since the state was read (the claim): silver's rows of the
        # affected keys are the state's and the appended ones
        pl.concat(
            [state, plan.source.select(_state_columns(contract, plan.source.columns))],
            how="diagonal_relaxed",
        )
        if appended
        else _after(lake, contract, plan, state, dates)
    )
    log.info(
        "silver %s: version %s: %d inserted, %d updated, %d deleted over %d event date(s)",
        contract.name,
        result.version,
        result.total(0),
        result.total(1),
        result.total(2),
        len(plan.changes),
    )
    return result


def _after(
    lake: Lake, contract: Contract, plan: _Plan, state: pl.DataFrame, dates: Sequence[str]
) -> pl.DataFrame:
    """Silver's rows of the affected keys after a MERGE, read back."""
    # Every change is pinned to the target partitions; unchanged affected keys stay where the
    # state found them: reading those partitions again is reading every affected row.
    touched = None
    if contract.event_time:
        touched = sorted(
            set(plan.source.get_column(_TARGET).drop_nulls().to_list())
            | (
                set(state.get_column(EVENT_DATE).drop_nulls().to_list())
                if EVENT_DATE in state.columns
                else set()
            )
        )
    return current_state(lake, contract, plan.affected_keys, dates, event_dates=touched)


def _merge(
    contract: Contract,
    table: DeltaTable,
    source: pl.DataFrame,
    data_columns: list[str],
    properties: CommitProperties,
) -> None:
    """The plan as one MERGE, pinned to the event-date partitions it touches."""
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in contract.primary_key)
    if contract.event_time:
        targets = source.get_column(_TARGET).drop_nulls().unique().sort().to_list()
        predicate = (
            f"{delta.in_predicate('t.' + EVENT_DATE, targets)} "
            f"AND t.{EVENT_DATE} = s.{_TARGET} AND {predicate}"
        )
    columns = {c: f"s.{c}" for c in data_columns}
    (
        table.merge(
            source.to_arrow(),
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            commit_properties=properties,
        )
        .when_matched_delete(predicate=f"s.{_OP} = 'delete'")
        .when_matched_update(updates=columns, predicate=f"s.{_OP} = 'upsert'")
        .when_not_matched_insert(updates=columns, predicate=f"s.{_OP} = 'upsert'")
        .execute()
    )


@dataclass
class _Plan:
    source: pl.DataFrame
    """MERGE source: data columns plus `__op` (upsert | delete) and `__target_date`."""
    changes: dict[str, list[int]]
    affected_keys: pl.DataFrame
    won: pl.DataFrame
    affected: int = 0
    inserts_only: bool = False
    """Every change inserts a key the state does not hold."""


def _plan(
    contract: Contract,
    batch: pl.DataFrame,
    state: pl.DataFrame,
    dates: Sequence[str],
    fallback: Fallback,
) -> _Plan:
    keys = list(contract.primary_key)
    order = order_columns(contract)
    has_dates = contract.event_time is not None
    dates = list(dates)
    if state.is_empty():
        state = batch.select(_state_columns(contract, batch.columns)).clear()
    state = state.with_columns(
        pl.col(c).cast(batch.schema[c]) for c in state.columns if c in batch.columns
    )
    stale = state.filter(pl.col(LANDING_DATE).is_in(dates))
    backed = state.filter(~pl.col(LANDING_DATE).is_in(dates))

    # Keys whose silver row came from a reprocessed date and which the batch does not replace
    # with something at least as new: their next-best version may sit in another landing date.
    probe = pl.concat(
        [
            stale.select(*keys, *order).with_columns(pl.lit(0).alias(_TAG)),
            batch.select(*keys, *order).with_columns(pl.lit(1).alias(_TAG)),
        ],
        how="vertical_relaxed",
    )
    need = (
        latest_per_key(contract, probe, tiebreak=[_TAG]).filter(pl.col(_TAG) == 0).select(keys)
        if not stale.is_empty()
        else pl.DataFrame(schema={k: batch.schema[k] for k in keys})
    )
    older = fallback(need) if not need.is_empty() else batch.clear()
    if not older.is_empty():
        older = older.select(batch.columns)
    full = pl.concat([batch, older], how="vertical_relaxed") if older.height else batch
    full = full.with_row_index("__row")

    candidates = pl.concat(
        [
            backed.select(*keys, *order).with_columns(pl.lit(None, pl.UInt32).alias("__row")),
            full.select(*keys, *order, "__row"),
        ],
        how="vertical_relaxed",
    )
    winners = latest_per_key(contract, candidates)
    affected = pl.concat([state.select(keys), batch.select(keys)], how="vertical_relaxed").unique()
    # New content wins for these keys; the rest keep silver's row (winner from `backed`).
    chosen = full.join(winners.filter(pl.col("__row").is_not_null()).select("__row"), on="__row")
    chosen = chosen.drop("__row")
    current = state.select(
        *keys,
        *([pl.col(EVENT_DATE).alias("__old_date")] if has_dates else []),
        pl.col(ROW_HASH).alias("__old_hash"),
    )
    # Existence by the key join: a table written before row hashes has null hashes.
    compared = chosen.join(
        current.with_columns(pl.lit(True).alias("__exists")), on=keys, how="left"
    ).with_columns(pl.col("__exists").fill_null(False))
    same_date = (pl.col("__old_date") == pl.col(EVENT_DATE)) if has_dates else pl.lit(True)
    unchanged = (
        pl.col("__exists") & same_date & (pl.col("__old_hash") == pl.col(ROW_HASH)).fill_null(False)
    )
    changed = compared.filter(~unchanged)
    inserts = changed.filter(~pl.col("__exists"))
    updates = changed.filter(pl.col("__exists") & same_date)
    moves = changed.filter(pl.col("__exists") & ~same_date) if has_dates else changed.clear()

    won_keys = winners.select(keys)
    retracted = state.join(won_keys, on=keys, how="anti")

    data_columns = batch.columns
    target = pl.col(EVENT_DATE) if has_dates else pl.lit(None, pl.String)
    parts = [
        inserts.select(data_columns).with_columns(
            pl.lit("upsert").alias(_OP), target.alias(_TARGET)
        ),
        updates.select(data_columns).with_columns(
            pl.lit("upsert").alias(_OP), target.alias(_TARGET)
        ),
        moves.select(data_columns).with_columns(pl.lit("upsert").alias(_OP), target.alias(_TARGET)),
    ]
    deletes = [
        *([moves.select(*keys, pl.col("__old_date").alias(_TARGET))] if has_dates else []),
        retracted.select(
            *keys, (pl.col(EVENT_DATE) if has_dates else pl.lit(None, pl.String)).alias(_TARGET)
        ),
    ]
    delete_rows = pl.concat(deletes, how="vertical_relaxed").with_columns(
        pl.lit("delete").alias(_OP)
    )
    source = pl.concat([*parts, delete_rows], how="diagonal_relaxed")

    changes: dict[str, list[int]] = {}

    def count(frame: pl.DataFrame, column: str, index: int) -> None:
        if frame.is_empty():
            return
        if not has_dates:
            changes.setdefault(WHOLE_TABLE, [0, 0, 0])[index] += frame.height
            return
        for day, n in frame.group_by(column).len().iter_rows():
            changes.setdefault(str(day), [0, 0, 0])[index] += n

    count(inserts, EVENT_DATE, 0)
    count(moves, EVENT_DATE, 0)
    count(updates, EVENT_DATE, 1)
    if has_dates:
        count(moves, "__old_date", 2)
    count(retracted, EVENT_DATE, 2)
    return _Plan(
        source=source,
        changes=changes,
        affected_keys=affected,
        won=chosen.select(*keys, LANDING_DATE),
        affected=affected.height,
        inserts_only=updates.is_empty() and moves.is_empty() and delete_rows.is_empty(),
    )


CHANGES_THROUGH_KEY = "lakehouse.changes_through"
"""Written by a log expiry (`lakehouse.core.maintenance.expire_log`) in a commit that outlives it:
the last version that changed data among the commits it may remove."""
_NO_DATA_CHANGE = (
    "CREATE TABLE",
    "OPTIMIZE",
    "ADD COLUMN",
    "VACUUM START",
    "VACUUM END",
    "SET TBLPROPERTIES",
)


def _changed(commit: Mapping[str, Any]) -> dict[str, list[int]] | None:
    """What a commit changed: event date -> [inserted, updated, deleted] from its record, {}
    for a commit that changes no data, None for a data change without a record (everything)."""
    recorded = commit.get(CHANGES_KEY)
    if recorded is not None:
        return json.loads(recorded)
    if commit.get("step") == CREATE_STEP or str(commit.get("operation", "")) in _NO_DATA_CHANGE:
        return {}
    return None


def last_change_version(lake: Lake, uri: str) -> int | None:
    """The latest version of the table at `uri` whose commit changed data (None: none in the
    log), counting the changes an earlier log expiry vouched for."""
    table = delta.open_table(lake, uri)
    if table is None:
        return None
    found = -1
    for commit in table.history():
        v = commit.get("version")
        if v is not None and _changed(commit) != {}:
            found = max(found, v)
        if commit.get(CHANGES_THROUGH_KEY) is not None:
            found = max(found, int(commit[CHANGES_THROUGH_KEY]))
    return found if found >= 0 else None


@dataclass
class Changes:
    """What a silver table's commits after a version changed (`changes_since`)."""

    latest: int | None
    """The table's version (None: no table)."""
    dates: dict[str, list[int]] = field(default_factory=dict)
    """Event date (or `*`) -> [inserted, updated, deleted], summed over the commits."""
    whole: bool = False
    """A commit changed data without saying which dates, or commits are no longer in the log."""
    dated_against: dict[str, int] = field(default_factory=dict)
    """A dated table (`core.dated`): referenced table -> the lowest of its versions the commits'
    dates were looked up in."""


def changes_since(
    lake: Lake, source: str, version: int | None, *, until: int | None = None
) -> Changes:
    """The event dates silver `source` changed after `version` (up to `until`, default latest).

    `whole` is true when a commit changed data without saying which dates (a table written
    before change records, or by another tool), or when commits after `version` are no longer in
    the log and the expiry that removed them does not vouch that none of them changed data after
    `version` (the reader was away longer than the log's retention): its readers must rebuild
    everything.
    """
    table = delta.open_table(lake, lake.table_uri("silver", source))
    if table is None:
        return Changes(None)
    out = Changes(table.version())
    last = out.latest if until is None else min(until, out.latest)
    if version is not None and version >= last:
        return out
    limit = None if version is None else out.latest - version
    seen: dict[int, Mapping[str, Any]] = {}
    for commit in table.history(limit):
        v = commit.get("version")
        if v is None or (version is not None and v <= version) or v > last:
            continue
        seen[v] = commit
        for table_name, against in dated.dated_against(commit).items():
            out.dated_against[table_name] = min(against, out.dated_against.get(table_name, against))
        changed = _changed(commit)
        if changed is None:
            out.whole = True
            continue
        for day, counts in changed.items():
            into = out.dates.setdefault(day, [0, 0, 0])
            for i, n in enumerate(counts):
                into[i] += n
    if version is not None:
        missing = [v for v in range(version + 1, last + 1) if v not in seen]
        if missing:
            after = [v for v in sorted(seen) if v > missing[-1] and CHANGES_THROUGH_KEY in seen[v]]
            vouched = int(seen[after[0]][CHANGES_THROUGH_KEY]) if after else None
            if vouched is None or vouched > version:
                out.whole = True
    return out
