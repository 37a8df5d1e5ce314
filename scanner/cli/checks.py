"""Checks of the command line that need no request: every bad input found before the first one.

Each check raises ``UsageError`` (exit code 2) with one line that names the option, or returns
what the scan should use instead (with a warning to print).
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from scanner.config import parse_s3_uri
from scanner.errors import ScanError, UsageError
from scanner.report.console import counted, plural
from scanner.storage.limits import MAX_CONCURRENCY, fit_to_descriptors, out_of_descriptors

if TYPE_CHECKING:
    from scanner.output.compression import Compression
    from scanner.run.summary import ScanSummary

__all__ = ["counted", "plural"]


def check_output(output: str, role: str = "output") -> None:
    """Reject an unusable output (or ``--state``) before any request is made."""
    if output == "-":
        return
    if output.startswith("s3://"):
        if not parse_s3_uri(output).prefix or output.endswith("/"):
            raise UsageError(f"{role} {output!r} must name an object (s3://BUCKET/KEY), not a folder")
        return
    directory = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise UsageError(f"{role} path {output!r} is a directory")
    if not os.path.isdir(directory):
        raise UsageError(f"{role} directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"cannot write to {role} directory {directory!r}")


def concurrency(text: str) -> int:
    """``--concurrency``: a whole number from 1 to ``MAX_CONCURRENCY``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    if value > MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"{value} is more than {MAX_CONCURRENCY} requests in flight, which only queue behind "
            "the CPU (--processes or --shard list faster)"
        )
    return value


def fit_concurrency(requested: int) -> int:
    """``requested`` as the open-file limit allows (raised if it may be), with a warning if lowered."""
    fitted, limit = fit_to_descriptors(requested)
    if limit is not None:
        print(
            f"warning: --concurrency {requested} lowered to {fitted}: the open-file limit is {limit} "
            "(raise it with ulimit -n)",
            file=sys.stderr,
            flush=True,
        )
    return fitted


def check_summary(path: str) -> None:
    """``--summary`` is written in place after the scan: it must be writable now.

    Tried for real, not with ``os.access``, which says yes to root for any path (``/proc`` too):
    an existing file (``/dev/termination-log``) is opened for appending and closed, a new one
    created and removed.
    """
    if os.path.isdir(path):
        raise UsageError(f"--summary {path!r} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path) and not os.path.isdir(directory):
        raise UsageError(f"--summary: directory {directory!r} does not exist")
    existed = os.path.exists(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | (0 if existed else os.O_CREAT | os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads yet
            return
        raise UsageError(f"--summary: cannot write to {path!r}: {exc.strerror}") from None
    os.close(fd)
    if not existed:
        os.unlink(path)


def check_temp_dir(path: str, option: str = "--temp-dir") -> None:
    """Spill files go to ``--temp-dir``: an existing directory this process can write to."""
    if not os.path.exists(path):
        raise UsageError(f"{option}: directory {path!r} does not exist")
    if not os.path.isdir(path):
        raise UsageError(f"{option}: {path!r} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: cannot write to directory {path!r}")


def check_endpoint_url(url: str | None) -> None:
    """An endpoint is an http:// or https:// URL with a host; anything else cannot be S3."""
    given = [("--endpoint-url", url)] if url else []
    if not given:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            value = os.environ.get(name)
            if value:
                given = [(name, value)]
                break
    for option, value in given:
        try:
            parts = urlsplit(value)
            scheme, host = parts.scheme.lower(), parts.hostname
        except ValueError:
            scheme, host = "", None
        if scheme not in ("http", "https"):
            raise UsageError(f"{option} {value!r} is not an http:// or https:// URL")
        if not host:
            raise UsageError(f"{option} {value!r} names no host")


def option_value(argv: Sequence[str] | None, args: argparse.Namespace | None, dest: str) -> str | None:
    """An option's value (``--summary``, ``--log-format``), even when the rest of the command
    line is bad: from the parsed arguments, else the words of argv, else ``SCANNER_<OPTION>``."""
    if args is not None:
        given: str | None = getattr(args, dest, None)
        return given
    option = "--" + dest.replace("_", "-")
    words = list(sys.argv[1:] if argv is None else argv)
    for index, word in enumerate(words):
        if word == option and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(option + "="):
            return word.removeprefix(option + "=")
    return os.environ.get("SCANNER_" + dest.upper()) or None


def uri_given(argv: Sequence[str] | None, args: argparse.Namespace | None) -> str:
    """The S3 URI of the command line, for the summary of a run that never started."""
    if args is not None:
        return str(getattr(args, "uri", None) or "")
    words = list(sys.argv[1:] if argv is None else argv)
    found = [word for word in words if word.startswith("s3://")]
    return found[0] if found else os.environ.get("SCANNER_URI", "")


def write_failure_summary(path: str | None, uri: str, error: ScanError) -> None:
    """The summary of a run that stopped before its first request, where it can be written.

    The README promises a summary after failure too; a ``--summary`` that is itself the bad input
    (or cannot be written) gets nothing more than the error line already printed.
    """
    if not path:
        return
    # only the failure path needs it (start-up)
    from scanner.report.events import summary_document, write_summary

    try:
        check_summary(path)
        write_summary(path, summary_document(None, uri, "failed", error))
    except ScanError:
        pass


def unexpected_failure(found: BaseException) -> ScanError:
    """An exception no layer turned into a ``ScanError``, as one line that says what it is."""
    if isinstance(found, OSError) and found.errno in (errno.EMFILE, errno.ENFILE):
        return ScanError(out_of_descriptors("during the scan"))
    return ScanError(f"unexpected {type(found).__name__}: {found}")


def what_was_written(output: str, summary: ScanSummary) -> str:
    """For a stopped scan: nothing at a file or S3 output, but standard output cannot be taken back."""
    if output != "-" or not (summary.streamed_bytes or summary.streamed_records):
        return "no output was written"
    if not summary.streamed_bytes:
        objects = summary.streamed_records
        listed = f"{objects:,} {plural(objects, 'object')}"
        return f"part of the output, from {listed}, may have gone to standard output"
    lines = summary.streamed_lines
    return (
        f"{lines:,} {plural(lines, 'line')} ({summary.streamed_bytes:,} bytes) had already gone to "
        "standard output"
    )


# SCANNER_* variables read by something other than an option: the debugging switch, the shard
# count of an Indexed Job, and the test suite's own (which CI sets for every command it runs).
OTHER_VARIABLES: Final = frozenset(
    {"SCANNER_DEBUG", "SCANNER_SHARD_COUNT", "SCANNER_REQUIRE_RGW", "SCANNER_REQUIRE_SERVERS"}
)


def unknown_environment(parser: argparse.ArgumentParser, prefix: str = "SCANNER_") -> str | None:
    """One warning line naming the ``SCANNER_*`` variables no command reads, with the closest
    known name for each typo; None when there are none.

    A warning, not a failure: a ConfigMap shared by several workloads (scan, merge, plan) may
    carry options one of them does not take, and they are all known names.
    """
    known = set(OTHER_VARIABLES)
    for parsers in _subcommands(parser):
        for action in parsers._actions:
            if action.dest not in ("help", "version", "command"):
                known.add(prefix + action.dest.upper())
    unknown = sorted(name for name in os.environ if name.startswith(prefix) and name not in known)
    if not unknown:
        return None
    # Compared without the prefix they all share, which would make any two names look alike.
    options = sorted(name.removeprefix(prefix) for name in known)
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix(prefix), options, n=1, cutoff=0.8)
        described.append(f"{name} (did you mean {prefix}{close[0]}?)" if close else name)
    return f"warning: ignoring unknown environment {plural(len(unknown), 'variable')} " + ", ".join(described)


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.extend(_subcommands(sub))
    return found


def check_deletions(args: argparse.Namespace, output_format: str) -> None:
    """``--deletions`` adds records to a change list of records; a task list has no such thing."""
    if not args.deletions:
        return
    if not args.changes_only:
        raise UsageError("--deletions needs --changes-only (and --state): deletions are changes")
    if output_format == "items":
        raise UsageError("--deletions applies to JSON Lines and CSV: an items list has no deleted tasks")


def output_compression(output: str, asked: str | None, output_format: str) -> Compression:
    """The output's compression, checked with its format; Parquet needs pyarrow."""
    # only the failure path needs it (start-up)
    from scanner.output.compression import choose_compression

    if output_format == "parquet":
        # only the failure path needs it (start-up)
        from scanner.output.arrow import require_pyarrow

        require_pyarrow("--format parquet")
    return choose_compression(output, asked, output_format)
