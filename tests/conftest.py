"""Real S3 servers for the test run, started and stopped by the fixtures themselves.

moto server always runs (in this process, on a free loopback port). Ceph RGW runs whenever its
binaries are installed; ``SCANNER_REQUIRE_RGW=1`` (set by CI) turns its absence into a failure
instead of a skip, so CI never passes without having tested against it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.rgw import RgwServer, rgw_available

REPO_ROOT = Path(__file__).resolve().parent.parent
_bucket_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No AWS or scanner settings leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "SCANNER_")) and name != "SCANNER_REQUIRE_RGW":
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

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 10, "mode": "standard"},
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


def _moto_seeder() -> Any:
    """Seed through moto's in-process backend: HTTP PUTs run at ~300/s, and moto's HTTP layer
    cannot take some keys (a newline) that real S3 stores fine."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    def seed(bucket: str, keys: Sequence[str], body: bytes) -> None:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key in keys:
            backend.put_object(bucket, key, body)

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


@pytest.fixture(params=["moto", "rgw"])
def s3(request: pytest.FixtureRequest) -> S3Target:
    """Each test that takes ``s3`` runs against every server kind."""
    target: S3Target = request.getfixturevalue(f"{request.param}_target")
    return target


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
