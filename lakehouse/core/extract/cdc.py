"""PostgreSQL change data capture: a table's inserts, updates and deletes, by logical replication.

The platform creates the table's publication and logical replication slot (`pgoutput`, built
into PostgreSQL) on the first extract and drops them with `drop_slot`. Each extract reads the
changes committed since the last landed one, up to the server's WAL position when it started,
and lands them as one numbered Parquet file (`landed`), each change a row: the table's columns
as text, `change_op` (insert, update, delete) and `change_lsn` (the commit's position, 16 hex
digits, so text order is commit order; changes of one transaction keep their order as rows).

The position is the end LSN of the last transaction landed, stored in the landed file; only
after that file is committed is the slot told (`flush_lsn`) that PostgreSQL may recycle the WAL
before it. So a consumer killed before its commit gets the same changes again, and a PostgreSQL
restart that rewinds the slot's confirmed position resends changes already landed: both are
dropped by comparing each transaction's end LSN with the stored one. No change is lost while
the slot exists, none is landed twice.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import polars as pl

from lakehouse.core.contract import Contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.extract.landed import (
    ExtractError,
    ExtractResult,
    commit,
    increment_name,
    last_increment,
    not_before,
    staged,
)
from lakehouse.core.extract.pgoutput import (
    UNCHANGED,
    Begin,
    Change,
    Commit,
    Decoder,
    lsn_text,
    lsn_value,
)
from lakehouse.core.extract.postgres import dsn_from_env, quote_ident
from lakehouse.core.extract.spec import PostgresSource
from lakehouse.core.lake import Lake

CHANGE_OP = "change_op"
CHANGE_LSN = "change_lsn"
IDLE_SECONDS = 1.0
"""An extract that has seen nothing for this long, with no transaction open, is caught up."""
MAX_SECONDS = 300.0
"""An extract reads for at most this long; the next one carries on."""


def names(contract: Contract) -> tuple[str, str]:
    """The slot and publication of a CDC source."""
    spec = contract.source
    assert isinstance(spec, PostgresSource)
    slot = spec.slot or f"lakehouse_{contract.name}"
    return slot, spec.publication or slot


def _table(spec: PostgresSource) -> tuple[str, str]:
    assert spec.table is not None
    schema, _, table = spec.table.rpartition(".")
    return schema or "public", table


def _ensure_slot(dsn: str, contract: Contract, say: Callable[[str], None]) -> int:
    """Create the publication and slot if missing; the server's WAL position now."""
    import psycopg2

    spec = contract.source
    assert isinstance(spec, PostgresSource)
    slot, publication = names(contract)
    schema, table = _table(spec)
    try:
        with closing(psycopg2.connect(dsn)) as conn:
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("SHOW wal_level")
            (level,) = cur.fetchone()
            if level != "logical":
                msg = (
                    f"source `{contract.name}`: PostgreSQL runs with wal_level `{level}`; change "
                    "data capture needs `wal_level = logical` (postgresql.conf, then a restart)"
                )
                raise ConfigError(msg)
            cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
            if cur.fetchone() is None:
                cur.execute(
                    f"CREATE PUBLICATION {quote_ident(publication)} FOR TABLE "
                    f"{quote_ident(schema)}.{quote_ident(table)}"
                )
                say(f"extract {contract.name}: created publication `{publication}`")
            cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if cur.fetchone() is None:
                cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
                say(f"extract {contract.name}: created replication slot `{slot}`")
            cur.execute("SELECT pg_current_wal_lsn()::text")
            (now,) = cur.fetchone()
            return lsn_value(now)
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExtractError(f"source `{contract.name}`: cannot set up replication: {first}") from exc


def slot_lag(dsn: str, slot: str) -> int | None:
    """Bytes of WAL the slot holds back on the server (None: no such slot)."""
    import psycopg2

    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])


def drop_slot(contract: Contract) -> bool:
    """Drop the source's slot and publication (the slot holds WAL while it exists)."""
    import psycopg2

    spec = contract.source
    assert isinstance(spec, PostgresSource)
    dsn = dsn_from_env(contract, spec)
    slot, publication = names(contract)
    with closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )
        dropped = cur.fetchone() is not None
        cur.execute(f"DROP PUBLICATION IF EXISTS {quote_ident(publication)}")
    return dropped


def extract_cdc(
    lake: Lake, contract: Contract, day: str, say: Callable[[str], None]
) -> ExtractResult:
    """Land the table's changes since the last landed extract as one file (or none)."""
    import psycopg2
    import psycopg2.extras

    spec = contract.source
    assert isinstance(spec, PostgresSource)
    started = time.monotonic()
    dsn = dsn_from_env(contract, spec)
    target = _ensure_slot(dsn, contract, say)
    slot, publication = names(contract)
    previous = last_increment(lake, contract.name)
    not_before(contract.name, day, previous.file.landing_date if previous else None)
    stored = lsn_value(previous.state["lsn"]) if previous else 0
    sequence = previous.sequence + 1 if previous else 1
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        cur.start_replication(
            slot_name=slot,
            decode=False,
            start_lsn=stored,
            options={"proto_version": "1", "publication_names": publication},
        )
        rows, reached = _read(cur, _table(spec), stored, target, started)
        result = ExtractResult(contract.name, "cdc", len(rows), None, day, lsn_text(reached))
        if rows:
            with staged(lake, contract.name, day) as stage:
                columns = dict.fromkeys(k for row in rows for k in row)  # ALTER TABLE mid-read
                frame = pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String), orient="row")
                stage.write(frame.to_arrow())
                stage.close(
                    {
                        "version": 1,
                        "source": contract.name,
                        "kind": spec.kind,
                        "mode": "cdc",
                        "sequence": sequence,
                        "lsn": lsn_text(reached),
                        "rows": len(rows),
                    }
                )
                name = increment_name(sequence)
                result = result.landed(commit(lake, contract.name, day, stage, name, replace=False))
        if reached > stored or rows:
            cur.send_feedback(flush_lsn=reached, force=True)  # only after the commit
    except psycopg2.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExtractError(f"source `{contract.name}`: replication failed: {first}") from exc
    finally:
        conn.close()
    lag = slot_lag(dsn, slot)
    say(f"extract {contract.name}: {len(rows):,} change(s); slot `{slot}` holds {lag} bytes of WAL")
    return result.timed(started)


def _read(
    cur: Any, table: tuple[str, str], stored: int, target: int, started: float
) -> tuple[list[dict], int]:
    """The changes of transactions ending after `stored`, up to `target`; and where it got."""
    decoder = Decoder()
    rows: list[dict] = []
    pending: list[Change] = []
    in_txn = False
    reached = stored
    idle_since = time.monotonic()
    while time.monotonic() - started < MAX_SECONDS:
        message = cur.read_message()
        if message is None:
            if not in_txn and (reached >= target or time.monotonic() - idle_since > IDLE_SECONDS):
                break
            select.select([cur], [], [], 0.2)
            continue
        idle_since = time.monotonic()
        event = decoder.decode(message.payload)
        if isinstance(event, Begin):
            in_txn, pending = True, []
        elif isinstance(event, Change):
            relation = decoder.relations[event.relation]
            if (relation.schema, relation.name) == table:
                pending.append(event)
        elif isinstance(event, Commit):
            in_txn = False
            if event.end_lsn > stored:  # not landed yet (a rewound slot resends older ones)
                position = f"{event.commit_lsn:016X}"
                for change in pending:
                    row = {k: (None if v is UNCHANGED else v) for k, v in change.values.items()}
                    row[CHANGE_OP] = change.op
                    row[CHANGE_LSN] = position
                    rows.append(row)
                reached = max(reached, event.end_lsn)
            if event.end_lsn >= target:
                break
    return rows, reached
