"""The S3 servers the suite runs: each starts, stores and lists keys, stops without leftovers, and
``S3Target.put_each`` records the keys a file-system-backed server refuses instead of raising."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ALL_SERVERS, S3Target
from tests.servers.juicefs import JuicefsServer, juicefs_available
from tests.servers.process import ServerProcess
from tests.servers.rclone import RcloneServer, rclone_available
from tests.servers.s3rver import S3rverServer, s3rver_available, s3rver_breaks_on
from tests.servers.seaweedfs import SeaweedfsServer, seaweedfs_available

NEW_SERVERS = ("seaweedfs", "rclone", "juicefs", "s3rver")
DOZEN_KEYS = [f"study{s}/series {r}/img{i}.dcm" for s in range(2) for r in range(2) for i in range(3)]
LONG_NAME_PART = "p/" + "n" * 300

# (keys put in this order, the ones refused). "a" then "a/b" is a file/folder clash on the servers
# that keep objects as files; the keys after "ok" are ones each server refuses outright.
REFUSALS: dict[str, tuple[list[str], set[str]]] = {
    "seaweedfs": (["a", "a/b", "ok", "c/../d"], {"c/../d"}),
    "rclone": (["a", "a/b", "ok", "c/../d"], {"a/b", "c/../d"}),
    "juicefs": (["a", "a/b", "ok", "c/../d"], {"a/b", "c/../d"}),
    # s3rver keeps "a" and "a/b" apart and rewrites "c/../d" into "d", but has no name for "a//b";
    # the long name part is never sent (it would kill the server).
    "s3rver": (["a", "a/b", "ok", "a//b", LONG_NAME_PART], {"a//b", LONG_NAME_PART}),
}

# What each server sends as ``Server`` in a ListObjectsV2 response (None: no such header).
SERVER_HEADERS = {
    "seaweedfs": "SeaweedFS 8000GB 4.48",
    "rclone": "AmazonS3",
    "juicefs": "MinIO",
    "s3rver": None,
}

SERVER_CLASSES: dict[str, tuple[type[ServerProcess], Callable[[], bool]]] = {
    "seaweedfs": (SeaweedfsServer, seaweedfs_available),
    "rclone": (RcloneServer, rclone_available),
    "juicefs": (JuicefsServer, juicefs_available),
    "s3rver": (S3rverServer, s3rver_available),
}


def require(kind: str, available: Callable[[], bool]) -> None:
    """Skip without the server, or fail when CI demands every server (as the fixtures do)."""
    if not available():
        if os.environ.get("SCANNER_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{kind} is required (SCANNER_REQUIRE_SERVERS=1) but not installed")
        pytest.skip(f"{kind} not installed")


@pytest.fixture(params=NEW_SERVERS)
def server(request: pytest.FixtureRequest) -> S3Target:
    target: S3Target = request.getfixturevalue(f"{request.param}_target")
    return target


def list_keys(target: S3Target, bucket: str, page_size: int | None = None) -> list[str]:
    paginator = target.client(retries=0).get_paginator("list_objects_v2")
    config = {"PageSize": page_size} if page_size else {}
    return [
        entry["Key"]
        for page in paginator.paginate(Bucket=bucket, PaginationConfig=config)
        for entry in page.get("Contents", [])
    ]


def test_lists_back_what_was_put(server: S3Target) -> None:
    bucket = server.new_bucket(DOZEN_KEYS)
    # s3rver's pages repeat and skip keys once a listing spans several of them: one page there.
    page_size = None if server.kind == "s3rver" else 5
    listed = list_keys(server, bucket, page_size)
    assert len(listed) == len(DOZEN_KEYS)
    assert sorted(listed) == sorted(DOZEN_KEYS)


def test_objects_carry_size_and_the_etag_each_server_gives(server: S3Target) -> None:
    bucket = server.new_bucket(["one"])
    entry = server.client(retries=0).list_objects_v2(Bucket=bucket)["Contents"][0]
    md5 = hashlib.md5(b"x", usedforsecurity=False).hexdigest()
    assert entry["Size"] == 1
    # rclone drops the quotes; the JuiceFS gateway lists no ETag unless run with --keep-etag.
    expected = {"rclone": md5, "juicefs": ""}.get(server.kind, f'"{md5}"')
    assert entry["ETag"] == expected


def test_server_header(server: S3Target) -> None:
    bucket = server.new_bucket(["one"])
    response = server.client(retries=0).list_objects_v2(Bucket=bucket)
    assert response["ResponseMetadata"]["HTTPHeaders"].get("server") == SERVER_HEADERS[server.kind]


def test_put_each_records_refusals_instead_of_raising(server: S3Target) -> None:
    keys, expected_refused = REFUSALS[server.kind]
    bucket = server.new_bucket()
    stored, refused = server.put_each(bucket, keys)
    assert set(refused) == expected_refused, refused
    assert stored == [key for key in keys if key not in expected_refused]
    for key, reason in refused.items():
        if key == LONG_NAME_PART:
            assert reason.startswith("not sent"), reason
        else:
            assert reason.split()[0] in {"400", "404", "409", "500"}, reason
    # The server is still up, and the bucket lists exactly what was stored.
    assert sorted(list_keys(server, bucket)) == sorted(stored)


def test_put_still_raises_on_a_refusal(rclone_target: S3Target) -> None:
    from botocore.exceptions import ClientError

    bucket = rclone_target.new_bucket()
    with pytest.raises(ClientError, match="InvalidArgument"):  # a 400: not retried
        rclone_target.put(bucket, ["c/../d"])


def test_s3rver_guard_is_about_the_last_name_part() -> None:
    assert s3rver_breaks_on("p/" + "n" * 234)
    assert not s3rver_breaks_on("p/" + "n" * 233)
    assert not s3rver_breaks_on("n" * 300 + "/short")  # a long folder name is refused cleanly
    assert s3rver_breaks_on("p/" + "é" * 117)  # bytes, not characters


def test_any_s3_runs_on_every_server(any_s3: S3Target) -> None:
    assert any_s3.kind in ALL_SERVERS
    bucket = any_s3.new_bucket(["k1", "k2"])
    assert sorted(list_keys(any_s3, bucket)) == ["k1", "k2"]


def test_moto_seeding_leaves_etags_computed(moto_target: S3Target) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket = moto_target.new_bucket(["e1", "e2"])
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    md5 = hashlib.md5(b"x", usedforsecurity=False).hexdigest()
    for key in ("e1", "e2"):
        stored = backend.get_object(bucket, key)
        assert stored is not None
        # Set at seeding time, so no listing computes it (a lazily computed ETag can be wrong).
        assert stored._etag == md5
        assert stored.etag == f'"{md5}"'


# -- start and stop, outside the session fixtures ------------------------------------------------


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(host, port) of every TCP socket of ``pid`` in the LISTEN state, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            host_hex, port_hex = local.split(":")
            raw = bytes.fromhex(host_hex)
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("kind", NEW_SERVERS)
def test_start_binds_loopback_only_and_stop_leaves_nothing(kind: str, tmp_path: Path) -> None:
    server_class, available = SERVER_CLASSES[kind]
    require(kind, available)
    server = server_class(tmp_path)
    with server:
        pid = server.pid
        assert pid is not None
        addresses = _listening_addresses(pid)
        assert ("127.0.0.1", server.port) in addresses
        assert {host for host, _ in addresses} == {"127.0.0.1"}, addresses
    assert server.pid is None
    assert [path for path in server._leftovers() if path.exists()] == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the server's whole process group is gone
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_start_failure_names_the_server_and_shows_its_log(tmp_path: Path) -> None:
    require("juicefs", juicefs_available)
    # A metadata file that is not a database: the gateway exits at once.
    (tmp_path / "meta.db").write_text("not sqlite\n")
    server = JuicefsServer(tmp_path)
    with pytest.raises(RuntimeError, match=r"juicefs exited with status \d+ while starting") as failure:
        server.start(timeout=30)
    assert "last lines of" in str(failure.value)
    assert server.pid is None
