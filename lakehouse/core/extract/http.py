"""HTTP JSON API -> Parquet in the landing zone, through dlt's `rest_api` source.

dlt does the HTTP work: pagination (page number, offset, JSON link, Link header, cursor),
authentication, and retries with exponential backoff on 429 and 5xx (honouring `Retry-After`);
its `RUNTIME__REQUEST_MAX_ATTEMPTS` and `RUNTIME__REQUEST_BACKOFF_FACTOR` variables tune them.
A fresh dlt source is built for every extract: dlt mutates a source's schema as it runs, so a
source object reused in one process fails its second run.

No dlt pipeline or destination is involved: the records are read from the source, every value
landed as text (strings as they are; numbers, booleans, objects and arrays as JSON), and landed
with the shared commit protocol (`landed`). Incremental: the cursor field's highest value (ISO
8601 in one form, or numbers of one width: values are compared as text) and the keys that carry
it are stored in the landed file; the next extract sends it as `cursor_param` (the API should
return records at or after it) and drops the records the last extract already landed at it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from lakehouse.core.contract import Contract
from lakehouse.core.errors import ConfigError
from lakehouse.core.extract.landed import (
    CURSOR_TEXT,
    ExtractError,
    ExtractResult,
    Increment,
    finish_snapshot,
    last_snapshot,
    not_before,
    staged,
    text_value,
)
from lakehouse.core.extract.spec import HttpSource
from lakehouse.core.lake import Lake

PAGE_ROWS = 10_000
"""Records per progress line."""


def _secret(contract: Contract, variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        msg = f"source `{contract.name}`: environment variable `{variable}` (its API secret) is not set"
        raise ConfigError(msg)
    return value


def _auth(contract: Contract, spec: HttpSource) -> dict[str, Any] | None:
    if not spec.auth:
        return None
    if spec.auth["type"] == "bearer":
        return {"type": "bearer", "token": _secret(contract, spec.auth["token_env"])}
    return {
        "type": "api_key",
        "name": spec.auth.get("name", "Authorization"),
        "location": spec.auth.get("location", "header"),
        "api_key": _secret(contract, spec.auth["key_env"]),
    }


def _records(contract: Contract, spec: HttpSource, params: dict[str, Any]) -> Iterator[dict]:
    """The endpoint's records, every page, from a dlt source built for this call."""
    from dlt.sources.rest_api import rest_api_source

    client: dict[str, Any] = {"base_url": spec.url}
    if spec.paginator is not None:
        client["paginator"] = spec.paginator
    auth = _auth(contract, spec)
    if auth is not None:
        client["auth"] = auth
    endpoint: dict[str, Any] = {"path": spec.path, "params": params}
    if spec.data_selector:
        endpoint["data_selector"] = spec.data_selector
    resource = {"name": contract.name, "endpoint": endpoint, "write_disposition": "append"}
    source = rest_api_source({"client": client, "resources": [resource]})
    try:
        yield from source.resources[contract.name]
    except Exception as exc:  # dlt wraps HTTP and JSON errors in its own pipeline errors
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        msg = f"source `{contract.name}`: HTTP extract from {spec.url}{spec.path} failed: {first}"
        raise ExtractError(msg) from exc


def _frames(
    contract: Contract, spec: HttpSource, params: dict[str, Any], say: Callable[[str], None]
) -> Iterator[pl.DataFrame]:
    """The records as one frame of text columns (a page's fields may differ from another's)."""
    rows = []
    for record in _records(contract, spec, params):
        row = {k: text_value(v) for k, v in record.items()}
        if spec.cursor:
            row[CURSOR_TEXT] = text_value(record.get(spec.cursor))
        rows.append(row)
        if len(rows) % PAGE_ROWS == 0:
            say(f"extract {contract.name}: {len(rows):,} records read")
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        yield pl.DataFrame(rows, schema=dict.fromkeys(columns, pl.String), orient="row")


def extract_http(
    lake: Lake, contract: Contract, day: str, say: Callable[[str], None]
) -> ExtractResult:
    """Extract the contract's HTTP API source into landing date `day` (one file, or none)."""
    spec = contract.source
    assert isinstance(spec, HttpSource)
    started = time.monotonic()
    keys = [contract.column(k).name for k in contract.primary_key]
    params = dict(spec.params)
    with staged(lake, contract.name, day) as stage:
        if spec.mode == "snapshot":
            previous = last_snapshot(lake, contract.name)
            not_before(contract.name, day, previous.landing_date if previous else None)
            for frame in _frames(contract, spec, params, say):
                _check_keys(contract, frame, keys)
                stage.write(frame.sort(keys).to_arrow())
            return finish_snapshot(
                lake, contract.name, spec.kind, day, stage, previous, say, started
            )
        assert spec.cursor is not None and spec.cursor_param is not None
        increment = Increment.resume(lake, contract.name, spec.cursor, keys, day, say)
        if increment.cursor is not None:
            params[spec.cursor_param] = increment.cursor
        for frame in _frames(contract, spec, params, say):
            _check_keys(contract, frame, [*keys, spec.cursor])
            admitted = increment.admit(frame.sort(CURSOR_TEXT, *keys), ordered=False)
            if not admitted.is_empty():
                stage.write(admitted.drop(CURSOR_TEXT).to_arrow())
        say(f"extract {contract.name}: {stage.rows:,} new records")
        return increment.finish(lake, spec.kind, stage, say, started)


def _check_keys(contract: Contract, frame: pl.DataFrame, needed: list[str]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        msg = (
            f"source `{contract.name}`: field(s) `{'`, `'.join(missing)}` (primary key or cursor) "
            f"not in the API's records, which have `{'`, `'.join(frame.columns)}`"
        )
        raise ExtractError(msg)
