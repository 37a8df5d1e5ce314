"""The one entry every way of running a scan goes through: ``run(config) -> ScanSummary``.

How a scan runs is a ``Strategy`` chosen from its config, once:

- ``OneProcess``: the whole prefix in this process (forking workers on demand while it is
  CPU-bound, ``scanner.run.offload``);
- ``WorkerProcesses``: ``--processes N`` workers from the start (``scanner.run.processes``);
- ``ShardOfPlan``: one shard of a shared plan (``--shard i/n --plan``);
- ``SharedPieces``: one pod of a sharded scan whose pods share the plan's parts while they run
  (``--share-work``, ``scanner.run.sharing``);
- ``Resume``: a scan journaled to ``--checkpoint``, resumed from it when one is there;
- ``Incremental``: a scan that also writes the ``--state`` snapshot (and with ``--changes-only``
  emits only changes).

Every strategy runs its event loops through ``guarded_loop``: one task group at the top owns the
work, the signal watcher and whatever the caller watches with (the CLI's progress line), and a
SIGINT or SIGTERM cancels it all and surfaces as ``Interrupted`` (or ``Terminated``).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from scanner.config import ScanConfig
from scanner.errors import stopped_by
from scanner.run.cpus import can_fork
from scanner.run.pipeline import run_scan
from scanner.run.processes import Runner, scan_with_processes
from scanner.run.summary import ScanSummary

# A task that runs beside the scan until it ends (e.g. a progress display); it is cancelled then.
Watcher = Callable[[], Coroutine[Any, Any, None]]


def guarded_loop(watchers: Sequence[Watcher] = ()) -> Runner:
    """A ``Runner``: ``function(*args)`` in a fresh event loop, with signals turned into errors."""

    def run_in_loop(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        received: list[int] = []

        async def guarded() -> Any:
            result: list[Any] = []
            async with anyio.create_task_group() as group:

                async def watch_signals() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for signum in signals:
                            received.append(signum)
                            group.cancel_scope.cancel()
                            return

                async def work() -> None:
                    result.append(await function(*args))
                    group.cancel_scope.cancel()

                group.start_soon(watch_signals)
                for watcher in watchers:
                    group.start_soon(watcher)
                group.start_soon(work)
            return result[0] if result else None

        try:
            value = anyio.run(guarded, backend="asyncio", backend_options={"use_uvloop": True})
        except KeyboardInterrupt:
            received.append(signal.SIGINT)
        if received:
            raise stopped_by(received[0])
        return value

    return run_in_loop


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, config: ScanConfig, loop: Runner, live: ScanSummary) -> ScanSummary: ...


@dataclass(frozen=True)
class OneProcess:
    name: str = "one process"

    def __call__(self, config: ScanConfig, loop: Runner, live: ScanSummary) -> ScanSummary:
        summary: ScanSummary = loop(run_scan, config, None, None, live)
        return summary


@dataclass(frozen=True)
class Resume(OneProcess):
    """A checkpointed scan: one process, one ordered output journaled as it goes."""

    name: str = "resumable"


@dataclass(frozen=True)
class Incremental(OneProcess):
    """One process whose writer also keeps the snapshot (``scanner.run.outputs``)."""

    name: str = "incremental"


@dataclass(frozen=True)
class ShardOfPlan:
    name: str = "shard of a plan"

    def __call__(self, config: ScanConfig, loop: Runner, live: ScanSummary) -> ScanSummary:
        assert config.shard_ranges is not None
        summary: ScanSummary = loop(run_scan, config, None, list(config.shard_ranges), live)
        return summary


@dataclass(frozen=True)
class SharedPieces:
    name: str = "pod of a shared scan"

    def __call__(self, config: ScanConfig, loop: Runner, live: ScanSummary) -> ScanSummary:
        # Start-up: only a shared scan loads the board and the merge.
        from scanner.run.sharing import share_work

        summary: ScanSummary = loop(share_work, config, live)
        return summary


@dataclass(frozen=True)
class WorkerProcesses:
    name: str = "worker processes"

    def __call__(self, config: ScanConfig, loop: Runner, live: ScanSummary) -> ScanSummary:
        return scan_with_processes(config, loop, run_scan, live)


def strategy_for(config: ScanConfig) -> Strategy:
    """How ``config`` runs. A shard, a checkpoint and a snapshot each need one ordered process."""
    if config.shared_work is not None:
        return SharedPieces()
    if config.shard_ranges is not None:
        return ShardOfPlan()
    if config.checkpoint is not None:
        return Resume()
    if config.processes > 1 and not config.processes_on_demand and can_fork():
        return WorkerProcesses()  # with --state too: the parent's writer keeps the snapshot
    if config.state is not None:
        return Incremental()
    return OneProcess()


def run(
    config: ScanConfig, *, live: ScanSummary | None = None, watchers: Sequence[Watcher] = ()
) -> ScanSummary:
    """Scan as ``config`` says; ``live`` is filled in as it goes. Raises ``ScanError``s.

    The output is complete or absent: a failure or a signal (``Interrupted``) aborts it.
    """
    strategy = strategy_for(config)
    return strategy(config, guarded_loop(watchers), live if live is not None else ScanSummary())
