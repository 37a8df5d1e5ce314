"""Options for big buckets: ``--limit``, ``--start-after``, ``-v/--verbose``.

Kept apart from ``main`` so each stays readable; only the CLI imports this module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from scanner.config import S3Location
from scanner.errors import UsageError


def add_feature_arguments(scan: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    scan.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="write only the first N matching objects (in output order) and stop listing",
    )
    scan.add_argument(
        "--start-after",
        metavar="KEY",
        help="list only keys after KEY (a full key under the prefix, as S3's StartAfter)",
    )
    scan.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=None,
        help="debug events on standard error: strategy, what the server showed, retries "
        "(the same as --log-level debug)",
    )


def features_from_args(args: argparse.Namespace, location: S3Location, output_format: str) -> dict[str, Any]:
    """``ScanConfig``'s ``limit`` and ``start_after``, checked before any request."""
    if args.limit is not None:
        if output_format == "items":
            raise UsageError("--limit counts objects of JSON Lines or CSV, not tasks of an items list")
        if args.state:
            raise UsageError("--limit cannot be used with --state: the snapshot must hold every object")
        if args.checkpoint:
            raise UsageError("--limit cannot be used with --checkpoint: a limited scan is short")
        if args.shard:
            raise UsageError("--limit cannot be used with --shard: each shard would write N")
    after = args.start_after
    if after is not None:
        if not after:
            raise UsageError("--start-after needs a key")
        if not after.startswith(location.prefix):
            raise UsageError(
                f"--start-after {after!r} is not under the prefix {location.prefix!r}: give a full key "
                f"that starts with it"
            )
        if args.state:
            raise UsageError("--start-after cannot be used with --state: the snapshot must hold every object")
        if args.checkpoint:
            raise UsageError("--start-after cannot be used with --checkpoint")
        if args.shard:
            raise UsageError("--start-after cannot be used with --shard: the plan says where shards start")
    return {"limit": args.limit, "start_after": after}


def log_level_from_args(args: argparse.Namespace) -> str:
    """``--log-level``, or ``debug`` with ``-v``; the two may not disagree."""
    if args.verbose:
        if args.log_level not in (None, "debug"):
            raise UsageError(f"-v/--verbose means --log-level debug, not {args.log_level}")
        if args.quiet:
            raise UsageError("-v/--verbose and -q/--quiet contradict each other")
        return "debug"
    return str(args.log_level or "info")
