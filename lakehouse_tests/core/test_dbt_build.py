"""dbt in this process: once a build returns, the warehouse file is free for this process's
readers (the marts are published from it right away), even when dbt-duckdb's environment
outlives the build: it leaves the closing of its connection to the garbage collector."""

from __future__ import annotations

from pathlib import Path

import duckdb
from dbt.adapters.duckdb.environments.local import LocalEnvironment

from lakehouse.core import dbt_build
from lakehouse.core.lake import Lake


def test_the_warehouse_opens_read_only_right_after_a_build(tmp_path: Path, monkeypatch) -> None:
    lake = Lake(str(tmp_path))
    outliving = []
    handle = LocalEnvironment.handle

    def handle_kept(self: LocalEnvironment):
        wrapper = handle(self)
        outliving.append(self)  # the environment, kept alive (a reference cycle, a traceback)
        return wrapper

    monkeypatch.setattr(LocalEnvironment, "handle", handle_kept)
    done = dbt_build.invoke(lake, ["run-operation", "drop_silver_views"])
    assert done.success and outliving
    with duckdb.connect(lake.warehouse_path, read_only=True) as con:
        assert con.execute("select count(*) from information_schema.tables").fetchall()


def test_the_dbt_log_keeps_what_a_person_reads(tmp_path: Path, monkeypatch) -> None:
    """`dbt.log` holds each invocation's info, warnings and errors, not its statements (dbt's
    debug lines, which cost a tenth of a build to format); `LAKEHOUSE_DBT_LOG=debug` gives dbt's
    own debug log back. A log over its size limit is moved aside first."""
    lake = Lake(str(tmp_path))
    log = dbt_build.target_dir(lake) / "dbt.log"
    # the first build of a process also parses (and logs that invocation too)
    assert dbt_build.invoke(lake, ["run-operation", "drop_silver_views"]).success
    before = log.read_text()
    assert "drop view if exists" not in before
    try:
        failed = dbt_build.invoke(lake, ["run-operation", "no_such_macro"]).success
    except dbt_build.DbtBuildError:
        failed = False
    assert not failed
    text = log.read_text()
    added = text[len(before) :]
    assert added.count("\n===== ") == 1  # one header per invocation
    assert "[error]" in added and "no_such_macro" in added
    assert "drop view if exists" not in text
    monkeypatch.setattr(dbt_build, "LOG_MAX_BYTES", len(text) - 1)
    assert dbt_build.invoke(lake, ["run-operation", "drop_silver_views"]).success
    assert log.with_name("dbt.log.1").read_text() == text
    assert log.read_text().count("\n===== ") == 1
    monkeypatch.setenv(dbt_build.DBT_LOG_ENV, "debug")
    assert dbt_build.invoke(lake, ["run-operation", "drop_silver_views"]).success
    assert "drop view if exists" in log.read_text()
