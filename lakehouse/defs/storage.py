"""The embedded instance: Dagster's SQLite storage, its event log keeping connections open.

Dagster's `SqliteEventLogStorage` creates a SQLAlchemy engine and opens the SQLite file for every
read and write, then closes it: 10-15 ms an event on this hardware, and an event is written for
every step, output, materialization and asset check evaluation (a one-day gold run writes about
100). `PooledSqliteEventLogStorage` keeps one engine per database it writes or reads (the index
shard and the most recently used run shards, at most `OPEN_RUN_SHARDS`), so an event costs its
insert: a one-day gold run takes about 1.5 s less.

Everything else is Dagster's: the files, their layout under `DAGSTER_HOME` (`history/runs.db`,
`history/runs/<run id>.db`, `schedules/`), the schema, the locking, the watcher the UI follows runs
with. A new run's shard is created as Dagster creates it (its tables, WAL, alembic's head
revision stamped), the head revision looked up once per process rather than by loading alembic's
~90 revision scripts for every run (0.1 s a run); any other shard goes through Dagster's own
initialisation. An instance switches between this and Dagster's default storage at any time.
Commits are as durable as before (WAL, each write its own transaction); a connection held open
holds no lock between writes. A shard file replaced or deleted behind the process's back
(`dagster run wipe` from another shell) is noticed before each use (its inode) and opened again,
and a forked child never uses its parent's connections.

`dagster.yaml` (the embedded default) selects it through the instance class:

    instance_class:
      module: lakehouse.defs.storage
      class: LakehouseInstance

This module imports Dagster and SQLAlchemy only: the webserver and the daemon load it.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._core.instance import DagsterInstance, InstanceRef
from dagster._core.storage.event_log.base import EventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sql import get_alembic_config
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError

OPEN_RUN_SHARDS = 8
"""Run shards kept open per process besides the index: a run writes its own shard, the UI reads a
few at a time; the least recently used one is closed beyond this."""


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` with one engine per shard kept between calls (see the module)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # before the parent's __init__, which may connect (a new index shard is reindexed)
        self._engines: OrderedDict[str, tuple[Engine, int]] = OrderedDict()
        self._engines_pid = os.getpid()
        self._tables: set[str] = set()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        """The shard's engine: the one held if its file is still the one it opened."""
        if self._engines_pid != os.getpid():  # a forked child: its parent's connections
            for engine, _ in self._engines.values():
                engine.dispose(close=False)
            self._engines.clear()
            self._engines_pid = os.getpid()
        path = self.path_for_shard(shard)
        held = self._engines.pop(shard, None)
        if held is not None:
            engine, inode = held
            if _inode(path) == inode:
                self._engines[shard] = held  # most recently used last
                return engine
            engine.dispose()
            self._initialized_dbs.discard(shard)
        engine = create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            max_overflow=4,  # an inspection inside a connection checks out a second one
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        if _inode(path) is None and shard != INDEX_SHARD_NAME:
            self._init_new_run_shard(engine)
            self._initialized_dbs.add(shard)
        elif shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = (engine, _inode(path) or 0)
        run_shards = [s for s in self._engines if s != INDEX_SHARD_NAME]
        for oldest in run_shards[: max(0, len(run_shards) - OPEN_RUN_SHARDS)]:
            self._engines.pop(oldest)[0].dispose()
        return engine

    def _init_new_run_shard(self, engine: Engine) -> None:
        """A run shard that does not exist yet, as Dagster's `_initdb` makes it; on any error
        (another process creating the same shard) Dagster's own, which retries."""
        try:
            with engine.connect() as conn:
                SqlEventLogStorageMetadata.create_all(conn)
                conn.execute(text("PRAGMA journal_mode=WAL;"))
                MigrationContext.configure(conn).stamp(_alembic_scripts(), "head")
                conn.commit()
        except DatabaseError:
            self._initdb(engine)

    def has_table(self, table_name: str) -> bool:
        """Whether the index has `table_name`. Dagster asks before every asset check evaluation
        and asset event (an engine and a schema inspection each time, about 2 ms): a table found
        is remembered, since only a wipe or an upgrade changes the schema."""
        if table_name in self._tables:
            return True
        found = super().has_table(table_name)  # its own engine: callers may hold the lock
        if found:
            self._tables.add(table_name)
        return found

    def _close_engines(self) -> None:
        self._tables.clear()
        with self._db_lock:
            for engine, _ in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        self._close_engines()  # the run shards' files are deleted
        super().wipe()

    def upgrade(self) -> None:
        self._close_engines()
        super().upgrade()

    def dispose(self) -> None:
        self._close_engines()
        super().dispose()


@functools.cache
def _alembic_scripts() -> ScriptDirectory:
    """Dagster's event log migrations (loaded once: their head is what a new shard is at)."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class LakehouseInstance(DagsterInstance):
    """The embedded default's instance (`instance_class` in `dagster.yaml`): Dagster's instance,
    its SQLite event log (Dagster's default storage under the instance's home) pooled. Any other
    event log (PostgreSQL, `deploy/dagster.yaml`) is used as configured."""

    def __init__(self, *args: Any, event_storage: EventLogStorage, **kwargs: Any) -> None:
        if type(event_storage) is SqliteEventLogStorage:
            event_storage = PooledSqliteEventLogStorage(
                event_storage._base_dir,
                event_storage.inst_data,
            )
        super().__init__(*args, event_storage=event_storage, **kwargs)

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}  # nothing beyond Dagster's own instance settings

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return InstanceRef.config_defaults(base_dir)  # Dagster's: SQLite under the home
