"""Deprecation blocks: validated with clear errors; every reader of a deprecated table found,
readers of readers too; one warning per deprecated table a reader reads."""

from __future__ import annotations

import pytest

from lakehouse.core.contract import parse_contract
from lakehouse.core.deprecation import (
    Deprecation,
    deprecated_tables,
    parse_deprecation,
    upstream_deprecations,
)
from lakehouse.core.errors import ContractError


def _contract(deprecated) -> dict:
    return {
        "name": "legacy_orders",
        "description": "d",
        "owner": "o",
        "primary_key": ["id"],
        "columns": [{"name": "id", "type": "string", "nullable": False}],
        "deprecated": deprecated,
    }


def test_a_contract_deprecation_is_validated():
    contract = parse_contract(
        _contract({"since": "2024-05-01", "replaced_by": "orders", "sunset": "2024-09-30"})
    )
    assert contract.deprecated == Deprecation("2024-05-01", "orders", "2024-09-30")
    assert contract.deprecated.banner == (
        "DEPRECATED since 2024-05-01, removed on 2024-09-30: read `orders` instead."
    )
    assert parse_contract(_contract(None)).deprecated is None
    for raw, field, problem in [
        ({"replaced_by": "orders"}, "deprecated.since", "is required"),
        ({"since": "May 1st"}, "deprecated.since", "not a date"),
        ({"since": "2024-05-01", "sunset": "2024-01-01"}, "deprecated.sunset", "before `since`"),
        ({"since": "2024-05-01", "until": "2024-06-01"}, "deprecated.until", "unknown field"),
        ({"since": "2024-05-01", "replaced_by": ""}, "deprecated.replaced_by", "must name"),
        ("yes", "deprecated", "must be a mapping"),
    ]:
        with pytest.raises(ContractError, match=problem) as info:
            parse_contract(_contract(raw))
        assert field in str(info.value)
    with pytest.raises(ContractError, match=r"models\.m\.meta\.deprecated\.since"):
        parse_deprecation({"sunset": "2024-01-01"}, "models/m.yml", "models.m.meta.deprecated")


def test_readers_are_found_through_the_graph_and_warned():
    old = Deprecation("2024-05-01", "silver/orders_v2", None)
    downstream = {
        "silver/orders": ["gold/stg_orders", "silver/items"],
        "gold/stg_orders": ["gold/fct_orders"],
        "gold/fct_orders": ["gold/revenue"],
        "silver/items": ["gold/stg_order_items"],
    }
    (table,) = deprecated_tables({"silver/orders": old}, downstream)
    assert table.readers == (
        "gold/fct_orders",
        "gold/revenue",
        "gold/stg_order_items",
        "gold/stg_orders",
        "silver/items",
    )
    assert deprecated_tables({"gold/revenue": old}, downstream)[0].readers == ()
    warnings = upstream_deprecations(
        "gold/stg_orders", ["silver/orders", "silver/customers"], {"silver/orders": old}
    )
    assert warnings == [
        "gold/stg_orders reads `silver/orders`, deprecated since 2024-05-01; "
        "migrate to `silver/orders_v2`"
    ]
