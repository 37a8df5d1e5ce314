"""Compressed outputs (gzip, zstd) and compressed merge inputs, read back with gzip/zstandard."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import zstandard

from scanner.cli.main import main
from scanner.errors import ScanError, UsageError
from scanner.output.compression import choose_compression, compression_of, decompressed
from tests.conftest import S3Target, run_scanner
from tests.keysets import ODD_KEYS, nested_keys


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def scan_plain(s3: S3Target, uri: str, tmp_path: Path, *extra: str) -> bytes:
    out = tmp_path / "plain.out"
    result = run_scanner(["scan", uri, "-o", str(out), *extra], s3.env())
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


# --- choosing -----------------------------------------------------------------------------------


def test_the_name_or_the_option_chooses() -> None:
    assert compression_of("x.jsonl.gz") == "gzip"
    assert compression_of("s3://b/x.CSV.ZST") == "zstd"
    assert compression_of("x.jsonl") is None
    assert choose_compression("x.jsonl.gz", None, "jsonl") == "gzip"
    assert choose_compression("x.jsonl.zst", "zstd", "jsonl") == "zstd"
    assert choose_compression("x.jsonl", None, "jsonl") == "none"
    assert choose_compression("x.jsonl", "gzip", "jsonl") == "gzip"
    assert choose_compression("-", "zstd", "csv") == "zstd"
    assert choose_compression("x.parquet", "none", "parquet") == "none"


@pytest.mark.parametrize(
    ("output", "asked", "output_format", "message"),
    [
        ("x.jsonl.gz", "zstd", "jsonl", "does not match the output name"),
        ("x.jsonl.gz", "none", "jsonl", "does not match the output name"),
        ("x.parquet", "gzip", "parquet", "Parquet compresses its own columns"),
        ("x.parquet.zst", None, "parquet", "Parquet compresses its own columns"),
    ],
)
def test_combinations_that_make_no_sense(
    output: str, asked: str | None, output_format: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        choose_compression(output, asked, output_format)


def test_missing_zstandard_is_a_one_line_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    code = main(["scan", "s3://bucket", "-o", str(tmp_path / "out.jsonl.zst")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "zstandard" in err
    assert "pip install zstandard" in err
    assert list(tmp_path.iterdir()) == []


def test_a_mismatch_on_the_command_line_exits_2_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["scan", "s3://bucket", "-o", str(tmp_path / "out.jsonl.gz"), "--compress", "zstd"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --compress zstd does not match")
    assert err.count("\n") == 1


# --- writing ------------------------------------------------------------------------------------


def test_jsonl_and_csv_by_extension(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket([*nested_keys(2_000), *ODD_KEYS])
    uri = f"s3://{bucket}"
    plain = scan_plain(s3, uri, tmp_path)
    for name, unpack in (("out.jsonl.gz", gzip.decompress), ("out.jsonl.zst", unzstd)):
        result = run_scanner(["scan", uri, "-o", str(tmp_path / name)], s3.env())
        assert result.returncode == 0, result.stderr
        assert unpack((tmp_path / name).read_bytes()) == plain, name
    plain_csv = scan_plain(s3, uri, tmp_path, "-f", "csv")
    result = run_scanner(["scan", uri, "-f", "csv", "-o", str(tmp_path / "out.csv.zst")], s3.env())
    assert result.returncode == 0, result.stderr
    assert unzstd((tmp_path / "out.csv.zst").read_bytes()) == plain_csv
    # Compressed by far: these listings repeat themselves a lot.
    assert (tmp_path / "out.jsonl.zst").stat().st_size < len(plain) / 5


def test_compress_option_to_stdout_and_unordered(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(nested_keys(1_500))
    uri = f"s3://{bucket}"
    plain = scan_plain(s3, uri, tmp_path)
    import subprocess

    from tests.conftest import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", uri, "--compress", "gzip", "-q"],
        env={**s3.env(), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert gzip.decompress(result.stdout) == plain
    out = tmp_path / "unordered.jsonl"
    result = run_scanner(["scan", uri, "--unordered", "--compress", "zstd", "-o", str(out)], s3.env())
    assert result.returncode == 0, result.stderr
    assert sorted(unzstd(out.read_bytes()).splitlines()) == sorted(plain.splitlines())


def test_items_lists_compressed_and_numbered(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(nested_keys(2_000))
    uri = f"s3://{bucket}"
    plain = scan_plain(s3, uri, tmp_path, "-f", "items")
    result = run_scanner(["scan", uri, "-f", "items", "-o", str(tmp_path / "items.json.gz")], s3.env())
    assert result.returncode == 0, result.stderr
    assert gzip.decompress((tmp_path / "items.json.gz").read_bytes()) == plain
    result = run_scanner(
        ["scan", uri, "-f", "items", "--max-tasks-per-file", "10", "-o", str(tmp_path / "part.json.zst")],
        s3.env(),
    )
    assert result.returncode == 0, result.stderr
    parts = sorted(tmp_path.glob("part-*.json.zst"))
    assert len(parts) > 1
    tasks = [task for part in parts for task in json.loads(unzstd(part.read_bytes()))]
    assert tasks == json.loads(plain)


def test_to_s3(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(nested_keys(1_500))
    out = s3.new_bucket()
    uri = f"s3://{bucket}"
    plain = scan_plain(s3, uri, tmp_path)
    for key, unpack in (("listing.jsonl.gz", gzip.decompress), ("listing.jsonl.zst", unzstd)):
        result = run_scanner(["scan", uri, "-o", f"s3://{out}/{key}"], s3.env())
        assert result.returncode == 0, result.stderr
        body = s3.client().get_object(Bucket=out, Key=key)["Body"].read()
        assert unpack(body) == plain, key


def test_a_failed_scan_leaves_no_compressed_file(s3: S3Target, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl.gz"
    result = run_scanner(["scan", "s3://no-such-bucket-here", "-o", str(out)], s3.env())
    assert result.returncode == 4, result.stderr
    assert list(tmp_path.iterdir()) == []


# --- merge --------------------------------------------------------------------------------------


def test_merge_reads_and_writes_compressed(s3: S3Target, tmp_path: Path) -> None:
    keys = [f"a/{i:05d}.dcm" for i in range(1_200)] + [f"b/{i:05d}.dcm" for i in range(1_300)]
    bucket = s3.new_bucket(keys)
    plain = scan_plain(s3, f"s3://{bucket}", tmp_path)
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.zst"
    for prefix, path in (("a/", first), ("b/", second)):
        result = run_scanner(["scan", f"s3://{bucket}/{prefix}", "-o", str(path)], s3.env())
        assert result.returncode == 0, result.stderr
    merged = tmp_path / "merged.jsonl.zst"
    result = run_scanner(["merge", str(first), str(second), "-o", str(merged)], s3.env())
    assert result.returncode == 0, result.stderr
    assert unzstd(merged.read_bytes()) == plain
    csv_out = tmp_path / "merged.csv"
    result = run_scanner(
        ["merge", str(first), str(second), "-f", "csv", "--compress", "gzip", "-o", str(csv_out)], s3.env()
    )
    assert result.returncode == 0, result.stderr
    assert gzip.decompress(csv_out.read_bytes()) == scan_plain(s3, f"s3://{bucket}", tmp_path, "-f", "csv")


async def _blocks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_back(data: bytes, size: int = 7) -> bytes:
    async def collect() -> bytes:
        return b"".join([block async for block in decompressed(_blocks(data, size), "input")])

    return anyio.run(collect)


def test_decompressed_inputs_whatever_their_blocks() -> None:
    text = b"".join(b'{"key":"k%05d"}\n' % i for i in range(3_000))
    assert read_back(text) == text
    assert read_back(gzip.compress(text[:100]) + gzip.compress(text[100:])) == text
    frames = zstandard.ZstdCompressor().compress(text[:50]) + zstandard.ZstdCompressor().compress(text[50:])
    assert read_back(frames, 3) == text
    assert read_back(b"") == b""


def test_cut_short_or_corrupt_inputs_fail() -> None:
    text = b"x" * 10_000
    with pytest.raises(ScanError, match="cut short"):
        read_back(gzip.compress(text)[:-12])
    with pytest.raises(ScanError, match="cut short"):
        read_back(zstandard.ZstdCompressor().compress(text)[:-3])
    with pytest.raises(ScanError, match="cannot decompress"):
        read_back(b"\x1f\x8b" + b"\x00" * 40)
