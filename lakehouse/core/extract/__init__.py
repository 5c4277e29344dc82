"""Extraction: sources that are not delivered as files land as Parquet files, one road into bronze.

Each kind has one module (`postgres`, `cdc`, `http`, `nats`); `landed` is the commit protocol they share (the landed
file is the commit and carries the extract's position); `spec` parses the contract's `source:`
block; `service` runs a source as a long-lived process (`lakehouse stream`) that also loads what
it lands into bronze and silver. Downstream of the landing zone nothing knows how a file got there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lakehouse.core.errors import ConfigError
from lakehouse.core.extract.landed import ExtractError, ExtractResult
from lakehouse.core.lake import Lake

if TYPE_CHECKING:  # the contract module imports `extract.spec`: no import cycle at run time
    from lakehouse.core.contract import Contract

log = logging.getLogger(__name__)

__all__ = ["ExtractError", "ExtractResult", "extract", "extracted_contracts"]


def extracted_contracts(contracts: list[Contract]) -> list[Contract]:
    """The contracts whose rows come from an extract rather than delivered files."""
    return [c for c in contracts if c.source is not None]


def extract(
    lake: Lake,
    contract: Contract,
    *,
    landing_date: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Run one extract of `contract`'s source into the landing zone (default date: today, UTC)."""
    if contract.source is None:
        msg = f"source `{contract.name}` is delivered as files: it has no `source:` to extract"
        raise ConfigError(msg)
    day = landing_date or datetime.now(UTC).date().isoformat()
    say = progress or log.info
    if contract.source.kind == "nats":
        from lakehouse.core.extract.nats import extract_nats

        return extract_nats(lake, contract, day, say)
    if contract.source.kind == "http":
        from lakehouse.core.extract.http import extract_http

        return extract_http(lake, contract, day, say)
    if contract.source.mode == "cdc":
        from lakehouse.core.extract.cdc import extract_cdc

        return extract_cdc(lake, contract, day, say)
    from lakehouse.core.extract.postgres import extract_postgres

    return extract_postgres(lake, contract, day, say)
