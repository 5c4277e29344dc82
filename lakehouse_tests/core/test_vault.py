"""The token vault: one random token per value and class, the same in every source, even when
two silver steps mint at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import polars as pl

from lakehouse.core.bronze import load_bronze
from lakehouse.core.contract import load_contracts
from lakehouse.core.lake import Lake
from lakehouse.core.silver import load_silver
from lakehouse.core.vault import clear_values, mint, vault_uri
from lakehouse_tests.small_lake import deliver, deliver_reference_data, order, orders_file, text

CONTRACTS = {c.name: c for c in load_contracts()}
DAY = "2024-06-01"
TWEETS = "id,user_id,tweeted_at,content"


def vault(lake: Lake) -> pl.DataFrame:
    return pl.read_delta(vault_uri(lake))


def load(lake: Lake, *sources: str, day: str = DAY) -> None:
    for source in sources:
        load_bronze(lake, CONTRACTS[source], [day], run_id="t")
        load_silver(lake, CONTRACTS[source], [day], run_id="t")


def test_a_subject_has_one_token_in_every_source_and_joins_hold(tmp_path: Path) -> None:
    deliver_reference_data(tmp_path, DAY)
    deliver(
        tmp_path, "orders", DAY, "orders.csv", orders_file(DAY, order("o-c2", DAY, customer="c2"))
    )
    deliver(
        tmp_path,
        "tweets",
        DAY,
        "tweets.csv",
        text([TWEETS, f"t1,c2,{DAY}T10:00:00,Love it", f"t2,c1,{DAY}T11:00:00,Love it"]),
    )
    lake = Lake(str(tmp_path))
    load(lake, "stores", "customers", "products", "orders", "tweets")

    customers = pl.read_delta(lake.table_uri("silver", "customers"))
    orders = pl.read_delta(lake.table_uri("silver", "orders"))
    tweets = pl.read_delta(lake.table_uri("silver", "tweets"))
    everything = customers.write_csv() + orders.write_csv() + tweets.write_csv()
    for clear in ("c1", "c2", "Ada Lovelace", "Alan Turing", "Love it"):
        assert f",{clear}," not in everything and f"\n{clear}," not in everything
    # the vault maps every token back; one class per subject, so the same id is one token
    back = clear_values(lake, customers.get_column("id"))
    assert sorted(back.values()) == ["c1", "c2"]
    by_clear = {v: t for t, v in back.items()}
    assert orders.get_column("customer_id").value_counts().sort("customer_id").to_dicts() == sorted(
        [{"customer_id": by_clear["c1"], "count": 20}, {"customer_id": by_clear["c2"], "count": 1}],
        key=lambda d: d["customer_id"],
    )
    assert set(tweets.get_column("user_id")) == {by_clear["c1"], by_clear["c2"]}
    # joins on tokens hold: every order and tweet finds its customer
    assert orders.join(customers, left_on="customer_id", right_on="id").height == orders.height
    assert tweets.join(customers, left_on="user_id", right_on="id").height == tweets.height
    # one token per value per class: both tweets say "Love it", a name is another class
    assert tweets.get_column("content").n_unique() == 1
    rows = vault(lake)
    assert rows.select("class", "value").is_unique().all()
    assert sorted(rows.get_column("class").unique()) == ["free_text", "name", "subject:customers"]


def test_redelivery_and_reprocessing_keep_every_token(tmp_path: Path) -> None:
    deliver_reference_data(tmp_path, DAY)
    lake = Lake(str(tmp_path))
    load(lake, "customers")
    before = pl.read_delta(lake.table_uri("silver", "customers")).sort("_row_hash")
    minted = vault(lake).height
    # the same file delivered again (a new version of it), then a reprocess of the date
    deliver(
        tmp_path,
        "customers",
        DAY,
        "customers.csv",
        text(["id,name", "c1,Ada Lovelace", "c2,Alan Turing", "c3,Grace Hopper"]),
    )
    load(lake, "customers")
    load_silver(lake, CONTRACTS["customers"], [DAY], run_id="t", reprocess=True)
    after = pl.read_delta(lake.table_uri("silver", "customers"))
    assert after.height == 3
    kept = after.join(before.select("id", "name"), on=["id", "name"], how="semi")
    assert kept.height == 2  # c1 and c2 keep their tokens
    assert vault(lake).height == minted + 2  # only c3 and its name are new


def _mint_many(root: str, barrier, values: list[str], out) -> None:
    lake = Lake(root)
    tokens = {}
    for round_ in range(3):
        batch = [f"{v}-{round_}" for v in values]
        barrier.wait(60)
        got = mint(lake, {"name": batch, "subject:customers": batch})
        tokens.update({(c, v): t for c, v, t in got.iter_rows()})
    out.put(tokens)


def test_two_concurrent_mints_never_give_one_value_two_tokens(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # deltalake's runtime panics after fork
    barrier = context.Barrier(2)
    out = context.Queue()
    values = [f"person {i}" for i in range(50)]
    workers = [
        context.Process(target=_mint_many, args=(str(tmp_path), barrier, values, out))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert results[0] == results[1]  # both processes use the same tokens
    rows = vault(Lake(str(tmp_path)))
    assert rows.height == 2 * 3 * len(values)
    assert rows.select("class", "value").is_unique().all()
    assert rows.get_column("token").is_unique().all()  # a token belongs to one value


def test_a_tokenised_key_corrected_away_falls_back_to_its_older_version(tmp_path: Path) -> None:
    """Silver holds customers by token: a correction that drops a key finds the key's older
    delivery in bronze (by its clear id) and republishes it under the same token."""
    day2 = "2024-06-02"
    deliver(tmp_path, "customers", DAY, "customers.csv", text(["id,name", "c1,Ada Lovelace"]))
    deliver(tmp_path, "customers", day2, "customers.csv", text(["id,name", "c1,Ada King", "c2,Bo"]))
    lake = Lake(str(tmp_path))
    for day in (DAY, day2):
        load(lake, "customers", day=day)
    by_token = pl.read_delta(lake.table_uri("silver", "customers"))
    assert sorted(clear_values(lake, by_token.get_column("name")).values()) == ["Ada King", "Bo"]
    token = by_token.filter(pl.col("_landing_date") == day2).sort("id").get_column("id").to_list()
    # day 2 corrected: c1 is no longer in it, so c1's day-1 version is silver's again
    deliver(tmp_path, "customers", day2, "customers.csv", text(["id,name", "c2,Bo"]))
    load(lake, "customers", day=day2)
    after = pl.read_delta(lake.table_uri("silver", "customers"))
    names = clear_values(lake, after.get_column("name"))
    ids = clear_values(lake, after.get_column("id"))
    assert sorted((ids[i], names[n]) for i, n in after.select("id", "name").iter_rows()) == [
        ("c1", "Ada Lovelace"),
        ("c2", "Bo"),
    ]
    assert set(after.get_column("id")) == set(token)  # the same tokens as before
