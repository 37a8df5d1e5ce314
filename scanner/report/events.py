"""What a scan tells people and machines: progress, log events, the summary, pushed metrics.

- On a terminal, a progress line on stderr, redrawn a few times a second.
- Otherwise, one log event per line (``--log-format json|text``): start, progress every few
  seconds, end or failure. JSON lines suit log collectors in Kubernetes.
- ``--summary PATH`` writes the final summary as one JSON object (written in place, so
  ``/dev/termination-log`` works), and ``--pushgateway URL`` pushes it as Prometheus metrics at
  the end: a CronJob's pod is gone before anything could scrape it.
Nothing here ever prints a credential: messages pass through ``redact`` first.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, Final
from urllib.parse import quote

import anyio
import orjson

from scanner.errors import ScanError, redact

LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_PROGRESS_INTERVAL: Final = 0.25
_LOG_PROGRESS_INTERVAL: Final = 10.0


class EventLog:
    """Structured events on stderr: JSON objects or ``key=value`` text, one per line."""

    def __init__(self, fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
        self._json = fmt == "json"
        self._level = LEVELS[level]
        self._stream = stream if stream is not None else sys.stderr
        self.secrets: tuple[str, ...] = ()

    def event(self, level: str, name: str, **fields: Any) -> None:
        if LEVELS[level] < self._level:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if self._json:
            line = orjson.dumps({"time": now, "level": level, "event": name, **fields}).decode()
        else:
            parts = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
            line = f"{now} {level} {name} {parts}".rstrip()
        print(redact(line, self.secrets), file=self._stream, flush=True)


# Debug events from the layers below (``logging.getLogger("scanner....")``), each a message that
# names the event and ``extra={"fields": {...}}``: the library logs through ``logging`` as usual,
# and the command line turns the records into events of its ``EventLog``.
_PYTHON_LEVELS: Final = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}


class EventHandler(logging.Handler):
    """``logging`` records of the ``scanner`` loggers as ``EventLog`` events."""

    def __init__(self, log: EventLog) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = _PYTHON_LEVELS.get(record.levelno, "error")
        fields = getattr(record, "fields", None) or {}
        self._log.event(level, record.getMessage(), **fields)


def route_library_logs(log: EventLog, level: str) -> None:
    """Send the ``scanner`` loggers' records at ``level`` and above to ``log`` (and nowhere else)."""
    logger = logging.getLogger("scanner")
    logger.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logger.addHandler(EventHandler(log))
    logger.propagate = False


def _text(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if " " in text else text


def summary_document(
    summary: Any, location: str, status: str, error: ScanError | None = None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "status": status,
        "uri": location,
        "objects": summary.objects if summary else 0,
        "bytes": summary.bytes if summary else 0,
        "requests": summary.requests.requests if summary else 0,
        "retries": summary.requests.retries if summary else 0,
        "seconds": round(summary.seconds, 3) if summary else 0,
        "keys_per_second": round(summary.keys_per_second) if summary else 0,
        "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if summary is not None and summary.matched is not None:
        document["matched"] = summary.matched
    if summary is not None and summary.tasks is not None:
        document["tasks"] = summary.tasks
    if summary is not None and summary.changes:
        document["changes"] = dict(summary.changes)
    if summary is not None and summary.enumeration.handed_over:
        document["worker_ranges"] = summary.enumeration.handed_over
    if summary is not None and summary.switched_because:
        document["listing"] = summary.strategy
        document["switched_because"] = summary.switched_because
    elif summary is not None and summary.strategy != "ranges":
        document["listing"] = summary.strategy
    if summary is not None and getattr(summary, "limited", False):
        document["limited"] = True
    if summary is not None and summary.resumed_objects:
        document["resumed_objects"] = summary.resumed_objects
    if summary is not None and summary.skipped:
        document["skipped"] = dict(sorted(summary.skipped.items()))
    if error is not None:
        document["error"] = str(error)
        document["exit_code"] = error.exit_code
    return document


def write_summary(path: str, document: dict[str, Any]) -> None:
    """In place (not temp-and-rename), so device files such as /dev/termination-log work."""
    try:
        with open(path, "wb") as handle:
            handle.write(orjson.dumps(document) + b"\n")
    except OSError as exc:
        raise ScanError(f"cannot write the summary to {path!r}: {exc.strerror}") from None


def prometheus_text(document: dict[str, Any], succeeded: bool) -> bytes:
    lines = []

    def metric(name: str, kind: str, help_text: str, value: float) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"])

    metric("bucket_scanner_objects", "gauge", "Objects listed by the last run.", document["objects"])
    metric("bucket_scanner_bytes", "gauge", "Bytes in the objects listed by the last run.", document["bytes"])
    metric(
        "bucket_scanner_requests", "gauge", "ListObjectsV2 requests of the last run.", document["requests"]
    )
    metric("bucket_scanner_retries", "gauge", "Retried requests in the last run.", document["retries"])
    metric("bucket_scanner_duration_seconds", "gauge", "Wall time of the last run.", document["seconds"])
    metric("bucket_scanner_last_run_success", "gauge", "1 if the last run succeeded.", 1 if succeeded else 0)
    if succeeded:
        metric(
            "bucket_scanner_last_success_timestamp_seconds",
            "gauge",
            "When the last successful run ended (Unix time).",
            round(time.time(), 3),
        )
    return ("\n".join(lines) + "\n").encode()


def push_metrics(url: str, job_labels: dict[str, str], body: bytes, timeout: float = 10.0) -> None:
    """PUT the metrics to a Prometheus Pushgateway, grouped by job (and shard, if any)."""
    # Only a run with --pushgateway needs urllib's HTTP client (start-up).
    import urllib.error
    import urllib.request

    path = "/metrics/job/bucket_scanner" + "".join(
        f"/{quote(name, safe='')}/{quote(value, safe='')}" for name, value in job_labels.items()
    )
    request = urllib.request.Request(
        url.rstrip("/") + path, data=body, method="PUT", headers={"Content-Type": "text/plain; version=0.0.4"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ScanError(f"pushing metrics to {url} failed: {redact(str(reason))}") from None


async def show_progress(snapshot: Callable[[], dict[str, Any]], log: EventLog, terminal: bool) -> None:
    """Redraw a progress line on a terminal, or log a progress event every few seconds."""
    started = time.monotonic()
    interval = _PROGRESS_INTERVAL if terminal else _LOG_PROGRESS_INTERVAL
    try:
        while True:
            await anyio.sleep(interval)
            state = snapshot()
            elapsed = time.monotonic() - started
            rate = state["objects"] / elapsed if elapsed > 0 else 0
            if terminal:
                # Clear to the end of the line: a shorter line must not leave the last one's tail.
                line = (
                    f"\r{state['objects']:,} objects  {rate:,.0f} keys/s  ranges {state['done']} done "
                    f"{state['active']} active  {state['retries']} retries  {elapsed:,.1f} s\033[K"
                )
                print(line, end="", file=sys.stderr, flush=True)
            else:
                log.event("info", "progress", elapsed=round(elapsed, 1), keys_per_second=round(rate), **state)
    finally:
        if terminal:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
