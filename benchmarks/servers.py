"""The S3 server a benchmark runs against, and the buckets it needs on it.

* ``rgw`` (default): a single-node Ceph RGW on a file-backed (bluestore) OSD in ``.bench/rgw``,
  so seeded buckets survive between runs. A cluster that was already running is reused and left
  running; one the harness started is stopped at the end.
* ``moto``: moto's threaded server in this process, seeded through its in-process backend (HTTP
  PUTs run at ~300/s). Moto walks the whole bucket for every page: fine for a quick smoke run,
  meaningless for throughput.
* ``--endpoint-url``: any running S3 server (MinIO from docker-compose.yml, real S3...); nothing
  is started or stopped, buckets are created and seeded with PUTs when missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.ceiling import count_objects
from benchmarks.layouts import LAYOUTS
from benchmarks.seed import bucket_name, make_client, seed

EMPTY_BUCKET = "bench-empty"
EMPTY_LABEL = "empty-0"  # Dataset.label of the empty bucket
Log = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """A running S3 server and how to reach it."""

    kind: str  # rgw | moto | endpoint
    endpoint_url: str
    access_key: str
    secret_key: str
    # Seeds a bucket without HTTP (moto only): (bucket, keys) -> None.
    backend_put: Callable[[str, Sequence[str]], None] | None = None
    # CPU seconds the server has used so far, when its processes are on this machine: client and
    # server share the CPUs here, so what a client spends is taken from the server.
    server_cpu: Callable[[], float] | None = None

    @property
    def rclone_provider(self) -> str:
        return "Ceph" if self.kind == "rgw" else "Other"

    def client(self) -> Any:
        return make_client(self.endpoint_url, self.access_key, self.secret_key)

    def count(self, bucket: str) -> int | None:
        """Objects in ``bucket``, or None when it does not exist."""
        return count_objects(self.endpoint_url, bucket, self.access_key, self.secret_key)


@dataclass(frozen=True)
class Dataset:
    """One seeded bucket and the keys it holds, in UTF-8 byte order (= code point order)."""

    layout: str
    size: int
    bucket: str
    keys: list[str]

    @property
    def label(self) -> str:
        return f"{self.layout}-{self.size}"


def ensure_dataset(target: Target, layout: str, size: int, log: Log) -> Dataset:
    keys = LAYOUTS[layout](size)
    bucket = bucket_name(layout, size)
    # A raw count first: seed() checks with botocore's paginator, which alone takes 10-40 s on a
    # 100k-key bucket, at every run. Only a bucket that does not hold the layout goes to seeding.
    count = target.count(bucket)
    if count != len(keys):
        if target.backend_put is None:
            seed(target.client(), layout, size, log=log)
        else:
            if count is None:
                target.client().create_bucket(Bucket=bucket)
            log(f"seeding s3://{bucket} with {len(keys):,} keys through moto's backend ...")
            target.backend_put(bucket, keys)
    return Dataset(layout, size, bucket, sorted(keys))


def ensure_empty_bucket(target: Target) -> Dataset:
    """``bench-empty``: every tool's start-up cost is its run on this bucket."""
    count = target.count(EMPTY_BUCKET)
    if count is None:
        target.client().create_bucket(Bucket=EMPTY_BUCKET)
    elif count:
        raise RuntimeError(f"s3://{EMPTY_BUCKET} is not empty; empty it or use another server")
    return Dataset("empty", 0, EMPTY_BUCKET, [])


@contextlib.contextmanager
def open_target(
    kind: str,
    repo: Path,
    log: Log,
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Iterator[Target]:
    if endpoint_url is not None:
        yield Target("endpoint", endpoint_url, access_key or "", secret_key or "")
    elif kind == "moto":
        with _moto() as target:
            yield target
    elif kind == "rgw":
        with _rgw(repo / ".bench" / "rgw", log) as target:
            yield target
    else:
        raise ValueError(f"unknown server kind {kind!r}")


@contextlib.contextmanager
def _rgw(base: Path, log: Log) -> Iterator[Target]:
    from tests.servers.rgw import RgwServer

    server = RgwServer(base, objectstore="bluestore")
    # _running_pids() checks the PID file against live processes: the launcher's own notion of
    # "already running", which start() would refuse anyway.
    already_running = bool(server._running_pids())
    if already_running:
        # RgwServer learns its port only from start(); a cluster left running keeps its own.
        state = json.loads((base / "rgw-cluster.json").read_text())
        server = RgwServer(base, port=int(state["rgw_port"]), objectstore="bluestore")
        log(f"reusing the running RGW at {server.endpoint_url} ({base})")
    else:
        log(f"starting RGW (bluestore) in {base} ...")
        server.start(timeout=180)
    daemons = list(server._running_pids().values())
    try:
        yield Target(
            "rgw",
            server.endpoint_url,
            server.access_key,
            server.secret_key,
            server_cpu=lambda: sum(_process_cpu(pid) for pid in daemons),
        )
    finally:
        if not already_running:
            log("stopping the RGW the harness started")
            server.stop()


@contextlib.contextmanager
def _moto() -> Iterator[Target]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request on stderr, over the harness's progress lines, verbose or not.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    def backend_put(bucket: str, keys: Sequence[str]) -> None:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key in keys:
            backend.put_object(bucket, key, b"x")

    try:
        # Moto serves from threads of this process, which does little else while a tool runs.
        yield Target("moto", f"http://{host}:{port}", "moto-access", "moto-secret", backend_put, _own_cpu)
    finally:
        server.stop()


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of one live process (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: count fields from after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
