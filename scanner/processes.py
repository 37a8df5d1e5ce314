"""Scanning with several worker processes, merged back into one ordered output.

One Python process parses and encodes about 150-200k keys a second. Past that, ``--processes N``
splits the key space and lets N processes list it:

1. The parent lists the first two pages and discovers cut points as a single-process scan
   does, and groups the resulting ranges into N contiguous shards, in key order.
2. It forks one worker per shard before any event loop runs in the parent (forking keeps the
   already-imported modules, so a worker starts in milliseconds). Each worker runs the ordinary
   pipeline over its shard into a private file, and reports its counters on a pipe.
3. The parent writes the first page, then each shard's file in order, into the real sink, as
   the workers finish. Shards tile the key space in order, so concatenation is the merge.

A failed worker fails the scan with its own error and exit code; on a signal the parent stops
every worker, and the sink is aborted as usual, so the output is complete or absent.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import orjson

from scanner.config import ScanConfig
from scanner.errors import AccessError, BucketNotFoundError, EndpointError, ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.pipeline import PageHandler, ScanSummary, finish_summary, run_scan
from scanner.records import ObjectRecord
from scanner.writers import make_writer

_COPY_BLOCK = 1 << 20
T = TypeVar("T")
# Runs a coroutine function in a fresh event loop and returns its result, or None when a signal
# stopped it (the CLI's runner, which owns signal handling).
Runner = Callable[..., Any]


@dataclass
class ShardPlan:
    first_page: list[ObjectRecord]
    shards: list[list[KeyRange]]
    requests: int
    retries: int


def group_ranges(ranges: Sequence[KeyRange], count: int) -> list[list[KeyRange]]:
    """Up to ``count`` contiguous groups of about equally many ranges, in key order."""
    count = max(1, min(count, len(ranges)))
    return [
        list(ranges[index * len(ranges) // count : (index + 1) * len(ranges) // count])
        for index in range(count)
    ]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return hasattr(os, "fork")


@dataclass
class Worker:
    pid: int
    output_path: str
    report_fd: int


def scan_with_processes(config: ScanConfig, run: Runner) -> ScanSummary | None:
    """The whole multi-process scan; None when a signal stopped it."""
    import time

    started = time.perf_counter()
    plan: ShardPlan | None = run(plan_shards, config)
    if plan is None:
        return None
    workers = fork_workers(config, plan.shards)
    try:
        summary: ScanSummary | None = run(merge_shards, config, plan, workers)
    finally:
        stop_workers(workers)
    if summary is not None:
        summary.seconds = time.perf_counter() - started
    return summary


async def plan_shards(config: ScanConfig) -> ShardPlan:
    from scanner.enumerate import Enumerator
    from scanner.s3.client import S3PageSource

    async with S3PageSource(config.location, config.connection) as source:
        enumerator = Enumerator(
            source,
            KeyRange(config.location.prefix),
            parallelism=config.connection.concurrency,
            emit=_never,
            split_slot=lambda slot, parts: [slot] * len(parts),
            finish_slot=lambda slot, complete: None,
        )
        # One range per request slot of the whole scan (each worker gets its share of both):
        # more would cost a partial page per extra range (130 requests instead of 114 on 100k
        # DICOM keys with 2 workers), and heavy ranges split themselves anyway.
        parts = max(config.connection.concurrency, config.processes)
        # Two pages before planning: a bucket that small is listed then and there, without
        # discovery probes or worker processes that would cost more than the listing.
        first_page, ranges = await enumerator.plan(parts, lead_pages=2)
        requests, retries = source.stats.requests, source.stats.retries
    shards = group_ranges(ranges, config.processes) if ranges else []
    return ShardPlan(first_page, shards, requests, retries)


async def _never(slot: object, records: list[ObjectRecord]) -> None:
    raise AssertionError("planning emits nothing")


def fork_workers(config: ScanConfig, shards: list[list[KeyRange]]) -> list[Worker]:
    """One process per shard, each scanning into its own temporary file."""
    workers: list[Worker] = []
    for shard in shards:
        fd, path = tempfile.mkstemp(prefix=".scanner-shard-", suffix=".part", dir=config.temp_dir)
        os.close(fd)
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _worker_main(config, shard, path, write_end, len(shards))
        os.close(write_end)
        workers.append(Worker(pid, path, read_end))
    return workers


def _worker_main(config: ScanConfig, shard: list[KeyRange], path: str, report_fd: int, workers: int) -> None:
    """The forked worker: scan the shard, report on the pipe, exit. Never returns."""
    # The parent owns interruption and stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    report: dict[str, Any]
    try:
        summary = anyio.run(
            run_scan,
            config.for_worker(path, workers),
            None,
            shard,
            backend="asyncio",
            backend_options={"use_uvloop": True},
        )
        report = {
            "objects": summary.objects,
            "bytes": summary.bytes,
            "requests": summary.requests.requests,
            "retries": summary.requests.retries,
            "matched": summary.matched,
            "skipped": summary.skipped,
        }
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent, which decides
        from scanner.cli import first_failure

        failure = first_failure(exc)
        code = failure.exit_code if isinstance(failure, ScanError) else 1
        report = {"error": str(failure) or type(failure).__name__, "exit_code": code}
    try:
        os.write(report_fd, orjson.dumps(report))
        os.close(report_fd)
    finally:
        os._exit(code)


def _error_for_exit_code(message: str, code: int) -> ScanError:
    """A worker's failure, raised again in the parent as the error class of its exit code."""
    for kind in (UsageError, AccessError, BucketNotFoundError, EndpointError):
        if kind.exit_code == code:
            return kind(message)
    return ScanError(message)


async def merge_shards(config: ScanConfig, plan: ShardPlan, workers: list[Worker]) -> ScanSummary:
    """The first page, then each worker's output in key order, into the real sink."""
    summary = ScanSummary()
    summary.requests.requests = plan.requests
    summary.requests.retries = plan.retries
    writer = make_writer(config)
    await writer.open()
    try:
        handle = PageHandler(config, summary)
        first = handle(plan.first_page)
        handle.finish()
        if first:
            await writer.write(first)
        for worker in workers:
            report = await _collect(worker)
            summary.objects += report["objects"]
            summary.bytes += report["bytes"]
            summary.requests.requests += report["requests"]
            summary.requests.retries += report["retries"]
            if report["matched"] is not None:
                summary.matched = (summary.matched or 0) + report["matched"]
                summary.add_skipped(report["skipped"])
            await _copy_into(writer, worker.output_path)
        await writer.commit()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await writer.abort()
        raise
    finish_summary(summary, writer)
    return summary


async def _collect(worker: Worker) -> dict[str, Any]:
    _, status = await anyio.to_thread.run_sync(_wait, worker.pid, abandon_on_cancel=True)
    data = _read_all(worker.report_fd)
    worker.report_fd = -1
    report: dict[str, Any] = orjson.loads(data) if data else {}
    worker.pid = 0  # reaped: never signal that pid again
    if "error" in report:
        raise _error_for_exit_code(str(report["error"]), int(report.get("exit_code", 1)))
    if os.waitstatus_to_exitcode(status) != 0 or not report:
        raise ScanError(f"a worker process ended abnormally ({os.waitstatus_to_exitcode(status)})")
    return report


def _wait(pid: int) -> tuple[int, int]:
    return os.waitpid(pid, 0)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


async def _copy_into(writer: Any, path: str) -> None:
    with open(path, "rb") as handle:
        while block := handle.read(_COPY_BLOCK):
            await writer.write(block)
    os.unlink(path)


def stop_workers(workers: list[Worker]) -> None:
    """Stop workers still running, reap them, and remove their files (after any outcome)."""
    running = [worker for worker in workers if worker.pid]
    for worker in running:
        try:
            os.kill(worker.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for worker in running:
        try:
            os.waitpid(worker.pid, 0)
        except ChildProcessError:
            pass
        worker.pid = 0
    for worker in workers:
        if worker.report_fd >= 0:
            os.close(worker.report_fd)
            worker.report_fd = -1
        try:
            os.unlink(worker.output_path)
        except FileNotFoundError:
            pass
