"""Pseudonymisation by keyed hash (HMAC-SHA256), and the safety of its key.

Classified PII columns and subject identifiers reach silver as vault tokens (`core.vault`); the
keyed hash serves values nobody has classified yet: those a contract with PII columns rescues
into `_rescued`. The key comes from `LAKEHOUSE_PII_KEY`. The development default below is public, so pseudonyms
made with it can be reversed by hashing candidate values: it serves local development only.
Outside it (`LAKEHOUSE_ENV=production`, an S3 data root, or a shared Dagster instance), a source
with PII columns refuses to load without a secret key of its own (`check_key`). An empty key is
refused everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence

import polars as pl

from lakehouse.core.errors import ConfigError
from lakehouse.core.lake import Lake

DEVELOPMENT_KEY = "lakehouse-development-key-not-secret"
KEY_ENV = "LAKEHOUSE_PII_KEY"
DEPLOYMENT_ENV = "LAKEHOUSE_ENV"
MIN_KEY_CHARS = 16


def pii_key() -> bytes:
    """The pseudonymisation key: `LAKEHOUSE_PII_KEY`, else the public development key."""
    raw = os.environ.get(KEY_ENV)
    if raw is None:
        return DEVELOPMENT_KEY.encode()
    if not raw.strip():
        msg = f"{KEY_ENV} is set but empty: set a secret of at least {MIN_KEY_CHARS} characters"
        raise ConfigError(msg)
    return raw.encode()


def not_local(lake: Lake, deployment: Sequence[str] = ()) -> list[str]:
    """Why this is not local development (empty: it is). `deployment` adds what the caller
    knows, e.g. that the Dagster instance is a shared PostgreSQL one."""
    reasons = list(deployment)
    if os.environ.get(DEPLOYMENT_ENV, "development") == "production":
        reasons.append(f"{DEPLOYMENT_ENV}=production")
    if lake.is_s3:
        reasons.append(f"the data root `{lake.root}` is on S3")
    return reasons


def check_key(reasons: Sequence[str]) -> None:
    """Refuse the development key, or a short one, where `reasons` say this is not local."""
    key = pii_key()  # an empty key is refused everywhere
    if not reasons:
        return
    why = "; ".join(reasons)
    if key == DEVELOPMENT_KEY.encode():
        msg = (
            f"{KEY_ENV} is not set, and the public development key may not pseudonymise "
            f"personal data outside local development ({why}): set {KEY_ENV} to a secret of at "
            f"least {MIN_KEY_CHARS} characters, kept in your secret store"
        )
        raise ConfigError(msg)
    if len(key) < MIN_KEY_CHARS:
        msg = f"{KEY_ENV} is shorter than {MIN_KEY_CHARS} characters ({why})"
        raise ConfigError(msg)


def pseudonym(value: str, key: bytes | None = None) -> str:
    """The pseudonym of one clear value."""
    return hmac.new(key or pii_key(), value.encode(), hashlib.sha256).hexdigest()


def pseudonymise(
    frame: pl.DataFrame, columns: Iterable[str], key: bytes | None = None
) -> pl.DataFrame:
    """Replace each value of `columns` by its pseudonym (nulls stay null); hashes each distinct value once."""
    key = key or pii_key()
    replacements = []
    for column in columns:
        distinct = frame.get_column(column).drop_nulls().cast(pl.String).unique()
        mapping = {v: pseudonym(v, key) for v in distinct.to_list()}
        replacements.append(
            pl.col(column)
            .cast(pl.String)
            .replace_strict(mapping, default=None, return_dtype=pl.String)
        )
    return frame.with_columns(replacements) if replacements else frame


def key_id(key: bytes | None = None) -> str:
    """A short public id of the pseudonymisation key: changes when the key does."""
    return hmac.new(key or pii_key(), b"lakehouse key id", hashlib.sha256).hexdigest()[:12]
