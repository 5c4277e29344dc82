"""Tables dated by a reference (`dated_by:`): a row's event date is the one of the row it references.

An item carries no date of its own: it belongs to its order's day. Its silver table stays
unpartitioned, but a publish records its changes (`publish.CHANGES_KEY`) at the event dates of
the referenced rows, the old row's and the new one's (an item moved to an order of another day
changes both days), looked up in the referenced silver table as the publish finds it. So gold
rebuilds exactly those days, as it does for the orders themselves.

The lookup sees the referenced table at one version, which the commit records too
(`DATED_AGAINST_KEY`). A change that table commits later is recorded by its own publish, but a
consumer may build it before this publish commits, so without this publish's rows: a consumer
that has taken in the referenced table beyond that version rebuilds the dates of those later
changes once more when it takes this commit in (`follow.pending`). A row whose referenced row
silver does not hold (yet) has no date: no dated consumer shows it until that row arrives, and
that row's publish records its date.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import polars as pl

from lakehouse.core import delta
from lakehouse.core.contract import Contract, Reference
from lakehouse.core.lake import Lake

DATED_AGAINST_KEY = "lakehouse.dated_against"
"""Commit metadata of a publish of a dated table: JSON `{referenced table: version looked up}`."""


def reference(contract: Contract) -> Reference:
    """The reference `contract` is dated by."""
    assert contract.dated_by is not None
    ref = contract.column(contract.dated_by).references
    assert ref is not None  # the contract's validation makes sure
    return ref


def changes(
    lake: Lake,
    contract: Contract,
    upserted: pl.DataFrame,
    deleted: pl.DataFrame,
    before: pl.DataFrame,
) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The publish's changes at the dates of the rows referenced, and the commit metadata.

    Args:
        upserted: The rows the publish inserts or updates (keys and the `dated_by` column).
        deleted: The keys the publish deletes.
        before: Silver's rows of the affected keys before the publish (keys and `dated_by`).

    Returns `{event date: [inserted, updated, deleted]}` (an update whose reference moved to
    another date is a delete there and an insert here) and the metadata to commit beside it.
    """
    keys = list(contract.primary_key)
    column = contract.dated_by
    assert column is not None
    key_types = {k: upserted.schema[k] for k in keys}
    if column in before.columns:
        old = before.select(
            *(pl.col(k).cast(t) for k, t in key_types.items()),
            pl.col(column).cast(pl.String).alias("__old"),
        ).unique(subset=keys, keep="last")
    else:  # no silver table yet
        old = pl.DataFrame(schema={**key_types, "__old": pl.String})
    ids = pl.concat([upserted.get_column(column).cast(pl.String), old.get_column("__old")])
    ids = ids.drop_nulls().unique()
    ref = reference(contract)
    dates, version = _dates_of(lake, ref, ids)
    new = upserted.select(*keys, pl.col(column).cast(pl.String).alias("__new")).join(
        old, on=keys, how="left", maintain_order="left"
    )
    gone = deleted.select(pl.col(k).cast(t) for k, t in key_types.items()).join(
        old, on=keys, how="inner"
    )
    new = new.with_columns(
        pl.col("__new")
        .replace_strict(dates, default=None, return_dtype=pl.String)
        .alias("__new_day"),
        pl.col("__old")
        .replace_strict(dates, default=None, return_dtype=pl.String)
        .alias("__old_day"),
    )
    existed = pl.col("__old").is_not_null()
    # an item moved to another order of the same day is an update there
    same_day = existed & (pl.col("__new_day") == pl.col("__old_day")).fill_null(False)
    counted = [  # (the dates, the count they go to: 0 inserted, 1 updated, 2 deleted)
        (new.filter(~same_day).get_column("__new_day"), 0),
        (new.filter(same_day).get_column("__new_day"), 1),
        (new.filter(existed & ~same_day).get_column("__old_day"), 2),
        (gone.get_column("__old").replace_strict(dates, default=None, return_dtype=pl.String), 2),
    ]
    tally = (
        pl.concat([pl.DataFrame({"day": d, "index": i}, schema=_TALLY) for d, i in counted])
        .drop_nulls("day")
        .group_by("day", "index")
        .len()
    )
    out: dict[str, list[int]] = {}
    for day, index, n in tally.sort("day", "index").iter_rows():
        out.setdefault(day, [0, 0, 0])[index] = n
    metadata = {DATED_AGAINST_KEY: json.dumps({ref.table: version})}
    return out, metadata


_TALLY = {"day": pl.String, "index": pl.Int8}


def _dates_of(lake: Lake, ref: Reference, ids: pl.Series) -> tuple[dict[str, str], int]:
    """The event date of each of `ids` the referenced silver table holds, and its version."""
    from lakehouse.core.publish import EVENT_DATE  # publish imports this module

    table = delta.open_table(lake, lake.table_uri("silver", ref.table))
    if table is None or ids.is_empty():
        return {}, -1 if table is None else table.version()
    found = (
        pl.scan_delta(table)
        .select(pl.col(ref.column).cast(pl.String), EVENT_DATE)
        .filter(pl.col(ref.column).is_in(ids.implode()))
        .collect()
    )
    return dict(found.iter_rows()), table.version()


def dated_against(commit: Mapping[str, Any]) -> dict[str, int]:
    """The referenced tables' versions a commit's changes were dated against (none: {})."""
    recorded = commit.get(DATED_AGAINST_KEY)
    return {table: int(v) for table, v in json.loads(recorded).items()} if recorded else {}
