"""Deprecated tables in Dagster: a tag and a banner on the asset, a warning in every run that reads
one, and the list of what still reads each (`lakehouse catalog --deprecated`).

Deprecations come from two places (`lakehouse.core.deprecation`): a contract's `deprecated:`
(its silver table, `silver/<source>`) and a dbt model's `meta.deprecated` (`gold/<model>`).
"""

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from lakehouse.core.contract import load_contracts
from lakehouse.core.deprecation import (
    TAG,
    DeprecatedTable,
    Deprecation,
    deprecated_tables,
    parse_deprecation,
    upstream_deprecations,
)
from lakehouse.core.gold import MANIFEST, ensure_manifest

DBT_READERS = ("model", "snapshot")


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


def _manifest() -> dict[str, Any]:
    return json.loads(ensure_manifest().read_text())


def _dbt_key(node: Mapping[str, Any]) -> str:
    """A dbt node's asset key: a model's `gold/<name>`, a source's own (`silver/<source>`)."""
    asset_key = ((node.get("meta") or {}).get("dagster") or {}).get("asset_key")
    return "/".join(asset_key) if asset_key else f"gold/{node['name']}"


def deprecations() -> dict[str, Deprecation]:
    """Asset key (`silver/orders`, `gold/fct_orders`) -> its deprecation, over contracts and dbt.

    Read once per contracts directory and manifest version (every step of a run asks).
    """
    manifest = MANIFEST if MANIFEST.exists() else ensure_manifest()
    return dict(_deprecations(os.environ.get("LAKEHOUSE_CONTRACTS", ""), manifest.stat().st_mtime))


@functools.cache
def _deprecations(contracts_dir: str, manifest_mtime: float) -> dict[str, Deprecation]:
    out = {f"silver/{c.name}": c.deprecated for c in load_contracts() if c.deprecated}
    for node in _manifest().get("nodes", {}).values():
        if node.get("resource_type") in DBT_READERS:
            deprecation = dbt_deprecation(node)
            if deprecation is not None:
                out[_dbt_key(node)] = deprecation
    return out


def dbt_edges() -> dict[str, list[str]]:
    """Table -> the dbt models reading it, ephemeral ones included (they are no assets)."""
    manifest = _manifest()
    nodes = {**manifest.get("sources", {}), **manifest.get("nodes", {})}
    edges: dict[str, list[str]] = {}
    for parent, children in manifest.get("child_map", {}).items():
        if parent not in nodes:
            continue
        readers = [
            _dbt_key(nodes[c])
            for c in children
            if nodes.get(c, {}).get("resource_type") in DBT_READERS
        ]
        if readers:
            edges.setdefault(_dbt_key(nodes[parent]), []).extend(readers)
    return edges


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
    """Each deprecated table with everything downstream of it: assets of `defs` and dbt models."""
    graph = defs.resolve_asset_graph()
    downstream = {
        key.to_user_string(): [child.to_user_string() for child in graph.get(key).child_keys]
        for key in graph.get_all_asset_keys()
    }
    for table, readers in dbt_edges().items():
        downstream.setdefault(table, []).extend(readers)
    return deprecated_tables(deprecations(), downstream)
