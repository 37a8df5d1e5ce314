"""How balanced ``scanner plan``'s shards are, and what planning costs, on the benchmark layouts.

Plans are made against an in-memory ListObjectsV2 (``tests.memory_source``) that counts requests,
so layouts of millions of keys cost seconds, not a seeded server. Each plan is then checked by
counting the keys of every shard: the figure reported is the largest shard over the mean
(1.00 is perfect; the target is at most 1.25).

    python -m benchmarks.plan_balance --keys 100000 --keys 1000000 --shards 4 --shards 16 --shards 64
    python -m benchmarks.plan_balance --keys 1000000 --requests-per-shard 16   # sampled, not listed
    python -m benchmarks.plan_balance --keys 1000000 --requests-per-shard 16 --parts-per-shard 8

By default a plan may spend ``scanner.listing.plan.plan_budget`` requests (16 a shard, at least
1,024), which lists a bucket of up to about a million keys whole: its plan is exact.
``--requests-per-shard`` drops the floor, so that planning a million keys has to estimate, as
planning a billion does with the default.

Besides the layouts of ``benchmarks.layouts``, each is also run under one top-level folder
(``archive/...``, where every key shares a long prefix), and two more layouts model what real
archives hold: ``clustered`` (a few folders with most of the keys, at random places among many
tiny ones) and ``dated`` (``YYYY/MM/DD/`` folders growing over the years).

``--parts-per-shard K`` over-decomposes: the plan cuts ``K x shards`` parts and shard ``i``
takes parts ``i, i + shards, ...`` (round-robin, as ``scanner plan --parts-per-shard`` does);
the figure is then the largest shard's keys (the sum over its parts) over the mean. The scan's
requests are its pages, one per 1,000 keys (a ranged scan sends a few more).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import sys
import time

import anyio

from benchmarks.layouts import LAYOUTS, SHAPES
from scanner.listing.plan import plan_budget
from scanner.listing.planning import Sample, Sampler, cut_points
from tests.memory_source import MemoryBucket

EXTRA = SHAPES


def layout_keys(name: str, count: int) -> list[str]:
    if name.startswith("archive/"):
        return ["archive/" + key for key in layout_keys(name.removeprefix("archive/"), count)]
    make = EXTRA.get(name) or LAYOUTS[name]
    return make(count)


def worst_gaps(bucket: MemoryBucket, sample: Sample, count: int) -> list[str]:
    """The ``count`` gaps of ``sample`` whose estimate is furthest from the keys they hold: where
    a plan went wrong, and what the sampler believed there."""
    rows = []
    for gap in sample.gaps:
        low = bisect.bisect_right(bucket.keys, gap.after)
        high = len(bucket.keys) if gap.before is None else bisect.bisect_left(bucket.keys, gap.before)
        rows.append((abs(high - low - gap.estimate), high - low, gap))
    rows.sort(key=lambda row: row[0], reverse=True)
    return [
        f"  gap {gap.after!r}..{gap.before!r}: holds {held:,}, estimated {gap.estimate:,.0f}"
        for _, held, gap in rows[:count]
    ]


def measure(
    keys: list[str],
    shards: int,
    budget: int | None = None,
    parallel: int = 16,
    parts_per_shard: int = 1,
    explain: int = 0,
) -> dict[str, float]:
    bucket = MemoryBucket(keys)
    parts = shards * parts_per_shard

    async def plan() -> tuple[Sampler, Sample]:
        sampler = Sampler(bucket, "", budget=budget or plan_budget(shards), parallel=parallel)
        return sampler, await sampler.run()

    started = time.perf_counter()
    sampler, sample = anyio.run(plan)
    cuts = cut_points(sample, parts)[0]
    seconds = time.perf_counter() - started
    for line in worst_gaps(bucket, sample, explain):
        print(line)
    bounds = [0, *(bisect.bisect_right(bucket.keys, cut) for cut in cuts), len(bucket.keys)]
    part_sizes = [high - low for low, high in itertools.pairwise(bounds)]
    sizes = [sum(part_sizes[shard::shards]) for shard in range(shards)]
    return {
        "ratio": max(sizes) / (len(bucket.keys) / shards),
        "requests": sampler.requests,
        "scan_requests": -(-len(bucket.keys) // 1000),
        "rounds": sampler.rounds,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, action="append", help="bucket sizes (default 100000)")
    parser.add_argument("--shards", type=int, action="append", help="shard counts (default 4, 16, 64)")
    parser.add_argument("--layout", action="append", help="layouts (default: all, and each under archive/)")
    parser.add_argument(
        "--requests-per-shard", type=int, help="budget of requests per shard, without the default's floor"
    )
    parser.add_argument(
        "--parts-per-shard", type=int, action="append", help="parts a shard, round-robin (default 1)"
    )
    parser.add_argument(
        "--explain", type=int, default=0, metavar="N", help="print the N worst-estimated gaps of each plan"
    )
    args = parser.parse_args(argv)
    names = args.layout or [*(name for base in [*LAYOUTS, *EXTRA] for name in (base, "archive/" + base))]
    header = (
        "layout",
        "keys",
        "shards",
        "parts",
        "largest/mean",
        "requests",
        "scan req",
        "rounds",
        "seconds",
    )
    print("{:20} {:>9} {:>6} {:>5} {:>12} {:>8} {:>8} {:>6} {:>7}".format(*header))
    worst = 0.0
    for count in args.keys or [100_000]:
        for name in names:
            keys = layout_keys(name, count)
            for shards, per_shard in itertools.product(
                args.shards or [4, 16, 64], args.parts_per_shard or [1]
            ):
                budget = args.requests_per_shard * shards if args.requests_per_shard else None
                result = measure(keys, shards, budget, parts_per_shard=per_shard, explain=args.explain)
                worst = max(worst, result["ratio"])
                print(
                    f"{name:20} {count:>9,} {shards:>6} {per_shard:>5} {result['ratio']:>12.3f} "
                    f"{result['requests']:>8.0f} {result['scan_requests']:>8.0f} "
                    f"{result['rounds']:>6.0f} {result['seconds']:>7.1f}",
                    flush=True,
                )
    print(f"worst largest/mean: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
