"""OpenLineage run events for other catalogs (Marquez, DataHub, ...), built with openlineage-python.

A run of the platform is an OpenLineage run: a START event when it starts, then COMPLETE, FAIL or
ABORT, each naming the job, the input datasets (the tables the run's assets read) and the output
datasets (the tables they wrote) with their schema and column lineage. Datasets are named as
OpenLineage names files and objects: namespace `file` and the absolute path on local disk,
namespace `s3://<bucket>` and the key under it on S3.

Every event is appended, one JSON object a line, to the lineage file (`LAKEHOUSE_OPENLINEAGE_FILE`,
default `<root>/openlineage/events.ndjson` for a local root). With `OPENLINEAGE_URL` set, the
file's lines are also POSTed to that endpoint (`OPENLINEAGE_ENDPOINT`, default `api/v1/lineage`;
`OPENLINEAGE_API_KEY` as a bearer token) in order, from an offset the caller keeps: an endpoint
that is down gets the events it missed on the next delivery, none lost, none reordered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    column_lineage_dataset,
    documentation_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    schema_dataset,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

from lakehouse.core.lake import LAYERS, Lake

PRODUCER = "https://github.com/lakehouse/lakehouse"
JOB_NAMESPACE_ENV = "OPENLINEAGE_NAMESPACE"
JOB_NAMESPACE_DEFAULT = "lakehouse"
FILE_ENV = "LAKEHOUSE_OPENLINEAGE_FILE"
URL_ENV = "OPENLINEAGE_URL"
ENDPOINT_ENV = "OPENLINEAGE_ENDPOINT"
API_KEY_ENV = "OPENLINEAGE_API_KEY"
STATES = {
    "START": RunState.START,
    "COMPLETE": RunState.COMPLETE,
    "FAIL": RunState.FAIL,
    "ABORT": RunState.ABORT,
}


@dataclass(frozen=True)
class Table:
    """A dataset of an event: where it lives, its columns and where each column comes from."""

    namespace: str
    name: str
    columns: Sequence[tuple[str, str]] = ()
    """(name, type) of each column, in order."""
    column_lineage: Mapping[str, Sequence[tuple[str, str, str]]] = field(default_factory=dict)
    """Output column -> the (namespace, name, column) input fields it is computed from."""
    description: str = ""
    rows: int | None = None
    """Rows the dataset holds after the run (outputs of a finished run)."""


def dataset_id(lake: Lake, uri: str) -> tuple[str, str]:
    """OpenLineage (namespace, name) of a table or folder URI of `lake`."""
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return f"s3://{bucket}", "/" + key
    return "file", str(Path(uri).resolve())


def table_id(lake: Lake, path: Sequence[str]) -> tuple[str, str]:
    """The dataset of an asset key of the platform: `landing/<source>` is the source's landing
    folder, `[layer, *name]` the Delta table `<root>/lake/<layer>/<name...>`; any other asset
    is named by its key in the job namespace."""
    layer, *rest = path
    if layer == "landing":
        return dataset_id(lake, lake.landing_uri(rest[-1]))
    if layer in LAYERS and rest:
        return dataset_id(lake, lake.table_uri(layer, "/".join(rest)))  # type: ignore[arg-type]
    return os.environ.get(JOB_NAMESPACE_ENV) or JOB_NAMESPACE_DEFAULT, "/".join(path)


def _dataset_facets(table: Table) -> dict:
    facets: dict = {}
    if table.columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in table.columns
            ]
        )
    if table.column_lineage:
        facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(
            fields={
                column: column_lineage_dataset.Fields(
                    inputFields=[
                        column_lineage_dataset.InputField(namespace=ns, name=name, field=col)
                        for ns, name, col in sources
                    ]
                )
                for column, sources in table.column_lineage.items()
            }
        )
    if table.description:
        facets["documentation"] = documentation_dataset.DocumentationDatasetFacet(
            description=table.description
        )
    return facets


def run_event(
    state: str,
    *,
    run_id: str,
    job: str,
    when: datetime,
    inputs: Iterable[Table] = (),
    outputs: Iterable[Table] = (),
    error: str | None = None,
) -> RunEvent:
    """One OpenLineage run event (`state`: START, COMPLETE, FAIL or ABORT)."""
    run_facets: dict = {}
    if error:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error, programmingLanguage="python"
        )
    out = []
    for table in outputs:
        output_facets = {}
        if table.rows is not None:
            output_facets["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=table.rows
                )
            )
        out.append(
            OutputDataset(
                namespace=table.namespace,
                name=table.name,
                facets=_dataset_facets(table),
                outputFacets=output_facets,
            )
        )
    return RunEvent(
        eventType=STATES[state],
        eventTime=when.astimezone(UTC).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(
            namespace=os.environ.get(JOB_NAMESPACE_ENV) or JOB_NAMESPACE_DEFAULT,
            name=job,
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="DAGSTER", jobType="JOB"
                )
            },
        ),
        inputs=[
            InputDataset(namespace=t.namespace, name=t.name, facets=_dataset_facets(t))
            for t in inputs
        ],
        outputs=out,
        producer=PRODUCER,
    )


def events_file(lake: Lake) -> Path | None:
    """Where events are written: `LAKEHOUSE_OPENLINEAGE_FILE`, else beside a local root."""
    configured = os.environ.get(FILE_ENV, "").strip()
    if configured:
        return Path(configured)
    if lake.is_s3:
        return None
    return Path(lake.root) / "openlineage" / "events.ndjson"


def write(path: Path, events: Sequence[RunEvent]) -> None:
    """Append `events` to the lineage file, one JSON object a line (OpenLineage's file transport)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    transport = FileTransport(FileConfig(log_file_path=str(path), append=True))
    for event in events:
        transport.emit(event)


def read(path: Path) -> list[dict]:
    """Every event of a lineage file, in order (not a last line still being written)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # what follows the last newline is unfinished
    return [json.loads(line) for line in lines if line.strip()]


def http_transport() -> HttpTransport | None:
    """The HTTP endpoint configured by `OPENLINEAGE_URL` (two quick retries), if any."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        return None
    key = os.environ.get(API_KEY_ENV, "").strip()
    config = HttpConfig(
        url=url,
        endpoint=os.environ.get(ENDPOINT_ENV, "").strip() or "api/v1/lineage",
        timeout=5.0,
        retry={"total": 2, "backoff_factor": 0.3, "status_forcelist": [500, 502, 503, 504]},
    )
    if key:
        config.auth = ApiKeyTokenProvider({"api_key": key})
    return HttpTransport(config)


@dataclass
class Delivery:
    offset: int
    """Bytes of the lineage file delivered so far: the next delivery starts there."""
    delivered: int = 0
    error: str = ""


def deliver(path: Path, offset: int, transport: HttpTransport) -> Delivery:
    """POST the lineage file's events after `offset`, in order, stopping at the first failure."""
    result = Delivery(offset)
    if not path.exists():
        return result
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            if not line.endswith(b"\n"):
                break  # a line being written: the next delivery takes it
            if line.strip():
                try:
                    transport.emit(json.loads(line))  # type: ignore[arg-type]
                except Exception as error:  # any failure: retry next time
                    result.error = f"{type(error).__name__}: {error}"
                    return result
                result.delivered += 1
            result.offset += len(line)
    return result


def to_json(event: RunEvent) -> dict:
    return Serde.to_dict(event)
