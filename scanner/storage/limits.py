"""How many requests may be in flight: an adaptive (AIMD) limit that backs off on throttling.

S3 answers too fast a request rate with 503 SlowDown (429 on some compatible stores) and asks
clients to back off and ramp up again gradually. The limit starts at ``--concurrency``; a
throttled response halves it (at most once per ``cooldown``, a quarter second, so one burst of
SlowDowns from the requests already in flight counts once); every success adds ``1/limit``, so
the limit climbs back by about one per round of requests. ``history`` keeps (time, limit, in
flight) samples for tests and progress reports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, ParamSpec, TypeVar

import anyio

_HISTORY: Final = 4096
P = ParamSpec("P")
T = TypeVar("T")


class AdaptiveLimiter:
    def __init__(self, maximum: int, *, minimum: int = 1, cooldown: float = 0.25) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.limit = float(maximum)
        self.in_flight = 0
        self._cooldown = cooldown
        self._last_decrease = -cooldown
        self._changed = anyio.Event()
        self.history: deque[tuple[float, float, int]] = deque(maxlen=_HISTORY)

    async def __aenter__(self) -> AdaptiveLimiter:
        while self.in_flight >= int(self.limit):
            await self._changed.wait()
        self.in_flight += 1
        self._record()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1
        self._wake()

    def set_maximum(self, maximum: int) -> None:
        """A new ceiling: part of it lent to a worker process, or given back (climbed back to)."""
        self.maximum = max(1, maximum)
        self.minimum = min(self.minimum, self.maximum)
        self.limit = min(self.limit, float(self.maximum))

    def succeeded(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._wake()

    def throttled(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease >= self._cooldown:
            self._last_decrease = now
            self.limit = max(float(self.minimum), self.limit / 2)
            self._record()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _record(self) -> None:
        self.history.append((time.monotonic(), self.limit, self.in_flight))


def limited(
    attempt: Callable[P, Awaitable[T]],
    limiter: AdaptiveLimiter,
    is_throttling: Callable[[BaseException], bool],
) -> Callable[P, Awaitable[T]]:
    """``attempt`` behind ``limiter``: each call waits for a slot, and its outcome moves the
    limit (a success climbs, a throttling answer halves it).

    It wraps one attempt, not a call that retries inside: the limit must see every throttled
    answer, and a retry must queue for a slot like any other request.
    """

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        async with limiter:
            try:
                result = await attempt(*args, **kwargs)
            except BaseException as exc:
                if is_throttling(exc):
                    limiter.throttled()
                raise
        limiter.succeeded()
        return result

    return call


# The most requests in flight a scan takes: well past what keeps one process's parsing busy even
# at slow pages, beyond which requests only queue behind its CPU (and every worker process
# shares the same total). Figures: benchmarks/results/design-figures-2026-12-03.md.
MAX_CONCURRENCY: Final = 1024
# Each request in flight holds a connection, and each key range may hold a spill file: about two
# descriptors per unit of concurrency. The rest is for the interpreter, the output, the state,
# the checkpoint and the pipes of worker processes.
DESCRIPTORS_PER_REQUEST: Final = 2
RESERVED_DESCRIPTORS: Final = 64


def descriptor_limit() -> int | None:
    """The soft limit on open files (RLIMIT_NOFILE), or None where there is none to read."""
    try:
        # needed on one path only (start-up)
        import resource
    except ImportError:  # not on this system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def fit_to_descriptors(concurrency: int) -> tuple[int, int | None]:
    """``concurrency`` as the open-file limit allows it, and that limit when it lowered it.

    The soft limit is raised first, up to the hard one, as far as ``concurrency`` needs.
    """
    try:
        # needed on one path only (start-up)
        import resource
    except ImportError:
        return concurrency, None
    needed = RESERVED_DESCRIPTORS + DESCRIPTORS_PER_REQUEST * concurrency
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return concurrency, None
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft >= needed:
        return concurrency, None
    return max(1, (soft - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_REQUEST), soft


def out_of_descriptors(doing: str) -> str:
    """What to say when the process ran out of file descriptors (EMFILE) while ``doing``."""
    limit = descriptor_limit()
    shown = f" ({limit})" if limit is not None else ""
    return (
        f"out of file descriptors {doing}: the open-file limit{shown} is too low for this "
        "--concurrency; lower --concurrency or raise the limit (ulimit -n)"
    )
