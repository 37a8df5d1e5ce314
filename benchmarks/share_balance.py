"""How evenly pods that share the work (``scan --share-work``) divide a bucket, at pod counts a
two-core machine cannot run as processes.

Every pod is the scanner's own pod loop (``scanner.run.sharing``), all of them as tasks of one
event loop, on one board in a temporary directory, listing an in-memory ListObjectsV2
(``tests.memory_source``) that answers each request after ``--latency-ms``: so the pods wait on
the server, as the pods of a large scan do, and one process's CPU serves them all. The plan is
made as ``benchmarks.plan_balance`` makes it (``--requests-per-pod`` a pod, ``--parts-per-pod``
parts a pod). Reported, for the static plan (each pod its round-robin parts) and for the shared
run: the largest pod's keys over the mean ("static", "shared"), and the shared run's pieces and
wall time; the shared run's merged output is checked against the bucket's keys.

    python -m benchmarks.share_balance --layout clustered --keys 1000000 --pods 16 --pods 64
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import anyio
import orjson

from benchmarks.plan_balance import layout_keys
from scanner.config import ConnectionConfig, S3Location, ScanConfig, SharedWork
from scanner.listing.plan import tile
from scanner.listing.planning import Sampler, cut_points
from scanner.run.board import Board, board_document
from scanner.run.pieces import roots_of
from scanner.run.sharing import _list_until_complete, merge_board
from scanner.run.summary import ScanSummary
from scanner.storage.directory import DirectoryObjectStore
from tests.memory_source import MemoryBucket


def static_ratio(keys: list[str], cuts: list[str], pods: int) -> float:
    bounds = [0, *(bisect.bisect_right(keys, cut) for cut in cuts), len(keys)]
    parts = [high - low for low, high in itertools.pairwise(bounds)]
    sizes = [sum(parts[pod::pods]) for pod in range(pods)]
    return max(sizes) / (len(keys) / pods)


async def shared_run(
    bucket: MemoryBucket, parts: list, pods: int, concurrency: int, root: Path
) -> tuple[list[int], list[float], int, bool]:
    """(keys per pod, seconds per pod, pieces, merged == the bucket's keys)."""
    base = ScanConfig(
        location=S3Location("bench", ""),
        connection=ConnectionConfig(concurrency=concurrency),
        output=str(root / "merged.jsonl"),
        server_profile="aws",
    )
    works = [SharedWork(str(root / "board"), pod, pods, "memory", tuple(parts)) for pod in range(pods)]
    configs = [replace(base, shared_work=work) for work in works]
    boards = [Board(DirectoryObjectStore(work.board), "", "", work.board) for work in works]
    roots = roots_of(works[0])
    await boards[0].join(board_document(configs[0], works[0]))
    seconds = [0.0] * pods
    started = time.perf_counter()

    async def pod(index: int) -> None:
        await _list_until_complete(configs[index], works[index], boards[index], roots, bucket, ScanSummary())
        seconds[index] = time.perf_counter() - started

    async with anyio.create_task_group() as group:
        for index in range(pods):
            group.start_soon(pod, index)
    state = await boards[0].read()
    keys = [0] * pods
    for record in state.done.values():
        keys[record.pod] += record.objects
    await merge_board(configs[0], boards[0], roots)
    merged = [orjson.loads(line)["key"] for line in (root / "merged.jsonl").read_bytes().splitlines()]
    return keys, seconds, len(state.done), merged == bucket.keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--layout", action="append", help="layouts (default clustered, deep, skewed, dicom)")
    parser.add_argument("--pods", type=int, action="append", help="pod counts (default 4, 16, 64)")
    parser.add_argument("--parts-per-pod", type=int, default=4)
    parser.add_argument("--requests-per-pod", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=500.0, help="each request's answer this late")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight a piece")
    args = parser.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} cores, {' '.join(platform.uname())}, Python {platform.python_version()}"
    )
    print(
        f"{args.keys:,} keys, {args.parts_per_pod} parts a pod, {args.requests_per_pod} plan requests a pod, "
        f"{args.latency_ms:.0f} ms a request, {args.concurrency} in flight a piece"
    )
    columns = ("layout", "pods", "plan requests", "static", "shared", "pieces", "shared s", "merged ok")
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.layout or ["clustered", "deep", "skewed", "dicom"]:
        keys = layout_keys(name, args.keys)
        for pods in args.pods or [4, 16, 64]:
            bucket = MemoryBucket(keys)

            async def plan(bucket: MemoryBucket = bucket, pods: int = pods) -> tuple[list[str], int]:
                sampler = Sampler(bucket, "", budget=args.requests_per_pod * pods, parallel=16)
                sample = await sampler.run()
                return cut_points(sample, pods * args.parts_per_pod)[0], sampler.requests

            cuts, requests = anyio.run(plan)
            parts = tile("", cuts, pods * args.parts_per_pod)
            slow = MemoryBucket(keys, latency=args.latency_ms / 1000)
            with tempfile.TemporaryDirectory() as tmp:
                sizes, seconds, pieces, same = anyio.run(
                    shared_run, slow, parts, pods, args.concurrency, Path(tmp)
                )
            shared = max(sizes) / (len(keys) / pods)
            print(
                f"| {name} | {pods} | {requests} | {static_ratio(slow.keys, cuts, pods):.3f} | "
                f"{shared:.3f} | {pieces} | {max(seconds):.1f} | {same} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
