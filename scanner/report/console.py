"""Everything a run prints on standard error for people: errors, warnings, the closing lines.

Log events (``EventLog``) and the progress display (``show_progress``) are in ``events``; this
module writes the plain lines. Every line passes through ``redact`` with the run's secrets.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from scanner.errors import redact


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def plural(count: int, word: str, many: str | None = None) -> str:
    """``word`` for one, ``many`` (or ``word`` + "s") otherwise."""
    return word if count == 1 else (many or word + "s")


def counted(count: int, word: str, many: str | None = None) -> str:
    """``1 object``, ``2 objects``, ``1,000 retries``."""
    return f"{count:,} {plural(count, word, many)}"


class Console:
    """Plain lines on stderr, redacted."""

    def __init__(self, secrets: tuple[str, ...] = (), stream: IO[str] | None = None) -> None:
        self.secrets = secrets
        self._stream = stream

    def line(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        print(redact(text, self.secrets), file=stream, flush=True)

    def error(self, message: str) -> None:
        self.line(f"error: {message}")

    def warning(self, message: str) -> None:
        self.line(f"warning: {message}")

    def finished(self, summary: Any) -> None:
        """The closing lines of a successful scan (``summary`` is a ``ScanSummary``)."""
        self.line(
            f"scanned {counted(summary.objects, 'object')}, {format_bytes(summary.bytes)}, "
            f"in {summary.seconds:.2f} s ({summary.keys_per_second:,.0f} keys/s); "
            f"{counted(summary.requests.requests, 'request')}, "
            f"{counted(summary.requests.retries, 'retry', 'retries')}"
        )
        if summary.enumeration.handed_over:
            self.line(
                f"{counted(summary.enumeration.handed_over, 'range was', 'ranges were')} listed by "
                "worker processes (this process was CPU-bound)"
            )
        if summary.switched_because:
            self.line(
                f"{summary.switched_because}: listed folder by folder instead (--server-profile "
                "unordered skips the first attempt)"
            )
        if summary.resumed_objects:
            self.line(
                f"resumed from the checkpoint: {summary.resumed_objects:,} of those objects were listed "
                "by the run that saved it"
            )
        report = selection_report(summary)
        if report:
            self.line(report)


def selection_report(summary: Any) -> str:
    """What the filters and grouping kept and left out, by reason; empty when neither ran."""
    parts = []
    if summary.matched is not None:
        parts.append(f"{counted(summary.matched, 'object')} matched")
    if summary.tasks is not None:
        parts.append(f"{counted(summary.tasks, 'task')} written")
    if summary.changes:
        changes = ", ".join(f"{name} {count:,}" for name, count in summary.changes.items())
        parts.append(f"since the last run: {changes}")
    if summary.skipped:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(summary.skipped.items()))
        parts.append(f"skipped: {reasons}")
    return "; ".join(parts)
