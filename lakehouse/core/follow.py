"""Gold follows what silver changed: the event dates each silver version changed, since a consumer
last took silver in.

Every silver publish records the event dates it changed in its own Delta commit
(`lakehouse.core.publish.CHANGES_KEY`); a consumer (the daily marts, the whole marts) records in
`_system/gold_watermarks` the silver version of each source it has built from. What is pending
for it is the union of the changes of the versions after its watermark: daily marts rebuild
exactly those dates, whatever the landing date that brought them (a table dated by a reference,
like items by their order, records its changes at the referenced rows' dates: `core.dated`);
whole marts rebuild when any of their sources has a pending change. A build that dies leaves
the watermark where it was, so the next one takes the same changes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from lakehouse.core import delta, system
from lakehouse.core.lake import Lake
from lakehouse.core.publish import EVENT_DATE, WHOLE_TABLE, changes_since


@dataclass
class Pending:
    """What a consumer has not taken in yet."""

    versions: dict[str, int] = field(default_factory=dict)
    """Source -> the silver version to record once the consumer has built from it."""
    dates: set[str] = field(default_factory=set)
    """Event dates changed."""
    whole: bool = False
    """A change without dates (a table without event dates, or an unrecorded commit)."""
    sources: set[str] = field(default_factory=set)
    """Sources with a pending change."""
    marks: dict[str, int] = field(default_factory=dict)
    """The consumer's watermarks when this was read."""

    @property
    def empty(self) -> bool:
        return not self.sources


def pending(lake: Lake, consumer: str, sources: Sequence[str]) -> Pending:
    """What `consumer` has not taken in yet of the silver tables of `sources`.

    A dated table's commits (`core.dated`) looked their dates up in the referenced table at
    some version; the changes that table committed after it, which this consumer has taken in
    already (perhaps before the dated commit, so without its rows), are pending again.
    """
    marks = system.watermarks(lake, consumer)
    out = Pending(marks=marks)
    for source in sources:
        found = changes_since(lake, source, marks.get(source))
        if found.latest is None:
            continue
        out.versions[source] = found.latest
        changes, whole = set(found.dates), found.whole
        for table, against in found.dated_against.items():
            taken = marks.get(table)
            if taken is not None and taken > against:
                again = changes_since(lake, table, against, until=taken)
                changes |= set(again.dates)
                whole |= again.whole
        if not changes and not whole:
            continue
        out.sources.add(source)
        out.whole |= whole or WHOLE_TABLE in changes
        out.dates |= changes - {WHOLE_TABLE}
    return out


def held_dates(lake: Lake, sources: Sequence[str]) -> tuple[str, str] | None:
    """The first and last event dates the silver tables of `sources` hold (from their logs'
    partition values, no data read); None when none of them is partitioned by event date."""
    bounds: list[str] = []
    for source in sources:
        table = delta.open_table(lake, lake.table_uri("silver", source))
        if table is None or EVENT_DATE not in table.metadata().partition_columns:
            continue
        days = pl.DataFrame(table.get_add_actions(flatten=True)).get_column(
            f"partition.{EVENT_DATE}"
        )
        if days.drop_nulls().len():
            bounds += [str(days.min()), str(days.max())]
    return (min(bounds), max(bounds)) if bounds else None


def taken_in(lake: Lake, consumer: str, taken: Pending, *, run_id: str) -> None:
    """Record that `consumer` has built from the silver versions of `taken` (those its watermarks
    were not at already; a watermark is the highest version recorded, so one another run moved
    meanwhile stays where it is)."""
    moved = {s: v for s, v in taken.versions.items() if taken.marks.get(s) != v}
    system.record_watermarks(lake, consumer, moved, run_id)
