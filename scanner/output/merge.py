"""Merging the key-ordered outputs of shards into one output, streaming.

Each input (a JSON Lines file or S3 object, as ``scan --shard`` writes it) is read a block at a
time; a k-way merge by key yields one record at a time, so memory is one block and one record
per input, whatever the size of the outputs.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Final

import orjson

from scanner.config import ConnectionConfig, parse_s3_object_uri
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.records import ObjectRecord

# Shard outputs are read in blocks of this size, one block per input at a time.
_MERGE_BLOCK: Final = 256 * 1024


async def _lines(path: str, connection: ConnectionConfig) -> AsyncIterator[bytes]:
    """The lines of a JSON Lines file or S3 object, read a block at a time."""
    blocks: AsyncIterator[bytes]
    if path.startswith("s3://"):
        from scanner.storage.s3.download import S3Download

        download = S3Download(
            parse_s3_object_uri(path), connection, _MERGE_BLOCK, role="input", what="the shard output"
        )
        if not await download.open():
            raise UsageError(f"cannot read {path!r}: no such object")
        blocks = download.blocks()
    else:
        download = None
        blocks = _file_blocks(path)
    try:
        pending = b""
        async for block in blocks:
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield line
        if pending:
            yield pending
    finally:
        if download is not None:
            await download.close()


async def _file_blocks(path: str) -> AsyncIterator[bytes]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror}") from None
    with handle:
        while block := handle.read(_MERGE_BLOCK):
            yield block


async def _records(path: str, connection: ConnectionConfig) -> AsyncGenerator[ObjectRecord, None]:
    number = 0
    async for line in _lines(path, connection):
        number += 1
        try:
            fields = orjson.loads(line)
            yield ObjectRecord(
                fields["key"],
                fields["size"],
                fields["last_modified"],
                fields["etag"],
                fields["storage_class"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ScanError(f"{path}:{number}: not a bucket-scanner JSON Lines record ({exc})") from None


async def merge_shards(
    paths: Sequence[str],
    connection: ConnectionConfig,
    ranges: Sequence[KeyRange] | None = None,
    owners: Sequence[int] | None = None,
) -> AsyncIterator[ObjectRecord]:
    """Records of key-ordered JSON Lines shard outputs (files or S3 objects), merged by key.

    Memory is one block and one record per input. Shards must not overlap. Given the parts of
    the plan they were listed with (``ranges``, in key order) and the shard each part belongs
    to (``owners``; default: part ``i`` is shard ``i``), each input must also hold keys of one
    shard's parts only, and no two inputs the same shard: outputs of different runs or plans are
    told apart from a complete set (in whatever order the inputs come, ``shard-10`` sorting
    before ``shard-2`` included).
    """
    if ranges is not None:
        owners = list(owners) if owners is not None else list(range(len(ranges)))
        if len(owners) != len(ranges):
            raise UsageError(f"the shard plan has {len(ranges)} parts but {len(owners)} owners")
        count = max(owners, default=-1) + 1
        if len(paths) != count:
            raise UsageError(f"the shard plan has {count} shards, but {len(paths)} inputs were given")
    ends = [r.end for r in ranges[:-1] if r.end is not None] if ranges is not None else []
    part_owners = owners or []

    def shard_of(key: str) -> int:
        return part_owners[bisect.bisect_left(ends, key)]

    streams = [_records(path, connection) for path in paths]
    heap: list[tuple[str, int, ObjectRecord]] = []
    owner: dict[int, int] = {}  # shard -> the input that holds it
    try:
        for index, stream in enumerate(streams):
            first = await anext(stream, None)
            if first is None:
                continue
            heap.append((first.key, index, first))
            if ranges is not None:
                shard = shard_of(first.key)
                if shard in owner:
                    both = f"{paths[owner[shard]]} and {paths[index]}"
                    raise ScanError(f"{both} both hold keys of shard {shard} of the plan")
                owner[shard] = index
        shards = {index: shard for shard, index in owner.items()}
        heapq.heapify(heap)
        previous: str | None = None
        while heap:
            key, index, record = heap[0]
            if previous is not None and key <= previous:
                raise ScanError(f"the shard outputs overlap or are out of order at key {key!r}")
            if ranges is not None and shard_of(key) != shards[index]:
                raise ScanError(
                    f"{paths[index]} holds keys of shards {shards[index]} and {shard_of(key)} of the plan"
                )
            previous = key
            yield record
            following = await anext(streams[index], None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following.key, index, following))
    finally:
        for stream in streams:
            await stream.aclose()
