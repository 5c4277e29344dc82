"""Access policy as code: who may read which served table, which columns are masked, which rows.

The policy (`lakehouse/policies.yaml`, or `LAKEHOUSE_POLICIES`) names roles; each role reads
tables by pattern (`gold.*`, `gold.orders`, `metrics.*`, `silver.customers`), masks columns by PII
class or by name, and filters rows per table with a SQL predicate. A PII column a role may not
read in clear and has no mask for is nulled: deny by default. The same policy drives the
embedded per-role DuckDB files (`lakehouse.core.serve`) and PostgreSQL's grants, row-level
security and masking views (`lakehouse.core.serve_postgres`); `mask_sql` and `row_filter` are SQL
both engines run alike.

A column's PII class comes from the contracts (`pii:` on a silver column), follows dbt's
lineage to gold by name (a model that selects a PII column keeps its class, `x as y` passes it
on to `y`), and can be declared in the policy's `pii:` block for what lineage cannot tell.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lakehouse.core.contract import PII_CLASSES, Contract
from lakehouse.core.errors import ConfigError

POLICY_FILE = Path(__file__).resolve().parents[1] / "policies.yaml"
POLICY_ENV = "LAKEHOUSE_POLICIES"
SCHEMAS = ("gold", "metrics", "silver")
"""Served schemas: gold marts and star, the headline metrics, silver tables."""
MASKS = ("clear", "null", "hash", "partial")
ROLE_KEYS = ("description", "read", "clear_pii", "masks", "rows")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class PolicyError(ConfigError):
    """The policy file is invalid; the message names the file and the field."""

    def __init__(self, path: object, field_name: str, problem: str) -> None:
        self.path = str(path)
        self.field = field_name
        super().__init__(f"{self.path}: field `{field_name}`: {problem}")


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    read: tuple[str, ...]
    """Table patterns `<schema>.<table>` (fnmatch: `gold.*`, `gold.dim_*`)."""
    clear_pii: bool = False
    masks: Mapping[str, str] = field(default_factory=dict)
    """PII class, `<schema>.<table>.<column>` or `<table>.<column>` -> mask."""
    rows: Mapping[str, str] = field(default_factory=dict)
    """Table pattern -> SQL predicate the role's rows must satisfy."""

    def may_read(self, table: str) -> bool:
        return any(fnmatch.fnmatchcase(table, pattern) for pattern in self.read)

    def mask(self, table: str, column: str, pii: str | None) -> str:
        """The mask of `column` of `table` (`schema.table`) given its PII class (None: not PII)."""
        bare = table.split(".", 1)[1]
        for key in (f"{table}.{column}", f"{bare}.{column}"):
            if key in self.masks:
                return self.masks[key]
        if pii is None or self.clear_pii:
            return "clear"
        return self.masks.get(pii, "null")  # deny by default

    def row_filter(self, table: str) -> str | None:
        """The predicate on `table`'s rows for this role (every matching entry, and-ed)."""
        found = [
            f"({sql})" for pattern, sql in self.rows.items() if fnmatch.fnmatchcase(table, pattern)
        ]
        return " and ".join(found) if found else None


@dataclass(frozen=True)
class Policy:
    path: str
    roles: Mapping[str, Role]
    pii: Mapping[str, str]
    """Declared PII classes: `<schema>.<table>.<column>` -> class."""

    def role(self, name: str) -> Role:
        if name not in self.roles:
            msg = f"{self.path}: no role `{name}`; roles are {', '.join(self.roles)}"
            raise ConfigError(msg)
        return self.roles[name]


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate the policy (default `LAKEHOUSE_POLICIES`, else `lakehouse/policies.yaml`)."""
    path = Path(path or os.environ.get(POLICY_ENV) or POLICY_FILE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file not found") from None
    except yaml.YAMLError as exc:
        raise PolicyError(path, "(file)", f"not valid YAML: {exc}") from None
    return parse_policy(raw, path)


def parse_policy(raw: Any, path: str | Path = "<policy>") -> Policy:
    if not isinstance(raw, dict):
        raise PolicyError(path, "(file)", "must be a mapping with `roles:`")
    unknown = set(raw) - {"roles", "pii"}
    if unknown:
        raise PolicyError(path, sorted(unknown)[0], "unknown field; fields are `roles`, `pii`")
    roles_raw = raw.get("roles")
    if not isinstance(roles_raw, dict) or not roles_raw:
        raise PolicyError(path, "roles", "must map role names to their access")
    roles = {name: _role(path, name, spec) for name, spec in roles_raw.items()}
    pii_raw = raw.get("pii") or {}
    if not isinstance(pii_raw, dict):
        raise PolicyError(path, "pii", "must map `<schema>.<table>.<column>` to a PII class")
    pii = {}
    for key, cls in pii_raw.items():
        parts = str(key).split(".")
        if len(parts) != 3 or parts[0] not in SCHEMAS or not all(_IDENT.match(p) for p in parts):
            raise PolicyError(
                path,
                f"pii.{key}",
                f"must be `<schema>.<table>.<column>`, schema one of {', '.join(SCHEMAS)}",
            )
        if cls not in PII_CLASSES or cls == "none":
            raise PolicyError(
                path, f"pii.{key}", f"`{cls}` is not one of {', '.join(PII_CLASSES[1:])}"
            )
        pii[str(key)] = cls
    return Policy(str(path), roles, pii)


def _role(path: str | Path, name: Any, spec: Any) -> Role:
    where = f"roles.{name}"
    if not isinstance(name, str) or not _IDENT.match(name):
        raise PolicyError(path, where, "a role name is lower case letters, digits and `_`")
    if not isinstance(spec, dict):
        raise PolicyError(path, where, "must be a mapping (read, masks, rows, clear_pii)")
    unknown = set(spec) - set(ROLE_KEYS)
    if unknown:
        raise PolicyError(
            path,
            f"{where}.{sorted(unknown)[0]}",
            f"unknown field; fields are {', '.join(ROLE_KEYS)}",
        )
    read = spec.get("read")
    if isinstance(read, str):
        read = [read]
    if not isinstance(read, list) or not read:
        raise PolicyError(path, f"{where}.read", "must list table patterns such as `gold.*`")
    for i, pattern in enumerate(read):
        schema = str(pattern).split(".", 1)[0]
        if "." not in str(pattern) or schema not in SCHEMAS:
            raise PolicyError(
                path,
                f"{where}.read[{i}]",
                f"`{pattern}` is not `<schema>.<table>` with schema one of {', '.join(SCHEMAS)}",
            )
    clear = spec.get("clear_pii", False)
    if not isinstance(clear, bool):
        raise PolicyError(path, f"{where}.clear_pii", "must be true or false")
    masks_raw = spec.get("masks") or {}
    if not isinstance(masks_raw, dict):
        raise PolicyError(path, f"{where}.masks", "must map a PII class or column to a mask")
    masks = {}
    for key, mask in masks_raw.items():
        key = str(key)
        if mask not in MASKS:
            raise PolicyError(
                path, f"{where}.masks.{key}", f"`{mask}` is not one of {', '.join(MASKS)}"
            )
        if "." not in key and key not in PII_CLASSES[1:]:
            raise PolicyError(
                path,
                f"{where}.masks.{key}",
                f"not a PII class ({', '.join(PII_CLASSES[1:])}) nor `<table>.<column>`",
            )
        masks[key] = mask
    rows_raw = spec.get("rows") or {}
    if not isinstance(rows_raw, dict):
        raise PolicyError(path, f"{where}.rows", "must map table patterns to a filter")
    rows = {
        str(table): _row_filter(path, f"{where}.rows.{table}", value)
        for table, value in rows_raw.items()
    }
    return Role(name, str(spec.get("description", "")), tuple(map(str, read)), clear, masks, rows)


def _row_filter(path: str | Path, where: str, value: Any) -> str:
    """A SQL predicate, or `{column: [values]}` (every column's value in its list)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict) and value:
        parts = []
        for column, allowed in value.items():
            if not _IDENT.match(str(column)):
                raise PolicyError(path, f"{where}.{column}", "not a column name")
            if not isinstance(allowed, list) or not allowed:
                raise PolicyError(path, f"{where}.{column}", "must list the values allowed")
            parts.append(f'"{column}" in ({", ".join(sql_literal(v) for v in allowed)})')
        return " and ".join(parts)
    raise PolicyError(path, where, "must be a SQL predicate or `{column: [values]}`")


def sql_literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


ENGINES = ("duckdb", "postgres")


def mask_sql(column: str, mask: str, engine: str, value: str | None = None) -> str:
    """The select expression of `column` under `mask` in `engine` (duckdb | postgres).

    Both engines give the same values: `hash` is the hex SHA-256 of the value's text (equal
    values hash alike, so joins on a hashed key hold), `partial` keeps the first character and,
    for an e-mail address, the domain (`alice@example.com` -> `a***@example.com`). `value` is
    an expression to mask instead of the column itself (the clear value behind a vault token).
    """
    alias = f'"{column}"'
    ref = value or alias
    text = f"cast({ref} as varchar)"
    if engine not in ENGINES:
        msg = f"unknown engine `{engine}`"
        raise ValueError(msg)
    if mask == "clear":
        return f"{ref} as {alias}" if value else ref
    if mask == "null":
        return f"cast(null as varchar) as {alias}"
    if mask == "hash":
        if engine == "duckdb":
            return f"sha256({text}) as {alias}"
        return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex') as {alias}"
    if mask == "partial":
        return (
            f"case when strpos({text}, '@') > 0 "
            f"then left({text}, 1) || '***' || substr({text}, strpos({text}, '@')) "
            f"else left({text}, 1) || '***' end as {alias}"
        )
    msg = f"unknown mask `{mask}`"
    raise ValueError(msg)


def silver_pii(contracts: Sequence[Contract]) -> dict[str, dict[str, str]]:
    """Per silver table: its PII columns (silver names) and their classes, from the contracts."""
    return {c.name: {col.silver_name: col.pii for col in c.pii_columns} for c in contracts}


_ALIAS = re.compile(
    r"(?:\b[a-z_][a-z0-9_]*\.)?\b([a-z_][a-z0-9_]*)\s+as\s+([a-z_][a-z0-9_]*)\b", re.I
)


def gold_pii(
    manifest: Mapping[str, Any], contracts: Sequence[Contract]
) -> dict[str, dict[str, str]]:
    """Per dbt model and snapshot name: PII column names and classes, following lineage by name.

    A model inherits the PII names of everything it reads (silver sources per the contracts,
    upstream models); `x as y` in its SQL, with `x` PII, makes `y` PII of the same class.
    """
    by_source = silver_pii(contracts)
    nodes = {**manifest.get("nodes", {}), **manifest.get("sources", {})}
    memo: dict[str, dict[str, str]] = {}

    def names(unique_id: str) -> dict[str, str]:
        if unique_id in memo:
            return memo[unique_id]
        memo[unique_id] = {}
        node = nodes.get(unique_id)
        if node is None:
            return {}
        if node["resource_type"] == "source":
            found = dict(by_source.get(node["name"], {}))
        else:
            found = {}
            for dep in node.get("depends_on", {}).get("nodes", []):
                found.update(names(dep))
            code = re.sub(r"\{#.*?#\}|--[^\n]*", " ", node.get("raw_code", ""), flags=re.S)
            for _ in range(3):  # aliases of aliases
                for src, alias in _ALIAS.findall(code):
                    if src.lower() in found and alias.lower() not in found:
                        found[alias.lower()] = found[src.lower()]
        memo[unique_id] = found
        return found

    return {
        node["name"]: names(uid)
        for uid, node in manifest.get("nodes", {}).items()
        if node["resource_type"] in ("model", "snapshot")
    }
