"""The ``scanner plan`` and ``scanner merge`` commands, and ``scan --shard``'s options.

Only the CLI imports this module.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from scanner.config import ConnectionConfig, OutputFormat, S3Location, ScanConfig, parse_s3_uri
from scanner.errors import UsageError
from scanner.shards import Shard, ShardPlanFile, make_plan, merge_jsonl


def add_shard_commands(
    commands: Any,
    add_connection_arguments: Callable[[argparse.ArgumentParser], None],
    positive_int: Callable[[str], int],
) -> None:
    plan = commands.add_parser(
        "plan",
        help="sample the key space and write a shard plan for sharded scans",
        description=(
            "Sample s3://BUCKET[/PREFIX] (a few requests) and write a plan cutting it into COUNT "
            "shards of similar size, for 'scanner scan --shard INDEX/COUNT --plan PLAN'."
        ),
    )
    plan.add_argument("uri", nargs="?", help="s3://BUCKET[/PREFIX]")
    plan.add_argument("--shards", type=positive_int, required=False, help="number of shards")
    plan.add_argument("-o", "--output", help="plan file path (default: standard output)")
    add_connection_arguments(plan)

    merge = commands.add_parser(
        "merge",
        help="merge the JSON Lines outputs of shards into one ordered output",
        description=(
            "Merge key-ordered JSON Lines files (the outputs of 'scanner scan --shard') into one "
            "output in key order, as JSON Lines, CSV or an items list."
        ),
    )
    merge.add_argument("inputs", nargs="+", help="shard outputs (JSON Lines files)")
    merge.add_argument("-o", "--output", help="output path, s3://BUCKET/KEY, or - (default)")
    merge.add_argument(
        "-f", "--format", choices=("jsonl", "csv", "items"), help="output format (default jsonl)"
    )
    merge.add_argument("--prefix", default="", help="items lists: the prefix the shards scanned")
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
    if args.shard:
        return Shard.parse(args.shard)
    index, count = os.environ.get("JOB_COMPLETION_INDEX"), os.environ.get("SCANNER_SHARD_COUNT")
    if index is not None and count is not None:
        return Shard.parse(f"{index}/{count}")
    if args.plan:
        raise UsageError("--plan needs --shard INDEX/COUNT")
    return None


def load_plan(path: str | None, location: S3Location) -> ShardPlanFile | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read shard plan {path!r}: {exc.strerror}") from None
    plan = ShardPlanFile.from_json(data, location.prefix)
    if plan.uri != str(location):
        raise UsageError(f"the shard plan is for {plan.uri}, not {location}")
    return plan


def run_shard_command(args: argparse.Namespace, connection_from_args: Callable[..., ConnectionConfig]) -> int:
    import anyio

    connection = connection_from_args(args)
    if args.command == "plan":
        if not args.uri:
            raise UsageError("no S3 URI given (scanner plan s3://BUCKET[/PREFIX] --shards N)")
        if not args.shards:
            raise UsageError("--shards COUNT is required")
        location = parse_s3_uri(args.uri)
        plan = anyio.run(make_plan, location, connection, args.shards, backend="asyncio")
        _write_small(args.output, plan.to_json())
        return 0
    if args.command == "diff":
        return _diff(args, connection)
    return _merge(args, connection)


def _diff(args: argparse.Namespace, connection: ConnectionConfig) -> int:
    import anyio

    from scanner.sinks import open_sink
    from scanner.state import StateReader, diff_states, encode_diff

    async def diff() -> None:
        sink = open_sink(args.output or "-", connection)
        await sink.open()
        try:
            async with (
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
            await sink.commit()
        except BaseException:
            await sink.abort()
            raise

    anyio.run(diff, backend="asyncio")
    return 0


def _write_small(output: str | None, data: bytes) -> None:
    if output in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    assert output is not None
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory!r} does not exist")
    temporary = f"{output}.partial"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, output)


def _merge(args: argparse.Namespace, connection: ConnectionConfig) -> int:
    import anyio

    from scanner.items import GroupingSpec
    from scanner.writers import make_writer, page_encoder

    output_format: OutputFormat = args.format or "jsonl"
    grouping = None
    if output_format == "items":
        grouping = GroupingSpec(
            mode=args.group or "series",
            study_depth=args.study_depth or 1,
            prefix=args.prefix,
        )
    config = ScanConfig(
        location=S3Location("merge", args.prefix),
        connection=connection,
        output=args.output or "-",
        output_format=output_format,
        grouping=grouping,
    )
    encode = page_encoder(config)

    async def merge() -> None:
        writer = make_writer(config)
        await writer.open()
        try:
            page = []
            for record in merge_jsonl(args.inputs):
                page.append(record)
                if len(page) == 1000:
                    await writer.write(encode(page))
                    page = []
            if page:
                await writer.write(encode(page))
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    anyio.run(merge, backend="asyncio")
    return 0
