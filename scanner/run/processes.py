"""Scanning with several worker processes, merged back into one ordered output.

One Python process parses and encodes about 250-300k keys a second. Past that, ``--processes N``
splits the key space and lets N processes list it from the start (``--processes auto``, the
default, forks workers only while the scan is CPU-bound: ``scanner.run.offload``, which forks them
with ``fork_worker`` too):

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

import gc
import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from scanner.records import ObjectRecord
from scanner.run.outputs import open_writer

if TYPE_CHECKING:
    from scanner.run.pipeline import ScanSummary

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
    """The CPUs this process may use: its affinity, and its container's CPU limit if lower.

    A pod limited to 2 CPUs on a 64-CPU node sees all 64 in its affinity; forking 64 workers
    there would only make them wait for each other's CPU time.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit))) if limit is not None else cpus


def cgroup_cpu_limit() -> float | None:
    """The CPU limit (quota / period) of this process's cgroup, if it has one."""
    membership = _read_text(Path("/proc/self/cgroup"))
    for line in (membership or "").splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2: one unified hierarchy, "0::/path"
            for directory in (Path("/sys/fs/cgroup", relative), Path("/sys/fs/cgroup")):
                limit = cpu_limit_from_cpu_max(_read_text(directory / "cpu.max") or "")
                if limit is not None:
                    return limit
        elif "cpu" in controllers.split(","):  # cgroup v1: quota and period in two files
            for base in (Path("/sys/fs/cgroup/cpu,cpuacct"), Path("/sys/fs/cgroup/cpu")):
                for directory in (base / relative, base):
                    quota = _read_text(directory / "cpu.cfs_quota_us")
                    period = _read_text(directory / "cpu.cfs_period_us")
                    if quota is not None and period is not None:
                        return cpu_limit_from_cpu_max(f"{quota} {period}")
    return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cpu_limit_from_cpu_max(text: str) -> float | None:
    """``cpu.max`` ("200000 100000", or "max 100000" for none) as CPUs (2.0), or None."""
    fields = text.split()
    if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) <= 0:
        return None
    quota = fields[0]
    if quota == "max" or not quota.isdigit() or int(quota) <= 0:
        return None  # no limit ("max"; "-1" in cgroup v1)
    return int(quota) / int(fields[1])


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
    from scanner.listing.enumerate import Enumerator
    from scanner.storage.s3.client import S3PageSource

    async with S3PageSource(config.location, config.connection) as source:
        enumerator = Enumerator(
            source,
            KeyRange(config.location.prefix, config.start_after),
            parallelism=config.connection.concurrency,
            emit=_never,
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


async def _never(slot: object, records: Sequence[ObjectRecord]) -> None:
    raise AssertionError("planning emits nothing")


def fork_workers(config: ScanConfig, shards: list[list[KeyRange]]) -> list[Worker]:
    """One process per shard, each scanning into its own temporary file."""
    return [fork_worker(config, shard, len(shards)) for shard in shards]


def fork_worker(config: ScanConfig, ranges: list[KeyRange], workers: int) -> Worker:
    """A process that scans ``ranges`` into a temporary file of its own, as one of ``workers``."""
    fd, path = tempfile.mkstemp(prefix=".scanner-shard-", suffix=".part", dir=config.temp_dir)
    os.close(fd)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _worker_main(config, ranges, path, write_end, workers)
    os.close(write_end)
    return Worker(pid, path, read_end)


def _worker_main(config: ScanConfig, shard: list[KeyRange], path: str, report_fd: int, workers: int) -> None:
    """The forked worker: scan the shard, report on the pipe, exit. Never returns."""
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

    def scan() -> None:
        from scanner.run.pipeline import run_scan

        try:
            summary = anyio.run(
                run_scan,
                config.for_worker(path, workers),
                None,
                shard,
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
        thread = threading.Thread(target=scan, name="scanner-worker")
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


async def merge_shards(config: ScanConfig, plan: ShardPlan, workers: list[Worker]) -> ScanSummary:
    """The first page, then each worker's output in key order, into the real sink."""
    from scanner.run.pipeline import PageHandler, ScanSummary, finish_summary

    summary = ScanSummary()
    summary.requests.requests = plan.requests
    summary.requests.retries = plan.retries
    writer = open_writer(config)
    await writer.open()
    try:
        handle = PageHandler(config, summary)
        first = handle(plan.first_page)
        handle.finish()
        if first:
            await writer.write(first)
        for worker in workers:
            report = await collect(worker)
            summary.add_worker(report)
            await _copy_into(writer, worker.output_path)
        await writer.commit()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await writer.abort()
        raise
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
