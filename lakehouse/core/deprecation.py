"""Deprecated tables: what replaces them, when they go, and what still reads them.

A source contract or a dbt model (under `config.meta`, or `meta` of the model's YAML) says

    deprecated:
      since: 2024-05-01          # required: when it was deprecated
      replaced_by: orders_v2     # what to read instead (a source or a dbt model)
      sunset: 2024-09-30         # when it goes (optional)

The asset then carries a `deprecated` tag and a banner atop its description in the UI, every run
of an asset that reads it logs a warning naming it and its replacement, and
`lakehouse catalog --deprecated` lists each deprecated table with everything that still reads it
(`readers`): the downstream assets and dbt models, found in the asset graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from lakehouse.core.errors import ContractError

TAG = "deprecated"
"""The asset tag of a deprecated table (its value: the replacement, or `yes`)."""
_FIELDS = ("since", "replaced_by", "sunset")


@dataclass(frozen=True)
class Deprecation:
    since: str
    replaced_by: str | None = None
    sunset: str | None = None

    @property
    def banner(self) -> str:
        """One line for the top of the table's description."""
        text = f"DEPRECATED since {self.since}"
        if self.sunset:
            text += f", removed on {self.sunset}"
        text += f": read `{self.replaced_by}` instead." if self.replaced_by else "."
        return text

    def warning(self, table: str, reader: str) -> str:
        """The warning a run of `reader` logs for reading the deprecated `table`."""
        instead = f"; migrate to `{self.replaced_by}`" if self.replaced_by else ""
        sunset = f" (removed on {self.sunset})" if self.sunset else ""
        return f"{reader} reads `{table}`, deprecated since {self.since}{sunset}{instead}"

    @property
    def tags(self) -> dict[str, str]:
        return {TAG: self.replaced_by or "yes"}

    def describe(self, description: str) -> str:
        return f"**{self.banner}**\n\n{description}" if description else self.banner


def _date(raw: Mapping[str, Any], key: str, path: str | Path, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ContractError(
            path, f"{where}.{key}", f"`{value}` is not a date (YYYY-MM-DD)"
        ) from None


def parse_deprecation(raw: Any, path: str | Path, where: str = "deprecated") -> Deprecation | None:
    """Validate a `deprecated:` block (None or absent: not deprecated)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ContractError(
            path, where, "must be a mapping with `since` (and `replaced_by`, `sunset`)"
        )
    for key in raw:
        if key not in _FIELDS:
            raise ContractError(
                path, f"{where}.{key}", f"unknown field; allowed here: {', '.join(_FIELDS)}"
            )
    since = _date(raw, "since", path, where)
    if since is None:
        raise ContractError(path, f"{where}.since", "is required: the date it was deprecated")
    sunset = _date(raw, "sunset", path, where)
    if sunset is not None and sunset < since:
        raise ContractError(path, f"{where}.sunset", f"`{sunset}` is before `since` ({since})")
    replaced_by = raw.get("replaced_by")
    if replaced_by is not None and (not isinstance(replaced_by, str) or not replaced_by.strip()):
        raise ContractError(path, f"{where}.replaced_by", "must name a table")
    return Deprecation(since, replaced_by.strip() if replaced_by else None, sunset)


@dataclass(frozen=True)
class DeprecatedTable:
    """A deprecated table and what still reads it."""

    table: str
    """The asset key, `silver/orders` or `gold/fct_orders`."""
    deprecation: Deprecation
    readers: tuple[str, ...]
    """Every asset downstream of it (direct and indirect), by asset key."""


def deprecated_tables(
    deprecations: Mapping[str, Deprecation], downstream: Mapping[str, Iterable[str]]
) -> list[DeprecatedTable]:
    """Each deprecated table (asset key -> its deprecation) with every asset that reads it.

    `downstream` maps an asset key to the keys that read it directly; readers of readers count
    too (a dashboard over a mart over the deprecated table still breaks at its sunset).
    """
    out = []
    for table, deprecation in sorted(deprecations.items()):
        seen: set[str] = set()
        todo = list(downstream.get(table, ()))
        while todo:
            key = todo.pop()
            if key not in seen:
                seen.add(key)
                todo.extend(downstream.get(key, ()))
        out.append(DeprecatedTable(table, deprecation, tuple(sorted(seen))))
    return out


def upstream_deprecations(
    reader: str,
    upstream: Iterable[str],
    deprecations: Mapping[str, Deprecation],
) -> list[str]:
    """The warnings a run of `reader` logs: one per deprecated table among its `upstream` keys."""
    return [
        deprecations[key].warning(key, reader) for key in sorted(upstream) if key in deprecations
    ]
