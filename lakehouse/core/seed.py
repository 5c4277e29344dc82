"""Demo data: run jafgen (dbt Labs' Jaffle Shop generator) and deliver its output as daily files.

Event sources (orders, items, tweets) are split by event day; customers are delivered on the day
of their first order; products, stores and supplies arrive as snapshot files on the first day:

    <root>/landing/<source>/<YYYY-MM-DD>/<source>.csv

The feed's day 1 is the landing zone's first delivered day, or, on an empty landing zone, `start`
(default: `days` days before today, so a fresh demo ends yesterday and the UI opens on filled
partitions); every timestamp jafgen wrote is moved by the same number of days. The feed is
reproducible to the byte: jafgen runs with its random generators seeded and its uuid4 ids drawn
from a seeded generator, so the same days from the same start always hold the same rows and ids.
`seed` delivers only the days not yet in the landing zone (a delivered file is never rewritten),
so `--days 10` then `--days 13` delivers three new days. Two ways a feed changes its past:

- `redeliver(lake, DATE)` replaces that day's orders and items files with a corrected version
  (some orders' amounts corrected, some orders withdrawn, some added, one moved to another day);
- `deliver_late(lake, DATE)` adds `orders_late_<n>.csv` / `items_late_<n>.csv` to landing date
  DATE, holding orders placed on earlier, already delivered days.

With `defects=RATE`, about that share of the event rows is spoiled the way real feeds are: a value
of the wrong type, a null key, a duplicated row, a truncated (malformed) line; and one file per
event source carries an extra column. The choice is seeded by source and day: reproducible.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake
from lakehouse.core.landing import fetched, list_landing_files, write_landing_file

log = logging.getLogger(__name__)

SNAPSHOT_SOURCES = ("products", "stores", "supplies")
DEFECT_SOURCES = ("orders", "items", "tweets")
JAFGEN_SEED = 20180901
DEFECT_KINDS = ("bad_type", "null_key", "duplicate", "malformed")
_BAD_VALUES = {
    "orders": ("subtotal", "n/a"),
    "items": ("sku", "??"),
    "tweets": ("tweeted_at", "soon"),
}
EXTRA_COLUMN = "coupon_code"
TIMESTAMP_COLUMNS = {"orders": "ordered_at", "tweets": "tweeted_at", "stores": "opened_at"}
"""The timestamps jafgen writes (`YYYY-MM-DDT...` text), moved with the feed's start."""


@dataclass(frozen=True)
class SeedResult:
    """What was delivered: files and data rows per source, and the landing dates covered."""

    first_day: date
    last_day: date
    files: dict[str, int]
    rows: dict[str, int]
    delivered: tuple[date, ...] = ()
    """The landing dates that received a file in this call (already delivered days are skipped)."""
    skipped: int = 0
    """Files left untouched because the landing zone already holds them."""


def generate_jaffle_shop(out_dir: Path, days: int) -> Path:
    """Run jafgen for enough whole years to cover `days`; returns the folder of raw CSVs."""
    years = max(1, math.ceil(days / 365))
    # jafgen draws from `random` and numpy unseeded and makes every id with `uuid.uuid4()` (looked
    # up on the module at each call): seeded here, and uuid4 drawing from its own seeded generator
    # (so `random`'s sequence, hence the volumes, stays as it was), every run writes the same bytes.
    program = (
        f"import random, sys, uuid, numpy; random.seed({JAFGEN_SEED}); "
        f"numpy.random.seed({JAFGEN_SEED}); _ids = random.Random({JAFGEN_SEED}); "
        "uuid.uuid4 = lambda: uuid.UUID(int=_ids.getrandbits(128), version=4); "
        "from jafgen.cli import app; sys.argv[0] = 'jafgen'; sys.exit(app())"
    )
    command = [sys.executable, "-c", program, str(years), "--pre", "raw"]
    log.info("seed: generating %d year(s) of Jaffle Shop data with jafgen", years)
    done = subprocess.run(command, cwd=out_dir, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"jafgen failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        raise LakehouseError(msg)
    return out_dir / "jaffle-data"


def seed(
    lake: Lake,
    *,
    days: int = 21,
    raw_dir: Path | None = None,
    defects: float = 0.0,
    start: date | None = None,
) -> SeedResult:
    """Generate Jaffle Shop data and deliver its first `days` days not yet in the landing zone.

    Day 1 is the landing zone's first delivered day; on an empty landing zone it is `start`
    (default: `days` days before today). A `start` that disagrees with what has landed is an error.
    """
    if days < 1:
        msg = f"days must be at least 1, got {days}"
        raise LakehouseError(msg)
    if not 0 <= defects <= 1:
        msg = f"defects is a share of rows between 0 and 1, got {defects}"
        raise LakehouseError(msg)
    start = feed_start(lake, days, start)
    with tempfile.TemporaryDirectory(prefix="lakehouse-seed-") as tmp:
        raw = raw_dir or generate_jaffle_shop(Path(tmp), days)
        tables = {
            name: pl.read_csv(raw / f"raw_{name}.csv", infer_schema=False)
            for name in ("customers", "orders", "items", "products", "stores", "supplies", "tweets")
        }
        return deliver(lake, tables, days=days, staging=Path(tmp), defects=defects, start=start)


def feed_start(lake: Lake, days: int, start: date | None = None) -> date:
    """Day 1 of the feed in this landing zone (see `seed`)."""
    landed = [
        f.landing_date for s in (*SNAPSHOT_SOURCES, "orders") for f in list_landing_files(lake, s)
    ]
    if landed:
        first = date.fromisoformat(min(landed))
        if start is not None and start != first:
            msg = (
                f"the landing zone's feed starts on {first}, not {start}: "
                "seed without --start, or into an empty root (--fresh)"
            )
            raise LakehouseError(msg)
        return first
    return start or datetime.now(UTC).date() - timedelta(days=days)


def deliver(
    lake: Lake,
    tables: dict[str, pl.DataFrame],
    *,
    days: int,
    staging: Path,
    defects: float = 0.0,
    start: date | None = None,
) -> SeedResult:
    """Split raw Jaffle Shop tables into daily landing files (see the module docstring).

    With `start`, every timestamp moves so that the feed's first day is `start`. A file the
    landing zone already holds (same source, landing date and name) is left untouched: a day
    delivered once, or redelivered since, is never rewritten.
    """
    if start is not None:
        raw_first = tables["orders"].select(_day("ordered_at")).to_series().min()
        tables = _moved(tables, start - raw_first)
    orders = tables["orders"].with_columns(_day("ordered_at"))
    first_day = orders.get_column("_day").min()
    last_day = first_day + timedelta(days=days - 1)
    orders = orders.filter(pl.col("_day") <= last_day)
    order_day = orders.select(pl.col("id").alias("order_id"), "_day")
    first_order = orders.group_by(pl.col("customer").alias("id")).agg(pl.col("_day").min())
    by_day = {
        "orders": orders,
        "items": tables["items"].join(order_day, on="order_id", how="inner"),
        "tweets": tables["tweets"]
        .with_columns(_day("tweeted_at"))
        .filter(pl.col("_day") <= last_day),
        "customers": tables["customers"].join(first_order, on="id", how="inner"),
    }
    for name in SNAPSHOT_SOURCES:
        by_day[name] = tables[name].with_columns(pl.lit(first_day).alias("_day"))

    files: dict[str, int] = {}
    rows: dict[str, int] = {}
    delivered: set[date] = set()
    skipped = 0
    for source, frame in by_day.items():
        columns = [c for c in tables[source].columns]
        files[source] = 0
        rows[source] = 0
        landed = {(f.landing_date, f.name) for f in list_landing_files(lake, source)}
        for n, ((day,), part) in enumerate(
            frame.sort("_day").partition_by("_day", as_dict=True, maintain_order=True).items()
        ):
            if (day.isoformat(), f"{source}.csv") in landed:
                skipped += 1
                continue
            local = staging / f"{source}-{day}.csv"
            part = part.select(columns)
            malformed: list[str] = []
            if defects and source in DEFECT_SOURCES:
                rng = random.Random(f"{source}/{day}")
                part, malformed = _spoil(source, part, defects, rng, extra_column=n == 1)
            part.write_csv(local)
            if malformed:
                with local.open("a", encoding="utf-8") as fh:
                    fh.writelines(f"{line}\n" for line in malformed)
            write_landing_file(lake, source, day.isoformat(), f"{source}.csv", local)
            local.unlink()
            files[source] += 1
            rows[source] += part.height + len(malformed)
            delivered.add(day)
        log.info("seed: delivered %d rows of %s in %d files", rows[source], source, files[source])
    return SeedResult(first_day, last_day, files, rows, tuple(sorted(delivered)), skipped)


def _spoil(
    source: str, part: pl.DataFrame, rate: float, rng: random.Random, *, extra_column: bool
) -> tuple[pl.DataFrame, list[str]]:
    """Spoil about `rate` of the rows; returns the rows to write and malformed lines to append."""
    rows = part.to_dicts()
    out: list[dict] = []
    malformed: list[str] = []
    bad_column, bad_value = _BAD_VALUES[source]
    for row in rows:
        kind = rng.choice(DEFECT_KINDS) if rng.random() < rate else None
        if kind == "bad_type":
            row[bad_column] = bad_value
        elif kind == "null_key":
            row["id"] = None
        elif kind == "duplicate":
            out.append(dict(row))
        elif kind == "malformed":  # the line was cut after its first two fields
            malformed.append(",".join(str(v) for v in list(row.values())[:2]))
            continue
        out.append(row)
    spoiled = pl.DataFrame(out, schema=part.schema)
    if extra_column:
        spoiled = spoiled.with_columns(
            pl.when(pl.int_range(pl.len()) % 3 == 0)
            .then(pl.lit("SPRING10"))
            .otherwise(None)
            .alias(EXTRA_COLUMN)
        )
    return spoiled, malformed


def _moved(tables: dict[str, pl.DataFrame], by: timedelta) -> dict[str, pl.DataFrame]:
    """Move every jafgen timestamp by `by` whole days, keeping the rest of its text as written."""
    moved = dict(tables)
    for source, column in TIMESTAMP_COLUMNS.items():
        text = pl.col(column)
        day = text.str.slice(0, 10).str.to_date("%Y-%m-%d") + by
        moved[source] = tables[source].with_columns(
            (day.dt.strftime("%Y-%m-%d") + text.str.slice(10)).alias(column)
        )
    return moved


def _day(column: str) -> pl.Expr:
    return pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d").alias("_day")


ORDER_COLUMNS = ("id", "customer", "ordered_at", "store_id", "subtotal", "tax_paid", "order_total")
ITEM_COLUMNS = ("id", "order_id", "sku")
LATE_DAYS = 5
"""A late file holds orders of (at most) the last this many delivered days before its date."""
_LATE_NAME = re.compile(r"^(?:orders|items)_late_(\d+)\.csv$")


@dataclass(frozen=True)
class Redelivery:
    """A corrected orders (and items) file for an already delivered landing date."""

    landing_date: date
    files: tuple[str, ...]
    """The replaced files, relative to the landing root (`orders/<date>/orders.csv`, ...)."""
    orders: int
    items: int
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    moved: str | None = None
    moved_to: date | None = None
    already: bool = False
    """The landing zone already held this correction: nothing was written."""


@dataclass(frozen=True)
class LateDelivery:
    """Extra files delivered into a landing date, holding orders of earlier event dates."""

    landing_date: date
    files: tuple[str, ...]
    orders: int
    items: int
    event_dates: tuple[date, ...]


@dataclass
class _Csv:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def positions(self, columns: tuple[str, ...], where: str) -> dict[str, int]:
        missing = [c for c in columns if c not in self.header]
        if missing:
            msg = f"`{where}` lacks the column(s) `{'`, `'.join(missing)}`"
            raise LakehouseError(msg)
        return {c: self.header.index(c) for c in columns}


def redeliver(lake: Lake, day: date | str) -> Redelivery:
    """Replace landing date `day`'s orders and items files with a corrected version.

    Of the day's orders, about 5% get corrected amounts (a 10% discount the first delivery missed:
    subtotal, tax_paid and order_total change together), about 2.5% are withdrawn (with their
    items), about 2.5% are added (new ids, with items), and one is moved to the previous event day
    (its `ordered_at` date changes; it stays in this file). The same file names are written, so
    the correction replaces the first delivery. Deterministic for a date: a second call finds its
    correction in place and writes nothing.
    """
    landing_day = _as_date(day)
    key = landing_day.isoformat()
    orders = _read_csv(lake, "orders", key, "orders.csv")
    if orders is None:
        msg = (
            f"landing date `{key}` has no delivered `orders.csv` to redeliver; "
            "deliver it first with `lakehouse seed --days N`"
        )
        raise LakehouseError(msg)
    items = _read_csv(lake, "items", key, "items.csv") or _Csv(list(ITEM_COLUMNS))
    o = orders.positions(ORDER_COLUMNS, f"orders/{key}/orders.csv")
    it = items.positions(ITEM_COLUMNS, f"items/{key}/items.csv")
    new_id = _id_maker(f"redeliver-ids/{key}")
    marker = new_id()  # the first added order's id: present means the correction is in place
    files = (f"orders/{key}/orders.csv", f"items/{key}/items.csv")
    if any(len(row) > o["id"] and row[o["id"]] == marker for row in orders.rows):
        return Redelivery(landing_day, files, len(orders.rows), len(items.rows), already=True)

    basket = _baskets(items, it)
    seen = Counter(row[o["id"]] for row in orders.rows if len(row) > o["id"])
    eligible = [  # complete orders of the day, not duplicated (a defect may repeat a row)
        i
        for i, row in enumerate(orders.rows)
        if _is_order(row, orders.header, o, landing_day)
        and seen[row[o["id"]]] == 1
        and int(row[o["subtotal"]]) >= 100
    ]
    n_changed, n_removed = max(2, len(eligible) // 20), max(1, len(eligible) // 40)
    n_added = max(2, len(eligible) // 40)
    if len(eligible) < n_changed + n_removed + 2:  # + the moved order + one to model added ones on
        msg = f"landing date `{key}` holds {len(eligible)} well-formed orders, too few to redeliver"
        raise LakehouseError(msg)
    rng = random.Random(f"redeliver/{key}")
    picked = rng.sample(eligible, n_changed + n_removed + 1)
    changed, removed, moved = picked[:n_changed], picked[n_changed:-1], picked[-1]
    for i in changed:
        row = orders.rows[i]
        subtotal, tax = int(row[o["subtotal"]]), int(row[o["tax_paid"]])
        new_subtotal = round(subtotal * 0.9)
        new_tax = round(tax * new_subtotal / subtotal)
        row[o["subtotal"]], row[o["tax_paid"]] = str(new_subtotal), str(new_tax)
        row[o["order_total"]] = str(new_subtotal + new_tax)
    moved_to = landing_day - timedelta(days=1)
    moved_row = orders.rows[moved]
    moved_row[o["ordered_at"]] = moved_to.isoformat() + moved_row[o["ordered_at"]][10:]

    changed_ids = tuple(orders.rows[i][o["id"]] for i in changed)
    removed_ids = {orders.rows[i][o["id"]] for i in removed}
    untouched = set(eligible) - set(picked)
    templates = [orders.rows[i] for i in sorted(untouched) if orders.rows[i][o["id"]] in basket]
    if not templates:
        msg = f"landing date `{key}` has no order with items to model added orders on"
        raise LakehouseError(msg)
    pricing = _pricing(lake)
    added_orders: list[list[str]] = []
    added_items: list[list[str]] = []
    for n in range(n_added):
        order_id = marker if n == 0 else new_id()
        template = rng.choice(templates)
        order, its = _new_order(rng, template, o, basket, landing_day, order_id, new_id, pricing)
        added_orders.append([order.get(c, "") for c in orders.header])
        added_items += [[item.get(c, "") for c in items.header] for item in its]
    orders.rows = [r for i, r in enumerate(orders.rows) if i not in removed] + added_orders
    items.rows = [
        r for r in items.rows if len(r) <= it["order_id"] or r[it["order_id"]] not in removed_ids
    ] + added_items
    with tempfile.TemporaryDirectory(prefix="lakehouse-seed-") as tmp:
        # orders first: the added items' orders are there before the items that reference them
        _write_csv(lake, "orders", key, "orders.csv", orders, Path(tmp))
        _write_csv(lake, "items", key, "items.csv", items, Path(tmp))
    log.info(
        "seed: redelivered %s: %d orders corrected, %d withdrawn, %d added, 1 moved to %s",
        key,
        len(changed_ids),
        len(removed_ids),
        len(added_orders),
        moved_to,
    )
    return Redelivery(
        landing_day,
        files,
        len(orders.rows),
        len(items.rows),
        changed=changed_ids,
        removed=tuple(sorted(removed_ids)),
        added=tuple(r[o["id"]] for r in added_orders),
        moved=moved_row[o["id"]],
        moved_to=moved_to,
    )


def deliver_late(lake: Lake, day: date | str) -> LateDelivery:
    """Deliver `orders_late_<n>.csv` and `items_late_<n>.csv` into landing date `day`.

    They hold 2 to 4 new orders (new ids, with items) for each of the last `LATE_DAYS` delivered
    days before `day` (at least 3 are required), each modelled on an order of that day: same
    customer and store (so the foreign keys hold), same basket, another time of day. `n` is the
    next free number: a late file never overwrites. Deterministic for a date and `n`.
    """
    landing_day = _as_date(day)
    key = landing_day.isoformat()
    dates = sorted(
        {f.landing_date for f in list_landing_files(lake, "orders") if f.name == "orders.csv"}
    )
    if key not in dates:
        msg = (
            f"landing date `{key}` has no orders delivery; late orders arrive with a delivered "
            "day: deliver it first with `lakehouse seed --days N`"
        )
        raise LakehouseError(msg)
    earlier = [d for d in dates if d < key][-LATE_DAYS:]
    if len(earlier) < 3:
        msg = f"late orders need at least 3 delivered days before `{key}`, found {len(earlier)}"
        raise LakehouseError(msg)
    taken = [
        int(m.group(1))
        for source in ("orders", "items")
        for f in list_landing_files(lake, source, [key])
        if (m := _LATE_NAME.match(f.name))
    ]
    n = max(taken, default=0) + 1
    rng = random.Random(f"late/{key}/{n}")
    new_id = _id_maker(f"late-ids/{key}/{n}")
    pricing = _pricing(lake)
    late_orders = _Csv(list(ORDER_COLUMNS))
    late_items = _Csv(list(ITEM_COLUMNS))
    event_dates: list[date] = []
    for event_key in earlier:
        event_day = date.fromisoformat(event_key)
        orders = _read_csv(lake, "orders", event_key, "orders.csv")
        items = _read_csv(lake, "items", event_key, "items.csv")
        if orders is None or items is None:
            continue
        o = orders.positions(ORDER_COLUMNS, f"orders/{event_key}/orders.csv")
        basket = _baskets(items, items.positions(ITEM_COLUMNS, f"items/{event_key}/items.csv"))
        templates = [
            row
            for row in orders.rows
            if _is_order(row, orders.header, o, event_day) and row[o["id"]] in basket
        ]
        if not templates:
            continue
        for _ in range(rng.randint(2, 4)):
            template = rng.choice(templates)
            order, its = _new_order(rng, template, o, basket, event_day, new_id(), new_id, pricing)
            late_orders.rows.append([order[c] for c in ORDER_COLUMNS])
            late_items.rows += [[item[c] for c in ITEM_COLUMNS] for item in its]
        event_dates.append(event_day)
    if len(event_dates) < 3:
        msg = f"late orders need 3 earlier days with orders and items before `{key}`"
        raise LakehouseError(msg)
    names = (f"orders_late_{n}.csv", f"items_late_{n}.csv")
    with tempfile.TemporaryDirectory(prefix="lakehouse-seed-") as tmp:
        _write_csv(lake, "orders", key, names[0], late_orders, Path(tmp))
        _write_csv(lake, "items", key, names[1], late_items, Path(tmp))
    log.info(
        "seed: delivered %d late orders of %s into landing date %s",
        len(late_orders.rows),
        ", ".join(d.isoformat() for d in event_dates),
        key,
    )
    return LateDelivery(
        landing_day,
        (f"orders/{key}/{names[0]}", f"items/{key}/{names[1]}"),
        len(late_orders.rows),
        len(late_items.rows),
        tuple(event_dates),
    )


def _as_date(value: date | str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        msg = f"`{value}` is not a date (YYYY-MM-DD)"
        raise LakehouseError(msg) from None


def _id_maker(seed_text: str) -> Callable[[], str]:
    """Deterministic uuid4-shaped ids drawn from a generator seeded with `seed_text`."""
    rng = random.Random(seed_text)
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _read_csv(lake: Lake, source: str, day: str, name: str) -> _Csv | None:
    """A landed CSV file's header and records (as strings), or None if it was never delivered."""
    found = [f for f in list_landing_files(lake, source, [day]) if f.name == name]
    if not found:
        return None
    with fetched(lake, found[0]) as (path, _):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    records = list(csv.reader(io.StringIO(text, newline="")))
    return _Csv(records[0], records[1:]) if records else _Csv([])


def _write_csv(lake: Lake, source: str, day: str, name: str, data: _Csv, staging: Path) -> None:
    local = staging / f"{source}-{day}-{name}"
    with local.open("w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(data.header)
        writer.writerows(data.rows)
    write_landing_file(lake, source, day, name, local)  # atomic
    local.unlink()


def _is_order(row: list[str], header: list[str], o: dict[str, int], day: date) -> bool:
    """A complete order row (no defect) placed on `day`."""
    if len(row) != len(header) or not all(row[o[c]] for c in ("id", "customer", "store_id")):
        return False
    amounts = (row[o["subtotal"]], row[o["tax_paid"]], row[o["order_total"]])
    return all(v.isdigit() for v in amounts) and row[o["ordered_at"]][:10] == day.isoformat()


def _baskets(items: _Csv, it: dict[str, int]) -> dict[str, list[str]]:
    """Order id -> the skus of its items (complete item rows only)."""
    basket: dict[str, list[str]] = {}
    for row in items.rows:
        if len(row) == len(items.header) and row[it["order_id"]] and row[it["sku"]]:
            basket.setdefault(row[it["order_id"]], []).append(row[it["sku"]])
    return basket


def _pricing(lake: Lake) -> tuple[dict[str, int], dict[str, float]]:
    """Product prices (cents) by sku and tax rates by store, from the latest landed snapshots."""
    prices: dict[str, int] = {}
    taxes: dict[str, float] = {}
    for source, key_col, value_col, out, cast in (
        ("products", "sku", "price", prices, int),
        ("stores", "id", "tax_rate", taxes, float),
    ):
        files = [f for f in list_landing_files(lake, source) if f.name == f"{source}.csv"]
        data = _read_csv(lake, source, files[-1].landing_date, files[-1].name) if files else None
        if data is None or key_col not in data.header or value_col not in data.header:
            continue
        k, v = data.header.index(key_col), data.header.index(value_col)
        for row in data.rows:
            try:
                out[row[k]] = cast(row[v])  # type: ignore[operator]
            except (ValueError, IndexError):
                continue
    return prices, taxes


def _new_order(
    rng: random.Random,
    template: list[str],
    o: dict[str, int],
    basket: dict[str, list[str]],
    day: date,
    order_id: str,
    new_id: Callable[[], str],
    pricing: tuple[dict[str, int], dict[str, float]],
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """An order like `template` (customer, store, basket) placed on `day`, and its items."""
    order = {c: template[o[c]] for c in ORDER_COLUMNS}
    order["id"] = order_id
    order["ordered_at"] = f"{day.isoformat()}T{rng.randint(8, 14):02d}:{rng.randrange(60):02d}:00"
    skus = basket[template[o["id"]]]
    prices, taxes = pricing
    if all(s in prices for s in skus) and order["store_id"] in taxes:
        subtotal = sum(prices[s] for s in skus)
        tax = round(subtotal * taxes[order["store_id"]])
        order.update(subtotal=str(subtotal), tax_paid=str(tax), order_total=str(subtotal + tax))
    items = [{"id": new_id(), "order_id": order_id, "sku": sku} for sku in skus]
    return order, items


def clear_local_root(lake: Lake) -> None:
    """Delete a local root's landing zone, lake and warehouse (`lakehouse seed --fresh`)."""
    if lake.is_s3:
        msg = "--fresh clears only a local data root; empty the S3 prefix yourself"
        raise LakehouseError(msg)
    shutil.rmtree(lake.landing_root, ignore_errors=True)
    shutil.rmtree(f"{lake.root}/lake", ignore_errors=True)
    Path(lake.warehouse_path).unlink(missing_ok=True)
