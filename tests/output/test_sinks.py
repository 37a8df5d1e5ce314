"""Output sinks: atomic local files, and streamed multipart uploads to a real S3 server."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from scanner.config import ConnectionConfig, S3Location
from scanner.errors import ScanError
from scanner.output.sinks import AtomicFileSink
from scanner.storage.s3.upload import MAX_PART_SIZE, MAX_PARTS, PART_SIZE, S3UploadSink, part_size_of
from tests.conftest import S3Target, run_scanner

MIB = 1024 * 1024


def test_atomic_file_appears_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"

    async def write_then(commit: bool) -> None:
        sink = AtomicFileSink(str(target))
        await sink.open()
        await sink.write(b"line\n")
        assert not target.exists()
        await (sink.commit() if commit else sink.abort())

    anyio.run(write_then, False)
    assert os.listdir(tmp_path) == []
    anyio.run(write_then, True)
    assert target.read_bytes() == b"line\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_full_disk_is_one_clear_error(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")

    async def write_to_full() -> None:
        sink = AtomicFileSink(str(tmp_path / "out.jsonl"))
        await sink.open()
        # Point the open file at a device that is always full.
        assert sink._file is not None
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, sink._file.fileno())
        os.close(full)
        try:
            await sink.write(b"x" * (4 * MIB))
            await sink.commit()
        finally:
            await sink.abort()

    with pytest.raises(ScanError, match="no space left"):
        anyio.run(write_to_full)
    assert os.listdir(tmp_path) == []


def _connection(s3: S3Target, monkeypatch: pytest.MonkeyPatch) -> ConnectionConfig:
    s3.use_in(monkeypatch)
    return ConnectionConfig(addressing_style="path")


def test_multipart_upload_streams_and_completes(s3: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.new_bucket()
    connection = _connection(s3, monkeypatch)
    chunks = [bytes([65 + i % 26]) * (MIB // 2) for i in range(25)]  # 12.5 MiB: three parts

    async def upload() -> None:
        sink = S3UploadSink(S3Location(bucket, "out/items.json"), connection, part_size=5 * MIB)
        await sink.open()
        for chunk in chunks:
            await sink.write(chunk)
        await sink.commit()

    anyio.run(upload)
    body = s3.client().get_object(Bucket=bucket, Key="out/items.json")["Body"].read()
    assert body == b"".join(chunks)


def test_aborted_upload_leaves_nothing(s3: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.new_bucket()
    connection = _connection(s3, monkeypatch)

    async def upload_then_fail() -> None:
        sink = S3UploadSink(S3Location(bucket, "out/items.json"), connection, part_size=5 * MIB)
        await sink.open()
        try:
            for _ in range(12):
                await sink.write(b"y" * MIB)
            raise RuntimeError("the scan failed")
        except RuntimeError:
            await sink.abort()

    anyio.run(upload_then_fail)
    client = s3.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_scan_to_s3_output(s3: S3Target, tmp_path: Path) -> None:
    keys = [f"k/{i:04d}" for i in range(1500)]
    source = s3.new_bucket(keys)
    destination = s3.new_bucket()
    output = f"s3://{destination}/listing/objects.jsonl"
    result = run_scanner(["scan", f"s3://{source}", "-o", output], s3.env())
    assert result.returncode == 0, result.stderr
    local = run_scanner(["scan", f"s3://{source}", "-o", str(tmp_path / "o.jsonl")], s3.env())
    assert local.returncode == 0, local.stderr
    body = s3.client().get_object(Bucket=destination, Key="listing/objects.jsonl")["Body"].read()
    assert body == (tmp_path / "o.jsonl").read_bytes()


def test_failed_scan_writes_no_s3_output(s3: S3Target) -> None:
    destination = s3.new_bucket()
    output = f"s3://{destination}/out.jsonl"
    result = run_scanner(["scan", "s3://no-such-source-bucket", "-o", output], s3.env())
    assert result.returncode == 4, result.stderr
    assert s3.client().list_objects_v2(Bucket=destination).get("KeyCount", 0) == 0


def test_output_uri_must_name_an_object(moto_target: S3Target) -> None:
    result = run_scanner(["scan", "s3://source", "-o", "s3://dest/folder/"], moto_target.env())
    assert result.returncode == 2
    assert "must name an object" in result.stderr


def test_a_device_is_written_to_not_replaced(tmp_path: Path) -> None:
    """/dev/null (or a FIFO) must stay what it is: no temporary file renamed over it."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    async def write(path: str) -> None:
        sink = AtomicFileSink(path)
        await sink.open()
        await sink.write(b"through the pipe\n")
        await sink.commit()

    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    anyio.run(write, str(fifo))
    reader.join(timeout=10)
    assert received == [b"through the pipe\n"]
    assert fifo.is_fifo()
    assert os.listdir(tmp_path) == ["pipe"]
    anyio.run(write, "/dev/null")
    assert Path("/dev/null").is_char_device()


def test_part_sizes_grow_to_fill_s3s_limits() -> None:
    """Within 10,000 parts of at most 5 GiB, an upload that starts at 8 MiB reaches 5 TiB."""
    sizes = [part_size_of(number, PART_SIZE) for number in range(1, MAX_PARTS + 1)]
    assert sizes[:1000] == [PART_SIZE] * 1000
    assert sizes[1000] == 2 * PART_SIZE
    assert sorted(sizes) == sizes
    assert max(sizes) <= MAX_PART_SIZE
    assert sum(sizes) >= 5 * 1024**4
    assert part_size_of(MAX_PARTS, PART_SIZE, most=6 * MIB) == 6 * MIB


def _small_parts_on_moto(moto_target: S3Target, monkeypatch: pytest.MonkeyPatch) -> ConnectionConfig:
    import moto.s3.models

    # moto refuses parts below 5 MiB but the last, as S3 does; the sizes scale down.
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1024)
    return _connection(moto_target, monkeypatch)


def test_upload_larger_than_its_parts_limit_times_the_part_size(
    moto_target: S3Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output of 100 times the first part size fits in 40 parts: the parts grow."""
    connection = _small_parts_on_moto(moto_target, monkeypatch)
    bucket = moto_target.new_bucket()
    chunks = [bytes([65 + i % 26]) * (300 + i) for i in range(250)]  # 106 KiB, uneven chunks
    assert sum(map(len, chunks)) > 100 * 1024
    location = S3Location(bucket, "out/big.jsonl")

    async def upload() -> list[int]:
        sink = S3UploadSink(location, connection, part_size=1024, max_parts=40)
        await sink.open()
        for chunk in chunks:
            await sink.write(chunk)
        assert sink._upload_id is not None
        parts = await sink._client.list_parts(Bucket=bucket, Key=location.prefix, UploadId=sink._upload_id)
        await sink.commit()
        return [part["Size"] for part in parts["Parts"]]

    sizes = anyio.run(upload)
    # Each full part is exactly its size in the schedule: 4 of 1 KiB, 4 of 2 KiB, ...
    assert sizes == [part_size_of(n, 1024, 40) for n in range(1, len(sizes) + 1)]
    head = moto_target.client().head_object(Bucket=bucket, Key=location.prefix)
    parts = int(head["ETag"].strip('"').rpartition("-")[2])
    assert len(sizes) < parts <= 40
    body = moto_target.client().get_object(Bucket=bucket, Key=location.prefix)["Body"].read()
    assert body == b"".join(chunks)


def test_upload_past_every_part_is_refused_and_aborted(
    moto_target: S3Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = _small_parts_on_moto(moto_target, monkeypatch)
    bucket = moto_target.new_bucket()

    async def upload() -> None:
        sink = S3UploadSink(
            S3Location(bucket, "out/big.jsonl"), connection, part_size=1024, max_parts=4, max_part_size=2048
        )
        await sink.open()
        try:
            for _ in range(20):
                await sink.write(b"z" * 1024)
            await sink.commit()
        except BaseException:
            await sink.abort()
            raise

    with pytest.raises(ScanError, match="larger than S3's 4 parts of up to 2,048 bytes"):
        anyio.run(upload)
    client = moto_target.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
