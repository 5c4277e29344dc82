"""The landing zone: files as delivered, laid out `<root>/landing/<source>/<YYYY-MM-DD>/<file>`.

The platform only ever reads here. A file's landing date is the folder it was delivered into; that
date is the Dagster partition that loads it. Local directories and S3 prefixes list the same way.

A folder whose name is not a real date (`2024-02-30`, `archive`) is no landing date: its files are
not listed, a warning names it (once per folder and process), and it is recorded once in
`_system/rejected_files`, so one misnamed folder never stops the other folders from loading.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lakehouse.core.lake import Lake

log = logging.getLogger(__name__)

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CHUNK = 8 * 1024 * 1024
_reported: set[tuple[str, str, str]] = set()
"""(lake root, source, folder) of the invalid landing folders this process has reported."""


def is_landing_date(name: str) -> bool:
    """Whether a folder name is a landing date: `YYYY-MM-DD` and a real calendar date."""
    return _date_problem(name) is None


def _date_problem(name: str) -> str | None:
    if not _DATE_DIR.match(name):
        return "not of the form YYYY-MM-DD"
    try:
        date.fromisoformat(name)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class LandingFile:
    """One delivered file, identified by its path relative to the landing root."""

    source: str
    landing_date: str
    name: str
    uri: str
    size: int
    version: str
    """The object's identity beyond its name: the S3 ETag, or the mtime in ns on local disk."""

    @property
    def relative_path(self) -> str:
        return f"{self.source}/{self.landing_date}/{self.name}"


def list_landing_files(
    lake: Lake,
    source: str,
    dates: Iterable[str] | None = None,
    *,
    client: Any = None,
    warn: Callable[[str], None] | None = None,
) -> list[LandingFile]:
    """Every landed file of `source` (optionally only the given landing dates), sorted by path.

    Hidden files and files still being written (`.tmp`, `.part`, leading `.` or `_`) are skipped.
    On S3 the listing is paged (1,000 keys a request) through `client` (default: a boto3 client
    for the lake's endpoint). A full listing (no `dates`) reports every visible folder that is
    not a landing date (`report_invalid_folders`; `warn` receives the warning, default the log).
    """
    wanted = {d for d in dates if is_landing_date(d)} if dates is not None else None
    invalid: dict[str, int] = {}
    if lake.is_s3:
        files = _list_s3(lake, source, wanted, client or s3_client(lake), invalid)
    else:
        files = _list_local(lake, source, wanted, invalid)
    if invalid:
        report_invalid_folders(lake, source, invalid, warn=warn)
    return sorted(files, key=lambda f: (f.landing_date, f.name))


def report_invalid_folders(
    lake: Lake,
    source: str,
    folders: dict[str, int],
    *,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Warn about each folder (name -> bytes in it) that is not a landing date, once per process,
    and record it in `_system/rejected_files` unless a row for it is already there."""
    from lakehouse.core import system

    new = {f: n for f, n in folders.items() if (lake.root, source, f) not in _reported}
    if not new:
        return
    try:
        known = _rejected_paths(lake, source)
    except Exception as exc:  # a report must never stop a listing
        log.warning("landing %s: cannot read the rejected files (%s); reporting later", source, exc)
        return
    rows = []
    now = datetime.now(UTC).replace(tzinfo=None)
    for folder, size in sorted(new.items()):
        _reported.add((lake.root, source, folder))
        path = f"{source}/{folder}"
        reason = (
            f"folder `{folder}` is not a valid landing date ({_date_problem(folder)}): "
            "its files are not loaded; move them into a YYYY-MM-DD folder"
        )
        (warn or log.warning)(f"landing {source}: skipped {path}/: {reason}")
        if path not in known:
            rows.append(
                {
                    "source": source,
                    "path": path,
                    "landing_date": folder,
                    "size": size,
                    "version": None,
                    "sha256": None,
                    "rows": 0,
                    "columns": [],
                    "run_id": None,
                    "ingested_at": now,
                    "reason": reason,
                    "reader": None,
                }
            )
    try:
        system.record_ingest(lake, [], rows)
    except Exception as exc:  # a report must never stop a listing
        log.warning("landing %s: cannot record the invalid folders (%s)", source, exc)
        _reported.difference_update((lake.root, source, f) for f in new)


def _rejected_paths(lake: Lake, source: str) -> set[str]:
    import polars as pl

    from lakehouse.core import delta, system

    frame = delta.scan(lake, lake.table_uri("_system", system.REJECTED_FILES))
    if frame is None:
        return set()
    paths = frame.filter(pl.col("source") == source).select("path").collect()
    return set(paths.to_series().to_list())


def _is_visible(name: str) -> bool:
    return not (name.startswith((".", "_")) or name.endswith((".tmp", ".part")))


def _list_local(
    lake: Lake, source: str, wanted: set[str] | None, invalid: dict[str, int]
) -> list[LandingFile]:
    base = Path(lake.landing_uri(source))
    if not base.is_dir():
        return []
    dates = sorted(wanted) if wanted is not None else sorted(os.listdir(base))
    files = []
    for day in dates:
        day_dir = base / day
        if not day_dir.is_dir():
            continue
        entries = [e for e in os.scandir(day_dir) if e.is_file() and _is_visible(e.name)]
        if not is_landing_date(day):
            if _is_visible(day):
                invalid[day] = sum(e.stat().st_size for e in entries)
            continue
        for entry in entries:
            stat = entry.stat()
            files.append(
                LandingFile(
                    source, day, entry.name, entry.path, stat.st_size, str(stat.st_mtime_ns)
                )
            )
    return files


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`bucket`, `a/b`)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def s3_client(lake: Lake) -> Any:
    """A boto3 S3 client for the lake's endpoint and credentials."""
    import boto3

    opts = lake.storage_options
    return boto3.client(
        "s3",
        endpoint_url=opts.get("aws_endpoint_url"),
        aws_access_key_id=opts.get("aws_access_key_id"),
        aws_secret_access_key=opts.get("aws_secret_access_key"),
        aws_session_token=opts.get("aws_session_token"),
        region_name=opts.get("aws_region", "us-east-1"),
    )


def _list_s3(
    lake: Lake, source: str, wanted: set[str] | None, client: Any, invalid: dict[str, int]
) -> list[LandingFile]:
    bucket, prefix = split_s3_uri(lake.landing_uri(source))
    prefixes = [f"{prefix}/{d}/" for d in sorted(wanted)] if wanted is not None else [f"{prefix}/"]
    files = []
    for pfx in prefixes:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=pfx):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(prefix) + 1 :].split("/")
                if len(parts) != 2 or not _is_visible(parts[1]):
                    continue
                if not is_landing_date(parts[0]):
                    if _is_visible(parts[0]):
                        invalid[parts[0]] = invalid.get(parts[0], 0) + obj["Size"]
                    continue
                files.append(
                    LandingFile(
                        source,
                        parts[0],
                        parts[1],
                        f"s3://{bucket}/{obj['Key']}",
                        obj["Size"],
                        obj["ETag"].strip('"'),
                    )
                )
    return files


@contextmanager
def fetched(lake: Lake, file: LandingFile) -> Iterator[tuple[Path, str]]:
    """Yield a local path to the file's bytes and their sha256.

    Local files are read in place; S3 objects are streamed to a temporary file while hashing, so
    every reader works on a local file and the hash always matches the bytes that were parsed.
    """
    if not lake.is_s3:
        yield Path(file.uri), sha256_file(file.uri)
        return
    bucket, key = split_s3_uri(file.uri)
    body = s3_client(lake).get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="lakehouse-fetch-") as tmp:
        local = Path(tmp) / file.name
        with local.open("wb") as out:
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        yield local, digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_landing_file(lake: Lake, source: str, landing_date: str, name: str, src: Path) -> str:
    """Deliver a local file into the landing zone (used by `lakehouse seed`); returns its URI."""
    uri = f"{lake.landing_uri(source)}/{landing_date}/{name}"
    if lake.is_s3:
        bucket, key = split_s3_uri(uri)
        s3_client(lake).upload_file(str(src), bucket, key)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(uri).with_name(f".{name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, uri)  # atomic: a sensor never sees a half-written file
    return uri
