"""Adaptive concurrency against a real server: under sustained SlowDown the scanner lowers its
request rate, then raises it again gradually once the throttling stops."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import anyio
import pytest

from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.run.pipeline import run_scan
from scanner.storage.s3.client import S3PageSource
from tests.conftest import S3Target
from tests.faultproxy import FaultProxy
from tests.keysets import nested_keys, utf8_sorted

CONCURRENCY = 16


def test_throttling_lowers_then_restores_requests_in_flight(
    rgw_target: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = nested_keys()
    bucket = rgw_target.shared_bucket("nested", keys)
    out = tmp_path / "out.jsonl"
    # 40 ms a request makes requests in flight visible; SlowDown on half the requests from the
    # 3rd until the 40th has arrived, then none.
    with FaultProxy(
        rgw_target.endpoint_url,
        rate=0.5,
        kinds=["slowdown_503"],
        from_request=3,
        latency=0.04,
        credentials=(rgw_target.access_key, rgw_target.secret_key),
    ) as proxy:
        stop = threading.Event()

        def end_throttling() -> None:
            while not stop.is_set():
                if proxy.requests >= 40:
                    proxy.configure(rate=0.0)
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=end_throttling, daemon=True)
        watcher.start()
        rgw_target.use_in(monkeypatch)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        config = ScanConfig(
            parse_s3_uri(f"s3://{bucket}"), ConnectionConfig(concurrency=CONCURRENCY), output=str(out)
        )

        async def scan() -> list[tuple[float, float, int]]:
            async with S3PageSource(config.location, config.connection) as source:
                await run_scan(config, source)
                return list(source.limiter.history)

        history = anyio.run(scan)
        stop.set()
        faulted = proxy.faulted

    assert faulted > 10
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == utf8_sorted(keys)
    limits = [limit for _, limit, _ in history]
    in_flight = [flight for _, _, flight in history]
    assert max(in_flight) <= CONCURRENCY
    lowest = min(limits)
    assert lowest <= CONCURRENCY / 2, f"the limit only fell to {lowest}"
    assert lowest >= 1
    # Requests in flight fell with the limit while throttled (those already sent when it fell
    # still finish, so look at the ones that followed)...
    bottom = limits.index(lowest)
    following = sorted(in_flight[bottom + 1 : bottom + 11])
    assert following, "no request after the limit fell"
    assert following[len(following) // 2] <= int(lowest) + 1, following
    # ...and the climb back is gradual: never more than one request's worth at a time.
    climb = limits[bottom:]
    assert max(b - a for a, b in itertools.pairwise(climb)) <= 1.0
    assert limits[-1] > lowest, "the limit never rose again after the throttling stopped"
