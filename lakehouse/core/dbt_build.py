"""dbt runs inside this process, on a manifest parsed once per process and lake.

Starting dbt as a subprocess costs seconds before it does any work (Python and dbt imports, the
adapter, `dbt --version`, a parse); a one-day gold change is milliseconds of SQL. Here dbt runs
through `dbtRunner`: the project is parsed once per process and warehouse (partial parse keeps
that cheap across processes: each lake has its own dbt target folder, beside its warehouse) and
every build reuses a copy of the parsed manifest.

dbt's own loggers format every event into a line before their level drops it, the debug ones
too (each statement, each connection): about 2,300 lines a one-day gold build, a tenth of its
time. They are off; `DbtLog` writes the events a person reads (each node's start and result,
warnings, errors) to `dbt.log` in the target folder. `LAKEHOUSE_DBT_LOG=debug` gives dbt's
own debug log file back, every statement in it.

dbt-duckdb keeps one DuckDB connection per process for the warehouse. The profile gets the
warehouse's path as a dbt var (`lakehouse_warehouse`), and the `silver` plugin the lake and the
event dates in process (`dbt_silver_plugin.serving`) when the adapter starts: the process
environment is never written, since another thread (Polars, DuckDB, Delta's runtime) may be
reading it, and glibc's `setenv` beside a `getenv` is a crash. After every invocation the
connection is closed: the warehouse file is free for readers and the next writer, and the next
build's adapter starts on its own lake.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakehouse.core import long_lived
from lakehouse.core.dbt_silver_plugin import serving
from lakehouse.core.gold import DBT_DIR, project_mtime
from lakehouse.core.lake import Lake

WAREHOUSE_VAR = "lakehouse_warehouse"
"""The dbt var `profiles.yml` takes the warehouse file's path from."""
DBT_LOG_ENV = "LAKEHOUSE_DBT_LOG"
"""`debug`: dbt writes its own debug log (every statement) instead of `DbtLog`'s."""
LOG_MAX_BYTES = 10 * 1024 * 1024
"""`dbt.log` beyond this is moved to `dbt.log.1` (replacing it) before the next invocation."""
_LOCK = threading.Lock()
"""dbt keeps global state (flags, adapters): one invocation at a time per process."""
_MANIFESTS: dict[tuple[str, float], Any] = {}
"""(warehouse catalog name, newest project file mtime) -> the parsed manifest. The manifest
names relations by the warehouse's catalog (its file name without `.duckdb`), not its path:
one parse serves every lake of this process whose warehouse file has that name."""


class DbtBuildError(RuntimeError):
    """dbt could not run at all (a parse or adapter error), not a failed model or test."""


@dataclass(frozen=True)
class NodeResult:
    """One node dbt ran: a model, snapshot or test."""

    unique_id: str
    resource_type: str
    name: str
    status: str
    """dbt's status: `success`, `error`, `skipped` (models); `pass`, `warn`, `fail` (tests)."""
    message: str
    failures: int | None
    seconds: float
    attached_to: str | None
    """For a test: the unique id of the model or snapshot it tests."""


@dataclass
class BuildResult:
    command: list[str]
    success: bool
    results: list[NodeResult] = field(default_factory=list)
    seconds: float = 0.0
    parse_seconds: float = 0.0


def target_dir(lake: Lake) -> Path:
    """dbt's target folder for `lake`: beside its warehouse, so partial parse stays warm per lake
    and builds of different lakes never share artifacts."""
    return Path(lake.warehouse_path).parent / "dbt_target"


class DbtLog:
    """dbt's info, warning and error events for one invocation, appended to `dbt.log` (a dbt
    callback: dbt calls it with every event, from its worker threads too)."""

    def __init__(self, path: Path) -> None:
        from dbt_common.exceptions.base import env_secrets

        if path.exists() and path.stat().st_size > LOG_MAX_BYTES:
            path.replace(path.with_name(path.name + ".1"))
        self._file = path.open("a", encoding="utf-8")
        self._secrets = env_secrets()  # dbt's: values of DBT_ENV_SECRET_* variables
        self._lock = threading.Lock()
        self._started = False

    def __call__(self, msg: Any) -> None:
        from dbt_common.exceptions.base import scrub_secrets

        info = msg.info
        if info.level not in ("info", "warn", "error") or not info.msg.strip():
            return
        when = info.ts.ToDatetime().isoformat(sep=" ", timespec="milliseconds")
        text = scrub_secrets(info.msg, self._secrets)
        with self._lock:
            if not self._started:
                self._file.write(f"\n===== {when} | {info.invocation_id} =====\n")
                self._started = True
            self._file.write(f"{when} [{info.level}] {text}\n")

    def close(self) -> None:
        self._file.close()


def _debug_log() -> bool:
    return os.environ.get(DBT_LOG_ENV, "").lower() == "debug"


def _log_args() -> list[str]:
    """dbt's loggers: off (a `DbtLog` writes the log), or dbt's debug log file."""
    return ["--log-level", "none", "--log-level-file", "debug" if _debug_log() else "none"]


@contextmanager
def _runner(manifest: Any, target: Path) -> Iterator[Any]:
    """A `dbtRunner` on `manifest` whose log goes to `dbt.log` in `target`."""
    from dbt.cli.main import dbtRunner

    if _debug_log():
        yield dbtRunner(manifest=manifest)
        return
    target.mkdir(parents=True, exist_ok=True)
    log = DbtLog(target / "dbt.log")
    try:
        yield dbtRunner(manifest=manifest, callbacks=[log])
    finally:
        log.close()


def _base_args(lake: Lake, target: Path) -> list[str]:
    return [
        *_log_args(),
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        "--vars",
        json.dumps({WAREHOUSE_VAR: lake.warehouse_path}),
        "--project-dir",
        str(DBT_DIR),
        "--profiles-dir",
        str(DBT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(target),
    ]


def _close_warehouse() -> None:
    """Close dbt's connection to the warehouse now. dbt-duckdb's `close_all_connections` only
    drops its environment, whose connection then closes when the garbage collector gets to it,
    and until then the file cannot be opened read-only in this process (`Can't open a connection
    to same database file with a different configuration`): the marts are published from it
    right after the build."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    DuckDBConnectionManager.close_all_connections()
    if environment is not None:
        environment.close()


def _manifest(lake: Lake, target: Path) -> tuple[Any, float]:
    """The project's manifest for this warehouse (parsed now if the project changed)."""
    key = (Path(lake.warehouse_path).stem, project_mtime())
    if key in _MANIFESTS:
        return _MANIFESTS[key], 0.0
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    with _runner(None, target) as runner:
        done = runner.invoke(["parse", *_base_args(lake, target)])
    _close_warehouse()
    if not done.success or done.result is None:
        msg = f"dbt parse failed: {done.exception}"
        raise DbtBuildError(msg)
    _MANIFESTS.clear()
    _MANIFESTS[key] = done.result
    long_lived.freeze(collect=True)  # the manifest lives as long as the process
    return done.result, time.monotonic() - started


def _for_one_build(manifest: Any) -> Any:
    """A manifest a build may compile in place: its own copy of every node (compiling injects
    ephemeral CTEs and the event dates into them), sharing the parts no build writes (macros,
    project files, sources, docs, and the flat graph of the parsed nodes that macros read as
    `graph`), which `Manifest.deepcopy` would copy or rebuild too (most of its cost)."""
    from dbt.contracts.graph.manifest import Manifest

    copy = Manifest(
        nodes={k: v.from_dict(v.to_dict(omit_none=True)) for k, v in manifest.nodes.items()},
        sources=manifest.sources,
        macros=manifest.macros,
        docs=manifest.docs,
        exposures=manifest.exposures,
        functions=manifest.functions,
        metrics=manifest.metrics,
        groups=manifest.groups,
        selectors=manifest.selectors,
        metadata=manifest.metadata,
        disabled=manifest.disabled,
        files=manifest.files,
        state_check=manifest.state_check,
        semantic_models=manifest.semantic_models,
        unit_tests=manifest.unit_tests,
        saved_queries=manifest.saved_queries,
    )
    copy.flat_graph = manifest.flat_graph  # built at parse; read-only during a build
    return copy


def invoke(
    lake: Lake,
    command: Sequence[str],
    args: Sequence[str] = (),
    *,
    dates: Sequence[str] | None = None,
) -> BuildResult:
    """Run `dbt <command...> <args>` on `lake` (silver restricted to `dates` when given).

    Raises:
        DbtBuildError: dbt did not run (a parse or adapter error); failed nodes are results.
    """
    target = target_dir(lake)
    Path(lake.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
    with _LOCK, serving(lake, dates):
        manifest, parse_seconds = _manifest(lake, target)
        # A build's results come back in memory: writing manifest.json and run_results.json
        # would cost more than a one-day build's SQL. `docs generate` writes the catalog's.
        quiet_json = [] if list(command[:1]) == ["docs"] else ["--no-write-json"]
        full = [*command, *_base_args(lake, target), *quiet_json, *args]
        started = time.monotonic()
        try:
            with _runner(_for_one_build(manifest), target) as runner:
                done = runner.invoke(full)
        finally:
            _close_warehouse()
        seconds = time.monotonic() - started
    if done.exception is not None and done.result is None:
        msg = f"dbt {' '.join(command)} failed: {done.exception}"
        raise DbtBuildError(msg)
    results = [_node_result(r) for r in getattr(done.result, "results", None) or []]
    results = [r for r in results if r is not None]
    return BuildResult(["dbt", *full], bool(done.success), results, seconds, parse_seconds)


def _node_result(result: Any) -> NodeResult | None:
    node = getattr(result, "node", None)
    if node is None:  # `docs generate` returns a catalog, not node results
        return None
    return NodeResult(
        unique_id=node.unique_id,
        resource_type=str(node.resource_type),
        name=node.name,
        status=str(result.status),
        message=str(result.message or ""),
        failures=result.failures,
        seconds=float(result.execution_time or 0.0),
        attached_to=getattr(node, "attached_node", None),
    )


def _missing_silver_sources(lake: Lake) -> list[str]:
    from lakehouse.core import delta
    from lakehouse.core.gold import ensure_manifest

    sources = json.loads(ensure_manifest().read_text())["sources"].values()
    names = sorted({s["name"] for s in sources if s["source_name"] == "silver"})
    return [n for n in names if delta.open_table(lake, lake.table_uri("silver", n)) is None]


def generate_docs(lake: Lake, built: Sequence[str] = ()) -> Path | None:
    """`dbt docs generate --static` into the lake's dbt target folder when the project changed
    since the docs were last generated, none exist, or a model of `built` (names) is not in the
    catalog yet (its first build); returns the page written, else None.

    The page (`static_index.html`, one file with the manifest and catalog inside) opens in a
    browser offline; `catalog.json` and `manifest.json` sit beside it. Descriptions, columns and
    lineage change with the project, not with each day's data: a daily build costs no docs.
    """
    target = target_dir(lake)
    page = target / "static_index.html"
    if page.exists() and page.stat().st_mtime >= project_mtime():
        try:
            nodes = json.loads((target / "catalog.json").read_text())["nodes"]
        except (OSError, ValueError, KeyError):
            nodes = {}
        cataloged = {uid.split(".")[-1] for uid in nodes}
        if set(built) <= cataloged:
            return None
    missing = _missing_silver_sources(lake)
    if missing:  # `docs generate` compiles every model: one over a missing table fails it
        msg = (
            "the mart catalog needs a silver table for every source of the dbt project; "
            f"missing: {', '.join(missing)}"
        )
        raise DbtBuildError(msg)
    try:
        done = invoke(lake, ["docs", "generate"], ["--static"])
    finally:
        # `docs generate` opens the silver sources as views but runs no on-run-end hook: drop
        # them, whether or not it got through
        dropped = invoke(lake, ["run-operation", "drop_silver_views"])
    if not done.success or not dropped.success or not page.exists():
        msg = f"dbt docs generate failed; see {target / 'dbt.log'}"
        raise DbtBuildError(msg)
    return page
