"""Sharded scans for machines that one process (or one machine) cannot keep up with.

A shard is one range of a plan that tiles the scanned prefix: shard ``i`` of ``n`` lists only its
range, so ``n`` pods of a Kubernetes Indexed Job share no state and their outputs, concatenated in
shard order (or merged by key with ``scanner merge``), are exactly a whole scan.

- ``scanner plan`` makes the plan from a quick look at the key space: the first page plus the
  common prefixes a few delimiter listings find (folders are real points of the key space, so
  cuts there follow the data), and, where that finds too few, probes of one key at byte-wise
  midpoints (each probe returns a real key after its point). Cut points are chosen evenly among
  what was found, so shards hold similar numbers of folders or keys.
- Without a plan, ``--shard i/n`` falls back to cutting at byte-wise midpoints of the whole key
  space: deterministic and stateless, but blind to where the keys are.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import orjson

from scanner.config import ConnectionConfig, S3Location
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange, ranges_from_boundaries, split
from scanner.records import ObjectRecord

PLAN_FORMAT: Final = "bucket-scanner-plan"
_PROBES_PER_SHARD: Final = 8


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

    def to_json(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "format": PLAN_FORMAT,
                    "version": 1,
                    "uri": self.uri,
                    "shards": [{"start_after": r.start_after, "end": r.end} for r in self.ranges],
                },
                option=orjson.OPT_INDENT_2,
            )
            + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes, prefix: str) -> ShardPlanFile:
        try:
            document = orjson.loads(data)
            if document.get("format") != PLAN_FORMAT:
                raise ValueError("not a shard plan")
            ranges = [KeyRange(prefix, s["start_after"], s["end"]) for s in document["shards"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"the shard plan is not a bucket-scanner plan file ({exc})") from None
        _check_tiling(ranges)
        return cls(str(document["uri"]), ranges)


def _check_tiling(ranges: Sequence[KeyRange]) -> None:
    if not ranges or ranges[0].start_after is not None or ranges[-1].end is not None:
        raise UsageError("the shard plan does not cover the whole prefix")
    for left, right in itertools.pairwise(ranges):
        if left.end is None or left.end != right.start_after:
            raise UsageError("the shard plan has gaps or overlaps between shards")


def blind_ranges(prefix: str, count: int) -> list[KeyRange]:
    """``count`` ranges tiling the prefix, cut at byte-wise midpoints: no requests needed."""
    if count < 2:
        return [KeyRange(prefix)]
    parts = split(KeyRange(prefix), prefix, count)
    # The first part starts right after the prefix itself; widen it so a key equal to the
    # prefix is covered too.
    return [KeyRange(prefix, None, parts[0].end), *parts[1:]]


def shard_range(plan: ShardPlanFile | None, prefix: str, shard: Shard) -> KeyRange:
    ranges = plan.ranges if plan is not None else blind_ranges(prefix, shard.count)
    if len(ranges) != shard.count:
        raise UsageError(f"the shard plan has {len(ranges)} shards, not {shard.count}")
    return ranges[shard.index]


async def make_plan(location: S3Location, connection: ConnectionConfig, count: int) -> ShardPlanFile:
    """Sample the key space and cut it into ``count`` shards."""
    from scanner.enumerate import Enumerator
    from scanner.s3.client import S3PageSource

    root = KeyRange(location.prefix)
    async with S3PageSource(location, connection) as source:
        enumerator = Enumerator(
            source,
            root,
            parallelism=count,
            emit=_emit_nothing,
        )
        # Shards never split across machines: plan them from discovery's evenly spread points.
        first_page, ranges = await enumerator.plan(count * _PROBES_PER_SHARD, cut_at_counters=False)
        boundaries = [r.end for r in ranges if r.end is not None]
        if ranges and len(boundaries) < count * _PROBES_PER_SHARD // 2:
            rest = ranges[0].with_end(None)
            boundaries += await _probe(source, rest, count * _PROBES_PER_SHARD)
    if count < 2 or not ranges:
        # Everything fits in one page: any tiling will do, only the first shard has keys.
        points = [r.key for r in first_page[:: max(1, len(first_page) // count)]][1:count]
        return ShardPlanFile(str(location), _tile(location.prefix, points, count))
    return ShardPlanFile(str(location), _tile(location.prefix, boundaries, count))


def _tile(prefix: str, points: list[str], count: int) -> list[KeyRange]:
    """``count`` ranges tiling the prefix, cut evenly among ``points``.

    With fewer distinct points than shards (a tiny prefix), the last shards are cut past every
    real key and stay empty; the tiling is exact either way.
    """
    cuts = [r.end for r in ranges_from_boundaries(KeyRange(prefix), points, count)[:-1] if r.end]
    candidate = cuts[-1] if cuts else prefix
    while len(cuts) < count - 1:
        candidate += "\U0010ffff"
        cuts.append(candidate)
    bounds: list[str | None] = [None, *cuts, None]
    return [KeyRange(prefix, bounds[i], bounds[i + 1]) for i in range(count)]


async def _probe(source: Any, rest: KeyRange, probes: int) -> list[str]:
    """The first key after each of ``probes`` byte-wise cut points of ``rest``."""
    assert rest.start_after is not None
    points = [r.start_after for r in split(rest, rest.start_after, probes)[1:]]
    found: list[str] = []

    async def probe(point: str | None) -> None:
        page = await source.list_page(KeyRange(rest.prefix, point, None), max_keys=1)
        if page.records:
            found.append(page.records[0].key)

    async with anyio.create_task_group() as group:
        for point in points:
            group.start_soon(probe, point)
    return sorted(set(found))


async def _emit_nothing(slot: object, records: Sequence[ObjectRecord]) -> None:
    raise AssertionError("planning emits nothing")


def merge_jsonl(paths: Sequence[str]) -> Iterator[ObjectRecord]:
    """Records of several key-ordered JSON Lines files, merged by key; shards must not overlap."""
    streams = [_read_jsonl(path) for path in paths]
    previous: str | None = None
    for record in heapq.merge(*streams, key=lambda r: r.key):
        if previous is not None and record.key <= previous:
            raise ScanError(f"the shard outputs overlap or are out of order at key {record.key!r}")
        previous = record.key
        yield record


def _read_jsonl(path: str) -> Iterator[ObjectRecord]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
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
