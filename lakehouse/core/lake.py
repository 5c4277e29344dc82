"""Where everything lives: the data root, its landing zone, Delta tables and the warehouse file.

One root URI (`LAKEHOUSE_ROOT`) places the whole lakehouse, on local disk or on S3:

    <root>/landing/<source>/<YYYY-MM-DD>/<file>     files as delivered, never modified
    <root>/lake/<layer>/<table>                     Delta tables (bronze, silver, quarantine, gold, _system)
    <root>/warehouse.duckdb                         the dbt/DuckDB warehouse (always a local file)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lakehouse.core.errors import ConfigError

Layer = Literal["bronze", "silver", "quarantine", "gold", "_system", "_restricted"]
LAYERS: tuple[Layer, ...] = ("bronze", "silver", "quarantine", "gold", "_system", "_restricted")

PROJECT_DIR = Path(__file__).resolve().parents[2]
"""The repository checkout: default home of the data root and of Dagster's storage."""

# Environment variables delta-rs and polars (object_store) understand for an S3 endpoint.
_S3_ENV_OPTIONS = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_REGION": "aws_region",
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
    "AWS_ALLOW_HTTP": "aws_allow_http",
}


@dataclass(frozen=True)
class Lake:
    """The data root and how to reach it.

    Args:
        root: A local directory or an `s3://bucket/prefix` URI.
        storage_options: object_store options for S3 (endpoint, keys); empty on local disk.
        warehouse_path: The DuckDB warehouse file; defaults beside a local root, or under the
            project for an S3 root (DuckDB needs a local file).
    """

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    warehouse_path: str = ""

    def __post_init__(self) -> None:
        if not self.is_s3:
            object.__setattr__(self, "root", str(Path(self.root).expanduser().resolve()))
        else:
            object.__setattr__(self, "root", self.root.rstrip("/"))
        if not self.warehouse_path:
            base = PROJECT_DIR / "data" if self.is_s3 else Path(self.root)
            object.__setattr__(self, "warehouse_path", str(base / "warehouse.duckdb"))

    @classmethod
    def from_env(cls, root: str | None = None) -> Lake:
        """Build the lake from `LAKEHOUSE_ROOT` (default `<project>/data`) and the AWS_* variables."""
        root = root or os.environ.get("LAKEHOUSE_ROOT") or str(PROJECT_DIR / "data")
        if "://" in root and not root.startswith("s3://"):
            msg = f"LAKEHOUSE_ROOT `{root}`: only local paths and s3:// URIs are supported"
            raise ConfigError(msg)
        options: dict[str, str] = {}
        if root.startswith("s3://"):
            options = {
                key: os.environ[env] for env, key in _S3_ENV_OPTIONS.items() if env in os.environ
            }
            options.setdefault("aws_region", "us-east-1")
        return cls(
            root=root,
            storage_options=options,
            warehouse_path=os.environ.get("LAKEHOUSE_WAREHOUSE", ""),
        )

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    @property
    def landing_root(self) -> str:
        return f"{self.root}/landing"

    def landing_uri(self, source: str) -> str:
        return f"{self.landing_root}/{source}"

    def table_uri(self, layer: Layer, table: str) -> str:
        """The Delta table URI of `table` in `layer`."""
        if layer not in LAYERS:
            msg = f"unknown layer `{layer}`; layers are {', '.join(LAYERS)}"
            raise ConfigError(msg)
        return f"{self.root}/lake/{layer}/{table}"
