"""Scans of real S3 servers (moto and Ceph RGW) over HTTP, compared with the exact keys put."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.keyspace import KeyRange
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary
from scanner.storage.base import ListPage
from scanner.storage.s3.client import S3PageSource
from tests.conftest import S3Target, run_scanner
from tests.keysets import ODD_KEYS, flat_keys, nested_keys, utf8_sorted


def scan_keys(s3: S3Target, uri: str, tmp_path: Path, *extra: str) -> tuple[list[dict[str, Any]], str]:
    out = tmp_path / "out.jsonl"
    result = run_scanner(["scan", uri, "-o", str(out), *extra], s3.env())
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    return [json.loads(line) for line in lines[:-1]], result.stderr


def keys_of(records: list[dict[str, Any]]) -> list[str]:
    return [r["key"] for r in records]


def test_empty_bucket(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    records, stderr = scan_keys(s3, f"s3://{bucket}", tmp_path)
    assert records == []
    assert "scanned 0 objects" in stderr
    assert (tmp_path / "out.jsonl").read_bytes() == b""


def test_one_key_and_its_fields(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    put = s3.client().put_object(Bucket=bucket, Key="only/one.dcm", Body=b"hello")
    records, _ = scan_keys(s3, f"s3://{bucket}", tmp_path)
    assert len(records) == 1
    record = records[0]
    assert list(record) == ["key", "size", "last_modified", "etag", "storage_class"]
    head = s3.client().head_object(Bucket=bucket, Key="only/one.dcm")
    assert record["key"] == "only/one.dcm"
    assert record["size"] == 5
    assert record["etag"] == put["ETag"].strip('"')
    assert record["storage_class"] == "STANDARD"
    modified = head["LastModified"].strftime("%Y-%m-%dT%H:%M:%S")
    assert record["last_modified"].startswith(modified)
    assert len(record["last_modified"]) == 24
    assert record["last_modified"].endswith("Z")


def test_prefix_with_no_keys(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(["a/1", "b/2"])
    records, _ = scan_keys(s3, f"s3://{bucket}/nothing/here/", tmp_path)
    assert records == []


def test_odd_keys(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(ODD_KEYS)
    records, _ = scan_keys(s3, f"s3://{bucket}", tmp_path)
    assert keys_of(records) == utf8_sorted(ODD_KEYS)


def test_odd_keys_under_an_odd_prefix(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(ODD_KEYS)
    records, _ = scan_keys(s3, f"s3://{bucket}/emoji/😀/", tmp_path)
    assert keys_of(records) == ["emoji/😀/🩻.dcm"]


@pytest.mark.parametrize("layout", ["nested", "flat"])
@pytest.mark.parametrize("unordered", [False, True])
def test_twenty_thousand_keys(s3: S3Target, tmp_path: Path, layout: str, unordered: bool) -> None:
    keys = nested_keys() if layout == "nested" else flat_keys()
    bucket = s3.shared_bucket(layout, keys)
    extra = ["--unordered"] if unordered else []
    records, stderr = scan_keys(s3, f"s3://{bucket}", tmp_path, *extra)
    got = keys_of(records)
    if unordered:
        assert len(got) == len(set(got)) == len(keys)
        assert set(got) == set(keys)
    else:
        assert got == utf8_sorted(keys)
    assert f"scanned {len(keys):,} objects" in stderr


def test_prefix_scan_of_a_large_bucket(s3: S3Target, tmp_path: Path) -> None:
    keys = nested_keys()
    bucket = s3.shared_bucket("nested", keys)
    records, _ = scan_keys(s3, f"s3://{bucket}/study0012/", tmp_path)
    assert keys_of(records) == utf8_sorted([k for k in keys if k.startswith("study0012/")])
    records, _ = scan_keys(s3, f"s3://{bucket}/study001", tmp_path, "--concurrency", "3")
    assert keys_of(records) == utf8_sorted([k for k in keys if k.startswith("study001")])


def test_csv_output(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(ODD_KEYS)
    out = tmp_path / "out.csv"
    result = run_scanner(["scan", f"s3://{bucket}", "-f", "csv", "-o", str(out)], s3.env())
    assert result.returncode == 0, result.stderr
    raw = out.read_bytes()
    assert raw.startswith(b"key,size,last_modified,etag,storage_class\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert rows[0] == ["key", "size", "last_modified", "etag", "storage_class"]
    assert [r[0] for r in rows[1:]] == utf8_sorted(ODD_KEYS)


def test_stdout_is_the_default_output(s3: S3Target) -> None:
    bucket = s3.new_bucket(["k1", "k2"])
    result = run_scanner(["scan", f"s3://{bucket}"], s3.env())
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["key"] for line in result.stdout.splitlines()] == ["k1", "k2"]


class _Observed:
    """A page source that records the ranges the enumerator asked for."""

    def __init__(self, inner: S3PageSource) -> None:
        self.inner = inner
        self.bounds: set[str] = set()

    async def list_page(self, key_range: KeyRange, **kwargs: Any) -> ListPage:
        for bound in (key_range.start_after, key_range.end):
            if bound is not None:
                self.bounds.add(bound)
        return await self.inner.list_page(key_range, **kwargs)


async def _observed_scan(config: ScanConfig) -> tuple[ScanSummary, set[str]]:
    async with S3PageSource(config.location, config.connection) as source:
        observed = _Observed(source)
        summary = await run_scan(config, observed)
    return summary, observed.bounds


def test_keys_equal_to_split_points(s3: S3Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put a key at every bound the splitter used, scan again: each is listed exactly once."""
    s3.use_in(monkeypatch)
    keys = set(flat_keys(3000, seed=11)) | set(nested_keys(2000))
    bucket = s3.new_bucket(keys)
    out = tmp_path / "out.jsonl"
    config = ScanConfig(
        parse_s3_uri(f"s3://{bucket}"),
        ConnectionConfig(concurrency=8),
        output=str(out),
    )
    for _ in range(3):
        _, bounds = anyio.run(_observed_scan, config)
        got = [json.loads(line)["key"] for line in out.read_text().splitlines()]
        assert got == utf8_sorted(keys)
        new = {b for b in bounds if len(b.encode()) <= 1024} - keys
        if not new:
            break
        s3.put(bucket, new)
        keys |= new
    assert bounds & keys, "no split point was a key"


def test_output_file_is_replaced_atomically(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(["k1"])
    out = tmp_path / "out.jsonl"
    out.write_text("old content\n")
    records, _ = scan_keys(s3, f"s3://{bucket}", tmp_path)
    assert keys_of(records) == ["k1"]
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]
