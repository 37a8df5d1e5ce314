"""The rough edges a new user hits: each test here failed before the fix it names.

Every bad input is one ``error:`` line on stderr, a documented exit code, found before the first
request where it can be, and no output left behind.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, S3Target, run_scanner, scan_on_a_terminal
from tests.faultproxy import FaultProxy
from tests.http_stub import stub_server
from tests.keysets import nested_keys

INTERNAL_ERROR = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>boom</Message></Error>"
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


# --- --concurrency: bounded by what helps and by the open-file limit ---------------------------


def test_concurrency_above_the_maximum_is_a_usage_error() -> None:
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", NOWHERE, "--concurrency", "100000"], offline_env()
    )
    one_error_line(result, 2, "--concurrency", "1024")
    result = run_scanner(
        ["scan", "s3://bucket", "--endpoint-url", NOWHERE], offline_env(SCANNER_CONCURRENCY="5000")
    )
    one_error_line(result, 2, "SCANNER_CONCURRENCY", "1024")


def summary_of(result: subprocess.CompletedProcess[str], path: Path) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_many_requests_in_flight_cost_few_requests_on_a_small_bucket(
    moto_target: S3Target, tmp_path: Path
) -> None:
    """--concurrency 1000 on 3,075 keys sent 2,131 requests (12 at the default): discovery and
    probes looked for a cut point per request slot."""
    bucket = moto_target.shared_bucket("nested-3075", nested_keys(3075))
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(out), "--concurrency", "1000", "--summary", str(summary)],
        moto_target.env(),
    )
    document = summary_of(result, summary)
    assert document["objects"] == 3075
    assert len(out.read_text().splitlines()) == 3075
    assert document["requests"] < 120, document


def _low_file_limit(limit: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


def test_concurrency_is_lowered_to_what_the_open_file_limit_allows(
    moto_target: S3Target, tmp_path: Path
) -> None:
    """With ``ulimit -n 160``, --concurrency 1000 ran out of descriptors and exited 5 saying it
    could not connect; now it lowers itself, says so in one warning line, and lists everything."""
    bucket = moto_target.shared_bucket("nested-3075", nested_keys(3075))
    out = tmp_path / "o.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", f"s3://{bucket}", "-o", str(out), "--concurrency", "1000"],
        env={**moto_target.env(), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=_low_file_limit(160),
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: --concurrency 1000 lowered to 48: the open-file limit is 160 (raise it with ulimit -n)"
    ], result.stderr
    assert len(out.read_text().splitlines()) == 3075


_EXHAUST_DESCRIPTORS = """
import os, sys, anyio
from scanner.config import ConnectionConfig, S3Location
from scanner.errors import ScanError
from scanner.keyspace import KeyRange
from scanner.storage.s3.client import S3PageSource

async def main() -> None:
    connection = ConnectionConfig(endpoint_url=sys.argv[1], region="us-east-1", max_attempts=3)
    async with S3PageSource(S3Location(sys.argv[2], ""), connection) as source:
        await source.list_page(KeyRange(""))  # one request made: everything is loaded
        await source._http.close()  # no connection to reuse: the next request opens one
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            await source.list_page(KeyRange(""))
        except ScanError as exc:
            for fd in held:
                os.close(fd)
            print(type(exc).__name__, exc)
        await source._http.close()

anyio.run(main)
"""


def test_running_out_of_descriptors_is_not_an_unreachable_endpoint(moto_target: S3Target) -> None:
    bucket = moto_target.new_bucket(["a"])
    result = subprocess.run(
        [sys.executable, "-c", _EXHAUST_DESCRIPTORS, moto_target.endpoint_url, bucket],
        env={**moto_target.env(), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kind, _, message = result.stdout.strip().partition(" ")
    assert kind == "ScanError", result.stdout  # not EndpointError (exit 5)
    assert message.startswith("out of file descriptors connecting to http://127.0.0.1:"), message
    assert "ulimit -n" in message


def test_a_failed_range_is_named_by_its_folder_not_its_bounds(moto_target: S3Target, tmp_path: Path) -> None:
    """Errors showed a split range's raw bounds, such as ('\\u07c0,', the end]."""
    keys = [f"{i:04x}\u07c0{i}" for i in range(3000)]
    bucket = moto_target.shared_bucket("flat-odd-3000", keys)
    with FaultProxy(
        moto_target.endpoint_url,
        credentials=(moto_target.access_key, moto_target.secret_key),
        rate=1.0,
        kinds=["internal_500"],
        from_request=4,
    ) as proxy:
        result = run_scanner(
            [
                "scan",
                f"s3://{bucket}",
                "--endpoint-url",
                proxy.url,
                "--max-attempts",
                "2",
                "-o",
                str(tmp_path / "o"),
            ],
            {**moto_target.env(), "AWS_ENDPOINT_URL": proxy.url},
        )
    line = one_error_line(result, 1, f"s3://{bucket}/", "after repeated failures", "InternalError")
    assert "\u07c0" not in line
    assert "the end" not in line
    assert "the start" not in line
    assert not (tmp_path / "o").exists()


# --- a stopped scan says what already went to standard output -----------------------------------


def test_sigint_while_writing_to_stdout_says_what_was_written(moto_target: S3Target) -> None:
    """It said "interrupted; no output was written" after 5,000 lines had gone out."""
    bucket = moto_target.shared_bucket("nested-20000", nested_keys())
    process = subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", f"s3://{bucket}", "--concurrency", "2"],
        env={**moto_target.env(), "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert process.stdout is not None
    # Some output, then nobody reads: the pipe fills and the scan waits on it, so it is still
    # running when the signal arrives, however fast the server is. (Unbuffered: what is read
    # here is all that left the pipe.)
    first = process.stdout.read(1)
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=120)
    written = first + rest
    assert process.returncode == 130, stderr
    lines = written.count(b"\n")
    assert 0 < lines < 20_000
    assert stderr.decode().splitlines() == [
        f"error: interrupted; {lines:,} lines ({len(written):,} bytes) had already gone to standard output"
    ]


# --- JSON logs, debug events, and the summary of a failed run -----------------------------------


def json_events(stderr: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in stderr.splitlines()]
    assert all({"time", "level", "event"} <= set(event) for event in events), events
    return events


def test_scan_finished_carries_the_uri(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["p/a", "p/b"])
    result = run_scanner(
        ["scan", f"s3://{bucket}/p/", "-o", str(tmp_path / "o"), "--log-format", "json"], moto_target.env()
    )
    assert result.returncode == 0, result.stderr
    finished = json_events(result.stderr)[-1]
    assert finished["event"] == "scan-finished"
    assert finished["uri"] == f"s3://{bucket}/p/"


def test_a_failure_is_a_json_event_with_json_logs(moto_target: S3Target, tmp_path: Path) -> None:
    result = run_scanner(
        ["scan", "s3://no-such-bucket", "-o", str(tmp_path / "o"), "--log-format", "json"], moto_target.env()
    )
    assert result.returncode == 4
    failed = json_events(result.stderr)[-1]
    assert failed["event"] == "scan-failed"
    assert failed["level"] == "error"
    assert failed["uri"] == "s3://no-such-bucket/"
    assert failed["exit_code"] == 4
    assert "does not exist" in failed["error"]
    # A usage error too, from the environment's SCANNER_LOG_FORMAT.
    result = run_scanner(
        ["scan", "s3://bucket", "--concurrency", "0"], offline_env(SCANNER_LOG_FORMAT="json")
    )
    assert result.returncode == 2
    [failed] = json_events(result.stderr)
    assert failed["event"] == "scan-failed"
    assert failed["exit_code"] == 2


def test_debug_log_level_adds_strategy_and_retry_events(moto_target: S3Target, tmp_path: Path) -> None:
    """--log-level debug added nothing."""
    bucket = moto_target.new_bucket([f"k{i}" for i in range(10)])
    with FaultProxy(
        moto_target.endpoint_url,
        credentials=(moto_target.access_key, moto_target.secret_key),
        schedule={1: "internal_500"},
    ) as proxy:
        result = run_scanner(
            [
                "scan",
                f"s3://{bucket}",
                "--endpoint-url",
                proxy.url,
                "-o",
                str(tmp_path / "o"),
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
            {**moto_target.env(), "AWS_ENDPOINT_URL": proxy.url},
        )
    assert result.returncode == 0, result.stderr
    events = {event["event"]: event for event in json_events(result.stderr)}
    assert events["listing-strategy"]["strategy"] == "ranges"
    assert events["listing-strategy"]["server_profile"] == "auto"
    retried = events["request-retried"]
    assert retried["where"] == f"s3://{bucket}/"
    assert retried["attempt"] == 1
    assert "InternalError" in retried["reason"]
    # Not at the default level.
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o"), "--log-format", "json"], moto_target.env()
    )
    assert [event["event"] for event in json_events(result.stderr)] == ["scan-started", "scan-finished"]


def test_summary_after_a_failure_counts_the_requests(tmp_path: Path) -> None:
    """After a failure --summary said "requests": 0."""
    summary = tmp_path / "s.json"
    with stub_server(500, INTERNAL_ERROR) as url:
        result = run_scanner(
            [
                "scan",
                "s3://bucket",
                "--endpoint-url",
                url,
                "--max-attempts",
                "3",
                "--concurrency",
                "1",
                "--summary",
                str(summary),
            ],
            offline_env(),
        )
    one_error_line(result, 1, "InternalError")
    document = json.loads(summary.read_text())
    assert document["status"] == "failed"
    assert document["requests"] == 3
    assert document["retries"] == 3


# --- the progress line, unknown variables, plurals and names ------------------------------------


def test_progress_line_clears_what_a_longer_one_left(moto_target: S3Target, tmp_path: Path) -> None:
    """Each redraw was a bare "\\r": a shorter line left the end of the longer one on screen."""
    bucket = moto_target.shared_bucket("nested-20000", nested_keys())
    returncode, seen = scan_on_a_terminal(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o"), "--processes", "1"], moto_target.env()
    )
    assert returncode == 0
    redraws = [part for part in seen.decode(errors="replace").split("\r") if " active " in part]
    assert redraws, seen
    assert all(part.endswith("\x1b[K") for part in redraws), redraws


def test_unknown_scanner_variables_are_named_in_one_warning(moto_target: S3Target, tmp_path: Path) -> None:
    """A typo in a ConfigMap went unnoticed."""
    bucket = moto_target.new_bucket(["a"])
    out = tmp_path / "o.jsonl"
    env = {
        **moto_target.env(),
        "SCANNER_CONCURENCY": "4",
        "SCANNER_FROBNICATE": "1",
        "SCANNER_OUTPUT": str(out),
        "SCANNER_QUIET": "true",
    }
    result = run_scanner(["scan", f"s3://{bucket}"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: ignoring unknown environment variables "
        "SCANNER_CONCURENCY (did you mean SCANNER_CONCURRENCY?), SCANNER_FROBNICATE"
    ]
    assert out.exists()
    # Options of other commands (a ConfigMap shared with merge and plan) are known names.
    env = {k: v for k, v in env.items() if k not in ("SCANNER_CONCURENCY", "SCANNER_FROBNICATE")}
    result = run_scanner(
        ["scan", f"s3://{bucket}"], {**env, "SCANNER_SHARDS": "4", "SCANNER_SHARD_COUNT": "2"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_one_of_each_is_singular(moto_target: S3Target, tmp_path: Path) -> None:
    """ "1 objects matched; 1 tasks written"."""
    bucket = moto_target.new_bucket(["s/1.dcm"])
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-f", "items", "--concurrency", "1", "-o", str(tmp_path / "items.json")],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    summary, report = result.stderr.splitlines()
    assert summary.startswith("scanned 1 object, 1 B, in "), summary
    assert summary.endswith("; 1 request, 0 retries"), summary
    assert report == "1 object matched; 1 task written"


def test_name_collision_names_the_options_that_resolve_it(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a/x.dcm", "b/x.dcm"])
    out = tmp_path / "items.json"
    result = run_scanner(
        [
            "scan",
            f"s3://{bucket}",
            "-f",
            "items",
            "--group",
            "file",
            "--name-template",
            "{folder}",
            "-o",
            str(out),
        ],
        moto_target.env(),
    )
    one_error_line(result, 1, "'x.dcm'", "--name-template", "--dedupe-names")
    assert not out.exists()


def test_checkpoint_mismatch_names_what_differs(tmp_path: Path) -> None:
    checkpoint, out = tmp_path / "checkpoint", tmp_path / "o.csv"
    with stub_server(500, INTERNAL_ERROR) as url:
        common = [
            "s3://bucket/p/",
            "--endpoint-url",
            url,
            "--max-attempts",
            "1",
            "--checkpoint",
            str(checkpoint),
        ]
        first = run_scanner(["scan", *common, "-f", "csv", "--type", "dicom", "-o", str(out)], offline_env())
        assert first.returncode == 1, first.stderr
        assert (checkpoint / "manifest.json").exists(), first.stderr
        result = run_scanner(["scan", *common, "-o", str(tmp_path / "o.jsonl")], offline_env())
    one_error_line(result, 2, "--format csv (this run: jsonl)", "--type dicom (this run: none)")


def test_root_level_files_are_a_task_named_after_the_bucket(moto_target: S3Target, tmp_path: Path) -> None:
    """In series mode the files at the bucket root were a task named "."."""
    bucket = moto_target.new_bucket(["top.dcm", "s/1.dcm"])
    out = tmp_path / "items.json"
    result = run_scanner(["scan", f"s3://{bucket}", "-f", "items", "-o", str(out)], moto_target.env())
    assert result.returncode == 0, result.stderr
    assert [task["name"] for task in json.loads(out.read_text())] == ["s", bucket]


# --- --changes-only and deleted objects ---------------------------------------------------------


def test_changes_only_reports_deletions_with_the_option(moto_target: S3Target, tmp_path: Path) -> None:
    """--changes-only never said which objects were gone; --deletions writes them, in key order."""
    bucket = moto_target.new_bucket(["a/1.dcm", "a/2.dcm", "b/1.dcm", "c/1.dcm", "z/9.dcm"])
    state = tmp_path / "state.gz"
    first = run_scanner(
        ["scan", f"s3://{bucket}", "--state", str(state), "-o", str(tmp_path / "0")], moto_target.env()
    )
    assert first.returncode == 0, first.stderr
    client = moto_target.client()
    client.put_object(Bucket=bucket, Key="a/2.dcm", Body=b"changed")
    client.put_object(Bucket=bucket, Key="d/1.dcm", Body=b"new")
    client.delete_object(Bucket=bucket, Key="b/1.dcm")
    client.delete_object(Bucket=bucket, Key="z/9.dcm")  # past the last key listed
    out = tmp_path / "changes.jsonl"
    second = run_scanner(
        ["scan", f"s3://{bucket}", "--state", str(state), "--changes-only", "--deletions", "-o", str(out)],
        moto_target.env(),
    )
    assert second.returncode == 0, second.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["key"], r.get("deleted", False)) for r in records] == [
        ("a/2.dcm", False),
        ("b/1.dcm", True),
        ("d/1.dcm", False),
        ("z/9.dcm", True),
    ]
    gone = records[1]
    assert gone["size"] == 1
    assert gone["storage_class"] is None
    assert set(gone) == {"key", "size", "last_modified", "etag", "storage_class", "deleted"}
    assert "deleted" not in records[0]


def test_deletions_in_csv_have_their_own_column(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a", "b"])
    state = tmp_path / "state.gz"
    assert (
        run_scanner(
            ["scan", f"s3://{bucket}", "--state", str(state), "-o", str(tmp_path / "0")], moto_target.env()
        ).returncode
        == 0
    )
    moto_target.client().delete_object(Bucket=bucket, Key="a")
    moto_target.client().put_object(Bucket=bucket, Key="c", Body=b"new")
    out = tmp_path / "changes.csv"
    result = run_scanner(
        [
            "scan",
            f"s3://{bucket}",
            "-f",
            "csv",
            "--state",
            str(state),
            "--changes-only",
            "--deletions",
            "-o",
            str(out),
        ],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    rows = out.read_bytes().decode().split("\r\n")
    assert rows[0] == "key,size,last_modified,etag,storage_class,deleted"
    assert rows[1].startswith("a,1,")
    assert rows[1].endswith(",,true")
    assert rows[2].startswith("c,3,")
    assert rows[2].endswith(",STANDARD,")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--deletions"], "--deletions needs --changes-only"),
        (["--state", "STATE", "--changes-only", "--deletions", "-f", "items"], "--deletions applies to"),
    ],
)
def test_deletions_mistakes_are_usage_errors(options: list[str], fragment: str, tmp_path: Path) -> None:
    options = [str(tmp_path / "s.gz") if option == "STATE" else option for option in options]
    result = run_scanner(["scan", "s3://bucket", "--endpoint-url", NOWHERE, *options], offline_env())
    one_error_line(result, 2, fragment)


# --- make demo ----------------------------------------------------------------------------------


def test_demo_is_quiet_and_shows_both_outputs(tmp_path: Path) -> None:
    """make demo printed 44 lines of moto's access log and never showed an items list."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--out", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCANNER_"))},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Only the scanner's own summary lines: two scans, the second with its selection report.
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith("scanned 40 objects")
    assert lines[1].startswith("scanned 34 objects")
    assert lines[2].startswith("30 objects matched; 6 tasks written")
    assert '{"key":"archive/study001/report.txt"' in result.stdout
    assert '{"name":"study001/series001","series":[{"items":["archive/study001/series001/0001.dcm"' in (
        result.stdout
    )
    assert json.loads((tmp_path / "items.json").read_text())[0]["name"] == "study001/series001"


def test_license_is_an_spdx_expression() -> None:
    """A TOML table made setuptools warn that project.license is deprecated on every install."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"


# --- docs that disagreed -----------------------------------------------------------------------

README = REPO_ROOT / "README.md"
K8S = REPO_ROOT / "deploy" / "k8s"


def test_cronjob_states_the_spill_budget_the_scanner_has() -> None:
    """cronjob.yaml said spills start past 64 MiB; config.py and the README say 16 MiB."""
    import re

    from scanner.config import ScanConfig

    stated = re.findall(r"past a (\d+) MiB budget", (K8S / "cronjob.yaml").read_text())
    budget = ScanConfig.__dataclass_fields__["memory_budget"].default
    assert stated == [str(int(budget) // (1024 * 1024))]


def test_configmap_states_the_default_process_count_as_the_readme_does() -> None:
    """configmap.yaml called the default "the usable CPUs" (every CPU of the node); the README
    says auto, capped by the container's CPU limit."""
    configmap = (K8S / "configmap.yaml").read_text()
    assert "The default, auto," in configmap
    assert "sched_getaffinity ignores the cgroup" not in configmap
    assert "`auto` (default)" in README.read_text()


def test_readme_documents_static_keys_pod_identity_and_the_default_type() -> None:
    text = README.read_text()
    assert "deploy/k8s/secret.example.yaml" in text
    assert "Pod Identity" in text
    assert "create-pod-identity-association" in text
    assert "default `any`, in items lists too" in text
    result = run_scanner(["scan", "--help"], offline_env())
    assert "default any, items lists too" in " ".join(result.stdout.split())
