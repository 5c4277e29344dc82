"""The token vault: PII values in silver are random tokens; `_restricted/pii_vault` maps them back.

A PII column of a contract (`pii: name | email | ...`) and every column holding a data subject's
identifier (`subject:`, see `Contract.subject`) is published in silver as tokens. The vault,
`<root>/lake/_restricted/pii_vault` (Delta), holds one row per (class, clear value): its token.
The class is the column's PII class (`name`, `email`, ...) or, for a subject's identifiers,
`subject:<subject>`: the same value of one class gets the same token in every source, so joins
on tokens hold in silver and gold.

Tokens are random (`secrets`), not derived from the value: nothing outside the vault links a
token to a person, and erasing a subject's vault rows (`lakehouse.core.erasure`) leaves no key
with which its tokens could be recomputed.

Minting is idempotent and safe to race: a value already in the vault keeps its token (re-
delivery, replay, reprocessing); new values are appended in one commit that claims the vault
(`delta.commit_properties(claims=...)`), so two silver steps minting at once conflict instead of
both landing, and the loser reruns against the winner's tokens.

The vault is a restricted layer, like bronze and quarantine: whoever may read it may read every
clear PII value. Only the platform's service account (silver steps, erasure) reads it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import polars as pl

from lakehouse.core import delta
from lakehouse.core.contract import Column, Contract
from lakehouse.core.lake import Lake

CLASS = "class"
VALUE = "value"
TOKEN = "token"
MINTED_AT = "minted_at"
SCHEMA = {CLASS: pl.String, VALUE: pl.String, TOKEN: pl.String, MINTED_AT: pl.Datetime("us")}
CLAIM = "lakehouse.pii_vault"
"""The application transaction every mint claims: two concurrent mints conflict."""
TOKEN_PREFIX = "tok_"


def vault_uri(lake: Lake) -> str:
    return lake.table_uri("_restricted", "pii_vault")


def token_class(column: Column) -> str:
    """The class a column's values are tokenised in: its subject, else its PII class."""
    return f"subject:{column.subject}" if column.subject else column.pii


def tokenised_columns(contract: Contract) -> tuple[Column, ...]:
    """The columns silver holds as tokens: PII columns and subject identifiers."""
    return tuple(c for c in contract.columns if c.is_pii or c.subject)


def _read(lake: Lake, wanted: Mapping[str, Iterable[str]]) -> pl.DataFrame:
    """The vault rows (class, value, token) of the `wanted` values per class."""
    frame = delta.scan(lake, vault_uri(lake))
    if frame is None:
        return pl.DataFrame(schema={CLASS: pl.String, VALUE: pl.String, TOKEN: pl.String})
    keys = pl.DataFrame(
        [(k, v) for k, values in wanted.items() for v in values],
        schema={CLASS: pl.String, VALUE: pl.String},
        orient="row",
    )
    return (
        frame.select(CLASS, VALUE, TOKEN)
        .filter(pl.col(VALUE).is_in(keys.get_column(VALUE).unique().implode()))
        .join(keys.lazy(), on=[CLASS, VALUE], how="semi")
        .collect()
    )


def lookup(lake: Lake, token_class_: str, values: Iterable[str]) -> dict[str, str]:
    """Clear value -> token for the `values` of a class the vault holds (mints nothing)."""
    rows = _read(lake, {token_class_: list(values)})
    return dict(zip(rows.get_column(VALUE), rows.get_column(TOKEN), strict=True))


def clear_values(lake: Lake, tokens: Iterable[str]) -> dict[str, str]:
    """Token -> clear value (restricted: for the platform and for `pii_reader`s)."""
    frame = delta.scan(lake, vault_uri(lake))
    if frame is None:
        return {}
    rows = frame.filter(pl.col(TOKEN).is_in(list(tokens))).select(TOKEN, VALUE).collect()
    return dict(zip(rows.get_column(TOKEN), rows.get_column(VALUE), strict=True))


@delta.retry_conflicts
def mint(lake: Lake, wanted: Mapping[str, Iterable[str]], *, run_id: str = "") -> pl.DataFrame:
    """The token of every `wanted` value per class, minting (one commit) those the vault lacks."""
    wanted = {k: sorted(set(v)) for k, v in wanted.items()}
    wanted = {k: v for k, v in wanted.items() if v}
    if not wanted:
        return pl.DataFrame(schema={CLASS: pl.String, VALUE: pl.String, TOKEN: pl.String})
    uri = vault_uri(lake)
    table = delta.create_table(lake, uri, pl.DataFrame(schema=SCHEMA).to_arrow().schema)
    known = _read(lake, wanted)
    have = {(c, v) for c, v in known.select(CLASS, VALUE).iter_rows()}
    new = [(c, v) for c, values in wanted.items() for v in values if (c, v) not in have]
    if not new:
        return known
    now = datetime.now(UTC).replace(tzinfo=None)
    minted = pl.DataFrame(
        {
            CLASS: [c for c, _ in new],
            VALUE: [v for _, v in new],
            TOKEN: [TOKEN_PREFIX + secrets.token_hex(16) for _ in new],
            MINTED_AT: [now] * len(new),
        },
        schema=SCHEMA,
    )
    # Appended on top of the version just read; the claim makes a concurrent mint conflict.
    from deltalake import write_deltalake

    write_deltalake(
        table,
        minted.to_arrow(),
        mode="append",
        storage_options=lake.storage_options or None,
        commit_properties=delta.commit_properties([CLAIM], run_id=run_id, step="mint tokens"),
    )
    return pl.concat([known, minted.select(CLASS, VALUE, TOKEN)])


def tokenise(
    lake: Lake, contract: Contract, rows: pl.DataFrame, *, run_id: str = ""
) -> pl.DataFrame:
    """`rows` with every tokenised column's values replaced by their tokens (nulls stay null)."""
    columns = [c for c in tokenised_columns(contract) if c.silver_name in rows.columns]
    if not columns or rows.is_empty():
        return rows.with_columns(pl.col(c.silver_name).cast(pl.String) for c in columns)
    wanted: dict[str, set[str]] = {}
    for col in columns:
        values = rows.get_column(col.silver_name).drop_nulls().cast(pl.String).unique()
        wanted.setdefault(token_class(col), set()).update(values.to_list())
    tokens = mint(lake, wanted, run_id=run_id)
    by_class = {
        k: dict(zip(g.get_column(VALUE), g.get_column(TOKEN), strict=True))
        for (k,), g in tokens.group_by(CLASS)
    }
    return rows.with_columns(
        pl.col(c.silver_name)
        .cast(pl.String)
        .replace_strict(by_class.get(token_class(c), {}), default=None, return_dtype=pl.String)
        for c in columns
    )
