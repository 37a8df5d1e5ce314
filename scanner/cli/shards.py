"""The ``scanner plan`` and ``scanner merge`` commands, and ``scan --shard``'s options.

Only the CLI imports this module.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scanner.config import ConnectionConfig, OutputFormat, S3Location, ScanConfig, parse_s3_uri
from scanner.errors import UsageError
from scanner.storage.base import committing

if TYPE_CHECKING:
    from scanner.listing.plan import Shard, ShardPlanFile

PARTS_HELP = (
    "cut the prefix into this many parts a shard, shard I taking parts I, I+COUNT, I+2*COUNT, ... "
    "(over-decomposition: evens out shards where a plan misjudges a region; default 1)"
)


# Longer than a screen: the options of plan, merge and diff, one add_argument each.
def add_shard_commands(
    commands: Any,
    add_connection_arguments: Callable[[argparse.ArgumentParser], None],
    positive_int: Callable[[str], int],
) -> None:
    plan = commands.add_parser(
        "plan",
        help="sample the key space and write a shard plan for sharded scans",
        description=(
            "Sample s3://BUCKET[/PREFIX] and write a plan cutting it into COUNT shards of about "
            "the same number of keys, for 'scanner scan --shard INDEX/COUNT --plan PLAN'. A "
            "prefix that fits in the request budget is listed whole and the plan is exact."
        ),
    )
    plan.add_argument("uri", nargs="?", help="s3://BUCKET[/PREFIX]")
    plan.add_argument("--shards", type=positive_int, required=False, help="number of shards")
    plan.add_argument(
        "-o", "--output", help="plan file path or s3://BUCKET/KEY (never replaced; default: standard output)"
    )
    plan.add_argument(
        "--requests",
        type=positive_int,
        help="most ListObjectsV2 requests to spend (default: 16 per shard, at least 1024)",
    )
    plan.add_argument("--parts-per-shard", type=positive_int, help=PARTS_HELP)
    add_connection_arguments(plan)

    merge = commands.add_parser(
        "merge",
        help="merge the JSON Lines outputs of shards into one ordered output",
        description=(
            "Merge key-ordered JSON Lines shard outputs (files or s3://BUCKET/KEY objects, as "
            "'scanner scan --shard' writes them) into one output in key order, as JSON Lines, "
            "CSV or an items list, streamed: memory holds one block of each input."
        ),
    )
    merge.add_argument(
        "inputs", nargs="+", help="shard outputs, in shard order (JSON Lines files or s3:// objects)"
    )
    merge.add_argument("-o", "--output", help="output path, s3://BUCKET/KEY, or - (default)")
    merge.add_argument(
        "-f", "--format", choices=("jsonl", "csv", "items", "parquet"), help="output format (default jsonl)"
    )
    merge.add_argument(
        "--compress",
        choices=("gzip", "zstd", "none"),
        help="compress the output; default: as its name says (.gz, .zst). Inputs may be compressed",
    )
    merge.add_argument(
        "--plan",
        help="the plan the shards used (file or s3://): checks that the inputs are one output of each "
        "of its shards, and gives the prefix for items lists",
    )
    merge.add_argument(
        "--manifest-only",
        action="store_true",
        help="with --plan: keep the shard outputs as they are and write a manifest of them (JSON: each "
        "file's key, size, records, key range, parts of the plan, MD5 and SHA-256), checked against the plan",
    )
    merge.add_argument("--prefix", help="items lists: the prefix the shards scanned (default: the plan's)")
    merge.add_argument("--group", choices=("file", "series", "study"), help="items lists: grouping")
    merge.add_argument("--study-depth", type=positive_int, help="items lists: study folder depth")
    add_connection_arguments(merge)

    diff = commands.add_parser(
        "diff",
        help="list objects added, removed and changed between two --state snapshots",
        description="Compare two snapshots written by 'scanner scan --state' and print JSON Lines.",
    )
    diff.add_argument("old", help="the earlier snapshot (path or s3://BUCKET/KEY)")
    diff.add_argument("new", help="the later snapshot (path or s3://BUCKET/KEY)")
    diff.add_argument("-o", "--output", help="output path, s3://BUCKET/KEY, or - (default)")
    add_connection_arguments(diff)


def shard_from_args(args: argparse.Namespace) -> Shard | None:
    index, count = os.environ.get("JOB_COMPLETION_INDEX"), os.environ.get("SCANNER_SHARD_COUNT")
    if not args.shard and (index is None or count is None):
        return None
    # start-up: plans (and their planning) load only for a sharded scan
    from scanner.listing.plan import Shard

    return Shard.parse(args.shard or f"{index}/{count}")


def sharded_from_args(
    args: argparse.Namespace, location: S3Location, connection: ConnectionConfig
) -> dict[str, Any]:
    """``ScanConfig``'s ``shard_ranges`` (shard INDEX's parts of the plan every shard shares), or
    with ``--share-work`` its ``shared_work`` (every part, shared at run time)."""
    shard = shard_from_args(args)
    if shard is None:
        if args.plan or args.create_plan:
            raise UsageError("--plan needs --shard INDEX/COUNT")
        if args.share_work:
            raise UsageError("--share-work needs --shard INDEX/COUNT and --plan")
        return {"shard_ranges": None}
    if args.share_work:
        check_shared_work(args)
    plan = _shared_plan(args, shard, location, connection)
    if not args.share_work:
        return {"shard_ranges": tuple(plan.parts_of(shard))}
    from scanner.config import SharedWork

    work = SharedWork(
        board=args.share_work,
        pod=shard.index,
        pods=shard.count,
        plan=args.plan,
        parts=tuple(plan.ranges),
        estimates=tuple(plan.estimated_keys),
    )
    return {"shard_ranges": None, "shared_work": work}


def check_shared_work(args: argparse.Namespace) -> None:
    """What ``--share-work`` cannot be combined with, found before any request."""
    refused = {
        "--unordered": "the pieces are merged by key",
        "--checkpoint": "a restarted pod resumes from the board",
        "--state": "a snapshot of one pod would hold part of the bucket",
        "--processes": "each pod lists its pieces in one process (more than 1 given); give it more pods",
    }
    given = {
        "--unordered": args.unordered,
        "--checkpoint": args.checkpoint,
        "--state": args.state,
        "--processes": isinstance(args.processes, int) and args.processes > 1,
    }
    for option, why in refused.items():
        if given[option]:
            raise UsageError(f"--share-work cannot be used with {option}: {why}")
    if args.output in (None, "-"):
        raise UsageError("--share-work needs an --output file or s3://BUCKET/KEY: the last pod merges there")
    board = args.share_work
    parent = os.path.dirname(os.path.abspath(board))
    if not board.startswith("s3://") and not os.path.isdir(parent):
        raise UsageError(f"--share-work {board!r}: its parent directory does not exist")


def _shared_plan(
    args: argparse.Namespace, shard: Shard, location: S3Location, connection: ConnectionConfig
) -> ShardPlanFile:
    """The plan every shard uses: read from --plan, or made there first with --create-plan."""
    # each subcommand imports what only it uses: `scanner scan` and --version load none of it
    import anyio

    from scanner.listing.plan import PLAN_WAIT, read_plan, shared_plan

    if not args.plan:
        # Cut points a shard chose on its own would be its own: shards that each cut the key
        # space where they see fit overlap or leave keys out, so there is no plan-less mode.
        raise UsageError(
            "--shard needs --plan: every shard must cut the key space at the same points. Make a plan "
            "with 'scanner plan URI --shards COUNT -o PLAN', or give --plan s3://BUCKET/KEY "
            "--create-plan to have the first shard make it"
        )
    if args.create_plan:
        if not args.plan.startswith("s3://"):
            raise UsageError("--create-plan needs an s3://BUCKET/KEY plan: the shards share it")
        # The first shard makes the plan; the others give it time to before they make one.
        wait = 0.0 if shard.index == 0 else PLAN_WAIT
        plan: ShardPlanFile
        plan, _ = anyio.run(
            functools.partial(shared_plan, wait=wait, parts_per_shard=args.parts_per_shard or 1),
            args.plan,
            location,
            connection,
            shard.count,
            backend="asyncio",
        )
        return plan
    found = anyio.run(read_plan, args.plan, location, connection, backend="asyncio")
    if found is None:
        raise UsageError(f"there is no shard plan at {args.plan} (add --create-plan to make one there)")
    return found


def run_shard_command(args: argparse.Namespace, connection_from_args: Callable[..., ConnectionConfig]) -> int:
    connection = connection_from_args(args)
    try:
        if args.command == "plan":
            return _plan(args, connection)
        if args.command == "diff":
            return _diff(args, connection)
        return _merge(args, connection)
    except KeyboardInterrupt:
        # Outputs are committed only at the end (an aborted upload leaves nothing).
        print("error: interrupted; no output was written", file=sys.stderr, flush=True)
        return 130


def _plan(args: argparse.Namespace, connection: ConnectionConfig) -> int:
    # each subcommand imports what only it uses: `scanner scan` and --version load none of it
    import anyio

    from scanner.listing.plan import make_plan, write_plan

    if not args.uri:
        raise UsageError("no S3 URI given (scanner plan s3://BUCKET[/PREFIX] --shards N)")
    if not args.shards:
        raise UsageError("--shards COUNT is required")
    location = parse_s3_uri(args.uri)
    if args.output not in (None, "-") and not args.output.startswith("s3://"):
        directory = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(directory):
            raise UsageError(f"output directory {directory!r} does not exist")
    plan: ShardPlanFile = anyio.run(
        make_plan,
        location,
        connection,
        args.shards,
        args.requests,
        args.parts_per_shard or 1,
        backend="asyncio",
    )
    if args.output in (None, "-"):
        sys.stdout.buffer.write(plan.to_json())
        sys.stdout.flush()
    else:
        anyio.run(write_plan, args.output, plan, connection, backend="asyncio")
    print(plan.describe(), file=sys.stderr, flush=True)
    return 0


def _diff(args: argparse.Namespace, connection: ConnectionConfig) -> int:
    # each subcommand imports what only it uses: `scanner scan` and --version load none of it
    import anyio

    from scanner.incremental.state import StateReader, diff_states, encode_diff
    from scanner.output.sinks import open_sink

    async def diff() -> None:
        async with (
            committing(open_sink(args.output or "-", connection)) as sink,
            StateReader(args.old, connection, missing_ok=False) as old,
            StateReader(args.new, connection, missing_ok=False) as new,
        ):
            batch = []
            async for entry in diff_states(old, new):
                batch.append(entry)
                if len(batch) == 1000:
                    await sink.write(encode_diff(batch))
                    batch = []
            if batch:
                await sink.write(encode_diff(batch))

    anyio.run(diff, backend="asyncio")
    return 0


def _merge(args: argparse.Namespace, connection: ConnectionConfig) -> int:
    # each subcommand imports what only it uses: `scanner scan` and --version load none of it
    import anyio

    from scanner.cli.checks import check_output, output_compression
    from scanner.grouping import GroupingSpec
    from scanner.listing.plan import read_plan
    from scanner.output.merge import merge_shards, write_records
    from scanner.output.spec import OutputSpec
    from scanner.output.writers import page_encoder
    from scanner.run.outputs import open_writer

    output = args.output or "-"
    check_output(output)
    plan = None
    if args.plan:
        plan = anyio.run(read_plan, args.plan, None, connection, backend="asyncio")
        if plan is None:
            raise UsageError(f"there is no shard plan at {args.plan}")
    if args.manifest_only:
        if plan is None:
            raise UsageError("--manifest-only needs the --plan the shards used")
        if args.format not in (None, "jsonl"):
            raise UsageError("--manifest-only lists the JSON Lines shard outputs: no --format")
        _write_manifest(args, connection, plan, output)
        return 0
    location = parse_s3_uri(plan.uri) if plan is not None else S3Location("merge", "")
    prefix = args.prefix if args.prefix is not None else location.prefix
    output_format: OutputFormat = args.format or "jsonl"
    grouping = None
    if output_format == "items":
        grouping = GroupingSpec(mode=args.group or "series", study_depth=args.study_depth or 1, prefix=prefix)
    config = ScanConfig(
        location=S3Location(location.bucket, prefix),
        connection=connection,
        output=output,
        output_format=output_format,
        compression=output_compression(output, args.compress, output_format),
        grouping=grouping,
    )
    encode = page_encoder(OutputSpec.of(config))
    ranges = plan.ranges if plan is not None else None
    owners = plan.owners if plan is not None else None

    async def merge() -> None:
        async with committing(open_writer(config)) as writer:
            await write_records(writer, encode, merge_shards(args.inputs, connection, ranges, owners))

    anyio.run(merge, backend="asyncio")
    return 0


def _write_manifest(
    args: argparse.Namespace, connection: ConnectionConfig, plan: ShardPlanFile, output: str
) -> None:
    # each subcommand imports what only it uses: `scanner scan` and --version load none of it
    import anyio

    from scanner.output.merge import describe_shards, parts_manifest
    from scanner.output.sinks import open_sink

    async def write() -> None:
        outputs = await describe_shards(args.inputs, connection, plan.ranges, plan.owners)
        async with committing(open_sink(output, connection)) as sink:
            await sink.write(parts_manifest(plan.uri, args.plan, outputs, plan.ranges, plan.owners))

    anyio.run(write, backend="asyncio")
