"""The landing reader: clean files take the fast path, bad lines become rows, junk is rejected."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from lakehouse.core.contract import FileFormat
from lakehouse.core.errors import LandingFileError
from lakehouse.core.readers import PARSE_ERROR, RAW_LINE, ROW_NUMBER, landed_frame

CSV = FileFormat(type="csv")
NDJSON = FileFormat(type="ndjson")


def read(path: Path, fmt: FileFormat = CSV, columns: tuple[str, ...] = ("a", "b", "c")):
    with landed_frame(path, fmt, display_path=path.name, columns=columns) as frame:
        return frame.collect()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_clean_csv_is_all_strings_with_row_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.csv", b'a,b,c\n1,"x, y",3\n4,,6\n')
    frame = read(path)
    assert frame.schema == {ROW_NUMBER: pl.UInt32, "a": pl.String, "b": pl.String, "c": pl.String}
    assert frame.select("a", "b", "c").rows() == [("1", "x, y", "3"), ("4", None, "6")]
    assert frame.get_column(ROW_NUMBER).to_list() == [1, 2]


@pytest.mark.parametrize(
    ("data", "bad_row", "raw", "reason"),
    [
        (b"a,b,c\n1,2,3\n4,5\n7,8,9\n", 2, "4,5", "2 fields, the header has 3"),
        (b"a,b,c\n1,2,3\n4,5,6,7\n7,8,9\n", 2, "4,5,6,7", "4 fields, the header has 3"),
        (b'a,b,c\n1,2,3\n"4,5,6\n7,8,9\n', 2, '"4,5,6', "unclosed quote"),
        (b"a,b,c\n1,2,3\n4,\xff\xfe,6\n7,8,9\n", 2, "4,\\xff\\xfe,6", "invalid UTF-8"),
    ],
    ids=["too-few-fields", "too-many-fields", "unclosed-quote", "invalid-utf8"],
)
def test_a_bad_line_becomes_a_row_with_its_raw_text(
    tmp_path: Path, data: bytes, bad_row: int, raw: str, reason: str
) -> None:
    frame = read(write(tmp_path, "bad.csv", data))
    assert frame.get_column(ROW_NUMBER).to_list() == [1, 2, 3]
    bad = frame.filter(pl.col(PARSE_ERROR).is_not_null())
    assert bad.select(ROW_NUMBER, RAW_LINE, PARSE_ERROR).rows() == [(bad_row, raw, reason)]
    assert bad.select("a", "b", "c").rows() == [(None, None, None)]
    good = frame.filter(pl.col(PARSE_ERROR).is_null())
    assert good.select("a", "b", "c").rows() == [("1", "2", "3"), ("7", "8", "9")]


def test_a_quoted_field_may_span_lines(tmp_path: Path) -> None:
    frame = read(write(tmp_path, "multi.csv", b'a,b,c\n1,"two\nlines",3\n4,5,6\n'))
    assert frame.select(ROW_NUMBER, "b").rows() == [(1, "two\nlines"), (2, "5")]
    assert PARSE_ERROR not in frame.columns or frame.get_column(PARSE_ERROR).null_count() == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary content"),
        (b"", "empty"),
        (b'[{"a": 1, "b": 2, "c": 3}]\n', "none of the contract's columns"),
        (b"a,b,c\n" + b"1;2;3;4\n" * 3 + b"1,2,3\n", "3 of 4 records cannot be parsed"),
        (b"a,a,c\n1,2,3\n", "names a column twice"),
    ],
    ids=["binary", "empty", "json-in-csv", "mostly-unparseable", "duplicate-header"],
)
def test_an_unreadable_file_is_rejected_whole(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(LandingFileError, match=reason):
        read(write(tmp_path, "junk.csv", data))


def test_broken_gzip_is_rejected(tmp_path: Path) -> None:
    whole = gzip.compress(b"a,b,c\n" + b"1,2,3\n" * 1000)
    with pytest.raises(LandingFileError, match="broken gzip"):
        read(write(tmp_path, "cut.csv.gz", whole[: len(whole) // 2]))


def test_gzip_with_a_bad_line_is_read(tmp_path: Path) -> None:
    frame = read(write(tmp_path, "x.csv.gz", gzip.compress(b"a,b,c\n1,2,3\n4,5\n")))
    assert frame.get_column(PARSE_ERROR).to_list() == [None, "2 fields, the header has 3"]


def test_ndjson_bad_record_becomes_a_row(tmp_path: Path) -> None:
    data = b'{"a": "1", "b": 2, "c": true}\n{"a": "2", "b": \n{"a": "3", "b": 4, "c": null}\n'
    frame = read(write(tmp_path, "x.ndjson", data), NDJSON)
    assert frame.select(ROW_NUMBER, "a", "b", "c").rows() == [
        (1, "1", "2", "true"),
        (2, None, None, None),
        (3, "3", "4", None),
    ]
    assert frame.get_column(RAW_LINE).to_list() == [None, '{"a": "2", "b": ', None]
    assert frame.get_column(PARSE_ERROR)[1].startswith("invalid JSON")


def test_the_landing_file_is_never_modified(tmp_path: Path) -> None:
    data = b'a,b,c\n1,2,3\n"4,5\n\xff\n7,8,9\n1,1,1\n'
    path = write(tmp_path, "keep.csv", data)
    mtime = path.stat().st_mtime_ns
    read(path)
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    ("data", "second"),
    [(b"a,b,c\n1,2,3\n\n4,5,6\n", "4"), (b"a\n1\n\n2\n", "2")],
    ids=["3-cols", "1-col"],
)
def test_blank_lines_are_not_rows(tmp_path: Path, data: bytes, second: str) -> None:
    frame = read(write(tmp_path, "blank.csv", data), columns=("a",))
    assert frame.select(ROW_NUMBER, "a").rows() == [(1, "1"), (2, second)]
    assert PARSE_ERROR not in frame.columns


def read_groups(paths: list[Path], fmt: FileFormat = CSV) -> tuple[dict[str, pl.DataFrame], dict]:
    """Every file's rows as bronze collects them (`collected`), and the rejections."""
    from lakehouse.core.readers import FILE_COLUMN, collected, landed_groups

    rows: dict[str, pl.DataFrame] = {}
    reasons: dict[str, str] = {}
    with landed_groups([(p, p.name) for p in paths], fmt, columns=("a", "b", "c")) as (
        groups,
        rejected,
    ):
        reasons |= {p.name: e.reason for p, e in rejected.items()}
        for group in groups:
            for part, result in collected(group):
                if isinstance(result, str):
                    reasons[part.paths[0].name] = result
                    continue
                for (name,), frame in result.group_by(FILE_COLUMN):
                    rows[Path(name).name] = frame.drop(FILE_COLUMN).sort(ROW_NUMBER)
    return rows, reasons


def test_compensating_bad_lines_fall_back_to_the_careful_parser(tmp_path: Path) -> None:
    # one short and one long line: the byte counts balance, polars fails, no row is lost
    good = [f"{i},{i},{i}" for i in range(1, 19)]
    lines = [*good[:5], "6,6", *good[5:10], "7,7,7,7", *good[10:]]
    data = ("a,b,c\n" + "\n".join(lines) + "\n").encode()
    paths = [write(tmp_path, "comp.csv", data), write(tmp_path, "comp.csv.gz", gzip.compress(data))]
    paths.append(write(tmp_path, "clean.csv", b"a,b,c\n1,2,3\n"))
    rows, rejected = read_groups(paths)
    assert rejected == {}
    for name in ("comp.csv", "comp.csv.gz"):
        frame = rows[name]
        assert frame.height == 20
        assert frame.get_column(ROW_NUMBER).to_list() == list(range(1, 21))
        bad = frame.filter(pl.col(PARSE_ERROR).is_not_null())
        assert bad.select(ROW_NUMBER, RAW_LINE, PARSE_ERROR).rows() == [
            (6, "6,6", "2 fields, the header has 3"),
            (12, "7,7,7,7", "4 fields, the header has 3"),
        ]
        assert frame.filter(pl.col(PARSE_ERROR).is_null()).height == 18
    assert rows["clean.csv"].select("a", "b", "c").rows() == [("1", "2", "3")]


def test_a_file_polars_cannot_read_is_rejected_with_what_polars_said(tmp_path: Path) -> None:
    path = write(tmp_path, "x.parquet", b"PAR1 not really parquet")
    _, rejected = read_groups([path], FileFormat(type="parquet"))
    assert "invalid UTF-8" not in rejected["x.parquet"]
    assert rejected["x.parquet"].startswith("cannot be parsed: ")


def test_the_careful_parser_streams_in_chunks(tmp_path: Path, monkeypatch) -> None:
    from lakehouse.core import readers

    monkeypatch.setattr(readers, "CAREFUL_CHUNK_ROWS", 7)
    lines = [f"{i},x,{i}" for i in range(1, 101)]
    lines[49] = '"50,x'  # an unclosed quote: the next lines are read again, not swallowed
    lines[79] = "80,\xff"
    data = ("a,b,c\n" + "\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    data = data.replace("\xff".encode(), b"\xff")
    spilled = []
    real = readers._Spill.new_file
    monkeypatch.setattr(readers._Spill, "new_file", lambda s: spilled.append(1) or real(s))
    frame = read(write(tmp_path, "big.csv", data))
    assert len(spilled) == 15  # 100 records, 7 per chunk
    assert frame.get_column(ROW_NUMBER).to_list() == list(range(1, 101))
    bad = frame.filter(pl.col(PARSE_ERROR).is_not_null())
    assert bad.select(ROW_NUMBER, PARSE_ERROR).rows() == [
        (50, "unclosed quote"),
        (80, "invalid UTF-8"),
    ]
    assert frame.filter(pl.col(PARSE_ERROR).is_null()).get_column("a").to_list() == [
        str(i) for i in range(1, 101) if i not in (50, 80)
    ]


def test_group_sizes_are_bounded_by_bytes(tmp_path: Path, monkeypatch) -> None:
    from lakehouse.core import readers
    from lakehouse.core.readers import landed_groups

    monkeypatch.setattr(readers, "GROUP_BYTES", 100)
    paths = [write(tmp_path, f"{n}.csv", b"a,b,c\n" + b"1,2,3\n" * 10) for n in range(5)]
    with landed_groups([(p, p.name) for p in paths], CSV) as (groups, _):
        assert [len(g.paths) for g in groups] == [1, 1, 1, 1, 1]
    monkeypatch.setattr(readers, "GROUP_BYTES", 150)  # files of 66 bytes
    with landed_groups([(p, p.name) for p in paths], CSV) as (groups, _):
        assert [len(g.paths) for g in groups] == [2, 2, 1]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"\n\n  \n", "empty file"), (b" " * 10000 + b"\n", "empty file")],
    ids=["zero-bytes", "blank-lines", "long-blank"],
)
def test_empty_files_are_rejected_as_empty(tmp_path: Path, data: bytes, reason: str) -> None:
    for fmt in (CSV, NDJSON, FileFormat(type="parquet")):
        if fmt.type == "parquet" and data:
            continue
        with pytest.raises(LandingFileError, match=reason):
            read(write(tmp_path, "e.csv", data), fmt)


def test_a_long_value_is_cut_in_messages_but_kept_in_rows(tmp_path: Path) -> None:
    from lakehouse.core.readers import quoted

    assert quoted("abc") == "`abc`"
    assert quoted("a" * 1_000_000) == "`" + "a" * 200 + "…` (1000000 characters)"
    long = "z" * 1_000_000
    frame = read(write(tmp_path, "long.csv", f"a,b,c\n1,{long},3\n4,5\n".encode()))
    assert frame.get_column("b").to_list() == [long, None]  # a long field is no defect
    with pytest.raises(LandingFileError) as caught:
        read(write(tmp_path, "h.csv", f"{long},y\n1,2\n".encode()))
    assert len(caught.value.reason) < 400 and "(1000000 characters)" in caught.value.reason


def test_a_suspect_file_is_parsed_in_segments_like_line_by_line(
    tmp_path: Path, monkeypatch
) -> None:
    """Clean segments are read by polars, suspect ones line by line: the rows, their numbers
    and the bad lines are exactly those of a line-by-line parse of the whole file."""
    from lakehouse.core import readers

    lines = [f'{i},"x{i}",{i}' for i in range(1, 400)]
    lines[40] = "41,short"  # a bad line in an early segment
    lines[150] = '151,"two\nlines",151'  # a quoted field spanning lines (and maybe segments)
    lines[200] = ""  # a blank line: not a row
    lines[300] = "301,\xff,301"  # invalid UTF-8
    lines[390] = '391,"never closed,391'  # from here the quotes do not balance again
    data = ("a,b,c\n" + "\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    data = data.replace("\xff".encode(), b"\xff")
    path = write(tmp_path, "suspect.csv", data)
    whole = read(path)  # one segment: the whole file, line by line
    segments: list[int] = []
    real = readers._parse_segment
    monkeypatch.setattr(
        readers, "_parse_segment", lambda d, *a: segments.append(len(d)) or real(d, *a)
    )
    clean: list[int] = []
    add_frame = readers._Records.add_frame
    monkeypatch.setattr(
        readers._Records, "add_frame", lambda r, f: clean.append(f.height) or add_frame(r, f)
    )
    monkeypatch.setattr(readers, "CAREFUL_SEGMENT_BYTES", 500)
    cut = read(path)
    assert len(segments) >= 8 and len(clean) >= 4  # it was cut; clean segments went to polars
    assert cut.equals(whole)
    bad = whole.filter(pl.col(PARSE_ERROR).is_not_null()).get_column(ROW_NUMBER).to_list()
    assert bad[:2] == [41, 300] and whole.height == 398


def test_a_big_clean_file_is_read_in_segments_with_the_same_rows(
    tmp_path: Path, monkeypatch
) -> None:
    from lakehouse.core import readers

    lines = [f'{i},"x, {i}",{i}' for i in range(1, 300)]
    path = write(tmp_path, "big.csv", ("a,b,c\n" + "\n".join(lines) + "\n").encode())
    fast = read(path).with_columns(pl.col(ROW_NUMBER).cast(pl.Int64))
    monkeypatch.setattr(readers, "CAREFUL_SEGMENT_BYTES", 400)  # "big": over one segment
    assert read(path).equals(fast)
    assert fast.height == 299 and fast.get_column("b")[0] == "x, 1"
