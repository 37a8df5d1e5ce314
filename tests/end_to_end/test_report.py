"""Progress, structured logs, the summary file and pushed metrics, end to end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import S3Target, run_scanner, scan_on_a_terminal
from tests.keysets import nested_keys


def test_summary_file_on_success_and_failure(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a/1", "a/2", "b/3"])
    summary = tmp_path / "summary.json"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o.jsonl"), "--summary", str(summary)],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(summary.read_text())
    assert document["status"] == "succeeded"
    assert document["objects"] == 3
    assert document["uri"] == f"s3://{bucket}/"
    assert document["requests"] >= 1

    result = run_scanner(["scan", "s3://no-such-bucket", "--summary", str(summary)], moto_target.env())
    assert result.returncode == 4
    document = json.loads(summary.read_text())
    assert document["status"] == "failed"
    assert document["exit_code"] == 4
    assert "does not exist" in document["error"]


def test_json_log_lines(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket([f"k{i}" for i in range(10)])
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o.jsonl"), "--log-format", "json"], moto_target.env()
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["scan-started", "scan-finished"]
    assert events[-1]["objects"] == 10
    assert all({"time", "level", "event"} <= set(e) for e in events)


class _Capture(BaseHTTPRequestHandler):
    pushes: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Capture.pushes.append(("PUT", self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def pushgateway() -> Iterator[str]:
    """A real HTTP endpoint that records what is pushed to it, as a Pushgateway would accept it."""
    _Capture.pushes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_metrics_pushed_at_the_end(moto_target: S3Target, tmp_path: Path, pushgateway: str) -> None:
    bucket = moto_target.new_bucket([f"k{i}" for i in range(7)])
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o.jsonl"), "--pushgateway", pushgateway],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    [(_, path, body)] = _Capture.pushes
    assert path == f"/metrics/job/bucket_scanner/bucket/{bucket}"
    text = body.decode()
    assert "bucket_scanner_objects 7" in text
    assert "bucket_scanner_last_run_success 1" in text
    assert "bucket_scanner_last_success_timestamp_seconds" in text
    for name in ("bytes", "requests", "retries", "duration_seconds"):
        assert f"# TYPE bucket_scanner_{name} gauge" in text

    result = run_scanner(["scan", "s3://no-such-bucket", "--pushgateway", pushgateway], moto_target.env())
    assert result.returncode == 4
    assert "bucket_scanner_last_run_success 0" in _Capture.pushes[-1][2].decode()


def test_unreachable_pushgateway_is_one_warning(moto_target: S3Target, tmp_path: Path) -> None:
    """The output is committed by then: a Job must not retry (and overwrite) a finished scan."""
    bucket = moto_target.new_bucket(["k"])
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o"), "--pushgateway", "http://127.0.0.1:9"],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("warning: pushing metrics")
    assert (tmp_path / "o").read_bytes().count(b"\n") == 1
    failed = run_scanner(
        ["scan", "s3://no-such-bucket", "--pushgateway", "http://127.0.0.1:9"], moto_target.env()
    )
    assert failed.returncode == 4, "a failed scan keeps its own exit code"


def test_progress_line_on_a_terminal(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.shared_bucket("nested", nested_keys())
    returncode, seen = scan_on_a_terminal(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o.jsonl"), "--processes", "1"], moto_target.env()
    )
    assert returncode == 0
    text = seen.decode(errors="replace")
    assert "\r" in text
    for fragment in ("keys/s", "ranges", "active", "retries"):
        assert fragment in text
    assert "scanned 20,000 objects" in text
