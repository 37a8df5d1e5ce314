"""A sharded scan end to end, as the Indexed Job runs it: plan, N shard processes at once, merge.

Each shard is ``python -m scanner scan --shard I/N --plan PLAN`` in its own process, all
started together; the figures are each shard's wall time and key count, the plan's and the
merge's wall time, and whether the merged output equals a single scan of the bucket byte for
byte (it must).

* ``--target rgw``: a Ceph RGW (``benchmarks.servers``, bluestore under ``.bench/rgw``, seeded
  once) lists the keys and holds everything else: the plan, the shard outputs, the merged
  output and the single scan are S3 objects in a second bucket, and the merge reads from S3.
* ``--target synthetic``: ``benchmarks.synthetic_s3`` serves the listing from memory, so the
  client is what limits; it serves no objects, so plan and outputs are files and the merge
  reads files.

    python -m benchmarks.sharded_run --target synthetic --layout dicom --keys 1000000 --shards 4
    python -m benchmarks.sharded_run --target rgw --layout dicom --keys 100000 --shards 4

``--share-work`` runs the pods as ``scan --share-work BOARD`` (a directory for the synthetic
endpoint, an S3 prefix on RGW), whose last pod merges: the figures are then each pod's keys
(from the board's done records) and wall time, the job's wall time including the merge, and
first the same plan run statically (``--shard`` alone) for comparison. ``--requests`` gives the
plan a budget of its own (a small one leaves regions misjudged, as a plan of a billion keys
would); ``--latency-ms`` delays the synthetic endpoint's answers and ``--concurrency`` sets the requests
each pod keeps in flight: together they make pods that wait on the server, not on two shared
cores, as pods of a large scan on their own cores do.

    python -m benchmarks.sharded_run --layout clustered --keys 1000000 --shards 4 \
        --parts-per-shard 4 --requests 64 --share-work --latency-ms 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.children import listening_child
from benchmarks.seed import bucket_name

REPO = Path(__file__).resolve().parent.parent


def _scanner(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scanner", *args],
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(args: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = _scanner(args, env)
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"scanner {' '.join(args)} exited {process.returncode}: {stderr}")
    return time.perf_counter() - started


@contextlib.contextmanager
def _target(
    kind: str, layout: str, keys: int, latency_ms: float = 0.0
) -> Iterator[tuple[str, dict[str, str], Any]]:
    """(bucket URI, environment, client of the output store or None)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCANNER_"))}
    if kind == "synthetic":
        bucket = bucket_name(layout, keys)
        with listening_child(
            "benchmarks.synthetic_s3",
            "--buckets",
            bucket,
            "--latency-ms",
            str(latency_ms),
            what="the synthetic endpoint",
        ) as url:
            env = {**base, "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
            yield f"s3://{bucket}", {**env, "AWS_DEFAULT_REGION": "us-east-1"}, None
        return
    from benchmarks.servers import ensure_dataset, open_target

    with open_target("rgw", REPO, print) as target:
        dataset = ensure_dataset(target, layout, keys, print)
        env = {
            **base,
            "AWS_ENDPOINT_URL": target.endpoint_url,
            "AWS_ACCESS_KEY_ID": target.access_key,
            "AWS_SECRET_ACCESS_KEY": target.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield f"s3://{dataset.bucket}", env, target.client()


def _pods(commands: Sequence[Sequence[str]], env: dict[str, str]) -> tuple[list[float], float, float]:
    """Each command in its own process, all started together: (each one's wall time, the
    whole wall time, their CPU seconds)."""
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    processes = [_scanner(command, env) for command in commands]
    # Processes end in any order: poll them all, so each one's time is its own.
    pending = dict(enumerate(processes))
    walls = [0.0] * len(processes)
    while pending:
        for index, process in list(pending.items()):
            if process.poll() is not None:
                walls[index] = time.perf_counter() - started
                _, stderr = process.communicate()
                if process.returncode != 0:
                    raise RuntimeError(f"pod {index} exited {process.returncode}: {stderr}")
                del pending[index]
        time.sleep(0.02)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return walls, time.perf_counter() - started, cpu


def _table(rows: Sequence[tuple[int, float]]) -> None:
    print("| pod | keys | wall s |")
    print("|---|---|---|")
    for index, (size, wall) in enumerate(rows):
        print(f"| {index} | {size:,} | {wall:.1f} |")
    sizes = [size for size, _ in rows]
    walls = [wall for _, wall in rows]
    print(
        f"largest/mean keys {max(sizes) / (sum(sizes) / len(sizes)):.3f}; "
        f"slowest/mean wall {max(walls) / (sum(walls) / len(walls)):.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("synthetic", "rgw"), default="synthetic")
    parser.add_argument("--layout", default="dicom")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--parts-per-shard", type=int, default=1)
    parser.add_argument("--requests", type=int, help="the plan's request budget (default: scanner plan's)")
    parser.add_argument("--share-work", action="store_true", help="also run the pods with --share-work")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="synthetic endpoint: answer this late")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="requests in flight per pod (SCANNER_CONCURRENCY; default the scanner's)",
    )
    args = parser.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} cores, {' '.join(platform.uname())}, Python {platform.python_version()}"
    )
    with (
        _target(args.target, args.layout, args.keys, args.latency_ms) as (uri, env, client),
        tempfile.TemporaryDirectory() as tmp,
    ):
        if args.concurrency:
            env = {**env, "SCANNER_CONCURRENCY": str(args.concurrency)}
        if client is not None:
            out = f"bench-shards-{int(time.time())}"
            client.create_bucket(Bucket=out)
            where = f"s3://{out}"
        else:
            where = tmp
        plan = f"{where}/plan.json"
        count = args.shards
        budget = ["--requests", str(args.requests)] if args.requests else []
        plan_seconds = _run(
            [
                "plan",
                uri,
                "--shards",
                str(count),
                "--parts-per-shard",
                str(args.parts_per_shard),
                *budget,
                "-o",
                plan,
            ],
            env,
        )
        outputs = [f"{where}/shard-{i}.jsonl" for i in range(count)]
        walls, job_seconds, cpu = _pods(
            [
                ["scan", uri, "--shard", f"{i}/{count}", "--plan", plan, "-o", outputs[i], "-q"]
                for i in range(count)
            ],
            env,
        )
        merged, single = f"{where}/merged.jsonl", f"{where}/single.jsonl"
        merge_seconds = _run(["merge", *outputs, "--plan", plan, "-o", merged], env)
        single_seconds = _run(["scan", uri, "-o", single, "-q"], env)

        def read(path: str) -> bytes:
            if client is None:
                return Path(path).read_bytes()
            bucket, _, key = path.removeprefix("s3://").partition("/")
            data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return data

        sizes = [read(path).count(b"\n") for path in outputs]
        same = read(merged) == read(single)
        print(
            f"{args.target}: {args.layout} {args.keys:,} keys, "
            f"{count} shards x {args.parts_per_shard} parts, "
            f"plan {args.requests or 'default'} requests; "
            f"outputs and merge {'through S3' if client is not None else 'through files'}"
        )
        _table(list(zip(sizes, walls, strict=True)))
        print(
            f"plan {plan_seconds:.1f} s, shards {job_seconds:.1f} s, merge {merge_seconds:.1f} s, "
            f"single scan {single_seconds:.1f} s; merged == single scan: {same}; "
            f"shards' CPU {cpu:.1f} s, {cpu / max(1, sum(sizes)) * 1e6:.1f} µs a key, "
            f"{sum(sizes) / max(cpu, 1e-9):,.0f} keys per CPU-second"
        )
        if args.share_work:
            same = _shared(args, uri, env, plan, where, read, read(single), client) and same
    return 0 if same else 1


def _shared(
    args: argparse.Namespace,
    uri: str,
    env: dict[str, str],
    plan: str,
    where: str,
    read: Any,
    single: bytes,
    client: Any,
) -> bool:
    """The same plan run by pods that share the work; whether the merged output is the single scan's."""
    count = args.shards
    board, merged = f"{where}/work/", f"{where}/shared-merged.jsonl"
    common = ["--plan", plan, "--share-work", board, "-o", merged, "-q"]
    walls, job_seconds, cpu = _pods(
        [["scan", uri, "--shard", f"{i}/{count}", *common] for i in range(count)], env
    )
    keys = [0] * count
    pieces = 0
    for document in _done_records(board, read, client):
        keys[document["pod"]] += document["objects"]
        pieces += 1
    same = read(merged) == single
    print(f"--share-work, the same plan: {pieces} pieces; the last pod merged")
    _table(list(zip(keys, walls, strict=True)))
    print(
        f"job {job_seconds:.1f} s (listing and merge); merged == single scan: {same}; pods' CPU {cpu:.1f} s"
    )
    return same


def _done_records(board: str, read: Any, client: Any) -> list[dict[str, Any]]:
    if client is None:
        return [json.loads(path.read_bytes()) for path in sorted(Path(board, "done").glob("*.json"))]
    bucket, _, prefix = board.removeprefix("s3://").partition("/")
    listed = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "done/")
    keys = [entry["Key"] for page in listed for entry in page.get("Contents", [])]
    return [json.loads(read(f"s3://{bucket}/{key}")) for key in keys]


if __name__ == "__main__":
    sys.exit(main())
