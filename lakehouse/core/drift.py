"""Schema drift: what silver does with columns a contract does not know, per its `schema_drift` policy.

`evolve` keeps them as new string columns; `rescue` folds them into one `_rescued` JSON column
(pseudonymised first when the contract has PII columns: unclassified values may be personal data);
`freeze` blocks the landing date that brought them. A file that lacks a required column blocks its
landing date under every policy.
"""

from __future__ import annotations

import json

import polars as pl

from lakehouse.core import pii
from lakehouse.core.bronze import LINEAGE_COLUMNS
from lakehouse.core.contract import Contract
from lakehouse.core.readers import PARSE_ERROR, RAW_LINE

RESCUED = "_rescued"


def apply_policy(
    contract: Contract, batch: pl.DataFrame, ledger: pl.DataFrame
) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    """Handle columns the contract does not know, and required columns a file lacks.

    Returns the batch (with `_rescued` under `rescue`) and (landing date, problem) pairs that block.
    In a contract with PII columns the rescued values are pseudonymised like PII (the column
    names stay readable, so someone can classify them): no unclassified value reaches silver clear.
    """
    known = set(contract.landed_columns) | set(LINEAGE_COLUMNS) | {RAW_LINE, PARSE_ERROR}
    problems: list[tuple[str, str]] = []
    required = [c.name for c in contract.columns if not c.nullable]
    for path, date, columns in ledger.select("path", "landing_date", "columns").iter_rows():
        missing = [c for c in required if c not in (columns or [])]
        if missing:
            problems.append(
                (
                    date,
                    f"file `{path}` lacks required column(s) "
                    f"{', '.join(f'`{c}`' for c in missing)}",
                )
            )
        extra = [c for c in (columns or []) if c not in known]
        if extra and contract.schema_drift == "freeze":
            problems.append(
                (
                    date,
                    f"file `{path}` has column(s) not in the contract "
                    f"{', '.join(f'`{c}`' for c in extra)} (schema_drift: freeze)",
                )
            )
    extras = [c for c in batch.columns if c not in known]
    if extras and contract.schema_drift == "rescue":
        if contract.pii_columns:  # a restricted rescue: unclassified values may be personal data
            batch = pii.pseudonymise(batch, extras)
        batch = batch.with_columns(
            pl.struct(extras).map_elements(_rescue_json, return_dtype=pl.String).alias(RESCUED)
        ).drop(extras)
    elif contract.schema_drift == "rescue":
        batch = batch.with_columns(pl.lit(None, pl.String).alias(RESCUED))
    return batch, problems


def _rescue_json(values: dict) -> str | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return json.dumps(kept, sort_keys=True) if kept else None


def evolved_columns(contract: Contract, batch: pl.DataFrame) -> list[str]:
    if contract.schema_drift != "evolve":
        return []
    known = set(contract.landed_columns) | set(LINEAGE_COLUMNS) | {RAW_LINE, PARSE_ERROR}
    return [c for c in batch.columns if c not in known]
