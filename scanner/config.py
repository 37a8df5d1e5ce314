"""Scan configuration: one frozen value built by the CLI and passed down."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Literal

from scanner.errors import UsageError

if TYPE_CHECKING:
    from scanner.filters import FilterSpec
    from scanner.grouping import GroupingSpec
    from scanner.keyspace import KeyRange

OutputFormat = Literal["jsonl", "csv", "items", "parquet"]
# How an output's bytes are compressed (``scanner.output.compression``).
Compression = Literal["none", "gzip", "zstd"]
AddressingStyle = Literal["auto", "path", "virtual"]

# Enough requests in flight to keep one process encoding at S3's usual LIST latency, while each
# extra range costs at most one partly wasted page where it meets its neighbour (figures:
# benchmarks/results/design-figures-2026-12-03.md).
DEFAULT_CONCURRENCY: Final = 16
MAX_KEYS_PER_PAGE: Final = 1000

_BUCKET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")
_LEGACY_BUCKET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]{1,253}[A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_uri(uri: str) -> S3Location:
    """``s3://BUCKET[/PREFIX]`` to a location; anything else is a ``UsageError``."""
    if not uri.startswith("s3://"):
        raise UsageError(f"not an S3 URI: {uri!r} (expected s3://BUCKET[/PREFIX])")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"no bucket name in {uri!r} (expected s3://BUCKET[/PREFIX])")
    # Lower-case DNS names are the rule since 2018; older buckets may use the legacy set.
    if not (_BUCKET_NAME.fullmatch(bucket) or _LEGACY_BUCKET_NAME.fullmatch(bucket)):
        raise UsageError(f"invalid bucket name {bucket!r} in {uri!r}")
    if ".." in bucket:
        raise UsageError(f"invalid bucket name {bucket!r} in {uri!r}")
    return S3Location(bucket, prefix)


def parse_s3_object_uri(uri: str) -> S3Location:
    """``s3://BUCKET/KEY`` for an output object; the key must name an object, not a folder."""
    location = parse_s3_uri(uri)
    if not location.prefix or location.prefix.endswith("/"):
        raise UsageError(f"output {uri!r} must name an object (s3://BUCKET/KEY), not a folder")
    return location


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: AddressingStyle = "auto"
    no_sign_request: bool = False
    request_payer: bool = False
    ca_bundle: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 10


@dataclass(frozen=True, slots=True)
class SharedWork:
    """What a pod of a sharded scan with ``--share-work`` needs: where the pods meet (a
    directory or s3://BUCKET/PREFIX/), which pod it is, and the plan's parts."""

    board: str
    pod: int
    pods: int
    plan: str
    parts: tuple[KeyRange, ...]
    estimates: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanConfig:
    location: S3Location
    connection: ConnectionConfig
    output: str = "-"
    output_format: OutputFormat = "jsonl"
    compression: Compression = "none"
    ordered: bool = True
    # Bytes of finished-but-not-yet-writable output kept in memory before spilling to disk. A
    # worker process forked mid-scan has what the budget holds at that moment in its own RSS
    # too, so the budget is what keeps the largest process under the memory target (figures:
    # benchmarks/results/design-figures-2026-12-03.md). Spilled pages come back from the page
    # cache.
    memory_budget: int = 16 * 1024 * 1024
    # Past the budget, ranges behind the one being written spill to disk and list on. Without
    # ``spill`` they wait instead: the library API's reader sets the pace of the listing.
    spill: bool = True
    temp_dir: str | None = None
    # Processes that list: at most ``processes`` in all. With ``processes_on_demand`` (``--processes
    # auto``) the scan starts in one and forks workers only while it is CPU-bound, that is, while
    # it uses at least ``busy_cpu_share`` of a CPU (0: at every chance, for tests).
    processes: int = 1
    processes_on_demand: bool = False
    busy_cpu_share: float = 0.85
    filters: FilterSpec | None = None
    grouping: GroupingSpec | None = None
    legacy_items: bool = False
    max_tasks_per_file: int | None = None
    # A worker of a multi-process scan writes its encoded pages as they are, for the parent.
    worker: bool = False
    # With --shard: the ranges of the key space this scan lists (its parts of the plan), in
    # key order.
    shard_ranges: tuple[KeyRange, ...] | None = None
    # With --share-work: the pods share the plan's parts at run time (``scanner.run.sharing``).
    shared_work: SharedWork | None = None
    # Incremental runs: where the snapshot lives, and whether to emit only what changed.
    state: str | None = None
    changes_only: bool = False
    # With --changes-only: also a record for each object gone since the snapshot ("deleted": true).
    deletions: bool = False
    # Resumable runs: where progress is saved (a directory or s3://BUCKET/PREFIX), how often.
    checkpoint: str | None = None
    checkpoint_interval: float = 30.0
    # What the server does when it lists (``scanner.listing.dialect.PROFILES``); ``auto`` learns it.
    server_profile: str = "auto"
    # --limit: write the first N records (in output order) and stop listing.
    limit: int | None = None
    # --start-after: list only keys after this one (a key under the prefix).
    start_after: str | None = None

    def for_worker(self, output: str, workers: int) -> ScanConfig:
        """This scan as one of ``workers`` processes of a multi-process scan runs it.

        ``--concurrency`` bounds the requests of the whole scan, so the workers share it.
        """
        share = max(1, -(-self.connection.concurrency // workers))
        return replace(
            self,
            output=output,
            processes=1,
            processes_on_demand=False,
            worker=True,
            connection=replace(self.connection, concurrency=share),
        )
