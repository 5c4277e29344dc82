"""Resources: the lake (where data lives) and dbt (how gold is built)."""

from __future__ import annotations

import dagster as dg

from lakehouse.core.lake import Lake


def shared_instance(instance: dg.DagsterInstance) -> list[str]:
    """Why the Dagster instance is not a local one, if it is not (see `lakehouse.core.pii`)."""
    storage = type(instance.run_storage).__name__
    if "Postgres" in storage or "MySQL" in storage:
        return [f"the Dagster instance stores runs in {storage}"]
    return []


class LakeResource(dg.ConfigurableResource):
    """The data root: a local directory or an s3:// URI (default: `LAKEHOUSE_ROOT`, else `./data`).

    S3 endpoint and credentials come from the standard AWS_* environment variables.
    """

    root: str | None = None

    def lake(self) -> Lake:
        return Lake.from_env(self.root)
