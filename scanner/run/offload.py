"""Handing ranges of a running scan to worker processes while this one is CPU-bound.

``--processes auto`` (the default) starts every scan in one process. While the server or the
network is what limits a scan, more processes only add their own start-up and CPU time, and on a
machine shared with the S3 server they take CPU time the server needs (measured: 2 processes
10-25% slower than one on a 2-CPU machine running Ceph RGW). When the process itself becomes the
limit, busy on a CPU most of the time over the last half second, the next range with plenty left
to list (an estimated 50 pages or more) is handed whole to a forked worker process, up to
``processes - 1`` workers at a time. The worker lists that range into a file of its own (with its
own share of ``--concurrency``, which the parent gives up meanwhile), and the file takes the
range's place in the output once the worker is done.

Workers are forked from the running scan, so they start with everything imported and configured,
in milliseconds; ``scanner.run.processes`` runs them. A worker that fails fails the scan with its own
error; whatever happens, every worker is stopped and its file removed.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import IO, Any, Final

import anyio
from anyio.abc import TaskGroup

from scanner.config import MAX_KEYS_PER_PAGE, ScanConfig
from scanner.keyspace import KeyRange
from scanner.run.cpus import can_fork
from scanner.run.processes import ScanFn, Worker, collect, fork_worker, stop_workers
from scanner.storage.limits import AdaptiveLimiter

# A worker costs a fork, its own S3 client and a partial page where its range ends: worth it for
# a range with this many keys left, not for the last pages of one.
_HAND_OVER_MIN_KEYS: Final = 50 * MAX_KEYS_PER_PAGE
_WINDOW_SECONDS: Final = 0.25
_BUSY_WINDOWS: Final = 2

# Puts a finished worker's output file where its range belongs in the output.
DeliverFn = Callable[[IO[bytes], object], Awaitable[None]]


class CpuGauge:
    """Whether this process used at least ``share`` of a CPU in each of its last two windows."""

    def __init__(
        self,
        share: float,
        window: float = _WINDOW_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._share = share
        self._window = window
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._wall: float | None = None
        self._cpu = 0.0
        self._streak = 0
        self._busy = False

    def busy(self) -> bool:
        if self._share <= 0:
            return True
        now = self._clock()
        if self._wall is None:
            # The first call starts the first window: start-up before it is not the scan.
            self._wall, self._cpu = now, self._cpu_clock()
            return False
        elapsed = now - self._wall
        if elapsed < self._window:
            return self._busy
        cpu = self._cpu_clock()
        used = (cpu - self._cpu) / elapsed
        self._streak = self._streak + 1 if used >= self._share else 0
        self._busy = self._streak >= _BUSY_WINDOWS
        self._wall, self._cpu = now, cpu
        return self._busy


class Offloader:
    """Decides when a range goes to a worker process, runs the workers, delivers their output."""

    def __init__(
        self,
        config: ScanConfig,
        group: TaskGroup,
        deliver: DeliverFn,
        limiter: AdaptiveLimiter | None,
        on_worker_done: Callable[[dict[str, Any]], None],
        scan: ScanFn,
    ) -> None:
        self._config = config
        self._scan = scan
        self._group = group
        self._deliver = deliver
        self._limiter = limiter
        self._on_worker_done = on_worker_done
        self._gauge = CpuGauge(config.busy_cpu_share)
        self._most = config.processes - 1
        self._min_keys = _HAND_OVER_MIN_KEYS if config.busy_cpu_share > 0 else 0
        self._share = max(1, -(-config.connection.concurrency // config.processes))
        self._running = 0
        self._own_requests = limiter.maximum if limiter is not None else 0
        self.workers: list[Worker] = []
        self.files: list[IO[bytes]] = []

    def wants(self, remaining_keys: float) -> bool:
        """Whether a range with about ``remaining_keys`` left should go to a worker now."""
        return self._running < self._most and remaining_keys >= self._min_keys and self._gauge.busy()

    def take(self, key_range: KeyRange, slot: object) -> None:
        """Fork a worker that lists ``key_range``; its output goes to ``slot`` when it is done."""
        worker = fork_worker(self._config, [key_range], self._config.processes, self._scan)
        self.workers.append(worker)
        self._running += 1
        self._lend_concurrency()
        self._group.start_soon(self._finish, worker, slot)

    async def _finish(self, worker: Worker, slot: object) -> None:
        try:
            report = await collect(worker)
        finally:
            self._running -= 1
            self._lend_concurrency()
        self._on_worker_done(report)
        file = open(worker.output_path, "rb")  # noqa: SIM115 - closed when the scan ends
        self.files.append(file)
        os.unlink(worker.output_path)
        await self._deliver(file, slot)

    def _lend_concurrency(self) -> None:
        """The parent's own request limit gives up each running worker's share."""
        if self._limiter is not None:
            self._limiter.set_maximum(self._own_requests - self._running * self._share)


def offloads(config: ScanConfig) -> bool:
    return config.processes > 1 and config.processes_on_demand and can_fork() and config.checkpoint is None


@asynccontextmanager
async def offloading(
    config: ScanConfig,
    deliver: DeliverFn,
    limiter: AdaptiveLimiter | None,
    on_worker_done: Callable[[dict[str, Any]], None],
    scan: ScanFn,
) -> AsyncIterator[Offloader | None]:
    """An ``Offloader`` for the scan in the block (None when it runs in one process only).

    Leaving the block waits for the workers still running; a failure stops them. Either way
    their files are gone afterwards.
    """
    if not offloads(config):
        yield None
        return
    offloader: Offloader | None = None
    try:
        async with anyio.create_task_group() as group:
            offloader = Offloader(config, group, deliver, limiter, on_worker_done, scan)
            yield offloader
    finally:
        if offloader is not None:
            stop_workers(offloader.workers)
            for file in offloader.files:
                file.close()
