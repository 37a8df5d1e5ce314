"""``python -m scanner`` end to end: options, environment, exit codes, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, S3Target, run_scanner
from tests.http_stub import stub_server
from tests.keysets import nested_keys

SLOW_DOWN = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>boom</Message></Error>"


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def no_output_left(directory: Path) -> None:
    assert os.listdir(directory) == [], os.listdir(directory)


def test_version() -> None:
    from scanner import __version__

    result = run_scanner(["--version"], dict(os.environ))
    assert result.returncode == 0
    assert result.stdout.strip() == f"scanner {__version__}"


def test_scan_help_lists_every_option() -> None:
    result = run_scanner(["scan", "--help"], dict(os.environ))
    assert result.returncode == 0
    for option in (
        "--output",
        "--format",
        "--endpoint-url",
        "--region",
        "--profile",
        "--addressing-style",
        "--no-sign-request",
        "--request-payer",
        "--ca-bundle",
        "--concurrency",
        "--unordered",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("s3:/x", "not an S3 URI"),
        ("s3://", "no bucket name"),
        ("http://bucket/key", "not an S3 URI"),
        ("s3://Bad_Bucket!/x", "invalid bucket name"),
        ("s3://a/x", "invalid bucket name"),
        ("s3://bucket..name", "invalid bucket name"),
    ],
)
def test_malformed_uri(uri: str, fragment: str, tmp_path: Path) -> None:
    result = run_scanner(["scan", uri, "-o", str(tmp_path / "out.jsonl")], dict(os.environ))
    assert_one_error_line(result, 2, fragment)
    no_output_left(tmp_path)


def test_unknown_option() -> None:
    result = run_scanner(["scan", "s3://bucket", "--frobnicate"], dict(os.environ))
    assert_one_error_line(result, 2, "--frobnicate")


def test_missing_uri() -> None:
    assert_one_error_line(run_scanner(["scan"], dict(os.environ)), 2, "no S3 URI")


def test_bad_concurrency() -> None:
    result = run_scanner(["scan", "s3://bucket", "--concurrency", "0"], dict(os.environ))
    assert_one_error_line(result, 2, "concurrency")
    result = run_scanner(["scan", "s3://bucket"], {**os.environ, "SCANNER_CONCURRENCY": "many"})
    assert_one_error_line(result, 2, "SCANNER_CONCURRENCY")


def test_output_directory_missing(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["k"])
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "no" / "out.jsonl")], moto_target.env()
    )
    assert_one_error_line(result, 2, "does not exist")


def test_output_directory_not_writable(moto_target: S3Target) -> None:
    bucket = moto_target.new_bucket(["k"])
    # /proc refuses new files even to root, unlike a chmod-ed directory.
    result = run_scanner(["scan", f"s3://{bucket}", "-o", "/proc/out.jsonl"], moto_target.env())
    assert_one_error_line(result, 2, "cannot write")


def test_bucket_does_not_exist(s3: S3Target, tmp_path: Path) -> None:
    result = run_scanner(["scan", "s3://no-such-bucket-here", "-o", str(tmp_path / "o")], s3.env())
    assert_one_error_line(result, 4, "does not exist")
    no_output_left(tmp_path)


def test_no_credentials(moto_target: S3Target, tmp_path: Path) -> None:
    env = moto_target.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    result = run_scanner(["scan", "s3://some-bucket", "-o", str(tmp_path / "o")], env)
    assert_one_error_line(result, 3, "no AWS credentials")
    no_output_left(tmp_path)


def test_wrong_secret_key(rgw_target: S3Target, tmp_path: Path) -> None:
    bucket = rgw_target.new_bucket(["k"])
    env = {**rgw_target.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret-at-all"}
    result = run_scanner(["scan", f"s3://{bucket}", "-o", str(tmp_path / "o")], env)
    assert_one_error_line(result, 3, "SignatureDoesNotMatch")
    assert "not-the-secret-at-all" not in result.stderr
    no_output_left(tmp_path)


def test_unknown_access_key(rgw_target: S3Target, tmp_path: Path) -> None:
    bucket = rgw_target.new_bucket(["k"])
    env = {**rgw_target.env(), "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNUNKNOWN12"}
    result = run_scanner(["scan", f"s3://{bucket}", "-o", str(tmp_path / "o")], env)
    assert_one_error_line(result, 3, "InvalidAccessKeyId")
    assert "AKIAUNKNOWNUNKNOWN12" not in result.stderr


def test_access_denied_names_the_permission(rgw_target: S3Target, tmp_path: Path) -> None:
    bucket = rgw_target.new_bucket(["k"])
    conf = _rgw_conf(rgw_target)
    subprocess.run(
        [
            "radosgw-admin",
            "-c",
            conf,
            "user",
            "create",
            "--uid=outsider",
            "--display-name=outsider",
            "--access-key=outsider-access",
            "--secret-key=outsider-secret",
        ],
        check=True,
        capture_output=True,
    )
    env = {
        **rgw_target.env(),
        "AWS_ACCESS_KEY_ID": "outsider-access",
        "AWS_SECRET_ACCESS_KEY": "outsider-secret",
    }
    result = run_scanner(["scan", f"s3://{bucket}/some/prefix/", "-o", str(tmp_path / "o")], env)
    assert_one_error_line(result, 3, "s3:ListBucket", f"arn:aws:s3:::{bucket}")
    no_output_left(tmp_path)


def _rgw_conf(target: S3Target) -> str:
    assert target.admin_conf is not None
    return target.admin_conf


def test_endpoint_refuses_connections(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", f"http://127.0.0.1:{port}", "-o", str(tmp_path / "o")], env
    )
    assert_one_error_line(result, 5, "cannot connect")
    no_output_left(tmp_path)


def test_endpoint_that_is_not_s3(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with stub_server(404, b"<html>not here</html>", "text/html") as url:
        result = run_scanner(["scan", "s3://bucket", "--endpoint-url", url, "-o", str(tmp_path / "o")], env)
    assert_one_error_line(result, 5, "S3 API endpoint")
    with stub_server(200, b"<html>hello</html>", "text/html") as url:
        result = run_scanner(
            ["scan", "s3://bucket", "--endpoint-url", url, "--max-attempts", "2", "-o", str(tmp_path / "o")],
            env,
        )
    assert_one_error_line(result, 5, "does not answer like an S3 endpoint")
    no_output_left(tmp_path)


def test_persistent_server_errors_exhaust_retries(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with stub_server(500, SLOW_DOWN) as url:
        result = run_scanner(
            [
                "scan",
                "s3://bucket/pre/",
                "--endpoint-url",
                url,
                "--max-attempts",
                "3",
                "-o",
                str(tmp_path / "o"),
            ],
            env,
        )
    assert_one_error_line(result, 1, "InternalError", "s3://bucket/pre/")
    no_output_left(tmp_path)


def test_tls_verification_failure_and_ca_bundle(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    context = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    body = (
        b"<?xml version='1.0'?><ListBucketResult><Name>bucket</Name><IsTruncated>false</IsTruncated>"
        b"<Contents><Key>k</Key><LastModified>2026-11-28T01:28:50.000Z</LastModified>"
        b"<ETag>&quot;e&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
        b"</ListBucketResult>"
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = tmp_path / "out" / "o.jsonl"
    out.parent.mkdir()
    with stub_server(200, body, tls=context) as url:
        result = run_scanner(["scan", "s3://bucket", "--endpoint-url", url, "-o", str(out)], env)
        assert_one_error_line(result, 5, "certificate")
        no_output_left(out.parent)
        bundle = tmp_path / "ca.pem"
        authority.cert_pem.write_to_path(str(bundle))
        result = run_scanner(
            ["scan", "s3://bucket", "--endpoint-url", url, "--ca-bundle", str(bundle), "-o", str(out)], env
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["key"] == "k"


def test_configured_by_environment_alone(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a/1", "a/2", "b/3"])
    out = tmp_path / "out.csv"
    env = {
        **moto_target.env(),
        "SCANNER_URI": f"s3://{bucket}/a/",
        "SCANNER_OUTPUT": str(out),
        "SCANNER_FORMAT": "csv",
        "SCANNER_CONCURRENCY": "4",
        "SCANNER_QUIET": "true",
    }
    result = run_scanner(["scan"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert out.read_text().splitlines()[1].startswith("a/1,1,")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_scan_leaves_no_output(
    moto_target: S3Target, tmp_path: Path, signum: int, code: int
) -> None:
    bucket = moto_target.shared_bucket("nested", nested_keys())
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", f"s3://{bucket}", "-o", str(out), "--concurrency", "2"],
        env={**moto_target.env(), "PYTHONPATH": str(REPO_ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    assert process.poll() is None, "the scan finished before it could be interrupted"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    no_output_left(tmp_path)


def _listing_body(key: str) -> bytes:
    return (
        b"<?xml version='1.0'?><ListBucketResult><Name>bucket</Name><IsTruncated>false</IsTruncated>"
        b"<Contents><Key>" + key.encode() + b"</Key><LastModified>2026-11-28T01:28:50.000Z</LastModified>"
        b"<ETag>&quot;e&quot;</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
        b"</ListBucketResult>"
    )


class _RegionHandler(BaseHTTPRequestHandler):
    """Answers like S3 for a bucket in eu-west-1: a redirect to requests signed for another region."""

    home = "eu-west-1"
    always = False  # redirect even requests signed for the home region

    def do_GET(self) -> None:
        signed_for = re.search(r"Credential=[^/]+/\d+/([^/]+)/", self.headers.get("Authorization", ""))
        if signed_for and signed_for.group(1) == self.home and not self.always:
            body, status = _listing_body("in-eu-west-1"), 200
        else:
            body = (
                b"<?xml version='1.0'?><Error><Code>PermanentRedirect</Code><Message>The bucket you "
                b"are attempting to access must be addressed using the specified endpoint.</Message></Error>"
            )
            status = 301
        self.send_response(status)
        self.send_header("x-amz-bucket-region", self.home)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_wrong_region_is_followed_once(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RegionHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = tmp_path / "o.jsonl"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_scanner(["scan", "s3://bucket", "--endpoint-url", url, "-o", str(out)], env)
        assert result.returncode == 0, result.stderr
        assert json.loads(out.read_text())["key"] == "in-eu-west-1"
        _RegionHandler.always = True  # a redirect that following cannot satisfy
        out.unlink()
        result = run_scanner(["scan", "s3://bucket", "--endpoint-url", url, "-o", str(out)], env)
    finally:
        _RegionHandler.always = False
        server.shutdown()
        server.server_close()
    assert_one_error_line(result, 2, "--region eu-west-1")
    assert not out.exists()


def test_concurrent_requests_follow_the_region_redirect_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests in flight together are all redirected: one opens the client for the bucket's
    region, and the others are signed anew for it instead of failing."""
    import anyio

    from scanner.config import ConnectionConfig, S3Location
    from scanner.keyspace import KeyRange
    from scanner.storage.s3.client import S3PageSource

    for name, value in (("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")):
        monkeypatch.setenv(name, value)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RegionHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    keys: list[str] = []

    async def list_together() -> None:
        connection = ConnectionConfig(endpoint_url=url, region="us-east-1")
        async with S3PageSource(S3Location("bucket", ""), connection) as source:

            async def one() -> None:
                page = await source.list_page(KeyRange(""))
                keys.extend(record.key for record in page.records)

            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(one)

    try:
        anyio.run(list_together)
    finally:
        server.shutdown()
        server.server_close()
    assert keys == ["in-eu-west-1"] * 4


def test_expired_credentials(tmp_path: Path) -> None:
    expired = (
        b"<?xml version='1.0'?><Error><Code>ExpiredToken</Code>"
        b"<Message>The provided token has expired.</Message></Error>"
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE12",
        "AWS_SECRET_ACCESS_KEY": "expired-secret-value",
        "AWS_SESSION_TOKEN": "expired-session-token-value",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with stub_server(400, expired) as url:
        result = run_scanner(["scan", "s3://bucket", "--endpoint-url", url, "-o", str(tmp_path / "o")], env)
    assert_one_error_line(result, 3, "expired")
    for secret in ("expired-secret-value", "expired-session-token-value", "ASIAEXAMPLEEXAMPLE12"):
        assert secret not in result.stderr
    no_output_left(tmp_path)


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["--server-profile", "nope"], {}, "unknown --server-profile 'nope' (one of: auto, aws,"),
        ([], {"SCANNER_SERVER_PROFILE": "s3rver"}, "cannot list completely with --server-profile s3rver"),
        (["--server-profile", "unordered", "--shard", "0/2"], {}, "--shard needs key ranges"),
        (["--checkpoint", "CHECKPOINT"], {}, "--checkpoint saves key ranges"),
    ],
)
def test_server_profile_mistakes_are_found_before_any_request(
    options: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    options = [str(tmp_path / "c") if o == "CHECKPOINT" else o for o in options]
    bucket = "b--use1-az4--x-s3" if "--checkpoint" in options else "bucket"
    # Nothing listens on port 9: an attempted request would fail differently (exit 5).
    result = run_scanner(
        [
            "scan",
            f"s3://{bucket}",
            "--endpoint-url",
            "http://127.0.0.1:9",
            "-o",
            str(tmp_path / "o"),
            *options,
        ],
        {**os.environ, **env, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
    )
    assert result.returncode == 2
    assert result.stderr == f"error: {result.stderr.removeprefix('error: ')}"
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "o").exists()
