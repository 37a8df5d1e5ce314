"""The adaptive request limit: halves on throttling, climbs back one step per round."""

from __future__ import annotations

import anyio

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
