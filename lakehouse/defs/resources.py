"""Resources: the lake (where data lives) and dbt (how gold is built)."""

from __future__ import annotations

import dagster as dg

from lakehouse.core.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """The data root: a local directory or an s3:// URI (default: `LAKEHOUSE_ROOT`, else `./data`).

    S3 endpoint and credentials come from the standard AWS_* environment variables.
    """

    root: str | None = None

    def lake(self) -> Lake:
        return Lake.from_env(self.root)
