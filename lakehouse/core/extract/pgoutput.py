"""A decoder of PostgreSQL's built-in `pgoutput` logical replication messages (protocol 1).

Only what change data capture needs: Begin, Commit, Relation, Insert, Update, Delete (Truncate,
Type, Origin and Message are recognised and skipped). Values arrive as text, the way PostgreSQL
prints them; a TOASTed value an update left unchanged arrives as `UNCHANGED` (the column keeps
its previous value: set `REPLICA IDENTITY FULL` on the table to get every value).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

UNCHANGED = object()
"""A TOASTed column an update did not change: pgoutput does not send its value."""


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One row change: `op` is insert, update or delete; `values` by column (None: SQL null)."""

    op: str
    relation: int
    values: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int


class Decoder:
    """Decodes messages in stream order; remembers the relations it has been told about."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}

    def decode(self, data: bytes) -> Begin | Commit | Relation | Change | None:
        kind = data[:1]
        if kind == b"B":
            final_lsn, _ts, xid = struct.unpack_from("!QqI", data, 1)
            return Begin(final_lsn, xid)
        if kind == b"C":
            _flags, commit_lsn, end_lsn, _ts = struct.unpack_from("!bQQq", data, 1)
            return Commit(commit_lsn, end_lsn)
        if kind == b"R":
            return self._relation(data)
        if kind == b"I":
            (oid,) = struct.unpack_from("!I", data, 1)
            values, _ = self._tuple(oid, data, 6)  # after the `N` marker
            return Change("insert", oid, values)
        if kind == b"U":
            (oid,) = struct.unpack_from("!I", data, 1)
            pos = 5
            old: dict[str, object] = {}
            if data[pos : pos + 1] in (b"K", b"O"):  # the old key or row, then `N`
                old, pos = self._tuple(oid, data, pos + 1)
            values, _ = self._tuple(oid, data, pos + 1)
            for column, value in values.items():  # an unchanged TOAST value: the old row's
                if value is UNCHANGED and old.get(column, UNCHANGED) is not UNCHANGED:
                    values[column] = old[column]
            return Change("update", oid, values)
        if kind == b"D":
            (oid,) = struct.unpack_from("!I", data, 1)
            values, _ = self._tuple(oid, data, 6)  # after `K` (key) or `O` (old row)
            return Change("delete", oid, values)
        return None  # Truncate, Type, Origin, Message

    def _relation(self, data: bytes) -> Relation:
        (oid,) = struct.unpack_from("!I", data, 1)
        schema, pos = _string(data, 5)
        name, pos = _string(data, pos)
        pos += 1  # replica identity setting
        (ncols,) = struct.unpack_from("!h", data, pos)
        pos += 2
        columns = []
        for _ in range(ncols):
            pos += 1  # flags (part of the key)
            column, pos = _string(data, pos)
            pos += 8  # type oid, type modifier
            columns.append(column)
        relation = Relation(oid, schema, name, tuple(columns))
        self.relations[oid] = relation
        return relation

    def _tuple(self, oid: int, data: bytes, pos: int) -> tuple[dict[str, object], int]:
        columns = self.relations[oid].columns
        (ncols,) = struct.unpack_from("!h", data, pos)
        pos += 2
        values: dict[str, object] = {}
        for i in range(ncols):
            kind = data[pos : pos + 1]
            pos += 1
            if kind == b"n":
                values[columns[i]] = None
            elif kind == b"u":
                values[columns[i]] = UNCHANGED
            else:  # `t` (text) or `b` (binary): a length, then the value
                (length,) = struct.unpack_from("!i", data, pos)
                pos += 4
                values[columns[i]] = data[pos : pos + length].decode()
                pos += length
        return values, pos


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end].decode(), end + 1


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it, `16/B374D848`."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_value(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)
