"""Faults between the scanner and a real S3 server: exact output or a clean failure, and no leaks.

Every scan here goes through ``tests.faultproxy`` to moto or Ceph RGW. A run under transient
faults must print exactly the bucket's keys, in order, count its retries in the summary and end
within ``RUN_BOUND`` seconds; a run whose faults outlast ``--max-attempts`` must exit 1 with one
``error:`` line naming the key range and the last error, and leave nothing at the output path
(``test_failed_worker_leaves_no_temporary_file`` checks ``--temp-dir`` too, where it can be made
deterministic: one worker fails while the other is still listing).

Bucket sizes: RGW lists the shared 20k-key bucket in about 3 s, so every RGW case uses it. moto
answers a page in about 0.25 s, more the larger the bucket, so its per-kind cases use 5k keys
and only the 20 % mix runs on its 20k-key bucket.

Numbers each test records (``record_property``; see them with ``-o junit_family=legacy
--junitxml=FILE``): ``faulted``
(requests the proxy damaged), ``retries`` (from the summary line), ``seconds`` and ``result``.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.errors import ScanError, first_failure
from scanner.run.pipeline import run_scan
from tests.conftest import REPO_ROOT, S3Target
from tests.faultproxy import TRANSIENT_KINDS, FaultProxy, Request
from tests.keysets import nested_keys, utf8_sorted

# Every scan below ends (exact or failed) within this many seconds, or the test fails.
RUN_BOUND = 120.0
FAULT_RATE = 0.2
MOTO_SMALL = 5_000
FULL = 20_000

RecordProperty = Callable[[str, object], None]

# Recognisable credentials for the leak test (the AWS documentation's example key pair).
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENx9Lw2ZXRoZXJ0b2tlbi1mb3ItdGVzdHMtb25seQ=="

_SUMMARY = re.compile(r"scanned ([\d,]+) objects?.*; ([\d,]+) requests?, ([\d,]+) retr(?:y|ies)")
_SIGNATURE_SHAPED = re.compile(r"\b[0-9a-f]{64}\b")


@dataclass
class Run:
    returncode: int | None  # None: still running at the bound, so killed
    stdout: str
    stderr: str
    seconds: float

    @property
    def retries(self) -> int:
        match = _SUMMARY.search(self.stderr)
        assert match is not None, f"no summary line in {self.stderr!r}"
        return int(match.group(3).replace(",", ""))

    @property
    def requests(self) -> int:
        match = _SUMMARY.search(self.stderr)
        assert match is not None, f"no summary line in {self.stderr!r}"
        return int(match.group(2).replace(",", ""))


@dataclass
class Places:
    """Where a scan writes: its output file, inside a directory that must end up empty on failure."""

    out: Path
    temp: Path

    @classmethod
    def under(cls, tmp_path: Path) -> Places:
        (tmp_path / "out").mkdir(parents=True)
        (tmp_path / "temp").mkdir(parents=True)
        return cls(tmp_path / "out" / "keys.jsonl", tmp_path / "temp")

    def args(self) -> list[str]:
        return ["-o", str(self.out), "--temp-dir", str(self.temp)]

    def assert_no_output(self) -> None:
        assert os.listdir(self.out.parent) == [], f"left at the output path: {os.listdir(self.out.parent)}"

    def assert_no_temporary_file(self) -> None:
        assert os.listdir(self.temp) == [], f"left in --temp-dir: {os.listdir(self.temp)}"


def run_bounded(
    args: list[str],
    env: dict[str, str],
    bound: float = RUN_BOUND,
    stop_when: Callable[[], bool] | None = None,
) -> Run:
    """``python -m scanner ARGS``, killed with all its worker processes at ``bound`` seconds
    (or as soon as ``stop_when()`` says it is looping)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "scanner", *args],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    while True:
        try:
            stdout, stderr = process.communicate(timeout=0.2)
        except subprocess.TimeoutExpired:
            if time.monotonic() - started < bound and not (stop_when and stop_when()):
                continue
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return Run(None, stdout, stderr, time.monotonic() - started)
        return Run(process.returncode, stdout, stderr, time.monotonic() - started)


def bucket_of(s3: S3Target, size: int | None = None) -> tuple[str, list[str]]:
    """The shared nested bucket: 20k keys on RGW, ``MOTO_SMALL`` on moto unless ``size`` says."""
    size = size or (FULL if s3.kind == "rgw" else MOTO_SMALL)
    label = "nested" if size == FULL else f"nested-{size}"
    keys = nested_keys(size)
    return s3.shared_bucket(label, keys), utf8_sorted(keys)


@contextmanager
def proxy_to(s3: S3Target, **options: Any) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint_url, credentials=(s3.access_key, s3.secret_key), **options) as proxy:
        yield proxy


def scan_through(
    proxy: FaultProxy,
    env: dict[str, str],
    bucket: str,
    places: Places,
    *extra: str,
    bound: float = RUN_BOUND,
    stop_when: Callable[[], bool] | None = None,
) -> Run:
    return run_bounded(
        ["scan", f"s3://{bucket}", "--endpoint-url", proxy.url, *places.args(), *extra],
        {**env, "AWS_ENDPOINT_URL": proxy.url},
        bound,
        stop_when,
    )


def keys_in(path: Path) -> list[str]:
    return [orjson.loads(line)["key"] for line in path.read_bytes().splitlines()]


def difference(keys: list[str], expected: list[str]) -> str:
    """What is wrong with ``keys`` (empty when they are exactly ``expected``)."""
    if keys == expected:
        return ""
    duplicates = [key for key, count in Counter(keys).items() if count > 1]
    missing = sorted(set(expected) - set(keys))
    unexpected = sorted(set(keys) - set(expected))
    out_of_order = sum(1 for a, b in itertools.pairwise(keys) if a.encode() >= b.encode())
    return (
        f"{len(keys)} keys listed, {len(expected)} in the bucket: {len(missing)} missing "
        f"{missing[:3]}, {len(duplicates)} duplicated {duplicates[:3]}, {len(unexpected)} unexpected "
        f"{unexpected[:3]}, {out_of_order} out of order"
    )


def assert_exact(keys: list[str], expected: list[str]) -> None:
    wrong = difference(keys, expected)
    assert not wrong, wrong


def outcome(run: Run, places: Places, expected: list[str]) -> str:
    """``exact``, what is wrong with a successful run's output, or the failed run's stderr."""
    if run.returncode is None:
        return f"killed after {run.seconds:.0f} s"
    if run.returncode != 0:
        return f"exit {run.returncode}: {run.stderr.strip()}"
    return difference(keys_in(places.out), expected) or "exact"


def assert_ok_and_exact(run: Run, places: Places, expected: list[str]) -> None:
    assert run.returncode is not None, f"still running after {RUN_BOUND} s: {run.stderr[-2000:]}"
    assert run.returncode == 0, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    assert_exact(keys_in(places.out), expected)
    assert run.seconds < RUN_BOUND


def assert_clean_failure(run: Run, places: Places, code: int, *fragments: str) -> str:
    assert run.returncode is not None, f"still running after the bound: {run.stderr[-2000:]}"
    assert run.returncode == code, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    places.assert_no_output()
    return lines[0]


def record(record_property: RecordProperty, proxy: FaultProxy, run: Run, result: str) -> None:
    record_property("faults", dict(proxy.faults))
    record_property("faulted", proxy.faulted)
    record_property("proxy_requests", proxy.requests)
    record_property("seconds", round(run.seconds, 1))
    record_property("result", result)
    match = _SUMMARY.search(run.stderr)
    if match:
        record_property("retries", int(match.group(3).replace(",", "")))


# -- transient faults: the output is exact ----------------------------------------------------


@pytest.mark.parametrize("kind", TRANSIENT_KINDS)
def test_transient_fault_kind(
    s3: S3Target, kind: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    bucket, expected = bucket_of(s3)
    places = Places.under(tmp_path)
    seed = TRANSIENT_KINDS.index(kind)
    # Random faults, and a few placed mid-scan for certain: a one-process scan of moto's small
    # bucket makes about 15 requests, too few for a 20% rate to be sure to hit every kind.
    certain = dict.fromkeys((4, 5, 8, 11), kind)
    with proxy_to(s3, rate=FAULT_RATE, kinds=[kind], seed=seed, schedule=certain) as proxy:
        run = scan_through(proxy, s3.env(), bucket, places)
    record(record_property, proxy, run, outcome(run, places, expected))
    assert proxy.faults[kind] > 0, proxy.counts()
    assert_ok_and_exact(run, places, expected)
    # Every fault costs the scanner one attempt, except that aiohttp silently resends a request
    # once when a reused keep-alive connection drops before the response (RFC 9112 9.3.1).
    assert 0 < run.retries <= proxy.faulted, (run.retries, proxy.counts())
    assert run.requests <= proxy.requests


def test_fault_mix(s3: S3Target, tmp_path: Path, record_property: RecordProperty) -> None:
    bucket, expected = bucket_of(s3, FULL)
    places = Places.under(tmp_path)
    with proxy_to(s3, rate=FAULT_RATE, kinds=TRANSIENT_KINDS, seed=20) as proxy:
        run = scan_through(proxy, s3.env(), bucket, places)
    record(record_property, proxy, run, outcome(run, places, expected))
    record_property("counts", proxy.counts())
    assert len(proxy.faults) >= 4, proxy.counts()
    assert_ok_and_exact(run, places, expected)
    assert 0 < run.retries <= proxy.faulted, (run.retries, proxy.counts())


@pytest.mark.parametrize(
    ("request_number", "stage"), [(1, "planning (first page)"), (10, "a worker's range")]
)
def test_every_retry_is_in_the_summary(
    rgw_target: S3Target, request_number: int, stage: str, tmp_path: Path
) -> None:
    """One SlowDown, on one request: the summary says 1 retry, whichever stage met it."""
    bucket, expected = bucket_of(rgw_target)
    places = Places.under(tmp_path)
    with proxy_to(rgw_target, schedule={request_number: "slowdown_503"}) as proxy:
        run = scan_through(proxy, rgw_target.env(), bucket, places, "--processes", "2")
    assert_ok_and_exact(run, places, expected)
    assert proxy.faulted == 1, proxy.counts()
    assert run.retries == 1, f"a SlowDown during {stage}: {run.stderr.strip()}"
    assert run.requests == proxy.requests, (run.stderr.strip(), proxy.counts())


def test_read_timeout(
    s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property: RecordProperty
) -> None:
    """Responses slower than the read timeout are retried (in-process: no CLI option sets it)."""
    bucket, expected = bucket_of(s3)
    s3.use_in(monkeypatch)
    out = tmp_path / "keys.jsonl"
    with proxy_to(s3, rate=FAULT_RATE, kinds=["slow"], seed=3, stall=3.0) as proxy:
        config = ScanConfig(
            location=parse_s3_uri(f"s3://{bucket}"),
            connection=ConnectionConfig(endpoint_url=proxy.url, region="us-east-1", read_timeout=1.0),
            output=str(out),
            temp_dir=str(tmp_path),
        )
        started = time.monotonic()
        summary = anyio.run(run_scan, config)
        seconds = time.monotonic() - started
    record_property("faults", dict(proxy.faults))
    record_property("retries", summary.requests.retries)
    record_property("seconds", round(seconds, 1))
    assert proxy.faults["slow"] > 0, proxy.counts()
    assert_exact(keys_in(out), expected)
    # Every stalled response is retried; a forwarded page that itself takes longer than the
    # read timeout on a loaded machine is retried too, so the count may be higher, never lower.
    assert summary.requests.retries >= proxy.faults["slow"]
    assert "timed out" in summary.requests.last_error
    assert seconds < RUN_BOUND


def test_read_timeout_past_retry_budget(
    moto_target: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, _ = bucket_of(moto_target)
    moto_target.use_in(monkeypatch)
    places = Places.under(tmp_path)
    with proxy_to(moto_target, rate=1.0, kinds=["slow"], stall=2.0) as proxy:
        config = ScanConfig(
            location=parse_s3_uri(f"s3://{bucket}"),
            connection=ConnectionConfig(
                endpoint_url=proxy.url, region="us-east-1", read_timeout=0.5, max_attempts=2
            ),
            output=str(places.out),
            temp_dir=str(places.temp),
        )
        with pytest.raises(BaseException) as raised:  # noqa: PT011 - an exception group
            anyio.run(run_scan, config)
    failure = first_failure(raised.value)
    assert isinstance(failure, ScanError), repr(raised.value)
    assert re.search(rf"giving up on (part of )?s3://{bucket}/ .*timed out", str(failure)), str(failure)
    places.assert_no_output()
    places.assert_no_temporary_file()


# -- faults past the retry budget: a clean failure --------------------------------------------

_LAST_ERROR = {
    "slowdown_503": "SlowDown (HTTP 503)",
    "throttle_429": "TooManyRequests (HTTP 429)",
    "internal_500": "InternalError (HTTP 500)",
    "bad_gateway_502": "HTTP 502",
    "timeout_504": "HTTP 504",
    "reset_before": "connection error",
    "reset_mid_body": "connection error",
    "truncated_xml": "malformed response",
    "malformed_xml": "malformed response",
    "error_200": "(HTTP 200)",
}


@pytest.mark.parametrize("kind", TRANSIENT_KINDS)
def test_fault_past_retry_budget(
    moto_target: S3Target, kind: str, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Every request faulted, ``--max-attempts 3``: exit 1, one line, nothing written."""
    bucket, _ = bucket_of(moto_target)
    places = Places.under(tmp_path)
    with proxy_to(moto_target, rate=1.0, kinds=[kind]) as proxy:
        run = scan_through(proxy, moto_target.env(), bucket, places, "--max-attempts", "3")
    record(record_property, proxy, run, run.stderr.strip())
    assert_clean_failure(run, places, 1, f"s3://{bucket}/ after repeated failures", _LAST_ERROR[kind])
    assert run.seconds < RUN_BOUND


def test_fault_past_retry_budget_mid_scan(
    s3: S3Target, tmp_path: Path, record_property: RecordProperty
) -> None:
    """The first pages are written (to temporary files) before SlowDown never stops."""
    bucket, _ = bucket_of(s3)
    places = Places.under(tmp_path)
    with proxy_to(s3, rate=1.0, kinds=["slowdown_503"], from_request=8) as proxy:
        run = scan_through(proxy, s3.env(), bucket, places, "--max-attempts", "3")
    record(record_property, proxy, run, run.stderr.strip())
    assert proxy.requests > 8, proxy.counts()
    assert_clean_failure(run, places, 1, "giving up on ", f"s3://{bucket}/", "SlowDown (HTTP 503)")


def test_failed_worker_leaves_no_temporary_file(rgw_target: S3Target, tmp_path: Path) -> None:
    """One worker process gives up while the other is still listing: nothing is left behind,
    neither at the output path nor in ``--temp-dir`` (a worker's partial output can be large)."""
    bucket, _ = bucket_of(rgw_target)
    places = Places.under(tmp_path)

    def start_after(request: Request) -> str:
        return request.query.get("start-after", "")

    def first_shard(request: Request) -> bool:  # not the parent's planning requests
        return "delimiter" not in request.query and "" < start_after(request) < "study0020/"

    def second_shard_latency(request: Request) -> float:
        return 2.0 if start_after(request) >= "study0030/" else 0.0

    with proxy_to(
        rgw_target, rate=1.0, kinds=["slowdown_503"], select=first_shard, latency=second_shard_latency
    ) as proxy:
        run = scan_through(proxy, rgw_target.env(), bucket, places, "--processes", "2", "--max-attempts", "3")
    assert_clean_failure(run, places, 1, "SlowDown (HTTP 503)")
    places.assert_no_temporary_file()


# -- servers that break the listing protocol --------------------------------------------------


@pytest.mark.parametrize("rate", [1.0, FAULT_RATE])
def test_server_ignoring_start_after(
    s3: S3Target, rate: float, tmp_path: Path, record_property: RecordProperty
) -> None:
    """Never a loop or a duplicate: the exact keys, or exit 1 saying StartAfter was ignored."""
    bucket, expected = bucket_of(s3)
    places = Places.under(tmp_path)
    # Mid-scan, whatever the rate draws (the fault applies to requests that send StartAfter).
    certain = dict.fromkeys((4, 5, 6, 7), "ignore_start_after")
    with proxy_to(s3, rate=rate, kinds=["ignore_start_after"], seed=1, schedule=certain) as proxy:
        run = scan_through(proxy, s3.env(), bucket, places)
    record(record_property, proxy, run, outcome(run, places, expected))
    assert proxy.faulted > 0, proxy.counts()
    if run.returncode == 0:
        assert_ok_and_exact(run, places, expected)
    else:
        assert_clean_failure(run, places, 1, "ignored StartAfter")


def test_repeated_continuation_token(s3: S3Target, tmp_path: Path, record_property: RecordProperty) -> None:
    """An empty truncated page whose token, followed, comes back again: no endless loop."""
    bucket, expected = bucket_of(s3)
    places = Places.under(tmp_path)
    with proxy_to(s3, rate=FAULT_RATE, kinds=["repeat_token"], seed=2) as proxy:
        run = scan_through(
            proxy, s3.env(), bucket, places, bound=RUN_BOUND, stop_when=lambda: proxy.repeat_replies > 1000
        )
        repeats = proxy.repeat_replies
    record(record_property, proxy, run, outcome(run, places, expected))
    record_property("repeat_replies", repeats)
    assert proxy.faulted > 0, proxy.counts()
    assert run.returncode is not None, (
        f"looping: asked {repeats} times in {run.seconds:.1f} s for a continuation token the "
        "server had already sent"
    )
    if run.returncode == 0:
        assert_ok_and_exact(run, places, expected)
    else:
        line = assert_clean_failure(run, places, 1)
        assert re.search(r"(?i)token", line), line


def test_invalid_utf8_in_a_key(s3: S3Target, tmp_path: Path, record_property: RecordProperty) -> None:
    """A body that is not UTF-8 is not XML: retried (or a clean failure), never a mangled key."""
    bucket, expected = bucket_of(s3)
    places = Places.under(tmp_path)
    # Request 1 is the first page: the scan goes on from its last key.
    with proxy_to(s3, rate=FAULT_RATE, kinds=["invalid_utf8"], seed=4, schedule={1: "invalid_utf8"}) as proxy:
        run = scan_through(proxy, s3.env(), bucket, places)
    record(record_property, proxy, run, outcome(run, places, expected))
    assert proxy.faulted > 0, proxy.counts()
    if run.returncode == 0:
        assert_ok_and_exact(run, places, expected)
        assert run.retries > 0
    else:
        assert_clean_failure(run, places, 1)


# -- no secret in anything the scanner prints -------------------------------------------------

# (server, how the scan fails, proxy faults or None for a direct connection, credentials)
_LEAK_CASES = {
    "moto-fault-mix": ("moto", "ok", {"rate": FAULT_RATE, "kinds": TRANSIENT_KINDS}, "fake"),
    "moto-slowdown": ("moto", "bucket", {"rate": 1.0, "kinds": ["slowdown_503"]}, "fake"),
    "moto-reset": ("moto", "bucket", {"rate": 1.0, "kinds": ["reset_mid_body"]}, "fake"),
    "moto-truncated": ("moto", "bucket", {"rate": 1.0, "kinds": ["truncated_xml"]}, "fake"),
    "moto-error-200": ("moto", "bucket", {"rate": 1.0, "kinds": ["error_200"]}, "fake"),
    "moto-echo": ("moto", "bucket", {"rate": 1.0, "kinds": ["echo_credentials"]}, "fake"),
    "moto-missing-bucket": ("moto", "missing", None, "fake"),
    "rgw-unknown-key": ("rgw", "bucket", None, "fake"),
    "rgw-wrong-secret": ("rgw", "bucket", None, "real-key-fake-secret"),
    "rgw-wrong-secret-proxied": ("rgw", "bucket", {"rate": 0.0}, "real-key-fake-secret"),
    "rgw-echo": ("rgw", "bucket", {"rate": 1.0, "kinds": ["echo_credentials"]}, "real-key-fake-secret"),
    "rgw-missing-bucket": ("rgw", "missing", None, "real-key-fake-secret"),
}


@pytest.mark.parametrize("case", list(_LEAK_CASES))
def test_no_secret_in_output(case: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server, scenario, faults, credentials = _LEAK_CASES[case]
    target: S3Target = request.getfixturevalue(f"{server}_target")
    bucket, _ = bucket_of(target, 2_000 if server == "moto" else FULL)
    if scenario == "missing":
        bucket = "no-such-bucket-for-leaks"
    env = {
        **target.env(),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY if credentials == "fake" else target.access_key,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
    }
    places = Places.under(tmp_path)
    signatures: set[str] = set()
    if faults is None:
        run = run_bounded(["scan", f"s3://{bucket}", *places.args(), "--max-attempts", "2"], env)
    else:
        with proxy_to(target, **faults) as proxy:
            run = scan_through(proxy, env, bucket, places, "--max-attempts", "2")
            signatures = set(proxy.signatures)
        assert signatures, "the proxy saw no signed request"
    assert run.returncode is not None
    assert "Traceback" not in run.stderr
    if scenario == "ok":
        assert run.returncode == 0, run.stderr
    else:
        assert run.returncode in (1, 3, 4), run.stderr
        assert_clean_failure(run, places, run.returncode)
    printed = run.stdout + run.stderr
    if places.out.exists():
        printed += places.out.read_text()
    for secret in (SECRET_KEY, SESSION_TOKEN, ACCESS_KEY, *signatures):
        assert secret not in printed, f"{secret[:8]}... printed in {printed[-2000:]!r}"
    # Also pieces of them: a secret cut at a "/" or a token cut by line wrapping.
    for piece in (*SECRET_KEY.split("/"), SESSION_TOKEN[:24], SESSION_TOKEN[-24:]):
        assert piece not in printed, f"{piece!r} printed in {printed[-2000:]!r}"
    assert not _SIGNATURE_SHAPED.search(run.stderr), run.stderr
