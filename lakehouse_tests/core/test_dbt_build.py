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
