"""A deprecated contract (`stores`) in Dagster: tagged and bannered in the catalog, listed by
`lakehouse catalog --deprecated` with everything that reads it (the silver tables referencing it
and the dbt models over it, found independently in dbt's manifest), and warned about in a real
run of a reader (silver/orders); a dbt model's `meta.deprecated` tags and banners its asset."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.core.contract import load_contracts
from lakehouse.core.gold import MANIFEST
from lakehouse.core.lake import Lake
from lakehouse_tests.conftest import resources_for
from lakehouse_tests.small_lake import deliver, deliver_reference_data, edit_contract, orders_file

DAY = "2024-04-01"
BANNER = "DEPRECATED since 2024-05-01, removed on 2024-12-31: read `stores_v2` instead."
DEPRECATED = "deprecated: {since: 2024-05-01, replaced_by: stores_v2, sunset: 2024-12-31}\n"


def _dbt_readers(source: str) -> set[str]:
    """The dbt models downstream of the dbt source `source`, from the manifest's child map."""
    manifest = json.loads(MANIFEST.read_text())
    nodes = manifest["nodes"]
    (start,) = [k for k, v in manifest["sources"].items() if v["name"] == source]
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child not in seen and nodes.get(child, {}).get("resource_type") in (
                "model",
                "snapshot",
            ):
                seen.add(child)
                todo.append(child)
    return {f"gold/{nodes[k]['name']}" for k in seen}


def test_a_deprecated_contract_is_tagged_listed_with_its_readers_and_warned_in_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    edit_contract(
        tmp_path,
        monkeypatch,
        "stores",
        "schema_drift: rescue\n",
        "schema_drift: rescue\n" + DEPRECATED,
    )
    from lakehouse.cli import main
    from lakehouse.definitions import build_definitions
    from lakehouse.defs.gold import translator
    from lakehouse.defs.sources import bronze_asset, silver_asset

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    stores = graph.get(dg.AssetKey(["silver", "stores"]))
    assert stores.tags["deprecated"] == "2024-12-31"
    assert stores.description.startswith(f"**{BANNER}**\n\nOne row per Jaffle Shop store")
    assert "deprecated" not in graph.get(dg.AssetKey(["silver", "orders"])).tags

    assert main(["catalog", "--deprecated"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"silver/stores: {BANNER}\n")
    listed = {line.removeprefix("    read by ") for line in out.splitlines()[1:]}
    # Silver tables referencing stores (and what reads those), and every dbt model over it.
    assert {"silver/orders", "silver/items"} <= listed
    dbt_readers = _dbt_readers("stores")
    assert "gold/stg_stores" in dbt_readers and dbt_readers <= listed
    assert "silver/stores" not in listed and "silver/customers" not in listed

    # A real run of a reader warns, naming the deprecated table and its replacement.
    root = tmp_path / "lake"
    deliver_reference_data(root, DAY)
    deliver(root, "orders", DAY, "orders.csv", orders_file(DAY))
    lake = Lake(str(root))
    contracts = {c.name: c for c in load_contracts()}
    assets = [
        f(contracts[n])
        for n in ("stores", "customers", "orders")
        for f in (bronze_asset, silver_asset)
    ]
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        assets, partition_key=DAY, instance=instance, resources=resources_for(lake)
    )
    assert result.success
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.level == 30 and "deprecated since" in e.user_message
    ]
    assert warnings == [
        "silver/orders reads `silver/stores`, deprecated since 2024-05-01 (removed on "
        "2024-12-31); migrate to `stores_v2`"
    ]

    # A dbt model's meta.deprecated: the same tag and banner on its gold asset.
    manifest = json.loads(MANIFEST.read_text())
    (props,) = [n for n in manifest["nodes"].values() if n["name"] == "stg_stores"]
    props = {**props, "meta": {"deprecated": {"since": "2024-05-01", "replaced_by": "stores_v2"}}}
    assert translator.get_tags(props)["deprecated"] == ""
    assert translator.get_description(props).startswith(
        "**DEPRECATED since 2024-05-01: read `stores_v2` instead.**"
    )
