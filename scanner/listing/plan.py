"""Shard plans: the key ranges a sharded scan is cut into, which shard lists which, plan files.

Sharded scans are for buckets that one process (or one machine) cannot keep up with.

A plan tiles the scanned prefix with *parts*, key ranges in key order, and gives each of its
``n`` *shards* some of them: part ``j`` belongs to shard ``j mod n`` (round-robin). Shard ``i``
lists only its parts, so ``n`` pods of a Kubernetes Indexed Job share no state and their
outputs, merged by key with ``scanner merge``, are exactly a whole scan. A plan has one part a
shard unless it is *over-decomposed* (``parts_per_shard``): then a region whose keys the sample
misjudged is cut into several parts that round-robin spreads over several shards, and the
shards even out where one range each would not (the README says for which layouts, measured).

Every shard must use the *same* plan: two plans cut at different points, and shards of
different plans overlap or leave keys out. So a shard never cuts the key space itself; it reads
a plan file:
- ``scanner plan`` writes one (``scanner.listing.planning`` samples where the keys are; the plan
  records the requests it took and the keys each part is estimated to hold);
- ``scan --shard I/N --plan s3://... --create-plan`` reads the plan at that key, and when there
  is none yet makes one and stores it with a conditional put (``If-None-Match: *``): of pods
  that race, exactly one put succeeds, and every pod, the winner included, then uses the plan
  stored at the key. A server that ignores the condition would let a later put replace an
  earlier one that pods already use, so the winner checks that a second conditional put of the
  key is refused, and stops with exit code 2 if it is not.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from scanner.config import ConnectionConfig, S3Location, parse_s3_object_uri, parse_s3_uri
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.listing.planning import BLOCK_END, Sampler, cut_points
from scanner.storage.base import ObjectStore, PageSource

PLAN_FORMAT: Final = "bucket-scanner-plan"
# Version 1 had one part a shard and called the parts "shards"; it is still read.
PLAN_VERSION: Final = 2
ASSIGNMENT: Final = "round-robin"
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
    # The parts, tiling the prefix in key order; part ``j`` is shard ``j % shard_count``'s.
    ranges: list[KeyRange]
    # What making it took and found: requests sent, whether every key was listed (then the
    # estimates are counts), and the keys each part is estimated to hold.
    requests: int = 0
    exact: bool = False
    estimated_keys: list[int] = field(default_factory=list)
    # The shards the parts are shared among (0: one part a shard).
    shards: int = 0

    def __post_init__(self) -> None:
        if self.shards < 0 or (self.shards and len(self.ranges) % self.shards):
            raise UsageError(
                f"a plan of {len(self.ranges)} parts cannot be shared among {self.shards} shards"
            )

    @property
    def shard_count(self) -> int:
        return self.shards or len(self.ranges)

    @property
    def parts_per_shard(self) -> int:
        return len(self.ranges) // self.shard_count

    @property
    def owners(self) -> list[int]:
        """The shard of each part."""
        return [index % self.shard_count for index in range(len(self.ranges))]

    def to_json(self) -> bytes:
        parts = []
        for index, key_range in enumerate(self.ranges):
            part: dict[str, Any] = {"start_after": key_range.start_after, "end": key_range.end}
            if index < len(self.estimated_keys):
                part["estimated_keys"] = self.estimated_keys[index]
            parts.append(part)
        document = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "uri": self.uri,
            "requests": self.requests,
            "exact": self.exact,
            "shards": self.shard_count,
            "assignment": ASSIGNMENT,
            "parts": parts,
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
            if document.get("version", 1) == 1:
                parts, shards = document["shards"], 0
            else:
                if document.get("assignment") != ASSIGNMENT:
                    raise ValueError(f"parts assigned {document.get('assignment')!r}, not {ASSIGNMENT!r}")
                parts, shards = document["parts"], int(document["shards"])
            ranges = [KeyRange(prefix, s["start_after"], s["end"]) for s in parts]
            estimates = [int(s["estimated_keys"]) for s in parts if "estimated_keys" in s]
            plan = cls(
                str(document["uri"]),
                ranges,
                int(document.get("requests", 0)),
                bool(document.get("exact", False)),
                estimates if len(estimates) == len(ranges) else [],
                shards if shards != len(ranges) else 0,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"the shard plan is not a bucket-scanner plan file ({exc})") from None
        _check_tiling(ranges)
        return plan

    def parts_of(self, shard: Shard) -> list[KeyRange]:
        """The ranges shard ``shard`` lists, in key order."""
        if self.shard_count != shard.count:
            raise UsageError(f"the shard plan has {self.shard_count} shards, not {shard.count}")
        return self.ranges[shard.index :: self.shard_count]

    def shard_estimates(self) -> list[int]:
        """The keys each shard is estimated to hold (the sum over its parts)."""
        if not self.estimated_keys:
            return []
        totals = [0] * self.shard_count
        for owner, estimate in zip(self.owners, self.estimated_keys, strict=True):
            totals[owner] += estimate
        return totals

    def describe(self) -> str:
        """One line on what the plan is and what it cost."""
        how = "every key listed" if self.exact else "estimated from a sample"
        text = f"planned {self.shard_count} shards of {self.uri} with {self.requests:,} requests"
        if self.parts_per_shard > 1:
            text += f" ({self.parts_per_shard} parts a shard, round-robin)"
        estimates = self.shard_estimates()
        if estimates:
            mean = sum(estimates) / len(estimates)
            text += f"; about {mean:,.0f} keys each, at most {max(estimates):,} ({how})"
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
    source: PageSource,
    location: S3Location,
    count: int,
    *,
    budget: int,
    parallel: int,
    parts_per_shard: int = 1,
) -> ShardPlanFile:
    """A plan of ``count`` shards for ``location``, sampled through ``source``: cut into
    ``parts_per_shard`` parts a shard, of about the same number of keys each."""
    parts = count * parts_per_shard
    shards = count if parts_per_shard > 1 else 0
    if parts < 2:
        return ShardPlanFile(str(location), [KeyRange(location.prefix)], 0, True, [])
    sampler = Sampler(source, location.prefix, budget=budget, parallel=parallel)
    sample = await sampler.run()
    cuts, estimates = cut_points(sample, parts)
    ranges = tile(location.prefix, cuts, parts)
    shares = [round(e) for e in estimates] + [0] * (parts - len(estimates))
    return ShardPlanFile(str(location), ranges, sample.requests, sample.exact, shares, shards)


async def make_plan(
    location: S3Location,
    connection: ConnectionConfig,
    count: int,
    budget: int | None = None,
    parts_per_shard: int = 1,
) -> ShardPlanFile:
    """Sample ``location`` and cut it into ``count`` shards of about the same number of keys
    (each of ``parts_per_shard`` parts, round-robin)."""
    # Start-up: the CLI reads plan files for every command; only planning lists the bucket.
    from scanner.storage.s3.client import S3PageSource

    async with S3PageSource(location, connection) as source:
        return await plan_from_source(
            source,
            location,
            count,
            budget=budget or plan_budget(count),
            parallel=connection.concurrency,
            parts_per_shard=parts_per_shard,
        )


# --- plan files --------------------------------------------------------------------------------


def _plan_store(path: str, connection: ConnectionConfig) -> tuple[ObjectStore, str]:
    # Start-up: every command reads this module through the CLI; only S3 plans need the store.
    from scanner.storage.s3.store import S3ObjectStore

    where = parse_s3_object_uri(path)
    return S3ObjectStore(where.bucket, connection, role="plan", what="the shard plan"), where.prefix


async def read_plan(
    path: str, location: S3Location | None, connection: ConnectionConfig
) -> ShardPlanFile | None:
    """The plan at ``path`` (a file or s3://BUCKET/KEY), which must be for ``location`` when
    given; None if there is none."""
    if path.startswith("s3://"):
        objects, key = _plan_store(path, connection)
        data = await objects.get(key)
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
    parts_per_shard: int = 1,
) -> tuple[ShardPlanFile, bool]:
    """The plan stored at s3://BUCKET/KEY ``path``, made and stored first if there is none; and
    whether this call stored it. Every caller gets the one plan the key holds.

    With ``wait``, a plan that is not there yet is looked for again for up to that many seconds
    before this call makes one: shards other than the first give it the time to, so that N
    pods do not all sample the bucket. Making one after that is still safe (one put wins).
    """
    import anyio  # start-up: the CLI imports this module for every command

    stored = await read_plan(path, location, connection)
    deadline = anyio.current_time() + wait
    pause = _PLAN_POLL_FIRST
    while stored is None and anyio.current_time() < deadline:
        await anyio.sleep(min(pause, max(0.0, deadline - anyio.current_time())))
        pause = min(pause * 2, _PLAN_POLL_MOST)
        stored = await read_plan(path, location, connection)
    if stored is not None:
        if stored.shard_count != count:
            raise UsageError(f"the shard plan {path} has {stored.shard_count} shards, not {count}")
        return stored, False
    mine = await make_plan(location, connection, count, budget, parts_per_shard)
    objects, key = _plan_store(path, connection)
    if await objects.put(key, mine.to_json(), if_absent=True):
        # A second conditional put that also succeeds means the server ignores If-None-Match.
        if await objects.put(key, mine.to_json(), if_absent=True):
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
        objects, key = _plan_store(path, connection)
        if not await objects.put(key, data, if_absent=True):
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
