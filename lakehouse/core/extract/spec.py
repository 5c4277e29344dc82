"""The contract's `source:` block: where a source's rows come from when they are not files.

    source:
      kind: postgres            # files (the default: files delivered into the landing zone)
      dsn_env: SHOP_DB_URL      # environment variable holding postgresql://user:pw@host:port/db
      table: public.customers   # or `query: select ...` (one of the two)
      cursor: updated_at        # incremental: rows whose cursor is at or past the last extract's
      mode: incremental         # or snapshot: the whole table every run (its deletes reach silver)

    source: {kind: http, url: ..., path: ..., cursor: ..., cursor_param: ...}   # see HttpSource

Kept free of `contract.py` so that the contract can validate the block on load without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lakehouse.core.errors import ContractError

SOURCE_KINDS = ("files", "postgres", "http", "nats")
AUTH_TYPES = ("bearer", "api_key")
MODES = ("incremental", "snapshot", "cdc")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True)
class PostgresSource:
    """A PostgreSQL table or query, extracted in batches to Parquet files in the landing zone."""

    dsn_env: str
    table: str | None = None
    query: str | None = None
    cursor: str | None = None
    mode: Literal["incremental", "snapshot", "cdc"] = "incremental"
    batch_rows: int = 100_000
    """Rows per Parquet row group (and per progress line); the driver fetches in bounded batches."""
    slot: str | None = None
    """`mode: cdc`: the logical replication slot (default `lakehouse_<source>`)."""
    publication: str | None = None
    """`mode: cdc`: the publication of the table (default: the slot's name)."""
    kind: Literal["postgres"] = "postgres"

    @property
    def delivery(self) -> Literal["events", "snapshot"]:
        """The contract `delivery` this mode implies: a snapshot replaces, increments add up."""
        return "snapshot" if self.mode == "snapshot" else "events"


@dataclass(frozen=True)
class HttpSource:
    """A paginated JSON API read through dlt's `rest_api` source, landed as Parquet files."""

    url: str
    """The API's base URL, e.g. `https://api.example.com/v1/`."""
    path: str
    """The endpoint under `url`, e.g. `orders`."""
    data_selector: str | None = None
    """Where the records are in each response (a JSONPath such as `data`); dlt guesses if unset."""
    paginator: Mapping[str, Any] | str | None = None
    """dlt's paginator config (`{type: page_number, page_param: page}`, `json_link`, `header_link`,
    `offset`, `cursor`); dlt detects one when unset."""
    params: Mapping[str, Any] = field(default_factory=dict)
    auth: Mapping[str, str] = field(default_factory=dict)
    """`{type: bearer, token_env: VAR}` or `{type: api_key, name: X-Key, location: header,
    key_env: VAR}`: the secret is read from the environment, never written in the contract."""
    cursor: str | None = None
    """The record field that grows on every change (incremental)."""
    cursor_param: str | None = None
    """The query parameter that asks for records at or after a cursor value."""
    mode: Literal["incremental", "snapshot"] = "incremental"
    kind: Literal["http"] = "http"

    @property
    def delivery(self) -> Literal["events", "snapshot"]:
        return "snapshot" if self.mode == "snapshot" else "events"


@dataclass(frozen=True)
class NatsSource:
    """A NATS JetStream stream read by a durable pull consumer in micro-batches."""

    url_env: str
    """The variable holding the server URL(s), e.g. `nats://nats.internal:4222`."""
    stream: str
    subject: str | None = None
    """Only the stream's messages on this subject (wildcards allowed); default: all."""
    durable: str | None = None
    """The durable consumer's name (default `lakehouse_<source>`)."""
    batch: int = 1_000
    """Messages per fetch; one landed file holds the messages one drain reads."""
    ack_wait_seconds: float = 30.0
    """How long a message read but not acknowledged waits before it is delivered again."""
    mode: Literal["incremental"] = "incremental"
    kind: Literal["nats"] = "nats"

    @property
    def delivery(self) -> Literal["events", "snapshot"]:
        return "events"


SourceSpec = PostgresSource | HttpSource | NatsSource
"""Every extracted kind (files need no block)."""


def parse_source(raw: Any, path: object) -> SourceSpec | None:
    """Validate a contract's `source:` block; None for files. Errors name the file and field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ContractError(path, "source", "must be a mapping with at least `kind`")
    kind = raw.get("kind", "files")
    if kind not in SOURCE_KINDS:
        raise ContractError(
            path, "source.kind", f"`{kind}` is not one of {', '.join(SOURCE_KINDS)}"
        )
    if kind == "files":
        _unknown(raw, {"kind"}, path)
        return None
    if kind == "http":
        return _http(raw, path)
    if kind == "nats":
        return _nats(raw, path)
    return _postgres(raw, path)


def _unknown(raw: Mapping[str, Any], allowed: set[str], path: object) -> None:
    _unknown_in(raw, allowed, "source.", path)


def _mode(raw: Mapping[str, Any], path: object) -> tuple[str | None, str]:
    cursor = raw.get("cursor")
    mode = raw.get("mode", "incremental" if cursor is not None else "snapshot")
    if mode not in MODES:
        raise ContractError(path, "source.mode", f"`{mode}` is not one of {', '.join(MODES)}")
    if mode == "incremental" and cursor is None:
        raise ContractError(
            path, "source.cursor", "mode `incremental` needs a cursor column (e.g. `updated_at`)"
        )
    if mode != "incremental" and cursor is not None:
        raise ContractError(path, "source.cursor", "applies only to mode `incremental`")
    if cursor is not None and (not isinstance(cursor, str) or not _IDENTIFIER.match(cursor)):
        raise ContractError(path, "source.cursor", f"`{cursor}` is not a column name")
    return cursor, mode


def _http(raw: Mapping[str, Any], path: object) -> HttpSource:
    allowed = {"kind", "url", "path", "data_selector", "paginator", "params", "auth", "cursor"}
    _unknown(raw, allowed | {"cursor_param", "mode"}, path)
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ContractError(path, "source.url", "is required: the API's base URL (http(s)://...)")
    endpoint = raw.get("path")
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ContractError(path, "source.path", "is required: the endpoint under `url`")
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise ContractError(path, "source.params", "must be a mapping of query parameters")
    auth = raw.get("auth") or {}
    if auth:
        if not isinstance(auth, Mapping) or auth.get("type") not in AUTH_TYPES:
            raise ContractError(path, "source.auth.type", f"must be one of {', '.join(AUTH_TYPES)}")
        secret = "token_env" if auth["type"] == "bearer" else "key_env"
        _unknown_in(auth, {"type", secret, "name", "location"}, "source.auth.", path)
        if not isinstance(auth.get(secret), str) or not _ENV_NAME.match(auth[secret]):
            raise ContractError(
                path, f"source.auth.{secret}", "is required: the variable holding the secret"
            )
    cursor, mode = _mode(raw, path)
    if mode == "cdc":
        raise ContractError(path, "source.mode", "`cdc` applies to `postgres` sources")
    cursor_param = raw.get("cursor_param")
    if mode == "incremental" and not isinstance(cursor_param, str):
        raise ContractError(
            path, "source.cursor_param", "the query parameter that passes the cursor (`since`)"
        )
    paginator = raw.get("paginator")
    if paginator is not None and not isinstance(paginator, Mapping | str):
        raise ContractError(path, "source.paginator", "must be a dlt paginator (name or mapping)")
    return HttpSource(
        url=url,
        path=endpoint.strip(),
        data_selector=raw.get("data_selector"),
        paginator=paginator,
        params=dict(params),
        auth={k: str(v) for k, v in auth.items()},
        cursor=cursor,
        cursor_param=cursor_param if mode == "incremental" else None,
        mode=mode,
    )


def _nats(raw: Mapping[str, Any], path: object) -> NatsSource:
    _unknown(raw, {"kind", "url_env", "stream", "subject", "durable", "batch", "ack_wait"}, path)
    url_env = raw.get("url_env")
    if not isinstance(url_env, str) or not _ENV_NAME.match(url_env):
        raise ContractError(path, "source.url_env", "is required: the variable holding the URL")
    stream = raw.get("stream")
    if not isinstance(stream, str) or not stream.strip():
        raise ContractError(path, "source.stream", "is required: the JetStream stream's name")
    durable = raw.get("durable")
    if durable is not None and not _ENV_NAME.match(str(durable)):
        raise ContractError(path, "source.durable", f"`{durable}` is not a consumer name")
    batch = raw.get("batch", NatsSource.batch)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ContractError(path, "source.batch", "must be a positive whole number")
    ack_wait = raw.get("ack_wait", "30s")
    try:
        from lakehouse.core.contract import parse_duration

        seconds = parse_duration(str(ack_wait)).total_seconds()
    except ValueError as exc:
        raise ContractError(path, "source.ack_wait", str(exc)) from None
    return NatsSource(
        url_env=url_env,
        stream=stream.strip(),
        subject=raw.get("subject"),
        durable=durable,
        batch=batch,
        ack_wait_seconds=seconds,
    )


def _unknown_in(raw: Mapping[str, Any], allowed: set[str], prefix: str, path: object) -> None:
    for key in raw:
        if key not in allowed:
            raise ContractError(
                path, f"{prefix}{key}", f"unknown field; allowed here: {', '.join(sorted(allowed))}"
            )


def _postgres(raw: Mapping[str, Any], path: object) -> PostgresSource:
    allowed = {"kind", "dsn_env", "table", "query", "cursor", "mode", "batch_rows"}
    _unknown(raw, allowed | {"slot", "publication"}, path)
    dsn_env = raw.get("dsn_env")
    if not isinstance(dsn_env, str) or not _ENV_NAME.match(dsn_env):
        raise ContractError(
            path, "source.dsn_env", "is required: the environment variable holding the DSN"
        )
    table, query = raw.get("table"), raw.get("query")
    if (table is None) == (query is None):
        raise ContractError(path, "source.table", "give exactly one of `table` and `query`")
    if table is not None:
        parts = str(table).split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ContractError(
                path, "source.table", f"`{table}` must be `table` or `schema.table` (identifiers)"
            )
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise ContractError(path, "source.query", "must be a non-empty SELECT statement")
    cursor, mode = _mode(raw, path)
    names = {k: raw.get(k) for k in ("slot", "publication")}
    for key, value in names.items():
        if value is not None and (mode != "cdc" or not _ENV_NAME.match(str(value))):
            problem = "applies only to mode `cdc`" if mode != "cdc" else f"`{value}` is not a name"
            raise ContractError(path, f"source.{key}", problem)
    if mode == "cdc" and table is None:
        raise ContractError(path, "source.table", "mode `cdc` replicates a table, not a query")
    batch_rows = raw.get("batch_rows", PostgresSource.batch_rows)
    if not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1:
        raise ContractError(path, "source.batch_rows", "must be a positive whole number")
    return PostgresSource(
        dsn_env=dsn_env,
        table=str(table) if table is not None else None,
        query=query.strip().rstrip(";") if query is not None else None,
        cursor=cursor,
        mode=mode,
        batch_rows=batch_rows,
        slot=names["slot"],
        publication=names["publication"],
    )
