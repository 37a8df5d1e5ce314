"""What a run prints for people and machines, on its own: lines, events, summary, metrics."""

from __future__ import annotations

import io
import json

import pytest

from scanner.errors import ScanError
from scanner.report.console import Console, format_bytes, selection_report
from scanner.report.events import EventLog, prometheus_text, summary_document
from scanner.run.summary import ScanSummary


def _summary(**changes: object) -> ScanSummary:
    summary = ScanSummary(objects=3075, bytes=5 << 20, seconds=1.5)
    summary.requests.requests = 12
    for name, value in changes.items():
        setattr(summary, name, value)
    return summary


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (5 << 20, "5.0 MiB"), (3 << 50, "3072.0 TiB")],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_finished_says_what_was_scanned() -> None:
    stream = io.StringIO()
    Console(stream=stream).finished(_summary())
    assert stream.getvalue() == (
        "scanned 3,075 objects, 5.0 MiB, in 1.50 s (2,050 keys/s); 12 requests, 0 retries\n"
    )


def test_finished_mentions_a_switch_of_strategy_and_the_selection() -> None:
    stream = io.StringIO()
    summary = _summary(switched_because="the server lists out of byte order", matched=10, tasks=2)
    summary.skipped = {"excluded": 3065}
    Console(stream=stream).finished(summary)
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("the server lists out of byte order: listed folder by folder instead")
    assert lines[2] == "10 objects matched; 2 tasks written; skipped: excluded 3,065"


def test_selection_report_is_empty_without_filters() -> None:
    assert selection_report(_summary()) == ""


def test_lines_are_redacted() -> None:
    stream = io.StringIO()
    Console(secrets=("wJalrXUtnFEMI/K7MDENG",), stream=stream).error(
        "failed with wJalrXUtnFEMI/K7MDENG and X-Amz-Signature=abcdef0123"
    )
    assert stream.getvalue() == "error: failed with [redacted] and X-Amz-Signature=[redacted]\n"


def test_json_events_are_one_object_a_line_at_or_above_the_level() -> None:
    stream = io.StringIO()
    log = EventLog("json", "info", stream)
    log.event("debug", "hidden")
    log.event("info", "scan-started", uri="s3://b/p")
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert (event["level"], event["event"], event["uri"]) == ("info", "scan-started", "s3://b/p")


def test_summary_document_of_a_failure_carries_its_exit_code() -> None:
    document = summary_document(_summary(), "s3://b/", "failed", ScanError("boom"))
    assert (document["status"], document["uri"], document["error"], document["exit_code"]) == (
        "failed",
        "s3://b/",
        "boom",
        1,
    )
    assert document["requests"] == 12


def test_prometheus_text_has_every_metric_once() -> None:
    text = prometheus_text(summary_document(_summary(), "s3://b/", "succeeded"), True).decode()
    names = [line.split()[0] for line in text.splitlines() if not line.startswith("#")]
    assert names == [
        "bucket_scanner_objects",
        "bucket_scanner_bytes",
        "bucket_scanner_requests",
        "bucket_scanner_retries",
        "bucket_scanner_duration_seconds",
        "bucket_scanner_last_run_success",
        "bucket_scanner_last_success_timestamp_seconds",
    ]
