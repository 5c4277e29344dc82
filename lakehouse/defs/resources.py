"""Resources: the lake (where data lives) and the S3 client that lists an S3 landing zone."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

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


class LazyS3Resource(S3Resource):
    """dagster-aws's `S3Resource` (endpoint, keys and region from the AWS_* variables), its
    client built when a sensor asks for one (`get_client`), not for every tick: building a client
    costs about half a second, and a local lake never needs one."""

    def get_object_to_set_on_execution_context(self) -> Any:
        return self
