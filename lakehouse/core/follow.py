"""Gold follows what silver changed: the event dates each silver version changed, since a consumer
last took silver in.

Every silver publish records the event dates it changed in its own Delta commit
(`lakehouse.core.publish.CHANGES_KEY`); a consumer (the daily marts, the whole marts) records in
`_system/gold_watermarks` the silver version of each source it has built from. What is pending
for it is the union of the changes of the versions after its watermark: daily marts rebuild
exactly those dates, whatever the landing date that brought them; whole marts rebuild when any
of their sources has a pending change. A build that dies leaves the watermark where it was, so the
next one takes the same changes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lakehouse.core import system
from lakehouse.core.lake import Lake
from lakehouse.core.publish import WHOLE_TABLE, changes_since


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
    """What `consumer` has not taken in yet of the silver tables of `sources`."""
    marks = system.watermarks(lake, consumer)
    out = Pending(marks=marks)
    for source in sources:
        latest, changes, whole = changes_since(lake, source, marks.get(source))
        if latest is None:
            continue
        out.versions[source] = latest
        if not changes and not whole:
            continue
        out.sources.add(source)
        out.whole |= whole or WHOLE_TABLE in changes
        out.dates |= {d for d in changes if d != WHOLE_TABLE}
    return out


def taken_in(lake: Lake, consumer: str, taken: Pending, *, run_id: str) -> None:
    """Record that `consumer` has built from the silver versions of `taken` (those its watermarks
    were not at already; a watermark is the highest version recorded, so one another run moved
    meanwhile stays where it is)."""
    moved = {s: v for s, v in taken.versions.items() if taken.marks.get(s) != v}
    system.record_watermarks(lake, consumer, moved, run_id)
