"""Pseudonymisation of PII columns: a keyed hash (HMAC-SHA256), so joins still work.

The key comes from `LAKEHOUSE_PII_KEY`. The development default below is public: any deployment
that holds real personal data must set its own secret key, or pseudonyms can be reversed by
hashing candidate values.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

import polars as pl

DEVELOPMENT_KEY = "lakehouse-development-key-not-secret"


def pii_key() -> bytes:
    return os.environ.get("LAKEHOUSE_PII_KEY", DEVELOPMENT_KEY).encode()


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
