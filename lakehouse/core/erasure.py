"""Erasure of a data subject (GDPR art. 17, CCPA): every row about them, in every layer, for good.

A subject is a source whose contract declares `subject: <key column>` (`customers`); every
column holding its identifier (`references: customers.id`, or `subject: customers`) finds its
rows. `erase(lake, "customers", "<id>")`:

1. finds the subject: the clear identifier in bronze and quarantine (restricted layers hold
   values as landed), its token (`core.vault`) in silver, gold Delta tables and the warehouse;
2. rewrites every data file holding one of those rows without it: one commit per table that
   removes the old files and adds the rewritten ones. No delete predicate is written (Delta keeps
   predicates in its log), and the new files' statistics hold only the remaining rows;
3. deletes the subject's rows from the DuckDB warehouse (the dbt snapshot's history included);
4. deletes the subject's vault rows (the same way as in 2): its identifier's token, and the
   tokens of its other PII values that no remaining silver row still uses;
5. copies the warehouse to a new file (DuckDB keeps freed blocks) and removes the role stores
   served from gold (`<serve>/*.duckdb`; rebuilt from gold on the next serve);
6. records the request in `_system/erasure_log` (request id, time, tables, rows, versions; never
   a value or a token) and lists the landing files that still hold the subject: the landing zone
   is the source systems' copy and is never modified;
7. makes the old bytes unrecoverable: a zero-retention vacuum of each touched table, then the
   expiry of its whole log before a fresh checkpoint (`core.maintenance`; the per-file statistics
   of the removed files live in the old commits), so no version before the erasure can be read;
   the vault last.

An erasure interrupted midway (a crash, a kill) is finished by running it again: the rerun finds
the rows still there, and every table whose erasure commit still has older versions in its log
(`unpurged_erasure`: rewritten, not yet vacuumed and expired), and carries on under the
interrupted request's id (its log row is written once, before the purge); the subject's token
comes from the vault's version before that erasure when the vault was rewritten already.
Another subject's interrupted erasure must be finished first when it stopped before logging its
request; one that stopped in its purge is purged here as well (counted for that request). The vault is rewritten after every layer and purged last, so a rerun still
knows the subject's tokens while any layer holds their rows, and sees an unfinished erasure
while the warehouse copy or any purge may be missing; a table rewritten before the interruption
still holds its pre-erasure version, where the rerun finds the subject's other PII tokens.

A subject found nowhere changes nothing (`Erasure.found` is false). Zero retention is safe only
while nothing writes these tables: the caller holds the writers off (`writers_held=True`, see
`core.maintenance`). Gold aggregates over the subject's rows (revenue per day) are recomputed
by the next gold build: silver's erasure commits make gold rebuild whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import duckdb
import polars as pl
from deltalake import DeltaTable
from deltalake.transaction import RemoveAction

from lakehouse.core import delta, maintenance, system, vault
from lakehouse.core.contract import Column, Contract, load_contracts
from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import fetched, list_landing_files
from lakehouse.core.publish import CHANGES_KEY, WHOLE_TABLE
from lakehouse.core.readers import RAW_LINE
from lakehouse.core.serve import serve_dir

Match = Callable[[pl.DataFrame], pl.Expr | None]
"""Given a data file's rows, the expression true for the subject's rows (None: none can be)."""

STEP = "erase subject"
"""The `step` of an erasure's commits."""
ERASED_ROWS = "lakehouse.erased_rows"
"""Commit metadata of an erasure's rewrite: the rows it deleted."""


@dataclass(frozen=True)
class Unpurged:
    """A table's erasure commit whose older versions are still in the log."""

    request_id: str
    version: int
    rows: int


@dataclass
class Erasure:
    """What one erasure found and did."""

    request_id: str
    subject: str
    rows: dict[str, int] = field(default_factory=dict)
    """`layer/table` (or `warehouse:schema.table`, `vault`) -> rows deleted."""
    versions: dict[str, int] = field(default_factory=dict)
    """`layer/table` -> the version the erasure committed."""
    landing_files: list[str] = field(default_factory=list)
    """Landing files (relative paths) that still hold the subject's identifier."""
    served_removed: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    """`layer/table`s an interrupted erasure of this subject had rewritten and this one purged."""
    purged_for_others: dict[str, str] = field(default_factory=dict)
    """`layer/table` -> the interrupted erasure of another subject that rewrote it (purged here)."""

    @property
    def found(self) -> bool:
        """Whether the lake held the subject (landing files alone do not count)."""
        return bool(self.rows)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def subject_columns(contracts: Sequence[Contract], subject: str) -> list[tuple[Contract, Column]]:
    """Every (contract, column) holding an identifier of `subject`."""
    by_name = {c.name: c for c in contracts}
    if subject not in by_name or by_name[subject].subject is None:
        declared = sorted(c.name for c in contracts if c.subject)
        msg = f"`{subject}` is not a declared subject; subjects: {', '.join(declared) or 'none'}"
        raise ConfigError(msg)
    return [(c, col) for c in contracts for col in c.columns if col.subject == subject]


def erase(
    lake: Lake,
    subject: str,
    identifier: str,
    *,
    writers_held: bool,
    contracts: Sequence[Contract] | None = None,
    request_id: str | None = None,
) -> Erasure:
    """Erase every row of the subject `subject:identifier` from the lake (see the module doc)."""
    if not writers_held:
        msg = (
            "an erasure vacuums at zero retention: hold every writer pool of the lake off "
            "(no run in progress) and pass writers_held=True"
        )
        raise ConfigError(msg)
    contracts = list(contracts) if contracts is not None else load_contracts()
    columns = subject_columns(contracts, subject)
    sources = sorted({c.name for c, _ in columns})
    names = {
        lake.table_uri(layer, source): f"{layer}/{source}"
        for source in sources
        for layer in ("bronze", "quarantine", "silver")
    }
    names |= {lake.table_uri("gold", t): f"gold/{t}" for t in maintenance.tables_in(lake, "gold")}
    names[vault.vault_uri(lake)] = "vault"
    unpurged = {uri: u for uri in names if (u := unpurged_erasure(lake, uri)) is not None}
    token = vault.lookup(lake, f"subject:{subject}", [identifier]).get(identifier)
    in_vault_before = unpurged.get(vault.vault_uri(lake))
    if token is None and in_vault_before is not None:  # an interrupted erasure rewrote the vault
        token = _token_at(lake, in_vault_before.version - 1, subject, identifier)
    # An interrupted erasure of this subject: one whose rewrite removed the subject's rows.
    matches = _matches(lake, columns, names, identifier, token)
    mine = {
        u.request_id
        for uri, u in unpurged.items()
        if _held_at(lake, uri, u.version - 1, matches.get(uri, []))
        and not _held_at(lake, uri, u.version, matches.get(uri, []))
    }
    _refuse_unfinished_rewrites(lake, [(u, names[uri]) for uri, u in unpurged.items()], mine)
    out = Erasure(request_id or next(iter(sorted(mine)), None) or uuid.uuid4().hex, subject)
    for uri, u in unpurged.items():
        if u.request_id in mine:
            out.rows[names[uri]] = u.rows
            out.versions[names[uri]] = u.version
            out.resumed.append(names[uri])
        else:
            out.purged_for_others[names[uri]] = u.request_id
    out.landing_files = _landing_files(lake, set(sources), identifier)

    touched: list[str] = list(unpurged)
    other_tokens: set[str] = set()
    for contract, col in columns:
        silver_match = _equals(col.silver_name, token)
        tokenised = [c.silver_name for c in vault.tokenised_columns(contract)]
        for layer, match in (
            ("bronze", _landed(col.name, identifier)),
            ("quarantine", _landed(col.name, identifier)),
            ("silver", silver_match),
        ):
            uri = lake.table_uri(layer, contract.name)
            if layer == "silver" and token is not None:
                other_tokens |= _values(delta.scan(lake, uri), silver_match, tokenised)
                if uri in unpurged:  # its rows before the interrupted erasure, if not vacuumed
                    before = _scan_version(lake, uri, unpurged[uri].version - 1)
                    with contextlib.suppress(OSError, pl.exceptions.PolarsError):
                        other_tokens |= _values(before, silver_match, tokenised)
            if _rewrite(lake, uri, names[uri], match, out):
                touched.append(uri)
    if token is not None:
        for uri in (u for u, name in names.items() if name.startswith("gold/")):
            if _rewrite(lake, uri, names[uri], _any_string_equals(token), out):
                touched.append(uri)
        _erase_warehouse(lake, token, out)
        still_used = _used_tokens(lake, contracts, other_tokens - {token})
        erased = {token} | (other_tokens - still_used)
        in_vault = pl.col(vault.TOKEN).is_in(sorted(erased))
        if _rewrite(lake, vault.vault_uri(lake), "vault", lambda _: in_vault, out, [vault.CLAIM]):
            touched.append(vault.vault_uri(lake))
    if not out.found and not out.purged_for_others:
        return out
    if out.found:
        _rewrite_warehouse(Path(lake.warehouse_path))
        out.served_removed = _remove_served(lake)
        _record(lake, out)
    # The vault last: while it is unpurged, a rerun knows an erasure is unfinished.
    for uri in sorted(set(touched), key=lambda u: (names[u] == "vault", names[u])):
        # Vacuum first: a log expired before its table's vacuum would hide the old files left.
        maintenance.vacuum(lake, uri, retention_hours=0, writers_held=writers_held)
        maintenance.expire_log(lake, uri, retention_hours=0, writers_held=writers_held)
        deleted = out.rows.get(names[uri]) if names[uri].startswith("silver/") else None
        if deleted:
            _tell_followers(lake, uri, deleted, out)
    return out


def unpurged_erasure(lake: Lake, uri: str) -> Unpurged | None:
    """The table's latest erasure rewrite, if versions before it can still be read (None: none,
    or purged: vacuumed and its log expired)."""
    table = delta.open_table(lake, uri)
    if table is None:
        return None
    commits = table.history()
    rewrites = [
        c for c in commits if c.get("step") == STEP and CHANGES_KEY not in c and "version" in c
    ]
    if not rewrites:
        return None
    latest = max(rewrites, key=lambda c: c["version"])
    if min(c.get("version", latest["version"]) for c in commits) >= latest["version"]:
        return None
    rows = int(latest.get(ERASED_ROWS, 0))
    return Unpurged(str(latest.get("run_id", "")), int(latest["version"]), rows)


def _refuse_unfinished_rewrites(
    lake: Lake, unpurged: Sequence[tuple[Unpurged, str]], mine: set[str]
) -> None:
    """Refuse while another subject's interrupted erasure has not logged its request (it stopped
    before its vault rewrite): purging its tables now would lose the older versions where its
    rerun finds that subject's other PII tokens. One that logged it is only left to purge."""
    logged = system.read_table(lake, system.ERASURE_LOG)
    done = set(logged.get_column("request_id").to_list()) if not logged.is_empty() else set()
    pending: dict[str, list[str]] = {}
    for u, name in unpurged:
        if u.request_id not in mine and u.request_id not in done:
            pending.setdefault(u.request_id, []).append(name)
    if pending:
        request, tables = sorted(pending.items())[0]
        msg = (
            f"erasure {request} of another subject stopped midway ({', '.join(sorted(tables))} "
            "rewritten, not purged): run that `lakehouse erase` again first"
        )
        raise ConfigError(msg)


def _matches(
    lake: Lake,
    columns: Sequence[tuple[Contract, Column]],
    names: dict[str, str],
    identifier: str,
    token: str | None,
) -> dict[str, list[Match]]:
    """Table URI -> what selects the subject's rows there."""
    found: dict[str, list[Match]] = {}
    for contract, col in columns:
        for layer in ("bronze", "quarantine"):
            uri = lake.table_uri(layer, contract.name)
            found.setdefault(uri, []).append(_landed(col.name, identifier))
        uri = lake.table_uri("silver", contract.name)
        found.setdefault(uri, []).append(_equals(col.silver_name, token))
    if token is not None:
        for uri in (u for u, name in names.items() if name.startswith("gold/")):
            found[uri] = [_any_string_equals(token)]
        found[vault.vault_uri(lake)] = [_equals(vault.TOKEN, token)]
    return found


def _held_at(lake: Lake, uri: str, version: int, matches: Sequence[Match]) -> bool:
    """Whether version `version` of the table held a row one of `matches` selects (False when
    its files are vacuumed already: the other tables of that erasure tell)."""
    frame = _scan_version(lake, uri, version)
    probe = pl.DataFrame(schema=frame.collect_schema())
    exprs = [e for match in matches if (e := match(probe)) is not None]
    if not exprs:
        return False
    hit = pl.any_horizontal(exprs).fill_null(value=False)
    try:
        return frame.filter(hit).limit(1).collect().height > 0
    except (OSError, pl.exceptions.PolarsError):
        return False


def _token_at(lake: Lake, version: int, subject: str, identifier: str) -> str | None:
    """The subject's token in version `version` of the vault (None: not there, or vacuumed)."""
    frame = _scan_version(lake, vault.vault_uri(lake), version)
    wanted = pl.col(vault.CLASS) == f"subject:{subject}", pl.col(vault.VALUE) == identifier
    try:
        rows = frame.filter(*wanted).select(vault.TOKEN).collect()
    except (OSError, pl.exceptions.PolarsError):
        return None
    return rows.item(0, 0) if rows.height else None


def _scan_version(lake: Lake, uri: str, version: int) -> pl.LazyFrame:
    return pl.scan_delta(uri, version=version, storage_options=lake.storage_options or None)


def _equals(column: str, value: str | None) -> Match:
    def match(frame: pl.DataFrame) -> pl.Expr | None:
        if value is None or column not in frame.columns:
            return None
        return pl.col(column).cast(pl.String) == value

    return match


def _landed(column: str, identifier: str) -> Match:
    """Rows of a restricted layer holding `identifier` in `column`, or in an unparsed line."""
    by_column = _equals(column, identifier)

    def match(frame: pl.DataFrame) -> pl.Expr | None:
        exprs = [e for e in (by_column(frame),) if e is not None]
        if RAW_LINE in frame.columns:
            exprs.append(pl.col(RAW_LINE).str.contains(identifier, literal=True))
        return pl.any_horizontal(exprs) if exprs else None

    return match


def _any_string_equals(value: str) -> Match:
    def match(frame: pl.DataFrame) -> pl.Expr | None:
        names = [n for n, t in frame.schema.items() if t == pl.String]
        return pl.any_horizontal(pl.col(n) == value for n in names) if names else None

    return match


def _files(lake: Lake, uri: str, table: DeltaTable) -> list[tuple[dict, pl.DataFrame]]:
    """Every live data file of `table`: its add action (a row) and its rows."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    out = []
    for action in actions.iter_rows(named=True):
        source = f"{uri}/{unquote(action['path'])}"
        options = lake.storage_options or None
        out.append((action, pl.read_parquet(source, storage_options=options)))
    return out


def _values(frame: pl.LazyFrame | None, match: Match, columns: Sequence[str]) -> set[str]:
    """The values of `columns` in the rows of `frame` that `match` selects."""
    if frame is None:
        return set()
    names = frame.collect_schema().names()
    probe = match(pl.DataFrame(schema=frame.collect_schema()))
    if probe is None:
        return set()
    present = [c for c in columns if c in names]
    rows = frame.filter(probe).select(present).collect()
    return {v for c in present for v in rows.get_column(c).drop_nulls().cast(pl.String)}


def _rewrite(
    lake: Lake, uri: str, name: str, match: Match, out: Erasure, claims: Sequence[str] = ()
) -> bool:
    """Rewrite each data file of the table holding rows `match` selects, without them; returns
    whether there were any."""
    table = delta.open_table(lake, uri)
    if table is None:
        return False
    partition_by = list(table.metadata().partition_columns)
    now = int(datetime.now(UTC).timestamp() * 1000)
    parts, removes, deleted = [], [], 0
    for action, rows in _files(lake, uri, table):
        expr = match(rows)
        if expr is None:
            continue
        hit = rows.select(expr.fill_null(value=False)).to_series()
        if not hit.any():
            continue
        deleted += int(hit.sum())
        partition = {c: action.get(f"partition.{c}") for c in partition_by}
        kept = rows.filter(~hit)
        if kept.height:
            literals = [pl.lit(str(v)).alias(c) for c, v in partition.items()]
            parts.append(({c: str(v) for c, v in partition.items()}, kept.with_columns(literals)))
        removes.append(
            RemoveAction(
                action["path"],
                True,
                now,
                size=action["size_bytes"],
                partition_values={c: None if v is None else str(v) for c, v in partition.items()},
            )
        )
    if not removes:
        return False
    stats = [n for part in parts[:1] for n in part[1].columns if n not in partition_by]
    adds = delta.write_data_files(lake, uri, parts, stats_columns=stats)
    try:
        delta.commit_files(
            lake,
            uri,
            table,
            adds,
            removes,
            table.schema().to_arrow(),
            partition_by=partition_by,
            claims=claims,
            run_id=out.request_id,
            step=STEP,
            **{ERASED_ROWS: deleted},
        )
    except Exception:
        delta.discard_files(lake, uri, adds)
        raise
    out.rows[name] = out.rows.get(name, 0) + deleted
    out.versions[name] = delta.open_table(lake, uri).version()
    return True


def _tell_followers(lake: Lake, uri: str, deleted: int, out: Erasure) -> None:
    """An empty commit after the log expiry that makes whoever follows silver (gold) rebuild
    it whole: the erasure's own commit, and any a follower had not taken in yet, were expired
    with the log."""
    table = delta.open_table(lake, uri)
    if table is None:
        return
    changes = json.dumps({WHOLE_TABLE: [0, 0, deleted]})
    table.create_write_transaction(
        [],
        mode="append",
        schema=table.schema(),
        partition_by=list(table.metadata().partition_columns),
        commit_properties=delta.commit_properties(
            run_id=out.request_id, step=STEP, **{CHANGES_KEY: changes}
        ),
    )
    out.versions[uri.split("/lake/", 1)[1]] = table.version()


def _used_tokens(lake: Lake, contracts: Sequence[Contract], tokens: set[str]) -> set[str]:
    """Of `tokens`, those some silver row still holds (shared by another subject's rows)."""
    used: set[str] = set()
    for contract in contracts:
        columns = [c.silver_name for c in vault.tokenised_columns(contract)]
        frame = delta.scan(lake, lake.table_uri("silver", contract.name)) if columns else None
        if frame is None or not tokens:
            continue
        present = [c for c in columns if c in frame.collect_schema().names()]
        for column in present:
            found = frame.filter(pl.col(column).is_in(sorted(tokens))).select(column).collect()
            used |= set(found.get_column(column).to_list())
    return used


def _erase_warehouse(lake: Lake, token: str, out: Erasure) -> None:
    """Delete every warehouse row holding `token` (`_rewrite_warehouse` then drops their bytes)."""
    path = Path(lake.warehouse_path)
    if not path.exists():
        return
    with duckdb.connect(str(path)) as con:
        columns = con.execute(
            "select c.table_schema, c.table_name, c.column_name from information_schema.columns c "
            "join information_schema.tables t using (table_catalog, table_schema, table_name) "
            "where t.table_type = 'BASE TABLE' and c.data_type = 'VARCHAR' "
            "and c.table_catalog = current_database()"
        ).fetchall()
        by_table: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in columns:
            by_table.setdefault((schema, table), []).append(column)
        for (schema, table), names in by_table.items():
            where = " or ".join(f'"{n}" = $token' for n in names)
            deleted = con.execute(
                f'delete from "{schema}"."{table}" where {where}', {"token": token}
            ).fetchone()
            if deleted and deleted[0]:
                out.rows[f"warehouse:{schema}.{table}"] = int(deleted[0])


def _rewrite_warehouse(path: Path) -> None:
    """Copy the warehouse into a fresh file and put it in place: freed blocks stay behind.

    After every erasure that found something, not only one that deleted warehouse rows: an
    interrupted erasure may have deleted them and not yet copied the file."""
    if not path.exists():
        return
    fresh = path.with_name(f".{path.name}.erasure-{uuid.uuid4().hex}")
    with duckdb.connect() as con:
        con.execute(f"attach '{path}' as old (read_only)")
        con.execute(f"attach '{fresh}' as fresh")
        con.execute("copy from database old to fresh")
    os.replace(fresh, path)
    Path(f"{path}.wal").unlink(missing_ok=True)


def _remove_served(lake: Lake) -> list[str]:
    """Remove the role stores served from gold: they hold gold's rows as they were."""
    serve = serve_dir(lake)
    removed = sorted(str(p) for p in serve.glob("*.duckdb*")) if serve.is_dir() else []
    for name in removed:
        Path(name).unlink(missing_ok=True)
    return removed


def _landing_files(lake: Lake, sources: set[str], identifier: str) -> list[str]:
    """Landing files of `sources` whose bytes hold `identifier`."""
    needle = identifier.encode()
    found = []
    for source in sorted(sources):
        for file in list_landing_files(lake, source):
            with fetched(lake, file) as (path, _):
                if needle in Path(path).read_bytes():
                    found.append(file.relative_path)
    return found


def _record(lake: Lake, out: Erasure) -> None:
    """The request's row in the erasure log, once: a rerun finishing its purge adds none."""
    logged = system.read_table(lake, system.ERASURE_LOG)
    if not logged.is_empty() and out.request_id in logged.get_column("request_id").to_list():
        return
    row = {
        "request_id": out.request_id,
        "subject": out.subject,
        "erased_at": datetime.now(UTC).replace(tzinfo=None),
        "tables": [sorted(out.rows)],
        "rows": out.total,
        "versions": [[f"{t}@{v}" for t, v in sorted(out.versions.items())]],
        "landing_files": len(out.landing_files),
    }
    row = {k: v if isinstance(v, list) else [v] for k, v in row.items()}
    frame = pl.DataFrame(row, schema=system.SCHEMAS[system.ERASURE_LOG])
    system.append_rows(lake, system.ERASURE_LOG, frame)
