"""Deprecated tables in Dagster: a tag and a banner on the asset, a warning in every run that reads
one, and the list of what still reads each (`lakehouse catalog --deprecated`).

Deprecations come from two places (`lakehouse.core.deprecation`): a contract's `deprecated:`
(its silver table, `silver/<source>`) and a dbt model's `meta.deprecated` (`gold/<model>`).
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from lakehouse.core.contract import Contract, load_contracts
from lakehouse.core.deprecation import (
    TAG,
    DeprecatedTable,
    Deprecation,
    deprecated_tables,
    parse_deprecation,
    upstream_deprecations,
)
from lakehouse.core.gold import ensure_manifest


def asset_tags(deprecation: Deprecation | None) -> dict[str, str]:
    """The asset's tags: `deprecated` (valued with the sunset date, if any)."""
    return {} if deprecation is None else {TAG: deprecation.sunset or ""}


def describe(description: str, deprecation: Deprecation | None) -> str:
    """The asset's description with the deprecation banner on top."""
    return description if deprecation is None else deprecation.describe(description)


def dbt_deprecation(props: Mapping[str, Any]) -> Deprecation | None:
    """A dbt model's `meta.deprecated` (or `config.meta.deprecated`), validated."""
    meta = props.get("meta") or (props.get("config") or {}).get("meta") or {}
    if "deprecated" not in meta:
        return None
    return parse_deprecation(
        meta["deprecated"],
        props.get("original_file_path") or props.get("name", "<dbt model>"),
        f"models.{props.get('name')}.meta.deprecated",
    )


def deprecations(contracts: list[Contract] | None = None) -> dict[str, Deprecation]:
    """Asset key (`silver/orders`, `gold/fct_orders`) -> its deprecation, over contracts and dbt."""
    out = {f"silver/{c.name}": c.deprecated for c in contracts or load_contracts() if c.deprecated}
    manifest = json.loads(ensure_manifest().read_text())
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") in ("model", "snapshot"):
            deprecation = dbt_deprecation(node)
            if deprecation is not None:
                out[f"gold/{node['name']}"] = deprecation
    return out


def warn_deprecated_reads(context: dg.AssetExecutionContext) -> list[str]:
    """Log a warning for each deprecated table an asset of this step reads; returns them."""
    known = deprecations()
    warnings: list[str] = []
    deps = context.assets_def.asset_deps
    for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
        upstream = [k.to_user_string() for k in deps.get(key, ())]
        warnings += upstream_deprecations(key.to_user_string(), upstream, known)
    for warning in warnings:
        context.log.warning(warning)
    return warnings


def deprecated_in(defs: dg.Definitions) -> list[DeprecatedTable]:
    """Each deprecated table of `defs` with every asset downstream of it."""
    graph = defs.resolve_asset_graph()
    downstream = {
        key.to_user_string(): [child.to_user_string() for child in graph.get(key).child_keys]
        for key in graph.get_all_asset_keys()
    }
    return deprecated_tables(deprecations(), downstream)
