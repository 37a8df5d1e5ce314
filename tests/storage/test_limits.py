"""The adaptive request limit: halves on throttling, climbs back one step per round."""

from __future__ import annotations

import anyio
import pytest

from scanner.storage.limits import AdaptiveLimiter


def test_throttling_halves_and_success_recovers() -> None:
    limiter = AdaptiveLimiter(16, cooldown=0.0)
    limiter.throttled()
    assert limiter.limit == 8
    limiter.throttled()
    limiter.throttled()
    assert limiter.limit == 2
    for _ in range(200):
        limiter.succeeded()
    assert limiter.limit == 16


def test_one_burst_counts_once_within_the_cooldown() -> None:
    limiter = AdaptiveLimiter(16, cooldown=60.0)
    for _ in range(10):
        limiter.throttled()
    assert limiter.limit == 8


def test_never_more_in_flight_than_the_limit() -> None:
    limiter = AdaptiveLimiter(8, cooldown=0.0)
    peak = 0

    async def request() -> None:
        nonlocal peak
        async with limiter:
            peak = max(peak, limiter.in_flight)
            assert limiter.in_flight <= int(limiter.limit) or limiter.in_flight <= 8
            await anyio.sleep(0.001)

    async def main() -> None:
        limiter.throttled()
        limiter.throttled()  # limit 2
        async with anyio.create_task_group() as group:
            for _ in range(40):
                group.start_soon(request)

    anyio.run(main)
    assert peak == 2


def test_a_lent_share_of_the_ceiling_comes_back_by_climbing() -> None:
    limiter = AdaptiveLimiter(16)
    limiter.set_maximum(8)  # a worker process borrows half
    assert (limiter.maximum, limiter.limit) == (8, 8)
    limiter.set_maximum(16)
    assert limiter.limit == 8
    for _ in range(200):
        limiter.succeeded()
    assert limiter.limit == 16
    limiter.set_maximum(0)
    assert limiter.maximum == limiter.limit == 1


class _Throttled(Exception):
    pass


def test_limited_wraps_one_attempt_and_feeds_its_outcome_back() -> None:
    from scanner.storage.limits import limited

    limiter = AdaptiveLimiter(8, cooldown=0.0)
    seen_in_flight: list[int] = []

    async def attempt(fail: bool) -> str:
        seen_in_flight.append(limiter.in_flight)
        if fail:
            raise _Throttled
        return "page"

    call = limited(attempt, limiter, lambda exc: isinstance(exc, _Throttled))

    async def run() -> None:
        with pytest.raises(_Throttled):
            await call(True)
        assert limiter.limit == 4
        assert await call(False) == "page"
        assert limiter.limit == 4.25
        with pytest.raises(ValueError, match="not throttling"):
            await limited(_other_failure, limiter, lambda exc: isinstance(exc, _Throttled))()
        assert limiter.limit == 4.25

    anyio.run(run)
    assert seen_in_flight == [1, 1]
    assert limiter.in_flight == 0


async def _other_failure() -> None:
    raise ValueError("not throttling")
