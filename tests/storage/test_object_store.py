"""The object contract of the storage seam, over the in-memory store and every real server.

What outputs, checkpoints, state and plans rely on: a missing key is an answer, not an error; an
upload is invisible until committed and leaves nothing when aborted; a conditional put lets one
writer win. A server that does not keep a rule is listed in ``IGNORES_IF_NONE_MATCH`` (what the
scanner does there is in the README), never skipped silently.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import anyio
import pytest

from scanner.config import ConnectionConfig
from scanner.storage.base import ObjectStore
from scanner.storage.directory import DirectoryObjectStore
from scanner.storage.memory import MemoryObjectStore
from scanner.storage.s3.store import S3ObjectStore
from tests.conftest import ALL_SERVERS

# Servers that store a PUT with If-None-Match: * over an existing key instead of refusing it.
# (--create-plan refuses there, with one line: ``scanner.listing.plan.shared_plan``.)
IGNORES_IF_NONE_MATCH: frozenset[str] = frozenset({"rclone", "juicefs", "s3rver"})


@pytest.fixture(params=("memory", "directory", *ALL_SERVERS))
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> Iterator[ObjectStore]:
    if request.param == "memory":
        yield MemoryObjectStore()
        return
    if request.param == "directory":
        yield DirectoryObjectStore(str(tmp_path / "objects"))
        return
    target = request.getfixturevalue(f"{request.param}_target")
    target.use_in(monkeypatch)
    connection = ConnectionConfig(
        endpoint_url=target.endpoint_url, region="us-east-1", addressing_style="path"
    )
    yield S3ObjectStore(target.new_bucket(), connection, role="output", what="the output")


def _kind(store: ObjectStore, request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["store"])


def test_a_missing_key_is_an_answer(store: ObjectStore) -> None:
    async def check() -> None:
        assert await store.get("absent/key.json") is None
        async with store.read("absent/key.json") as blocks:
            assert blocks is None

    anyio.run(check)


def test_put_then_get_and_read_in_blocks(store: ObjectStore) -> None:
    body = bytes(range(256)) * 40

    async def check() -> None:
        assert await store.put("dir/object.bin", body)
        assert await store.get("dir/object.bin") == body
        async with store.read("dir/object.bin", 1000) as blocks:
            assert blocks is not None
            received = [block async for block in blocks]
        assert b"".join(received) == body
        assert max(map(len, received)) <= 1000
        await store.put("dir/object.bin", b"second")
        assert await store.get("dir/object.bin") == b"second"

    anyio.run(check)


def test_an_upload_is_invisible_until_committed(store: ObjectStore) -> None:
    async def check() -> None:
        upload = store.upload("out/items.jsonl")
        await upload.open()
        for index in range(100):
            await upload.write(b"line %d\n" % index)
        assert await store.get("out/items.jsonl") is None
        await upload.commit()
        assert await store.get("out/items.jsonl") == b"".join(b"line %d\n" % i for i in range(100))

    anyio.run(check)


def test_an_aborted_upload_leaves_nothing(store: ObjectStore) -> None:
    async def check() -> None:
        upload = store.upload("out/aborted.jsonl")
        await upload.open()
        await upload.write(b"partial\n")
        await upload.abort()
        assert await store.get("out/aborted.jsonl") is None
        assert [key async for key in store.keys("out/")] == []

    anyio.run(check)


def test_keys_and_delete(store: ObjectStore) -> None:
    names = ["cp/manifest.json", "cp/piece-1", "cp/piece-2", "other/piece-1"]

    async def check() -> None:
        for name in names:
            await store.put(name, b"x")
        assert sorted([key async for key in store.keys("cp/piece-")]) == ["cp/piece-1", "cp/piece-2"]
        # A prefix that ends inside a folder's name, and one under a folder that does not exist.
        assert sorted([key async for key in store.keys("c")]) == names[:3]
        assert [key async for key in store.keys("nowhere/deeper/")] == []
        await store.delete(["cp/piece-1", "cp/piece-2", "cp/never-there"])
        await store.delete(["cp/manifest.json"])
        await store.delete([])
        assert [key async for key in store.keys("cp/")] == []
        assert await store.get("other/piece-1") == b"x"

    anyio.run(check)


def test_a_conditional_put_lets_one_writer_win(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    async def check() -> tuple[bool, bool, bytes | None]:
        first = await store.put("plan.json", b"first", if_absent=True)
        second = await store.put("plan.json", b"second", if_absent=True)
        return first, second, await store.get("plan.json")

    first, second, stored = anyio.run(check)
    assert first
    if _kind(store, request) in IGNORES_IF_NONE_MATCH:
        assert (second, stored) == (True, b"second")
    else:
        assert (second, stored) == (False, b"first")
