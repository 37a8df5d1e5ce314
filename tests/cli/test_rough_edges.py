"""The rough edges a new user hits: each test here failed before the fix it names.

Every bad input is one ``error:`` line on stderr, a documented exit code, found before the first
request where it can be, and no output left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import S3Target, run_scanner

# Nothing listens on port 9: a request that was attempted would fail differently (exit 5).
NOWHERE = "http://127.0.0.1:9"


def offline_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        **extra,
    }


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- every output path is checked before the first request ---------------------------------


def test_missing_temp_dir_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", NOWHERE, "-o", str(out), "--temp-dir", "/nonexistent"],
        offline_env(),
    )
    one_error_line(result, 2, "--temp-dir", "/nonexistent", "does not exist")
    assert not out.exists()


def test_temp_dir_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", NOWHERE],
        offline_env(SCANNER_TEMP_DIR=str(tmp_path / "file")),
    )
    one_error_line(result, 2, "--temp-dir", "is not a directory")


def test_unwritable_summary_is_found_before_the_scan(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a", "b"])
    out = tmp_path / "o.jsonl"
    # /proc refuses new files even to root.
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(out), "--summary", "/proc/summary.json"], moto_target.env()
    )
    one_error_line(result, 2, "--summary", "cannot write")
    assert not out.exists()
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(out), "--summary", str(tmp_path / "no" / "s.json")],
        moto_target.env(),
    )
    one_error_line(result, 2, "--summary", "does not exist")
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--concurrency", "0"], "concurrency"),
        (["--frobnicate"], "--frobnicate"),
        (["--temp-dir", "/nonexistent"], "--temp-dir"),
    ],
)
def test_a_usage_error_still_writes_the_summary(options: list[str], fragment: str, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run_scanner(
        ["scan", "s3://bucket/p/", "--endpoint-url", NOWHERE, "--summary", str(summary), *options],
        offline_env(),
    )
    one_error_line(result, 2, fragment)
    document = json.loads(summary.read_text())
    assert document["status"] == "failed"
    assert document["exit_code"] == 2
    assert fragment in document["error"]
    assert document["requests"] == 0


def test_a_usage_error_writes_the_summary_named_in_the_environment(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = run_scanner(
        ["scan", "s3://bucket", "--concurrency", "0"], offline_env(SCANNER_SUMMARY=str(summary))
    )
    one_error_line(result, 2)
    assert json.loads(summary.read_text())["uri"] == "s3://bucket"


# --- --endpoint-url that cannot be S3 ----------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://example.com", "127.0.0.1:9000", "http://"])
def test_endpoint_url_that_is_not_http_is_a_usage_error(url: str, tmp_path: Path) -> None:
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", url, "-o", str(tmp_path / "o")], offline_env()
    )
    one_error_line(result, 2, "--endpoint-url", repr(url))
    assert not (tmp_path / "o").exists()


def test_endpoint_url_from_aws_environment_is_checked(tmp_path: Path) -> None:
    result = run_scanner(["scan", "s3://bucket"], offline_env(AWS_ENDPOINT_URL="ftp://example.com"))
    one_error_line(result, 2, "AWS_ENDPOINT_URL", "http://")


# --- --state errors say "state" -----------------------------------------------------------------


def test_state_in_a_missing_directory_is_called_state(tmp_path: Path) -> None:
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", NOWHERE, "--state", str(tmp_path / "no" / "s.state")],
        offline_env(),
    )
    line = one_error_line(result, 2, "state directory")
    assert "output" not in line


def test_state_in_a_missing_bucket_is_called_state(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a"])
    out = tmp_path / "o.jsonl"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(out), "--state", "s3://no-such-state-bucket/s.state"],
        moto_target.env(),
    )
    line = one_error_line(result, 4, "state bucket 'no-such-state-bucket' does not exist")
    assert "output" not in line
