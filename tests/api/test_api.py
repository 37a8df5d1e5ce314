"""The library API as the README documents it, against real S3 servers (moto and Ceph RGW).

Each test calls ``scanner.scan`` / ``ascan`` / ``scan_arrow`` / ``group_items`` the way a user
would, with the server's endpoint as ``endpoint_url`` and its keys in the AWS environment
variables.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import scanner
from tests.conftest import REPO_ROOT, S3Target, run_scanner
from tests.keysets import ODD_KEYS, nested_keys, utf8_sorted


@pytest.fixture
def aws(s3: S3Target, monkeypatch: pytest.MonkeyPatch) -> S3Target:
    """``s3`` with its credentials in this process's environment, as a notebook would have."""
    s3.use_in(monkeypatch)
    return s3


def scan_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "scanner-scan"]


def client_connections(port: int) -> int:
    """This process's open TCP connections to ``port`` (client ends only)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


def open_files_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith(str(directory)):
            found.append(link)
    return found


def port_of(s3: S3Target) -> int:
    return int(s3.endpoint_url.rsplit(":", 1)[1].split("/")[0])


# --- scan -------------------------------------------------------------------------------------


def test_scan_yields_typed_records_in_key_order(aws: S3Target) -> None:
    keys = [*nested_keys(1_500), *ODD_KEYS]
    bucket = aws.new_bucket(keys)
    put = aws.client().put_object(Bucket=bucket, Key="only/one.dcm", Body=b"hello")
    records = list(scanner.scan(f"s3://{bucket}", endpoint_url=aws.endpoint_url))
    assert [r.key for r in records] == utf8_sorted([*keys, "only/one.dcm"])
    one = next(r for r in records if r.key == "only/one.dcm")
    assert isinstance(one, scanner.ObjectRecord)
    assert one.size == 5
    assert one.etag == put["ETag"].strip('"')
    assert one.storage_class == "STANDARD"
    assert one.last_modified.tzinfo is not None
    assert one.last_modified.utcoffset() == timedelta(0)
    head = aws.client().head_object(Bucket=bucket, Key="only/one.dcm")
    assert abs(one.last_modified - head["LastModified"].astimezone(UTC)) < timedelta(seconds=1)


def test_scan_takes_the_command_lines_options(aws: S3Target) -> None:
    bucket = aws.new_bucket(["scans/a.dcm", "scans/b.png", "scans/sub/c.dcm", "other/d.dcm"])
    aws.client().put_object(Bucket=bucket, Key="scans/big.dcm", Body=b"x" * 2048)
    uri = f"s3://{bucket}/scans/"
    found = scanner.scan(uri, endpoint_url=aws.endpoint_url, include="**/*.dcm", concurrency=4)
    assert [r.key for r in found] == ["scans/a.dcm", "scans/big.dcm", "scans/sub/c.dcm"]
    large = scanner.scan(uri, endpoint_url=aws.endpoint_url, min_size="1KiB", types=["dicom"])
    assert [r.key for r in large] == ["scans/big.dcm"]
    later = datetime.now(UTC) + timedelta(days=1)
    assert list(scanner.scan(uri, endpoint_url=aws.endpoint_url, modified_after=later)) == []
    unordered = scanner.scan(uri, endpoint_url=aws.endpoint_url, unordered=True, exclude=["*.png"])
    assert sorted(r.key for r in unordered) == ["scans/a.dcm", "scans/big.dcm", "scans/sub/c.dcm"]


def test_scan_works_inside_a_running_event_loop(aws: S3Target) -> None:
    """A Jupyter cell runs inside the kernel's event loop: a blocking call from there works."""
    bucket = aws.new_bucket([f"k/{i:05d}" for i in range(2_500)])

    async def notebook_cell() -> list[str]:
        asyncio.get_running_loop()  # the loop a notebook already has
        return [record.key for record in scanner.scan(f"s3://{bucket}", endpoint_url=aws.endpoint_url)]

    assert asyncio.run(notebook_cell()) == [f"k/{i:05d}" for i in range(2_500)]


def test_ascan_from_asyncio_and_anyio(aws: S3Target) -> None:
    keys = [f"k/{i:05d}" for i in range(2_500)]
    bucket = aws.new_bucket(keys)

    async def collect() -> list[str]:
        return [record.key async for record in scanner.ascan(f"s3://{bucket}", endpoint_url=aws.endpoint_url)]

    assert asyncio.run(collect()) == keys
    assert anyio.run(collect) == keys

    async def first_ten() -> list[str]:
        found = []
        async with scanner.ascan(f"s3://{bucket}", endpoint_url=aws.endpoint_url) as records:
            async for record in records:
                found.append(record.key)
                if len(found) == 10:
                    break
        return found

    assert asyncio.run(first_ten()) == keys[:10]
    assert scan_threads() == []


def test_errors_are_scan_errors_never_exits(aws: S3Target) -> None:
    with pytest.raises(scanner.UsageError, match="not an S3 URI"):
        scanner.scan("bucket/key")
    with pytest.raises(scanner.UsageError, match="concurrency"):
        scanner.scan("s3://bucket", concurrency=0)
    with pytest.raises(scanner.UsageError, match="aware"):
        scanner.scan("s3://bucket", modified_after=datetime(2026, 1, 1))
    missing = scanner.scan("s3://no-such-bucket-here", endpoint_url=aws.endpoint_url)
    with pytest.raises(scanner.BucketNotFoundError):
        list(missing)

    async def missing_async() -> None:
        async for _ in scanner.ascan("s3://no-such-bucket-here", endpoint_url=aws.endpoint_url):
            pass

    with pytest.raises(scanner.BucketNotFoundError):
        asyncio.run(missing_async())
    assert scan_threads() == []


def test_breaking_early_cancels_the_scan_cleanly(aws: S3Target, tmp_path: Path) -> None:
    bucket = aws.new_bucket([f"k/{i:06d}" for i in range(20_000)])
    port = port_of(aws)
    gc.collect()  # boto3 clients of the seeding, closed
    before = client_connections(port)
    for options in ({}, {"unordered": True}, {"server_profile": "unordered", "memory_budget": 4096}):
        records = scanner.scan(
            f"s3://{bucket}", endpoint_url=aws.endpoint_url, temp_dir=str(tmp_path), **options
        )
        for number, _ in enumerate(records, 1):
            if number == 1_500:
                break
        if options.get("server_profile") != "unordered":  # a sorted walk lists all before output
            assert records.stats.objects < 20_000, options
        del records
        assert scan_threads() == [], options
        assert client_connections(port) == before, options
        assert open_files_under(tmp_path) == [], options
        assert list(tmp_path.iterdir()) == [], options


def test_an_error_in_the_loop_stops_the_scan(aws: S3Target) -> None:
    bucket = aws.new_bucket([f"k/{i:06d}" for i in range(5_000)])
    gc.collect()
    before = client_connections(port_of(aws))
    with pytest.raises(KeyError):  # noqa: PT012
        for record in scanner.scan(f"s3://{bucket}", endpoint_url=aws.endpoint_url):
            raise KeyError(record.key)
    assert scan_threads() == []
    assert client_connections(port_of(aws)) == before


def test_a_slow_reader_holds_the_listing(moto_target: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backpressure: while the reader holds on to one record, the scan stops sending requests."""
    moto_target.use_in(monkeypatch)
    # Long keys make big pages (about 330 KB of records each), so the bounds below are few pages.
    keys = [f"k/{'x' * 200}/{i:06d}" for i in range(40_000)]
    bucket = moto_target.new_bucket(keys)
    records = scanner.scan(
        f"s3://{bucket}", endpoint_url=moto_target.endpoint_url, memory_budget=64 * 1024, concurrency=4
    )
    with records:
        assert next(records).key == keys[0]
        # However long the reader waits, the requests stop at what the bounded buffers hold:
        # wait until they have stopped changing (the wait only makes the check stricter).
        seen, steady = -1, 0
        deadline = time.monotonic() + 60
        while steady < 10 and time.monotonic() < deadline:
            requests = records.stats.requests
            steady = steady + 1 if requests == seen else 0
            seen = requests
            time.sleep(0.1)
        # 4 pages in the hand-over stream and one in the writer, 4 MiB (13 pages) for the range
        # being written and about a page in the budget for the others, one in flight per
        # request slot, and a few requests of discovery: about 25 of the bucket's 40 pages.
        assert records.stats.requests <= 30
        assert records.stats.objects <= 30_000
        rest = [record.key for record in records]
    assert [keys[0], *rest] == keys
    assert records.stats.requests >= 40


# --- Arrow ------------------------------------------------------------------------------------


def test_scan_arrow_batches(aws: S3Target) -> None:
    pa = pytest.importorskip("pyarrow")
    keys = [f"k/{i:05d}.dcm" for i in range(2_500)]
    bucket = aws.new_bucket(keys)
    batches = list(scanner.scan_arrow(f"s3://{bucket}", endpoint_url=aws.endpoint_url, batch_size=1_000))
    assert [batch.num_rows for batch in batches] == [1_000, 1_000, 500]
    table = pa.Table.from_batches(batches)
    assert table.schema.names == ["key", "size", "last_modified", "etag", "storage_class"]
    assert table.schema.field("size").type == pa.int64()
    assert table.schema.field("last_modified").type == pa.timestamp("ms", tz="UTC")
    assert table.column("key").to_pylist() == keys
    assert set(table.column("size").to_pylist()) == {1}
    records = list(scanner.scan(f"s3://{bucket}", endpoint_url=aws.endpoint_url))
    assert table.column("last_modified").to_pylist() == [r.last_modified for r in records]


def test_arrow_batches_hand_off_to_dataframes(aws: S3Target) -> None:
    """The README's notebook: pandas, polars and DuckDB take the Arrow table as it is."""
    pa = pytest.importorskip("pyarrow")
    keys = [f"scans/{study}/{i:03d}.dcm" for study in ("s1", "s2") for i in range(600)]
    bucket = aws.new_bucket([*keys, "scans/s1/notes.txt"])
    aws.client().put_object(Bucket=bucket, Key="scans/s2/big.dcm", Body=b"x" * 2_000_000)
    uri = f"s3://{bucket}/scans/"
    listing = pa.Table.from_batches(
        scanner.scan_arrow(uri, endpoint_url=aws.endpoint_url, include="**/*.dcm")
    )
    assert listing.num_rows == 1_201

    frame = listing.to_pandas()
    sizes = frame.groupby(frame["key"].str.split("/").str[1])["size"].sum()
    assert sizes.to_dict() == {"s1": 600, "s2": 600 + 2_000_000}

    pl = pytest.importorskip("polars")
    big = pl.from_arrow(listing).filter(pl.col("size") > 1_000_000)
    assert big["key"].to_list() == ["scans/s2/big.dcm"]

    duckdb = pytest.importorskip("duckdb")
    counts = duckdb.sql("select storage_class, count(*), sum(size) from listing group by 1").fetchall()
    assert counts == [("STANDARD", 1_201, 1_200 + 2_000_000)]

    big_ones = [r.key for r in scanner.scan(uri, endpoint_url=aws.endpoint_url, min_size="100KB")]
    assert big_ones == ["scans/s2/big.dcm"]


# --- items lists ------------------------------------------------------------------------------


def test_group_items_matches_the_command_line(aws: S3Target, tmp_path: Path) -> None:
    keys = [*nested_keys(600), "study/notes.txt", "study/.hidden/x.dcm"]
    bucket = aws.new_bucket(keys)
    uri = f"s3://{bucket}/"
    out = tmp_path / "items.json"
    result = run_scanner(["scan", uri, "-f", "items", "-o", str(out), "--group", "series"], aws.env())
    assert result.returncode == 0, result.stderr
    tasks = list(scanner.group_items(scanner.scan(uri, endpoint_url=aws.endpoint_url), mode="series"))
    assert tasks == json.loads(out.read_bytes())
    by_file = scanner.group_items(scanner.scan(uri, endpoint_url=aws.endpoint_url), mode="file")
    assert len(list(by_file)) == len([k for k in keys if not k.endswith(("/", ".txt")) and "/." not in k])


def test_group_items_refuses_records_out_of_order() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    records = [scanner.ObjectRecord(key, 1, when, "e", "STANDARD") for key in ("b/1.dcm", "a/1.dcm")]
    with pytest.raises(scanner.UsageError):
        list(scanner.group_items(records))


# --- start-up ---------------------------------------------------------------------------------


def test_import_scanner_stays_light() -> None:
    heavy = "('scanner.api', 'aioboto3', 'anyio')"
    code = f"import sys, scanner; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
    assert callable(scanner.scan)


def test_the_lazy_exports_are_the_apis() -> None:
    """``scanner/__init__.py`` names the API without importing it (start-up): the two lists agree."""
    import scanner
    from scanner import api

    assert frozenset(api.__all__) == scanner._API
