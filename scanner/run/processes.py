"""Scanning with several worker processes, merged back into one ordered output.

One Python process parses and encodes about 250-300k keys a second. Past that, ``--processes N``
splits the key space and lets N processes list it from the start (``--processes auto``, the
default, forks workers only while the scan is CPU-bound: ``scanner.run.offload``, which forks them
with ``fork_worker`` too):

1. The parent lists the first two pages and discovers cut points as a single-process scan
   does, and groups the resulting ranges into N contiguous parts, in key order.
2. It forks one worker per part before any event loop runs in the parent (forking keeps the
   already-imported modules, so a worker starts in milliseconds). Each worker runs the ordinary
   pipeline over its part into a private file, and reports its counters on a pipe.
3. The parent writes the first page, then each part's file in order, into the real sink, as
   the workers finish. Parts tile the key space in order, so concatenation is the merge.

A failed worker fails the scan with its own error and exit code; on a signal the parent stops
every worker, and the sink is aborted as usual, so the output is complete or absent.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import orjson

from scanner.config import ScanConfig
from scanner.errors import (
    AccessError,
    BucketNotFoundError,
    EndpointError,
    ScanError,
    UsageError,
    first_failure,
)
from scanner.keyspace import KeyRange
from scanner.listing.enumerate import Enumerator
from scanner.output.chunks import block_reader, chunks_of_file
from scanner.output.spec import OutputSpec
from scanner.output.writers import Writer
from scanner.records import ObjectRecord
from scanner.run.outputs import open_writer
from scanner.run.summary import PageHandler, PageSpec, ScanSummary, finish_summary
from scanner.storage.base import committing
from scanner.storage.s3.client import S3PageSource

T = TypeVar("T")
# Runs a coroutine function in a fresh event loop and returns its result; a signal that stops
# it raises ``Interrupted`` (``scanner.run.entry.guarded_loop``).
Runner = Callable[..., Any]
# What a worker runs: the ordinary pipeline over its ranges (``scanner.run.pipeline.run_scan``,
# passed in because the pipeline itself forks workers).
ScanFn = Callable[[ScanConfig, None, Sequence[KeyRange]], Awaitable[ScanSummary]]


@dataclass
class WorkerSplit:
    """The key space cut for ``--processes N``: the first page, and each worker's ranges."""

    first_page: list[ObjectRecord]
    parts: list[list[KeyRange]]
    requests: int
    retries: int


def group_ranges(ranges: Sequence[KeyRange], count: int) -> list[list[KeyRange]]:
    """Up to ``count`` contiguous groups of about equally many ranges, in key order."""
    count = max(1, min(count, len(ranges)))
    return [
        list(ranges[index * len(ranges) // count : (index + 1) * len(ranges) // count])
        for index in range(count)
    ]


@dataclass
class Worker:
    pid: int
    output_path: str
    report_fd: int


def scan_with_processes(config: ScanConfig, run: Runner, scan: ScanFn, live: ScanSummary) -> ScanSummary:
    """The whole multi-process scan, counted into ``live``."""
    started = time.perf_counter()
    split: WorkerSplit = run(split_for_workers, config)
    workers = fork_workers(config, split.parts, scan)
    try:
        summary: ScanSummary = run(join_workers, config, split, workers, live)
    finally:
        stop_workers(workers)
    summary.seconds = time.perf_counter() - started
    return summary


async def split_for_workers(config: ScanConfig) -> WorkerSplit:
    async with S3PageSource(config.location, config.connection) as source:
        enumerator = Enumerator(
            source,
            KeyRange(config.location.prefix, config.start_after),
            parallelism=config.connection.concurrency,
            emit=_never,
        )
        # One range per request slot of the whole scan (each worker gets its share of both):
        # more would cost a partial page per extra range, and heavy ranges split themselves
        # anyway.
        slots = max(config.connection.concurrency, config.processes)
        # Two pages before planning: a bucket that small is listed then and there, without
        # discovery probes or worker processes that would cost more than the listing.
        first_page, ranges = await enumerator.plan(slots, lead_pages=2)
        requests, retries = source.stats.requests, source.stats.retries
    parts = group_ranges(ranges, config.processes) if ranges else []
    return WorkerSplit(first_page, parts, requests, retries)


async def _never(slot: object, records: Sequence[ObjectRecord]) -> None:
    raise AssertionError("planning emits nothing")


def fork_workers(config: ScanConfig, parts: list[list[KeyRange]], scan: ScanFn) -> list[Worker]:
    """One process per part, each scanning into its own temporary file."""
    return [fork_worker(config, part, len(parts), scan) for part in parts]


def fork_worker(config: ScanConfig, ranges: list[KeyRange], workers: int, scan: ScanFn) -> Worker:
    """A process that scans ``ranges`` into a temporary file of its own, as one of ``workers``."""
    fd, path = tempfile.mkstemp(prefix=".scanner-worker-", suffix=".part", dir=config.temp_dir)
    os.close(fd)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _worker_main(config, ranges, path, write_end, workers, scan)
    os.close(write_end)
    return Worker(pid, path, read_end)


def _worker_main(
    config: ScanConfig, ranges: list[KeyRange], path: str, report_fd: int, workers: int, scan: ScanFn
) -> None:
    """The forked worker: scan its ranges, report on the pipe, exit. Never returns."""
    if threading.current_thread() is threading.main_thread():  # signals are the main thread's
        # The parent owns interruption and stops its workers itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # A worker forked by a running scan shares its parent's event loop state: the loop's
        # signal wake-up descriptor (a signal here must not wake the parent), its epoll
        # instance and its transports.
        signal.set_wakeup_fd(-1)
    # The worker never touches the parent's loop: its scan runs in a new thread, with no running
    # loop and an empty context, and nothing it inherited is ever collected (a collected
    # transport would unregister its socket from the parent's epoll instance).
    gc.freeze()
    outcome: dict[str, Any] = {}

    def scan_ranges() -> None:
        try:
            summary = anyio.run(
                scan,
                config.for_worker(path, workers),
                None,
                ranges,
                backend="asyncio",
                backend_options={"use_uvloop": True},
            )
            outcome["report"] = {
                "objects": summary.objects,
                "bytes": summary.bytes,
                "requests": summary.requests.requests,
                "retries": summary.requests.retries,
                "matched": summary.matched,
                "skipped": summary.skipped,
            }
        except BaseException as exc:  # noqa: BLE001 - everything goes to the parent, which decides
            failure = first_failure(exc)
            code = failure.exit_code if isinstance(failure, ScanError) else 1
            outcome["report"] = {"error": str(failure) or type(failure).__name__, "exit_code": code}

    code = 1
    try:
        thread = threading.Thread(target=scan_ranges, name="scanner-worker")
        thread.start()
        thread.join()
        report = outcome.get("report", {"error": "the worker stopped without a result", "exit_code": 1})
        code = int(report.get("exit_code", 0))
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


async def join_workers(
    config: ScanConfig, split: WorkerSplit, workers: list[Worker], summary: ScanSummary
) -> ScanSummary:
    """The first page, then each worker's output in key order, into the real sink."""
    summary.requests.requests = split.requests
    summary.requests.retries = split.retries
    async with committing(open_writer(config)) as writer:
        handle = PageHandler(PageSpec.of(config), summary)
        first = handle(split.first_page)
        handle.finish()
        if first:
            await writer.write(first)
        for worker in workers:
            report = await collect(worker)
            summary.add_worker(report)
            await _copy_into(writer, worker.output_path, OutputSpec.of(config).carries_records)
    finish_summary(summary, writer)
    return summary


async def collect(worker: Worker) -> dict[str, Any]:
    """Wait for ``worker`` to end; its report, or its failure raised as the error it was."""
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


async def _copy_into(writer: Writer, path: str, records: bool) -> None:
    with open(path, "rb") as handle:
        for chunk in chunks_of_file(handle, block_reader(records)):
            await writer.write(chunk)
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
