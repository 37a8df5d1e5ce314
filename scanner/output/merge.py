"""Merging the key-ordered outputs of shards into one output, streaming.

Each input (a JSON Lines file or S3 object, as ``scan --shard`` writes it) is read a block at a
time; a k-way merge by key yields one record at a time, so memory is one block and one record
per input, whatever the size of the outputs.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from scanner.config import ConnectionConfig, parse_s3_object_uri
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.output.compression import decompressed
from scanner.records import ObjectRecord

if TYPE_CHECKING:
    from scanner.output.writers import PageEncoder, Writer

# Shard outputs are read in blocks of this size, one block per input at a time; with many inputs
# (a shared scan's pieces) the blocks shrink so that all of them together stay within the budget.
_MERGE_BLOCK: Final = 256 * 1024
_SMALLEST_BLOCK: Final = 16 * 1024
_BLOCKS_BUDGET: Final = 32 * 1024 * 1024


def block_size(inputs: int) -> int:
    """The block each of ``inputs`` inputs is read in."""
    return min(_MERGE_BLOCK, max(_SMALLEST_BLOCK, _BLOCKS_BUDGET // max(inputs, 1)))


MANIFEST_FORMAT: Final = "bucket-scanner-parts-manifest"
# Merged records go to the writer in pages of this many, as a listing's pages come.
_PAGE: Final = 1000


async def _lines(
    path: str,
    connection: ConnectionConfig,
    seen: Callable[[bytes], None] | None = None,
    size: int = _MERGE_BLOCK,
) -> AsyncGenerator[bytes, None]:
    """The lines of a JSON Lines file or S3 object, read a block at a time (each block also
    handed to ``seen``)."""
    async with _blocks(path, connection, size) as raw, aclosing(decompressed(raw, path)) as blocks:
        pending = b""
        async for block in blocks:
            if seen is not None:
                seen(block)
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield line
        if pending:
            yield pending


@asynccontextmanager
async def _blocks(path: str, connection: ConnectionConfig, size: int) -> AsyncIterator[AsyncIterator[bytes]]:
    """A shard output's blocks, from a file or through the ``ObjectStore``."""
    if not path.startswith("s3://"):
        async with aclosing(_file_blocks(path, size)) as blocks:
            yield blocks
        return
    # Start-up: the CLI imports this module for every command; only S3 inputs need the store.
    from scanner.storage.s3.store import S3ObjectStore

    where = parse_s3_object_uri(path)
    objects = S3ObjectStore(where.bucket, connection, role="input", what="the shard output")
    async with objects.read(where.prefix, size) as blocks:
        if blocks is None:
            raise UsageError(f"cannot read {path!r}: no such object")
        yield blocks


async def _file_blocks(path: str, size: int) -> AsyncGenerator[bytes, None]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror}") from None
    with handle:
        while block := handle.read(size):
            yield block


async def _records(
    path: str,
    connection: ConnectionConfig,
    seen: Callable[[bytes], None] | None = None,
    size: int = _MERGE_BLOCK,
) -> AsyncGenerator[ObjectRecord, None]:
    number = 0
    # Closed here, not left to the garbage collector: an input given up early (a merge that
    # refuses) still closes its download in this task.
    async with aclosing(_lines(path, connection, seen, size)) as lines:
        async for line in lines:
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


# Longer than a screen: the heap loop and the checks made on every record share its state.
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

    size = block_size(len(paths))
    streams = [_records(path, connection, size=size) for path in paths]
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


class _Input:
    """One input's records, opened when first needed, with one record looked at and put back."""

    def __init__(self, path: str, connection: ConnectionConfig, size: int) -> None:
        self.path = path
        self._connection = connection
        self._size = size
        self._stream: AsyncGenerator[ObjectRecord, None] | None = None
        self._next: ObjectRecord | None = None
        self.ended = False

    async def peek(self) -> ObjectRecord | None:
        if self._next is None and not self.ended:
            if self._stream is None:
                self._stream = _records(self.path, self._connection, size=self._size)
            self._next = await anext(self._stream, None)
            if self._next is None:
                await self.close()
        return self._next

    def take(self) -> None:
        self._next = None

    async def close(self) -> None:
        self.ended = True
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None


async def concatenate_segments(
    paths: Sequence[str], segments: Sequence[tuple[int, KeyRange]], connection: ConnectionConfig
) -> AsyncIterator[ObjectRecord]:
    """Records of key-ordered JSON Lines outputs, each holding known disjoint ranges of the key
    space (``segments``: which input holds each range, the ranges in key order, tiling what
    the outputs hold), one segment after the other.

    An input is opened at its first segment and closed after its last, so only the inputs whose
    segments surround the current one are open: a shared scan's pieces nest (a piece's output
    holds its range less the ranges handed over from it), and the open inputs are the depth of
    that tree, not the count of pieces. Every key is checked against its segment, and every
    input must be read to its end by its last segment.
    """
    last_segment = {index: n for n, (index, _) in enumerate(segments)}
    inputs = {index: _Input(path, connection, _MERGE_BLOCK) for index, path in enumerate(paths)}
    try:
        previous: str | None = None
        for n, (index, segment) in enumerate(segments):
            source = inputs[index]
            while (record := await source.peek()) is not None and (
                segment.end is None or record.key <= segment.end
            ):
                if not segment.contains(record.key) or (previous is not None and record.key <= previous):
                    raise ScanError(f"{source.path} holds key {record.key!r} outside its part of the scan")
                source.take()
                previous = record.key
                yield record
            if last_segment[index] == n and record is not None:
                raise ScanError(f"{source.path} holds key {record.key!r} outside its part of the scan")
        # Those without a segment too: an output of a piece handed over whole must be empty.
        for source in inputs.values():
            if not source.ended and await source.peek() is not None:
                raise ScanError(f"{source.path} holds keys outside its part of the scan")
    finally:
        for source in inputs.values():
            await source.close()


async def write_records(writer: Writer, encode: PageEncoder, records: AsyncIterator[ObjectRecord]) -> int:
    """``records`` through ``writer``, a page of 1,000 at a time; how many there were."""
    written = 0
    page: list[ObjectRecord] = []
    async for record in records:
        page.append(record)
        if len(page) == _PAGE:
            await writer.write(encode(page))
            written += len(page)
            page = []
    if page:
        await writer.write(encode(page))
        written += len(page)
    return written


def _part_owners(ranges: Sequence[KeyRange], owners: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """The ends of the parts but the last (to find a key's part), and each part's shard."""
    ends = [r.end for r in ranges[:-1] if r.end is not None]
    return ends, list(owners) if owners is not None else list(range(len(ranges)))


@dataclass(frozen=True)
class ShardOutput:
    """One shard's output as a manifest lists it."""

    uri: str
    shard: int | None  # None: it holds no keys, so which shard it is cannot be told
    size: int
    records: int
    first_key: str | None
    last_key: str | None
    md5: str
    sha256: str


async def describe_shards(
    paths: Sequence[str],
    connection: ConnectionConfig,
    ranges: Sequence[KeyRange],
    owners: Sequence[int] | None = None,
) -> list[ShardOutput]:
    """Each input read through once, streaming, and checked as ``merge_shards`` checks them:
    key-ordered JSON Lines, one input a shard of the plan, every key in that shard's parts.
    Returned in shard order (inputs without keys last)."""
    ends, part_owners = _part_owners(ranges, owners)
    count = max(part_owners, default=-1) + 1
    if len(paths) != count:
        raise UsageError(f"the shard plan has {count} shards, but {len(paths)} inputs were given")
    found: list[ShardOutput] = []
    holder: dict[int, str] = {}
    for path in paths:
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        size = 0

        def seen(block: bytes, md5: Any = md5, sha256: Any = sha256) -> None:
            nonlocal size
            size += len(block)
            md5.update(block)
            sha256.update(block)

        shard: int | None = None
        records = 0
        first: str | None = None
        last: str | None = None
        stream = _records(path, connection, seen)
        try:
            async for record in stream:
                key = record.key
                owner = part_owners[bisect.bisect_left(ends, key)]
                if last is not None and key <= last:
                    raise ScanError(f"{path} is not in key order at key {key!r}")
                if shard is None:
                    if owner in holder:
                        raise ScanError(
                            f"{holder[owner]} and {path} both hold keys of shard {owner} of the plan"
                        )
                    shard, first = owner, key
                    holder[owner] = path
                elif owner != shard:
                    raise ScanError(f"{path} holds keys of shards {shard} and {owner} of the plan")
                last = key
                records += 1
        finally:
            await stream.aclose()
        found.append(
            ShardOutput(path, shard, size, records, first, last, md5.hexdigest(), sha256.hexdigest())
        )
    found.sort(key=lambda output: (output.shard is None, output.shard or 0))
    return found


def parts_manifest(
    uri: str,
    plan: str,
    outputs: Sequence[ShardOutput],
    ranges: Sequence[KeyRange],
    owners: Sequence[int] | None = None,
) -> bytes:
    """A manifest of the shard outputs (as S3 Inventory's ``manifest.json`` lists its files):
    for readers that take many files instead of one merged output."""
    _, part_owners = _part_owners(ranges, owners)
    files = []
    for output in outputs:
        entry: dict[str, Any] = {
            "key": output.uri,
            "shard": output.shard,
            "size": output.size,
            "records": output.records,
            "first_key": output.first_key,
            "last_key": output.last_key,
            "MD5checksum": output.md5,
            "SHA256checksum": output.sha256,
        }
        if output.shard is not None:
            entry["parts"] = [
                {"start_after": r.start_after, "end": r.end}
                for r, owner in zip(ranges, part_owners, strict=True)
                if owner == output.shard
            ]
        files.append(entry)
    document = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "uri": uri,
        "plan": plan,
        "fileFormat": "jsonl",
        "shards": max(part_owners, default=-1) + 1,
        "parts": len(ranges),
        "assignment": "round-robin",
        # With one part a shard, the files in this order, concatenated, are the merged output.
        "in_key_order": len(ranges) == max(part_owners, default=-1) + 1,
        "records": sum(output.records for output in outputs),
        "size": sum(output.size for output in outputs),
        "files": files,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
