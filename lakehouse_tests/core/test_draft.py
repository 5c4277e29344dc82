"""`lakehouse contract draft`: a contract inferred from the landed files loads and materializes."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core.contract import load_contract, load_contracts
from lakehouse.core.draft import DraftError, draft_contract, sniff_delimiter, write_draft
from lakehouse.core.lake import Lake

EVENTS_CSV = """\
id,Amount,sent_at,day,active,Customer Name,note
1,1.5,2024-01-02T03:04:05Z,2024-01-02,true,Ann,x
2,NA,2024-01-02T04:00:00Z,2024-01-02,false,Bob,
3,2.25,2024-01-03T05:06:07.5Z,2024-01-03,TRUE,Cy,-
4,3,2024-01-03T06:00:00+02:00,2024-01-03,false,NA,z
"""


def land(root: Path, source: str, day: str, name: str, text: str) -> Path:
    folder = root / "landing" / source / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write(tmp_path: Path, text: str, name: str = "draft.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_is_drafted_with_types_null_tokens_key_and_event_time(tmp_path: Path) -> None:
    land(tmp_path, "events", "2024-01-03", "b.csv", EVENTS_CSV)
    header = EVENTS_CSV.split("\n", 1)[0]
    land(
        tmp_path,
        "events",
        "2024-01-02",
        "a.csv",
        f"{header}\n5,7,2024-01-01T00:00:00Z,2024-01-01,f,Di,w\n",
    )
    text = draft_contract(Lake(str(tmp_path)), "events")
    contract = load_contract(write(tmp_path, text))
    assert contract.name == "events"
    assert contract.since == "2024-01-02"
    assert contract.format.type == "csv"
    assert "NA" in contract.format.null_values and "-" in contract.format.null_values
    types = {c.name: c.type for c in contract.columns}
    assert types == {
        "id": "int64",
        "Amount": "float64",
        "sent_at": "timestamp",
        "day": "date",
        "active": "boolean",
        "Customer Name": "string",
        "note": "string",
    }
    assert contract.primary_key == ("id",)
    assert contract.event_time == "sent_at"
    renamed = {c.name: c.silver_name for c in contract.columns}
    assert renamed["Amount"] == "amount" and renamed["Customer Name"] == "customer_name"
    assert contract.column("amount").nullable and not contract.column("id").nullable
    assert "# TODO" in text and "pii: none" in text


def test_no_unique_column_gives_the_first_unique_pair(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "store": ["a", "a", "b", "b"],
            "price": [1.0, 1.0, 2.0, 2.0],
            "day": ["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-02"],
            "qty": [1, 1, 1, 2],
        }
    )
    folder = tmp_path / "landing" / "sales" / "2024-01-05"
    folder.mkdir(parents=True)
    frame.write_csv(folder / "sales.csv", separator=";")
    contract = load_contract(write(tmp_path, draft_contract(Lake(str(tmp_path)), "sales")))
    assert contract.primary_key == ("store", "day")
    assert contract.format.delimiter == ";"
    assert contract.format.null_values == ("",)


def test_primary_key_given_is_respected(tmp_path: Path) -> None:
    land(tmp_path, "events", "2024-01-03", "b.csv.gz", EVENTS_CSV)
    lake = Lake(str(tmp_path))
    text = draft_contract(lake, "events", primary_key=["sent_at", "Customer Name"])
    contract = load_contract(write(tmp_path, text))
    assert contract.primary_key == ("sent_at", "customer_name")
    assert not contract.column("customer_name").nullable
    assert "NOT unique" in text  # Customer Name has an NA: the key is flagged, not refused
    with pytest.raises(DraftError, match="not among the landed columns"):
        draft_contract(lake, "events", primary_key=["nope"])


def test_ndjson_and_parquet_are_drafted(tmp_path: Path) -> None:
    frame = pl.DataFrame({"k": ["x", "y"], "n": [1, 2], "at": ["2024-01-01 10:00", None]})
    folder = tmp_path / "landing" / "j" / "2024-02-01"
    folder.mkdir(parents=True)
    frame.write_ndjson(folder / "j.ndjson")
    contract = load_contract(write(tmp_path, draft_contract(Lake(str(tmp_path)), "j")))
    assert contract.format.type == "ndjson"
    assert {c.name: c.type for c in contract.columns} == {
        "k": "string",
        "n": "int64",
        "at": "datetime",
    }
    assert contract.primary_key == ("k",)
    assert contract.event_time is None  # `at` has a null: not an event_time
    folder = tmp_path / "landing" / "p" / "2024-02-01"
    folder.mkdir(parents=True)
    frame.write_parquet(folder / "p.parquet")
    contract = load_contract(write(tmp_path, draft_contract(Lake(str(tmp_path)), "p"), "p.yaml"))
    assert contract.format.type == "parquet"
    assert contract.column("n").type == "int64"


def test_an_existing_draft_is_not_overwritten(tmp_path: Path) -> None:
    land(tmp_path, "events", "2024-01-03", "b.csv", EVENTS_CSV)
    lake = Lake(str(tmp_path))
    out = tmp_path / "contracts"
    path, draft = write_draft(lake, "events", out)
    assert path == out / "events.yaml" and draft.primary_key == ("id",)
    before = path.read_text()
    with pytest.raises(DraftError, match="already exists"):
        write_draft(lake, "events", out)
    assert path.read_text() == before


def test_cli_draft_prints_the_path_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lakehouse.cli import main

    land(tmp_path, "events", "2024-01-03", "b.csv", EVENTS_CSV)
    out = tmp_path / "contracts"
    argv = ["--root", str(tmp_path), "contract", "draft", "events", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out / "events.yaml") in printed and "primary key [id]" in printed
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv[:4], "nothing", "--out", str(out)]) == 2


def test_nothing_landed_or_no_key_is_an_error(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with pytest.raises(DraftError, match="nothing has landed"):
        draft_contract(lake, "none")
    land(tmp_path, "dup", "2024-01-01", "d.csv", "a,b\n1,2\n1,2\n")
    with pytest.raises(DraftError, match="pass --primary-key"):
        draft_contract(lake, "dup")


def test_sniff_delimiter() -> None:
    assert sniff_delimiter(["a|b|c", "1|2|3"]) == "|"
    assert sniff_delimiter(["a\tb", "1\t2,5"]) == "\t"
    assert sniff_delimiter(['a,"b;c"', '1,"2;3"']) == ","
    assert sniff_delimiter(["a"]) == ","


def test_the_draft_materializes_every_row_into_silver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lakehouse.core.bronze import load_bronze
    from lakehouse.core.silver import load_silver

    root = tmp_path / "root"
    land(root, "events", "2024-01-03", "b.csv", EVENTS_CSV)
    lake = Lake(str(root))
    contracts = tmp_path / "contracts"
    write_draft(lake, "events", contracts)
    monkeypatch.setenv("LAKEHOUSE_CONTRACTS", str(contracts))
    (contract,) = load_contracts()
    load_bronze(lake, contract, ["2024-01-03"], run_id="draft")
    load_silver(lake, contract, ["2024-01-03"], run_id="draft")
    silver = pl.read_delta(lake.table_uri("silver", "events")).sort("id")
    assert silver.height == 4
    assert silver.get_column("amount").to_list() == [1.5, None, 2.25, 3.0]
    assert silver.get_column("active").to_list() == [True, False, True, False]
    assert silver.get_column("sent_at").dtype == pl.Datetime("us", "UTC")
