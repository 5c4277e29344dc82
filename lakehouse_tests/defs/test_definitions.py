"""The code location loads, and its asset graph is the lineage from landing file to mart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import PROJECT_DIR
from lakehouse.definitions import defs


def test_dagster_definitions_validate_passes() -> None:
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def upstream(graph: dg.AssetGraph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    todo = [key]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def test_every_mart_reaches_landing_through_silver_and_bronze() -> None:
    graph = defs.resolve_asset_graph()
    marts = [k for k in graph.get_all_asset_keys() if k.path[0] == "gold"]
    assert {m.path[-1] for m in marts} >= {"orders", "customers", "daily_store_revenue"}
    for mart in marts:
        ancestors = upstream(graph, mart)
        sources = {k.path[1] for k in ancestors if k.path[0] == "silver"}
        assert sources, f"{mart} has no silver upstream"
        for source in sources:
            assert dg.AssetKey(["bronze", source]) in ancestors
            assert dg.AssetKey(["landing", source]) in ancestors
    revenue = upstream(graph, dg.AssetKey(["gold", "daily_store_revenue"]))
    assert dg.AssetKey(["landing", "orders"]) in revenue


def test_every_source_has_the_three_layers_with_catalog_metadata() -> None:
    graph = defs.resolve_asset_graph()
    for contract in load_contracts():
        for layer in ("bronze", "silver"):
            node = graph.get(dg.AssetKey([layer, contract.name]))
            assert node.owners == [contract.owner]
            assert node.description
            schema = node.metadata["dagster/column_schema"]
            assert {c.name for c in schema.columns} >= set(
                contract.landed_columns if layer == "bronze" else contract.silver_columns
            )
        silver = graph.get(dg.AssetKey(["silver", contract.name]))
        assert {"polars", "deltalake"} <= set(silver.kinds)
        assert graph.get(dg.AssetKey(["landing", contract.name])).group_name == "landing"
