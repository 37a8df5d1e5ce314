"""Sharded scans for buckets that one process (or one machine) cannot keep up with.

A shard is one range of a plan that tiles the scanned prefix: shard ``i`` of ``n`` lists only its
range, so ``n`` pods of a Kubernetes Indexed Job share no state and their outputs, merged by key
with ``scanner merge``, are exactly a whole scan. Every shard must use the *same* plan: two plans
cut at different points, and shards of different plans overlap or leave keys out. So a shard
never cuts the key space itself; it reads a plan file:

- ``scanner plan`` writes one (``scanner.listing.planning`` samples where the keys are; the plan
  records the requests it took and the keys each shard is estimated to hold);
- ``scan --shard I/N --plan s3://... --create-plan`` reads the plan at that key, and when there
  is none yet makes one and stores it with a conditional put (``If-None-Match: *``): of pods
  that race, exactly one put succeeds, and every pod, the winner included, then uses the plan
  stored at the key. A server that ignores the condition would let a later put replace an
  earlier one that pods already use, so the winner checks that a second conditional put of the
  key is refused, and stops with exit code 2 if it is not.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from scanner.config import ConnectionConfig, S3Location, parse_s3_object_uri, parse_s3_uri
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.listing.planning import BLOCK_END, Sampler, cut_points
from scanner.output.compression import decompressed
from scanner.records import ObjectRecord
from scanner.storage.base import PageSource

PLAN_FORMAT: Final = "bucket-scanner-plan"
# Requests a plan may make: per shard (every cut is placed from what a few probes around it
# showed), and at least enough to list about a million keys outright, so that a bucket of that
# size gets an exact plan (see the README's figures).
_REQUESTS_PER_SHARD: Final = 16
_MIN_REQUESTS: Final = 1024
# How long shards other than the first wait for its plan before they make one themselves, and
# how often they look: a plan takes seconds (a thousand requests, 16 at a time); a pod that is
# scheduled late, or not at all, must not hold the others up for long.
PLAN_WAIT: Final = 120.0
_PLAN_POLL_FIRST: Final = 0.5
_PLAN_POLL_MOST: Final = 5.0
# Shard outputs are read in blocks of this size, one block per input at a time.
_MERGE_BLOCK: Final = 256 * 1024


def plan_budget(count: int) -> int:
    """The requests a plan of ``count`` shards may make by default."""
    return max(_MIN_REQUESTS, _REQUESTS_PER_SHARD * count)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, slash, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise UsageError(f"--shard must be INDEX/COUNT, like 0/8: not {text!r}") from None
        if not slash or shard.count < 1 or not 0 <= shard.index < shard.count:
            raise UsageError(f"--shard {text!r}: INDEX must be from 0 to COUNT-1")
        return shard


@dataclass(frozen=True)
class ShardPlanFile:
    uri: str
    ranges: list[KeyRange]
    # What making it took and found: requests sent, whether every key was listed (then the
    # estimates are counts), and the keys each shard is estimated to hold.
    requests: int = 0
    exact: bool = False
    estimated_keys: list[int] = field(default_factory=list)

    def to_json(self) -> bytes:
        shards = []
        for index, key_range in enumerate(self.ranges):
            shard: dict[str, Any] = {"start_after": key_range.start_after, "end": key_range.end}
            if index < len(self.estimated_keys):
                shard["estimated_keys"] = self.estimated_keys[index]
            shards.append(shard)
        document = {
            "format": PLAN_FORMAT,
            "version": 1,
            "uri": self.uri,
            "requests": self.requests,
            "exact": self.exact,
            "shards": shards,
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, data: bytes, prefix: str | None = None) -> ShardPlanFile:
        """The plan in ``data``; its ranges under ``prefix`` (default: its own URI's)."""
        try:
            document = orjson.loads(data)
            if document.get("format") != PLAN_FORMAT:
                raise ValueError("not a shard plan")
            if prefix is None:
                prefix = parse_s3_uri(str(document["uri"])).prefix
            shards = document["shards"]
            ranges = [KeyRange(prefix, s["start_after"], s["end"]) for s in shards]
            estimates = [int(s["estimated_keys"]) for s in shards if "estimated_keys" in s]
            plan = cls(
                str(document["uri"]),
                ranges,
                int(document.get("requests", 0)),
                bool(document.get("exact", False)),
                estimates if len(estimates) == len(ranges) else [],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"the shard plan is not a bucket-scanner plan file ({exc})") from None
        _check_tiling(ranges)
        return plan

    def range_of(self, shard: Shard) -> KeyRange:
        if len(self.ranges) != shard.count:
            raise UsageError(f"the shard plan has {len(self.ranges)} shards, not {shard.count}")
        return self.ranges[shard.index]

    def describe(self) -> str:
        """One line on what the plan is and what it cost."""
        how = "every key listed" if self.exact else "estimated from a sample"
        text = f"planned {len(self.ranges)} shards of {self.uri} with {self.requests:,} requests"
        if self.estimated_keys:
            mean = sum(self.estimated_keys) / len(self.estimated_keys)
            text += f"; about {mean:,.0f} keys each, at most {max(self.estimated_keys):,} ({how})"
        return text


def _check_tiling(ranges: Sequence[KeyRange]) -> None:
    if not ranges or ranges[0].start_after is not None or ranges[-1].end is not None:
        raise UsageError("the shard plan does not cover the whole prefix")
    for left, right in itertools.pairwise(ranges):
        if left.end is None or left.end != right.start_after:
            raise UsageError("the shard plan has gaps or overlaps between shards")
        if (
            right.start_after is not None
            and left.start_after is not None
            and right.start_after <= left.start_after
        ):
            raise UsageError("the shard plan's shards are not in key order")


def tile(prefix: str, cuts: Sequence[str], count: int) -> list[KeyRange]:
    """``count`` ranges tiling ``prefix``, cut at the increasing ``cuts`` (at most ``count - 1``).

    With fewer cuts than that (a prefix with fewer keys than shards), the last shards are cut
    past every key under the prefix and stay empty; the tiling is exact either way.
    """
    points = list(cuts[: count - 1])
    candidate = points[-1] if points else prefix
    while len(points) < count - 1:
        candidate += BLOCK_END
        points.append(candidate)
    bounds: list[str | None] = [None, *points, None]
    return [KeyRange(prefix, bounds[i], bounds[i + 1]) for i in range(count)]


async def plan_from_source(
    source: PageSource, location: S3Location, count: int, *, budget: int, parallel: int
) -> ShardPlanFile:
    """A plan of ``count`` shards for ``location``, sampled through ``source``."""
    if count < 2:
        return ShardPlanFile(str(location), [KeyRange(location.prefix)], 0, True, [])
    sampler = Sampler(source, location.prefix, budget=budget, parallel=parallel)
    sample = await sampler.run()
    cuts, estimates = cut_points(sample, count)
    ranges = tile(location.prefix, cuts, count)
    shares = [round(e) for e in estimates] + [0] * (count - len(estimates))
    return ShardPlanFile(str(location), ranges, sample.requests, sample.exact, shares)


async def make_plan(
    location: S3Location, connection: ConnectionConfig, count: int, budget: int | None = None
) -> ShardPlanFile:
    """Sample ``location`` and cut it into ``count`` shards of about the same number of keys."""
    from scanner.storage.s3.client import S3PageSource

    async with S3PageSource(location, connection) as source:
        return await plan_from_source(
            source,
            location,
            count,
            budget=budget or plan_budget(count),
            parallel=connection.concurrency,
        )


# --- plan files --------------------------------------------------------------------------------


async def read_plan(
    path: str, location: S3Location | None, connection: ConnectionConfig
) -> ShardPlanFile | None:
    """The plan at ``path`` (a file or s3://BUCKET/KEY), which must be for ``location`` when
    given; None if there is none."""
    if path.startswith("s3://"):
        from scanner.storage.s3.download import read_small_object

        data = await read_small_object(parse_s3_object_uri(path), connection)
        if data is None:
            return None
    else:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot read shard plan {path!r}: {exc.strerror}") from None
    plan = ShardPlanFile.from_json(data, location.prefix if location is not None else None)
    if location is not None and plan.uri != str(location):
        raise UsageError(f"the shard plan {path} is for {plan.uri}, not {location}")
    return plan


async def shared_plan(
    path: str,
    location: S3Location,
    connection: ConnectionConfig,
    count: int,
    budget: int | None = None,
    *,
    wait: float = 0.0,
) -> tuple[ShardPlanFile, bool]:
    """The plan stored at s3://BUCKET/KEY ``path``, made and stored first if there is none; and
    whether this call stored it. Every caller gets the one plan the key holds.

    With ``wait``, a plan that is not there yet is looked for again for up to that many seconds
    before this call makes one: shards other than the first give it the time to, so that N
    pods do not all sample the bucket. Making one after that is still safe (one put wins).
    """
    import anyio

    from scanner.storage.s3.upload import put_new_object

    stored = await read_plan(path, location, connection)
    deadline = anyio.current_time() + wait
    pause = _PLAN_POLL_FIRST
    while stored is None and anyio.current_time() < deadline:
        await anyio.sleep(min(pause, max(0.0, deadline - anyio.current_time())))
        pause = min(pause * 2, _PLAN_POLL_MOST)
        stored = await read_plan(path, location, connection)
    if stored is not None:
        if len(stored.ranges) != count:
            raise UsageError(f"the shard plan {path} has {len(stored.ranges)} shards, not {count}")
        return stored, False
    mine = await make_plan(location, connection, count, budget)
    target = parse_s3_object_uri(path)
    if await put_new_object(target, connection, mine.to_json()):
        if await put_new_object(target, connection, mine.to_json()):
            raise UsageError(
                f"the server ignored If-None-Match when writing {path}, so pods could each store "
                "a plan of their own: make the plan once before the shards run ('scanner plan')"
            )
        return mine, True
    # Another pod stored its plan first: that one is the plan.
    stored = await read_plan(path, location, connection)
    if stored is None:
        raise ScanError(f"the shard plan {path} was stored by another writer but cannot be read back")
    return stored, False


async def write_plan(path: str, plan: ShardPlanFile, connection: ConnectionConfig) -> None:
    """Store ``plan`` at ``path``: a file (replaced atomically) or a new S3 object.

    An S3 plan is never replaced: the pods of a running Job may be using it, and a shard that
    read another plan would overlap or miss keys of the others.
    """
    data = plan.to_json()
    if path.startswith("s3://"):
        from scanner.storage.s3.upload import put_new_object

        if not await put_new_object(parse_s3_object_uri(path), connection, data):
            raise UsageError(
                f"{path} exists already: shards that use it would disagree with a new plan; "
                "remove it first (after the Job that uses it has finished)"
            )
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory!r} does not exist")
    temporary = f"{path}.partial"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


# --- merging shard outputs ---------------------------------------------------------------------


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
    blocks = decompressed(blocks, path)
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
    paths: Sequence[str], connection: ConnectionConfig, plan: ShardPlanFile | None = None
) -> AsyncIterator[ObjectRecord]:
    """Records of key-ordered JSON Lines shard outputs (files or S3 objects), merged by key.

    Memory is one block and one record per input. Shards must not overlap. Given the plan they
    were listed with, each input must also hold keys of one shard of it only, and no two inputs
    the same shard: outputs of different runs or plans are told apart from a complete set (in
    whatever order the inputs come, ``shard-10`` sorting before ``shard-2`` included).
    """
    if plan is not None and len(paths) != len(plan.ranges):
        raise UsageError(f"the shard plan has {len(plan.ranges)} shards, but {len(paths)} inputs were given")
    ends = [r.end for r in plan.ranges[:-1] if r.end is not None] if plan is not None else []

    def shard_of(key: str) -> int:
        return bisect.bisect_left(ends, key)

    streams = [_records(path, connection) for path in paths]
    heap: list[tuple[str, int, ObjectRecord]] = []
    owner: dict[int, int] = {}  # shard -> the input that holds it
    try:
        for index, stream in enumerate(streams):
            first = await anext(stream, None)
            if first is None:
                continue
            heap.append((first.key, index, first))
            if plan is not None:
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
            if plan is not None and shard_of(key) != shards[index]:
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
