"""``--processes auto``: ranges handed to worker processes while the scan is CPU-bound.

The gauge and the CPU-limit reading are pure and tested on their own; the hand-over runs against
real S3 servers, with ``busy_cpu_share=0`` so that every range with keys left goes to a worker
whatever the machine's load, and its output is compared byte for byte with a one-process scan.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.errors import EndpointError, first_failure
from scanner.filters import FilterSpec
from scanner.run.cpus import cpu_limit_from_cpu_max
from scanner.run.offload import CpuGauge
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary
from scanner.storage.s3.client import S3PageSource
from tests.conftest import S3Target, run_scanner
from tests.faultproxy import FaultProxy
from tests.keysets import flat_keys, nested_keys, utf8_sorted

# -- the gauge ---------------------------------------------------------------------------------


class FakeClocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def run(self, seconds: float, cpu_share: float) -> None:
        self.wall += seconds
        self.cpu += seconds * cpu_share


def gauge(clocks: FakeClocks, share: float = 0.85) -> CpuGauge:
    return CpuGauge(share, window=0.25, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)


def test_busy_after_two_busy_windows() -> None:
    clocks = FakeClocks()
    busy = gauge(clocks)
    assert not busy.busy()  # the first call starts measuring: start-up is not the scan
    clocks.run(0.3, 1.0)
    assert not busy.busy()
    clocks.run(0.1, 0.9)
    assert not busy.busy()  # mid-window: the last verdict stands
    clocks.run(0.2, 0.9)
    assert busy.busy()
    clocks.run(0.3, 0.2)
    assert not busy.busy()


def test_no_share_means_always_busy() -> None:
    assert CpuGauge(0.0).busy()


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30))
def test_busy_means_the_last_two_windows_were(shares: list[float]) -> None:
    clocks = FakeClocks()
    busy = gauge(clocks)
    busy.busy()
    verdicts = []
    for share in shares:
        clocks.run(0.25, share)
        verdicts.append(busy.busy())
    for index, verdict in enumerate(verdicts):
        expected = index >= 1 and shares[index] >= 0.85 and shares[index - 1] >= 0.85
        assert verdict == expected


# -- the container's CPU limit -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("200000 100000\n", 2.0), ("50000 100000", 0.5), ("max 100000", None), ("-1 100000", None), ("", None)],
)
def test_cpu_limit_from_cpu_max(text: str, cpus: float | None) -> None:
    assert cpu_limit_from_cpu_max(text) == cpus


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=10**7))
def test_cpu_limit_is_quota_over_period(quota: int, period: int) -> None:
    assert cpu_limit_from_cpu_max(f"{quota} {period}") == quota / period


# -- handing ranges over, against real servers ------------------------------------------------


def _config(bucket: str, out: Path, **options: Any) -> ScanConfig:
    connection = options.pop("connection", ConnectionConfig(concurrency=8))
    return ScanConfig(parse_s3_uri(f"s3://{bucket}"), connection, output=str(out), **options)


def _scan(config: ScanConfig) -> ScanSummary:
    summary: ScanSummary = anyio.run(run_scan, config)
    return summary


def _handing_over(config: ScanConfig, processes: int = 3) -> ScanConfig:
    from dataclasses import replace

    return replace(config, processes=processes, processes_on_demand=True, busy_cpu_share=0.0)


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_worker_ranges_take_their_place_in_the_output(
    s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    s3.use_in(monkeypatch)
    keys = nested_keys() if layout == "nested" else flat_keys()
    bucket = s3.shared_bucket(layout, keys)
    alone = _scan(_config(bucket, tmp_path / "alone.jsonl"))
    temp = tmp_path / "temp"
    temp.mkdir()
    shared = _scan(_handing_over(_config(bucket, tmp_path / "shared.jsonl", temp_dir=str(temp))))
    assert shared.enumeration.handed_over >= 1
    assert (tmp_path / "shared.jsonl").read_bytes() == (tmp_path / "alone.jsonl").read_bytes()
    assert shared.objects == alone.objects == len(keys)
    assert shared.bytes == alone.bytes
    assert list(temp.iterdir()) == []


def test_unordered_output_with_workers_has_every_key_once(
    s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.use_in(monkeypatch)
    keys = nested_keys()
    bucket = s3.shared_bucket("nested", keys)
    out = tmp_path / "out.jsonl"
    summary = _scan(_handing_over(_config(bucket, out, ordered=False)))
    assert summary.enumeration.handed_over >= 1
    import json

    got = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    assert sorted(got) == sorted(keys)
    assert len(got) == len(set(got))


def test_filters_and_items_with_workers(
    s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.use_in(monkeypatch)
    bucket = s3.shared_bucket("nested", nested_keys())
    from scanner.grouping import GroupingSpec

    options: dict[str, Any] = {
        "output_format": "items",
        "grouping": GroupingSpec("series"),
        "filters": FilterSpec(include=("*.dcm",)),
    }
    alone = _scan(_config(bucket, tmp_path / "alone.json", **options))
    shared = _scan(_handing_over(_config(bucket, tmp_path / "shared.json", **options)))
    assert shared.enumeration.handed_over >= 1
    assert (tmp_path / "shared.json").read_bytes() == (tmp_path / "alone.json").read_bytes()
    assert (shared.matched, shared.skipped, shared.tasks) == (alone.matched, alone.skipped, alone.tasks)


def _nested_bucket_and_places(
    s3: S3Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[str, Path, Path]:
    """The shared nested bucket, a temporary directory that must end empty, an output path."""
    s3.use_in(monkeypatch)
    temp = tmp_path / "temp"
    temp.mkdir()
    return s3.shared_bucket("nested", nested_keys()), temp, tmp_path / "out.jsonl"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_failed_worker_fails_the_scan_and_leaves_nothing(
    s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent lists from the server, its workers from an endpoint that refuses them."""
    bucket, temp, out = _nested_bucket_and_places(s3, monkeypatch, tmp_path)
    dead = ConnectionConfig(endpoint_url=f"http://127.0.0.1:{_closed_port()}", concurrency=8, max_attempts=1)
    config = _handing_over(_config(bucket, out, connection=dead, temp_dir=str(temp)))

    async def scan() -> None:
        async with S3PageSource(config.location, ConnectionConfig(concurrency=8)) as source:
            await run_scan(config, source)

    with pytest.raises(BaseException) as raised:  # noqa: PT011 - a task group's exception group
        anyio.run(scan)
    failure = first_failure(raised.value)
    assert isinstance(failure, EndpointError)
    assert "cannot connect" in str(failure)
    assert not out.exists()
    assert list(temp.iterdir()) == []
    assert _worker_children() == []


def test_a_cancelled_scan_stops_its_workers(
    s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers list through a proxy slow enough that they are still running when the scan stops."""
    bucket, temp, out = _nested_bucket_and_places(s3, monkeypatch, tmp_path)
    with FaultProxy(s3.endpoint_url, latency=5.0) as slow:
        through_proxy = ConnectionConfig(endpoint_url=slow.url, concurrency=8)
        config = _handing_over(_config(bucket, out, connection=through_proxy, temp_dir=str(temp)))
        summary = ScanSummary()

        async def scan() -> None:
            async with S3PageSource(config.location, ConnectionConfig(concurrency=8)) as source:
                with anyio.move_on_after(30):
                    async with anyio.create_task_group() as group:
                        group.start_soon(run_scan, config, source, None, summary)
                        while not summary.enumeration.handed_over:
                            await anyio.sleep(0.01)
                        await anyio.sleep(0.5)
                        group.cancel_scope.cancel()

        anyio.run(scan)
    assert summary.enumeration.handed_over >= 1
    assert not out.exists()
    assert list(temp.iterdir()) == []
    assert _worker_children() == []


def _worker_children() -> list[int]:
    """Processes forked from this one (same command line) that are still around."""
    own = Path("/proc/self/cmdline").read_bytes()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and (entry / "cmdline").read_bytes() == own:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


# -- the command line ----------------------------------------------------------------------------


def test_processes_option(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.shared_bucket("nested", nested_keys())
    outputs = []
    for value in ("auto", "1", "2"):
        out = tmp_path / f"out-{value}.jsonl"
        result = run_scanner(["scan", f"s3://{bucket}", "-o", str(out), "--processes", value], s3.env())
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert [line.split(b'"')[3].decode() for line in outputs[0].splitlines()] == utf8_sorted(nested_keys())
    result = run_scanner(["scan", f"s3://{bucket}", "--processes", "some"], s3.env())
    assert result.returncode == 2
    assert "or auto" in result.stderr
    assert "Traceback" not in result.stderr
