"""Directory buckets (S3 Express One Zone) and servers that list without order, end to end.

No real directory bucket is reachable from here: the in-memory endpoint serves one the way AWS
documents them (hash order, StartAfter refused, "/" the only delimiter, prefixes ending in "/",
CreateSession), and botocore's own S3 Express path signs the requests. Each scan must equal, byte
for byte, a scan of the same keys served in byte order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.synthetic_s3 import running_synthetic_s3
from scanner.storage.s3.signing import template_from
from tests.conftest import run_scanner

SIZE = 2500
SORTED = f"bench-studies-{SIZE}"
WALK = f"bench-studies-{SIZE}-walk"
EXPRESS = f"bench-studies-{SIZE}--use1-az4--x-s3"
PLAIN_NAMED_DIRECTORY = f"bench-studies-{SIZE}-directory"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running_synthetic_s3([SORTED, WALK, EXPRESS, PLAIN_NAMED_DIRECTORY]) as url:
        yield url


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCANNER_"))}
    env.update(
        AWS_ACCESS_KEY_ID="AKIDSYNTHETIC",
        AWS_SECRET_ACCESS_KEY="synthetic-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def _scan(endpoint: str, tmp_path: Path, uri: str, *options: str) -> tuple[bytes, dict[str, object]]:
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    result = run_scanner(["scan", uri, "-o", str(out), "--summary", str(summary), *options], _env(endpoint))
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(summary.read_text())
    return out.read_bytes(), document


@pytest.mark.parametrize("bucket", [EXPRESS, PLAIN_NAMED_DIRECTORY, WALK])
@pytest.mark.parametrize("prefix", ["", "study00001", "study00001/"])
def test_unordered_servers_give_the_sorted_servers_output(
    endpoint: str, tmp_path: Path, bucket: str, prefix: str
) -> None:
    expected, _ = _scan(endpoint, tmp_path, f"s3://{SORTED}/{prefix}")
    got, summary = _scan(endpoint, tmp_path, f"s3://{bucket}/{prefix}")
    assert got == expected
    assert expected.count(b"\n") > (0 if prefix else 2000)
    assert summary["listing"] == "tree walk"
    if bucket == EXPRESS:
        assert "switched_because" not in summary  # known from its name: no request spent learning
    else:
        assert "switched_because" in summary


def test_a_directory_bucket_refuses_what_needs_key_ranges(endpoint: str, tmp_path: Path) -> None:
    for options in (["--checkpoint", str(tmp_path / "c")], ["--shard", "0/2"], ["--processes", "2"]):
        result = run_scanner(
            ["scan", f"s3://{EXPRESS}/", "-o", str(tmp_path / "o"), *options], _env(endpoint)
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ")
        assert len(result.stderr.splitlines()) == 1
        assert "lists in no byte order" in result.stderr
        assert not (tmp_path / "o").exists()


def test_s3_express_session_requests_keep_botocores_signer() -> None:
    """Session-signed requests (S3 Express) are never re-signed from a plain SigV4 template."""
    scope = "Credential=AKID/20261202/us-east-1/s3express/aws4_request, SignedHeaders=host"
    express = SimpleNamespace(
        url="http://127.0.0.1/b--use1-az4--x-s3?list-type=2",
        headers={"Authorization": f"AWS4-HMAC-SHA256 {scope}", "x-amz-s3session-token": "token"},
    )
    assert template_from(express) is None
    plain = SimpleNamespace(
        url="http://127.0.0.1/b?list-type=2",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/s3/aws4_request, X"},
    )
    template = template_from(plain)
    assert template is not None
    assert template.region == "us-east-1"
