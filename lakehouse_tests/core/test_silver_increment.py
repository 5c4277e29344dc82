"""A stream's landing date gaining a file per micro-batch: silver after each step equals an
independent computation from the landing files present, whichever road the evaluation took.

The steps: new keys (evaluated on their own), a later update of an earlier key and a batch
landed twice (same date, later files: still on their own), a service killed after silver's
commit and before the date's outcome was recorded, a corrected file, a key updated from
another landing date, a broken batch that blocks its date and the correction that unblocks it.
After each step every landed row is found where it should be: silver's row of its key, an open
quarantine row, or counted as a duplicate or superseded version, date by date; and evaluating
the step's dates whole again changes nothing (the same outcome, no new silver version).
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core import delta, system, vault
from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contract, load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.landing import list_landing_files
from lakehouse.core.quarantine import open_rows
from lakehouse.core.silver import SilverResult, load_silver
from lakehouse_tests.small_lake import deliver, text

CONTRACT = load_contract(Path(__file__).resolve().parents[1] / "contracts/sources/clicks.yaml")
D1, D2 = "2026-03-02", "2026-03-03"
ALONE = "evaluated on their own"


def land(root: Path, day: str, number: int, clicks: list[tuple[str, int, int]]) -> None:
    """A micro-batch as the stream lands it: (event_id, stream sequence, ms) per message."""
    folder = root / "landing" / "clicks" / day
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "event_id": [c[0] for c in clicks],
            "page": [f"/p/{c[2] % 7}" for c in clicks],
            "ms": [str(c[2]) for c in clicks],
            "stream_seq": [f"{c[1]:020d}" for c in clicks],
            "subject": ["events.click"] * len(clicks),
        }
    ).write_parquet(folder / f"extract-{number:06d}.parquet")


def step(lake: Lake, caplog: pytest.LogCaptureFixture) -> tuple[SilverResult, set[str]]:
    """One service turn over every landed date: bronze, then silver; returns the silver result
    and the dates whose new files were evaluated on their own."""
    dates = sorted({f.landing_date for f in list_landing_files(lake, "clicks")})
    caplog.clear()
    load_bronze(lake, CONTRACT, dates, run_id="test")
    result = load_silver(lake, CONTRACT, dates, run_id="test")
    alone = {d for d in dates if any(ALONE in r.message and d in r.message for r in caplog.records)}
    return result, alone


def expected(lake: Lake, blocked: dict[str, set[str]]) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """From the landing files alone: silver's rows, the invalid rows, and per date where its
    rows end (accepted, quarantined, duplicates, superseded, held). `blocked`: per blocked
    date, the files landed since its last publish (silver keeps what the others made)."""
    frames = []
    for file in list_landing_files(lake, "clicks"):
        frames.append(
            pl.read_parquet(file.uri)
            .with_row_index("_row_number", offset=1)
            .with_columns(
                pl.col("_row_number").cast(pl.Int64),
                pl.lit(file.relative_path).alias("_source_file"),
                pl.lit(file.landing_date).alias("_landing_date"),
            )
        )
    rows = pl.concat(frames)
    ms = pl.col("ms").cast(pl.Int64, strict=False)
    valid_rule = ms.is_not_null() & (ms >= 0)
    valid, invalid = rows.filter(valid_rule), rows.filter(~valid_rule)
    unpublished = [f"clicks/{d}/{name}" for d, names in blocked.items() for name in names]
    open_valid = valid.filter(~pl.col("_source_file").is_in(unpublished))
    order = ["stream_seq", "_landing_date", "_source_file", "_row_number"]
    winners = open_valid.sort(order).group_by("event_id").last()
    counts = {}
    for day in sorted(rows["_landing_date"].unique()):
        mine = valid.filter(pl.col("_landing_date") == day)
        keys = mine["event_id"].n_unique()
        won = winners.filter(pl.col("_landing_date") == day).height
        counts[day] = {
            "bronze_rows": rows.filter(pl.col("_landing_date") == day).height,
            "quarantined": invalid.filter(pl.col("_landing_date") == day).height,
            **(
                {"accepted": 0, "duplicates": 0, "superseded": 0, "held": mine.height}
                if day in blocked
                else {
                    "accepted": won,
                    "duplicates": mine.height - keys,
                    "superseded": keys - won,
                    "held": 0,
                }
            ),
        }
    return winners, invalid, counts


def check(lake: Lake, result: SilverResult, blocked: dict[str, set[str]] | None = None) -> None:
    blocked = blocked or {}
    winners, invalid, counts = expected(lake, blocked)
    silver = pl.read_delta(lake.table_uri("silver", "clicks"))
    assert silver["event_id"].is_unique().all()
    columns = ["event_id", "stream_seq", "_source_file", "_row_number", "_landing_date"]
    got = silver.select(columns).sort("event_id")
    want = winners.select(columns).sort("event_id")
    assert got.to_dicts() == want.to_dicts()
    assert dict(silver.select("event_id", "ms").iter_rows()) == {
        k: int(v) for k, v in winners.select("event_id", "ms").iter_rows()
    }
    quarantined = open_rows(lake, CONTRACT)
    lineage = ["_source_file", "_row_number"]
    held = set(quarantined.select(lineage).iter_rows()) if quarantined.width else set()
    assert held == set(invalid.select(lineage).iter_rows())
    states = system.latest_states(lake, "silver", "clicks", sorted(counts))
    for day, want_counts in counts.items():
        if day not in result.evaluated:  # its counts are those of its last evaluation
            continue
        recorded = {k: states[day][k] for k in want_counts}
        assert recorded == want_counts, day
        audit = result.partitions[day]
        assert (audit.status == "blocked") == (day in blocked)
        failed = [c.check for c in audit.checks if not c.passed]
        assert "reconciliation" not in failed, day
        if day not in blocked:
            assert failed in ([], ["row_rules"]), (day, failed)
    # evaluating the step's dates whole again concludes exactly the same: no new outcome recorded,
    # no new silver version
    version = delta.table_version(lake, lake.table_uri("silver", "clicks"))
    load_silver(lake, CONTRACT, sorted(result.evaluated), run_id="whole", reprocess=True)
    assert delta.table_version(lake, lake.table_uri("silver", "clicks")) == version
    assert system.latest_states(lake, "silver", "clicks", sorted(counts)) == states


def test_micro_batches_of_one_date_match_an_independent_computation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="lakehouse.core.silver_increment")
    lake = Lake(str(tmp_path))
    # 1. the first batch of the day (e7 breaks a row rule): the whole date is evaluated
    land(tmp_path, D1, 1, [(f"e{i}", i, -1 if i == 7 else i) for i in range(1, 21)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == set()
    # 2. new keys only, one of them broken: only the new file is evaluated
    land(tmp_path, D1, 2, [(f"e{i}", i, -5 if i == 33 else i) for i in range(21, 41)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == {D1}
    # 3. a later message updates e5, e42 comes twice in one batch, and batch 2 lands again
    land(tmp_path, D1, 3, [("e5", 41, 500), ("e42", 42, 1), ("e42", 43, 2), ("e44", 44, 4)])
    land(tmp_path, D1, 4, [(f"e{i}", i, -5 if i == 33 else i) for i in range(21, 41)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == {D1}
    silver = pl.read_delta(lake.table_uri("silver", "clicks"))
    assert dict(silver.select("event_id", "ms").iter_rows())["e5"] == 500
    assert dict(silver.select("event_id", "ms").iter_rows())["e42"] == 2

    # 4. killed after silver's commit, before the date's outcome is recorded: the next turn
    # finds the new keys already in silver from those very files and evaluates the date whole
    land(tmp_path, D1, 5, [(f"e{i}", i, i) for i in range(50, 60)])

    def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed")

    with monkeypatch.context() as patched:
        patched.setattr(system, "record_states", killed)
        with pytest.raises(SystemExit):
            step(lake, caplog)
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == set()

    # 5. a corrected file (batch 1 again, without e20, e7 fixed): the whole date again
    land(tmp_path, D1, 1, [(f"e{i}", i, i) for i in range(1, 20)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == set()
    # 6. the next day updates e3 (held from D1): the whole of D2; then new keys on their own
    land(tmp_path, D2, 6, [("e3", 60, 333), ("e61", 61, 61)])
    result, alone = step(lake, caplog)
    check(lake, result)
    land(tmp_path, D2, 7, [(f"e{i}", i, i) for i in range(62, 70)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == {D2}

    # 7. a broken batch blocks D2 (quarantine ratio over 0.5): D2 publishes nothing, silver
    # keeps D1's e3; its correction (same file, good rows) publishes D2 again
    land(tmp_path, D2, 8, [(f"e{i}", i, -1) for i in range(70, 100)])
    result, alone = step(lake, caplog)
    check(lake, result, blocked={D2: {"extract-000008.parquet"}})
    assert alone == set()
    land(tmp_path, D2, 9, [(f"e{i}", i, i) for i in range(100, 105)])
    result, alone = step(lake, caplog)
    check(lake, result, blocked={D2: {"extract-000008.parquet", "extract-000009.parquet"}})
    assert alone == set()
    land(tmp_path, D2, 8, [(f"e{i}", i, i) for i in range(70, 100)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == set()
    land(tmp_path, D2, 10, [(f"e{i}", i, i) for i in range(105, 110)])
    result, alone = step(lake, caplog)
    check(lake, result)
    assert alone == {D2}


def test_a_new_file_moves_a_key_between_event_dates_of_a_pii_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tweets: partitioned by event date, PII as vault tokens. A second file of the date edits
    t1 (later tweeted_at, another event date) and adds t3: evaluated on its own, t1 moves."""
    caplog.set_level(logging.INFO, logger="lakehouse.core.silver_increment")
    tweets = next(c for c in load_contracts() if c.name == "tweets")
    header = "id,user_id,tweeted_at,content"
    lake = Lake(str(tmp_path))
    files = {
        "a.csv": ["t1,c1,2026-03-01T10:00:00,hi", "t2,c2,2026-03-01T11:00:00,yo"],
        "b.csv": ["t1,c1,2026-03-02T09:00:00,edited", "t3,c3,2026-03-02T10:00:00,new"],
    }
    for name, lines in files.items():
        deliver(tmp_path, "tweets", D1, name, text([header, *lines]))
        caplog.clear()
        load_bronze(lake, tweets, [D1], run_id="test")
        result = load_silver(lake, tweets, [D1], run_id="test")
    assert any(ALONE in r.message for r in caplog.records)
    silver = pl.read_delta(lake.table_uri("silver", "tweets"))
    content = vault.clear_values(lake, silver["content"].to_list())
    got = {
        r["id"]: (content[r["content"]], r["_event_date"], r["_source_file"])
        for r in silver.iter_rows(named=True)
    }
    assert got == {
        "t1": ("edited", "2026-03-02", f"tweets/{D1}/b.csv"),
        "t2": ("yo", "2026-03-01", f"tweets/{D1}/a.csv"),
        "t3": ("new", "2026-03-02", f"tweets/{D1}/b.csv"),
    }
    audit = result.partitions[D1]
    assert (audit.bronze_rows, audit.accepted, audit.duplicates, audit.quarantined) == (4, 3, 1, 0)
    assert not audit.blocked
    version = delta.table_version(lake, lake.table_uri("silver", "tweets"))
    states = system.latest_states(lake, "silver", "tweets", [D1])
    load_silver(lake, tweets, [D1], run_id="whole", reprocess=True)
    assert delta.table_version(lake, lake.table_uri("silver", "tweets")) == version
    assert system.latest_states(lake, "silver", "tweets", [D1]) == states
