"""What the UI shows per partition: a landing date's materialization and check evaluations carry
that date's own figures, read back from the instance and computed here from the landing files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from lakehouse_tests.defs.conftest import DAY3, SmallLake
from lakehouse_tests.test_blocking import DAY2

ORDERS = {layer: dg.AssetKey([layer, "orders"]) for layer in ("bronze", "silver")}


def landed(root: str, day: str) -> dict[str, int]:
    """Figures of a landing date computed from its files alone."""
    files = sorted(Path(root, "landing", "orders", day).iterdir())
    frames = [pl.read_csv(f, infer_schema=False) for f in files if f.stat().st_size]
    rows = pl.concat(frames) if frames else pl.DataFrame()
    bad = rows.filter(pl.col("order_total").cast(pl.Int64) < 0)
    good = rows.filter(pl.col("order_total").cast(pl.Int64) >= 0)
    return {
        "files": len(frames),
        "rejected": len(files) - len(frames),
        "rows": rows.height,
        "quarantined": bad.height,
        "accepted": good.get_column("id").n_unique(),
        "duplicates": good.height - good.get_column("id").n_unique(),
    }


def partition_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> dict | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    assert materialization is not None
    return {k: v.value for k, v in materialization.metadata.items()}


def test_each_partition_shows_its_own_figures(small_lake: SmallLake) -> None:
    root, instance = small_lake.lake.root, small_lake.instance
    run_id = small_lake.range_run.run_id
    day2, day3 = landed(root, DAY2), landed(root, DAY3)
    assert day3["duplicates"] == 1 and day3["quarantined"] == 1  # the test's own data
    for day, figures in ((DAY2, day2), (DAY3, day3)):
        bronze = partition_metadata(instance, ORDERS["bronze"], day)
        assert bronze is not None
        assert bronze["rows_loaded"] == bronze["date_rows"] == figures["rows"]
        assert bronze["files_loaded"] == figures["files"]
        assert bronze["files_rejected"] == figures["rejected"]
    silver = partition_metadata(instance, ORDERS["silver"], DAY3)
    assert silver is not None
    assert (silver["rows_accepted"], silver["rows_quarantined"], silver["rows_duplicate"]) == (
        day3["accepted"],
        day3["quarantined"],
        day3["duplicates"],
    )
    assert silver["rows_held"] == 0 and silver["status"] == "published"
    # The blocked date: no materialization, its failed check with the date's figures.
    assert partition_metadata(instance, ORDERS["silver"], DAY2) is None
    evaluations = [
        e.dagster_event.event_specific_data
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if e.dagster_event is not None
    ]
    failed = {
        (e.check_name, e.partition): e.metadata
        for e in evaluations
        if not e.passed and e.partition is not None
    }
    ratio = failed[("quarantine_ratio", DAY2)]
    assert ratio["rows_checked"].value == day2["rows"]
    assert ratio["rows_failed"].value == day2["quarantined"]
    assert failed[("row_rules", DAY3)]["rows_failed"].value == day3["quarantined"]
    assert ("quarantine_ratio", DAY3) not in failed
