"""Which landed files are new or changed since the last look, grouped into loads.

A ledger maps each seen file (path relative to the landing root) to its identity: size plus the
S3 ETag or the local mtime. Comparing a listing against it yields the files to load:

- a new path, or a path whose identity changed, is an arrival;
- a changed identity with unchanged bytes (an identical file delivered again) is not, when the
  caller can tell (`same_content`), e.g. from the sha256 the ingest ledger recorded;
- a path that disappeared produces nothing: deleting a landed file deletes no data. It leaves the
  ledger, so delivering it again is an arrival.

Arrivals are grouped into loads: runs of consecutive landing dates, each with the sources they
touch and a key derived from the files' identities, so the same files never make two loads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from lakehouse.core.landing import LandingFile, is_landing_date

log = logging.getLogger(__name__)

LEDGER_VERSION = 1


def identity(file: LandingFile) -> str:
    """What tells one delivery of a path from another: size and ETag (S3) or mtime (local)."""
    return f"{file.size}:{file.version}"


@dataclass(frozen=True)
class Ledger:
    """The files seen so far: relative path -> identity."""

    files: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        """A compact string for a sensor cursor (zlib-compressed JSON, base64)."""
        payload = json.dumps({"v": LEDGER_VERSION, "files": dict(self.files)}, sort_keys=True)
        return base64.b64encode(zlib.compress(payload.encode(), 6)).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> Ledger:
        if not cursor:
            return cls()
        payload = json.loads(zlib.decompress(base64.b64decode(cursor)))
        return cls(payload["files"])


@dataclass(frozen=True)
class Load:
    """Files to load together: consecutive landing dates `start`..`end`, the sources touched."""

    start: str
    end: str
    sources: tuple[str, ...]
    files: tuple[LandingFile, ...]

    @property
    def run_key(self) -> str:
        """Derived from the files' paths and identities: identical files give an identical key."""
        digest = hashlib.sha256()
        for file in sorted(self.files, key=lambda f: f.relative_path):
            digest.update(f"{file.relative_path}\t{identity(file)}\n".encode())
        return f"landing:{self.start}..{self.end}:{digest.hexdigest()[:32]}"


@dataclass(frozen=True)
class Scan:
    """The outcome of comparing a listing against a ledger."""

    arrivals: tuple[LandingFile, ...]
    ledger: Ledger
    """The ledger to keep: every listed file except the deferred ones; deleted files dropped."""
    deferred: int
    """Arrivals left for the next look because of the per-look limit."""

    def loads(self) -> list[Load]:
        return group_loads(self.arrivals)


def scan(
    listing: Iterable[LandingFile],
    ledger: Ledger,
    *,
    limit: int | None = None,
    same_content: Callable[[LandingFile], bool] | None = None,
) -> Scan:
    """Compare `listing` with `ledger`: the new and changed files, at most `limit` of them.

    `same_content(file)` is asked only about a known path whose size is unchanged but whose
    version moved; returning True records the new identity without an arrival.
    """
    seen = ledger.files
    kept: dict[str, str] = {}
    arrivals: list[LandingFile] = []
    deferred = 0
    for file in sorted(listing, key=lambda f: (f.landing_date, f.source, f.name)):
        path, ident = file.relative_path, identity(file)
        old = seen.get(path)
        if old == ident:
            kept[path] = ident
            continue
        if (
            old is not None
            and same_content is not None
            and old.split(":", 1)[0] == str(file.size)
            and same_content(file)
        ):
            kept[path] = ident
            continue
        if limit is not None and len(arrivals) >= limit:
            deferred += 1
            if old is not None:
                kept[path] = old  # still owed: compared again next time
            continue
        arrivals.append(file)
        kept[path] = ident
    return Scan(tuple(arrivals), Ledger(kept), deferred)


def group_loads(files: Iterable[LandingFile]) -> list[Load]:
    """Group files into loads of consecutive landing dates (a gap starts a new load).

    A file whose landing date is no real date (listings skip such folders) is left out with a
    warning: it cannot be a partition, and it must not stop the other files' loads.
    """
    by_date: dict[str, list[LandingFile]] = {}
    for file in files:
        if not is_landing_date(file.landing_date):
            log.warning("not a landing date, not loaded: %s", file.relative_path)
            continue
        by_date.setdefault(file.landing_date, []).append(file)
    loads: list[Load] = []
    run: list[str] = []
    for day in sorted(by_date):
        if run and date.fromisoformat(day) - date.fromisoformat(run[-1]) != timedelta(days=1):
            loads.append(_load(run, by_date))
            run = []
        run.append(day)
    if run:
        loads.append(_load(run, by_date))
    return loads


def _load(days: list[str], by_date: Mapping[str, list[LandingFile]]) -> Load:
    files = tuple(f for d in days for f in by_date[d])
    return Load(days[0], days[-1], tuple(sorted({f.source for f in files})), files)
