"""The access policy: the project's file loads; mistakes are errors naming the file and field;
masks resolve column over class over the deny-by-default null; PII classes reach gold columns
through the real dbt project's lineage; masks give the same values in DuckDB and PostgreSQL's
spelling."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from lakehouse.core.contract import load_contracts
from lakehouse.core.gold import ensure_manifest
from lakehouse.core.policies import (
    PolicyError,
    gold_pii,
    load_policy,
    mask_sql,
    parse_policy,
)


def test_the_project_policy_loads_with_the_three_roles() -> None:
    policy = load_policy()
    assert {"analyst", "pii_reader", "engineer"} <= set(policy.roles)
    analyst = policy.role("analyst")
    assert analyst.may_read("gold.orders") and analyst.may_read("metrics.revenue")
    assert not analyst.may_read("silver.customers")
    assert policy.role("engineer").may_read("silver.customers")
    assert analyst.row_filter("gold.orders") is not None
    assert analyst.row_filter("gold.customers") is None


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        ({}, "roles", "must map role names"),
        ({"roles": {"analyst": {}}}, "roles.analyst.read", "must list table patterns"),
        ({"roles": {"a": {"read": ["lake.orders"]}}}, "roles.a.read[0]", "schema one of gold"),
        ({"roles": {"a": {"read": "gold.*", "mask": {}}}}, "roles.a.mask", "unknown field"),
        (
            {"roles": {"a": {"read": "gold.*", "masks": {"email": "blur"}}}},
            "roles.a.masks.email",
            "`blur` is not one of clear, null, hash, partial",
        ),
        (
            {"roles": {"a": {"read": "gold.*", "masks": {"mail": "null"}}}},
            "roles.a.masks.mail",
            "not a PII class",
        ),
        (
            {"roles": {"a": {"read": "gold.*", "rows": {"gold.orders": {"store_id": "s1"}}}}},
            "roles.a.rows.gold.orders.store_id",
            "must list the values allowed",
        ),
        (
            {"roles": {"a": {"read": "gold.*", "clear_pii": "yes"}}},
            "roles.a.clear_pii",
            "true or false",
        ),
        ({"roles": {"Analyst": {"read": "gold.*"}}}, "roles.Analyst", "lower case"),
        (
            {"roles": {"a": {"read": "gold.*"}}, "pii": {"gold.customers.email": "mail"}},
            "pii.gold.customers.email",
            "`mail` is not one of name",
        ),
        (
            {"roles": {"a": {"read": "gold.*"}}, "pii": {"customers.email": "email"}},
            "pii.customers.email",
            "<schema>.<table>.<column>",
        ),
    ],
)
def test_mistakes_name_the_file_and_the_field(raw: dict, field: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(raw, "team/policies.yaml")
    assert caught.value.field == field
    assert str(caught.value).startswith(f"team/policies.yaml: field `{field}`: ")
    assert problem in str(caught.value)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "policies.yaml"
    bad.write_text("roles: [unclosed\n")
    with pytest.raises(PolicyError, match=f"{bad}: field `\\(file\\)`: not valid YAML"):
        load_policy(bad)
    with pytest.raises(Exception, match="policy file not found"):
        load_policy(tmp_path / "none.yaml")


def test_masks_resolve_column_then_class_then_null() -> None:
    policy = parse_policy(
        {
            "roles": {
                "a": {
                    "read": ["gold.*"],
                    "masks": {
                        "email": "partial",
                        "customers.phone": "hash",
                        "gold.orders.note": "null",
                    },
                },
                "reader": {"read": ["gold.*"], "clear_pii": True},
            }
        }
    )
    a, reader = policy.role("a"), policy.role("reader")
    assert a.mask("gold.customers", "email", "email") == "partial"
    assert a.mask("gold.customers", "phone", "phone") == "hash"
    assert a.mask("gold.customers", "name", "name") == "null"  # no mask: denied
    assert a.mask("gold.customers", "spend", None) == "clear"
    assert a.mask("gold.orders", "note", None) == "null"  # a column masked by name
    assert reader.mask("gold.customers", "name", "name") == "clear"


def test_pii_classes_follow_the_dbt_project_to_gold() -> None:
    classes = gold_pii(json.loads(ensure_manifest().read_text()), load_contracts())
    # silver.customers.name (pii: name) is `customer_name_pseudonym` from the staging model on
    for model in ("customers_snapshot", "dim_customers", "customers"):
        assert classes[model]["customer_name_pseudonym"] == "name"
    assert "customer_name_pseudonym" not in classes["orders"]
    assert "store_name" not in classes["dim_stores"]


def test_masks_are_the_same_values_in_both_engines() -> None:
    """The PostgreSQL spelling is checked on PostgreSQL by test_serve_postgres; here the DuckDB
    one against Python's own computation."""
    import hashlib

    con = duckdb.connect()
    values = ["alice@example.com", "Bob Stone", None]
    con.execute("create table t (v varchar)")
    con.executemany("insert into t values (?)", [[v] for v in values])
    for mask, expected in {
        "partial": ["a***@example.com", "B***", None],
        "hash": [hashlib.sha256(v.encode()).hexdigest() if v else None for v in values],
        "null": [None, None, None],
        "clear": values,
    }.items():
        got = con.sql(f"select {mask_sql('v', mask, 'duckdb')} from t").fetchall()
        assert [r[0] for r in got] == expected, mask
    assert "encode(sha256(convert_to(" in mask_sql("v", "hash", "postgres")
