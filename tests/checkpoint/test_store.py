"""The checkpoint store's guarantees, over the object seam (in memory) and a local directory."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from scanner.checkpoint.store import CheckpointStore, LocalCheckpointStore, ObjectCheckpointStore
from scanner.storage.memory import MemoryObjectStore


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "memory":
        return ObjectCheckpointStore(MemoryObjectStore(), "checkpoints/run", str(tmp_path))
    return LocalCheckpointStore(str(tmp_path / "checkpoint"))


def test_pieces_and_manifest_round_trip_and_clear(store: CheckpointStore) -> None:
    async def check() -> None:
        await store.open()
        assert await store.read_manifest() is None
        piece = store.new_piece("piece-run-1")
        piece.append(b"first chunk\n")
        piece.append(b"second chunk\n")
        await store.publish(piece)
        await store.write_manifest(b'{"pieces": ["piece-run-1"]}')
        await store.write_manifest(b'{"pieces": ["piece-run-1"], "saved": 2}')
        assert await store.read_manifest() == b'{"pieces": ["piece-run-1"], "saved": 2}'
        with await store.open_piece("piece-run-1") as file:
            file.seek(0)
            assert file.read() == b"first chunk\nsecond chunk\n"
        await store.clear()
        assert await store.read_manifest() is None

    anyio.run(check)


def test_clear_removes_every_piece_from_the_object_store(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    objects.objects["elsewhere/piece-keep"] = b"not the checkpoint's"
    store = ObjectCheckpointStore(objects, "cp", str(tmp_path))

    async def check() -> None:
        for number in range(3):
            piece = store.new_piece(f"piece-run-{number}")
            piece.append(b"x")
            await store.publish(piece)
        await store.write_manifest(b"{}")
        await store.clear()

    anyio.run(check)
    assert objects.objects == {"elsewhere/piece-keep": b"not the checkpoint's"}
