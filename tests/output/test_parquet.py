"""``--format parquet``, read back with pyarrow: to a file and to S3, ordered and unordered."""

from __future__ import annotations

import io
import itertools
import json
import sys
from pathlib import Path

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scanner.cli.main import main
from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.output.parquet import ParquetWriter
from scanner.output.spec import OutputSpec
from scanner.records import ObjectRecord, encode_jsonl
from tests.conftest import S3Target, run_scanner
from tests.keysets import ODD_KEYS, nested_keys, utf8_sorted


def jsonl_records(s3: S3Target, uri: str, tmp_path: Path) -> list[dict[str, object]]:
    out = tmp_path / "plain.jsonl"
    result = run_scanner(["scan", uri, "-o", str(out)], s3.env())
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_bytes().splitlines()]


def as_json(table: pa.Table) -> list[dict[str, object]]:
    """The table's rows as the JSON Lines output writes them."""
    rows = table.to_pylist()
    for row in rows:
        when = row["last_modified"]
        row["last_modified"] = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return rows


def test_parquet_file_holds_the_listing(s3: S3Target, tmp_path: Path) -> None:
    keys = [*nested_keys(3_000), *ODD_KEYS]
    bucket = s3.new_bucket(keys)
    uri = f"s3://{bucket}"
    out = tmp_path / "listing.parquet"
    result = run_scanner(["scan", uri, "-f", "parquet", "-o", str(out)], s3.env())
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.schema.names == ["key", "size", "last_modified", "etag", "storage_class"]
    assert table.schema.field("key").type == pa.string()
    assert table.schema.field("size").type == pa.int64()
    assert table.schema.field("last_modified").type == pa.timestamp("ms", tz="UTC")
    assert table.column("key").to_pylist() == utf8_sorted(keys)
    assert as_json(table) == jsonl_records(s3, uri, tmp_path)
    metadata = pq.ParquetFile(out).metadata
    assert metadata.row_group(0).sorting_columns == (pq.SortingColumn(0),)
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_parquet_unordered_to_s3(s3: S3Target, tmp_path: Path) -> None:
    keys = nested_keys(2_500)
    bucket = s3.new_bucket(keys)
    out = s3.new_bucket()
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-f", "parquet", "--unordered", "-o", f"s3://{out}/listing.parquet"],
        s3.env(),
    )
    assert result.returncode == 0, result.stderr
    body = s3.client().get_object(Bucket=out, Key="listing.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert sorted(table.column("key").to_pylist()) == sorted(keys)
    assert pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).sorting_columns == ()


def test_parquet_with_worker_processes_and_filters(s3: S3Target, tmp_path: Path) -> None:
    keys = nested_keys(4_000)
    bucket = s3.new_bucket(keys)
    uri = f"s3://{bucket}"
    out = tmp_path / "dicom.parquet"
    result = run_scanner(
        ["scan", uri, "-f", "parquet", "--processes", "2", "--include", "**/*.dcm", "-o", str(out)], s3.env()
    )
    assert result.returncode == 0, result.stderr
    expected = utf8_sorted([key for key in keys if key.endswith(".dcm")])
    assert pq.read_table(out).column("key").to_pylist() == expected


def test_an_empty_listing_is_a_valid_file(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    out = tmp_path / "empty.parquet"
    result = run_scanner(["scan", f"s3://{bucket}", "-f", "parquet", "-o", str(out)], s3.env())
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.names == ["key", "size", "last_modified", "etag", "storage_class"]


def test_a_failed_scan_leaves_no_parquet_file(s3: S3Target, tmp_path: Path) -> None:
    result = run_scanner(
        ["scan", "s3://no-such-bucket-here", "-f", "parquet", "-o", str(tmp_path / "x.parquet")], s3.env()
    )
    assert result.returncode == 4, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_parquet_merge_of_jsonl_shards(s3: S3Target, tmp_path: Path) -> None:
    keys = [f"a/{i:05d}" for i in range(1_100)] + [f"b/{i:05d}" for i in range(900)]
    bucket = s3.new_bucket(keys)
    parts = []
    for prefix in ("a/", "b/"):
        path = tmp_path / f"{prefix[0]}.jsonl.gz"
        result = run_scanner(["scan", f"s3://{bucket}/{prefix}", "-o", str(path)], s3.env())
        assert result.returncode == 0, result.stderr
        parts.append(str(path))
    out = tmp_path / "merged.parquet"
    result = run_scanner(["merge", *parts, "-f", "parquet", "-o", str(out)], s3.env())
    assert result.returncode == 0, result.stderr
    assert pq.read_table(out).column("key").to_pylist() == keys


def test_parquet_of_what_changed_and_resumable(moto_target: S3Target, tmp_path: Path) -> None:
    s3 = moto_target
    bucket = s3.new_bucket([f"k/{i:05d}" for i in range(1_500)])
    uri, state = f"s3://{bucket}", str(tmp_path / "state")
    first = tmp_path / "first.parquet"
    result = run_scanner(["scan", uri, "-f", "parquet", "-o", str(first), "--state", state], s3.env())
    assert result.returncode == 0, result.stderr
    assert pq.read_table(first).num_rows == 1_500
    s3.put(bucket, ["k/new"])
    changes = tmp_path / "changes.parquet"
    result = run_scanner(
        ["scan", uri, "-f", "parquet", "-o", str(changes), "--state", state, "--changes-only"], s3.env()
    )
    assert result.returncode == 0, result.stderr
    assert pq.read_table(changes).column("key").to_pylist() == ["k/new"]
    resumable = tmp_path / "resumable.parquet"
    checkpoint = str(tmp_path / "checkpoint")
    result = run_scanner(
        ["scan", uri, "-f", "parquet", "-o", str(resumable), "--checkpoint", checkpoint], s3.env()
    )
    assert result.returncode == 0, result.stderr
    assert pq.read_table(resumable).num_rows == 1_501


# --- usage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [["--compress", "gzip"], ["-o", "listing.parquet.gz"], ["--compress", "zstd", "-o", "x.parquet"]],
)
def test_parquet_and_compression_is_a_usage_error(
    extra: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["scan", "s3://bucket", "-f", "parquet", *extra]) == 2
    err = capsys.readouterr().err
    assert "Parquet compresses its own columns" in err
    assert err.count("\n") == 1


def test_missing_pyarrow_is_a_one_line_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["scan", "s3://bucket", "-f", "parquet", "-o", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "pyarrow" in err
    assert "bucket-scanner[arrow]" in err
    assert err.count("\n") == 1


# --- the writer ---------------------------------------------------------------------------------


class RecordingSink:
    """A sink that keeps what it is given, and when."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.committed = False
        self.aborted = False

    async def open(self) -> None:
        pass

    async def write(self, chunk: bytes) -> None:
        self.writes.append(chunk)

    async def commit(self) -> None:
        self.committed = True

    async def abort(self) -> None:
        self.aborted = True


def page(start: int, count: int) -> bytes:
    return encode_jsonl(
        [
            ObjectRecord(f"k{n:07d}", n, "2026-12-03T10:00:00.000Z", "e" * 32, "STANDARD")
            for n in range(start, start + count)
        ]
    )


def test_row_groups_stream_out_as_they_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded memory: each row group reaches the sink before the next page is taken."""
    sink = RecordingSink()
    monkeypatch.setattr("scanner.output.parquet.open_sink", lambda *args, **kwargs: sink)
    config = ScanConfig(
        location=parse_s3_uri("s3://bucket"), connection=ConnectionConfig(), output="x.parquet"
    )
    writer = ParquetWriter(OutputSpec.of(config), row_group_rows=1_000)
    written_before_commit = []

    async def run() -> None:
        await writer.open()
        for number in range(10):
            data = page(number * 1_000, 1_000)
            # A worker's file arrives in blocks that cut lines: the writer joins them again.
            await writer.write(data[:777])
            await writer.write(data[777:])
            written_before_commit.append(sum(map(len, sink.writes)))
        await writer.commit()

    anyio.run(run)
    assert sink.committed
    assert all(after > before for before, after in itertools.pairwise(written_before_commit))
    parquet = pq.ParquetFile(io.BytesIO(b"".join(sink.writes)))
    assert parquet.metadata.num_row_groups == 10
    assert parquet.read().column("key").to_pylist() == [f"k{n:07d}" for n in range(10_000)]


def test_abort_writes_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = RecordingSink()
    monkeypatch.setattr("scanner.output.parquet.open_sink", lambda *args, **kwargs: sink)
    config = ScanConfig(
        location=parse_s3_uri("s3://bucket"), connection=ConnectionConfig(), output="x.parquet"
    )
    writer = ParquetWriter(OutputSpec.of(config))

    async def run() -> None:
        await writer.open()
        await writer.write(page(0, 100))
        await writer.abort()

    anyio.run(run)
    assert sink.aborted
    assert not sink.committed
