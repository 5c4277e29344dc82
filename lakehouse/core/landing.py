"""The landing zone: files as delivered, laid out `<root>/landing/<source>/<YYYY-MM-DD>/<file>`.

The platform only ever reads here. A file's landing date is the folder it was delivered into; that
date is the Dagster partition that loads it. Local directories and S3 prefixes list the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.core.lake import Lake

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CHUNK = 8 * 1024 * 1024


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
    lake: Lake, source: str, dates: Iterable[str] | None = None, *, client: Any = None
) -> list[LandingFile]:
    """Every landed file of `source` (optionally only the given landing dates), sorted by path.

    Hidden files and files still being written (`.tmp`, `.part`, leading `.` or `_`) are skipped.
    On S3 the listing is paged (1,000 keys a request) through `client` (default: a boto3 client
    for the lake's endpoint).
    """
    wanted = set(dates) if dates is not None else None
    if lake.is_s3:
        files = _list_s3(lake, source, wanted, client or s3_client(lake))
    else:
        files = _list_local(lake, source, wanted)
    return sorted(files, key=lambda f: (f.landing_date, f.name))


def _is_visible(name: str) -> bool:
    return not (name.startswith((".", "_")) or name.endswith((".tmp", ".part")))


def _list_local(lake: Lake, source: str, wanted: set[str] | None) -> list[LandingFile]:
    base = Path(lake.landing_uri(source))
    if not base.is_dir():
        return []
    dates = sorted(wanted) if wanted is not None else sorted(os.listdir(base))
    files = []
    for date in dates:
        day_dir = base / date
        if not _DATE_DIR.match(date) or not day_dir.is_dir():
            continue
        for entry in os.scandir(day_dir):
            if entry.is_file() and _is_visible(entry.name):
                stat = entry.stat()
                files.append(
                    LandingFile(
                        source, date, entry.name, entry.path, stat.st_size, str(stat.st_mtime_ns)
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


def _list_s3(lake: Lake, source: str, wanted: set[str] | None, client: Any) -> list[LandingFile]:
    bucket, prefix = split_s3_uri(lake.landing_uri(source))
    prefixes = [f"{prefix}/{d}/" for d in sorted(wanted)] if wanted is not None else [f"{prefix}/"]
    files = []
    for pfx in prefixes:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=pfx):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(prefix) + 1 :].split("/")
                if len(parts) != 2 or not _DATE_DIR.match(parts[0]) or not _is_visible(parts[1]):
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
