"""The command line: argv and ``SCANNER_*`` variables in, one exit code out.

This is the only module that knows about argv, the environment's ``SCANNER_*`` variables,
stderr and exit codes. Exit codes::

    0    success
    1    any other failure (after retries)
    2    usage or configuration error
    3    credentials missing or rejected, access denied
    4    bucket does not exist
    5    endpoint unreachable, not S3, or TLS failure
    130  interrupted (SIGINT); 143 terminated (SIGTERM); nothing is left at the output path
    141  standard output was closed by its reader
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from scanner import __version__
from scanner.cli.selection import add_selection_arguments, selection_from_args
from scanner.cli.shards import add_shard_commands, run_shard_command, shard_from_args, shard_range_from_args
from scanner.config import (
    DEFAULT_CONCURRENCY,
    Compression,
    ConnectionConfig,
    OutputFormat,
    ScanConfig,
    parse_s3_object_uri,
    parse_s3_uri,
)
from scanner.errors import OutputClosed, ScanError, UsageError, first_failure, redact
from scanner.keyspace import KeyRange
from scanner.listing.dialect import check_profile
from scanner.output.items import ItemsError
from scanner.run.pipeline import ScanSummary
from scanner.run.processes import can_fork, scan_with_processes, usable_cpus

ENV_PREFIX = "SCANNER_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _env_name(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _processes(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1, or auto: {text!r}") from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _flag(parser: argparse.ArgumentParser, *names: str, help: str) -> None:  # noqa: A002
    parser.add_argument(*names, action="store_true", default=None, help=help)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS, or AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="bucket region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS profile from the shared config/credentials files")
    parser.add_argument(
        "--addressing-style", choices=("auto", "path", "virtual"), help="bucket addressing (default auto)"
    )
    _flag(parser, "--no-sign-request", help="send unsigned requests (public buckets)")
    _flag(parser, "--request-payer", help="accept requester-pays charges")
    parser.add_argument("--ca-bundle", help="PEM file of CA certificates to verify TLS with")
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        help=f"most ListObjectsV2 requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--max-attempts", type=_positive_int, help="attempts per request before the scan fails (default 10)"
    )


def connection_from_args(args: argparse.Namespace) -> ConnectionConfig:
    if args.ca_bundle and not os.path.isfile(args.ca_bundle):
        raise UsageError(f"CA bundle {args.ca_bundle!r} does not exist")
    return ConnectionConfig(
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
        addressing_style=args.addressing_style or "auto",
        no_sign_request=bool(args.no_sign_request),
        request_payer=bool(args.request_payer),
        ca_bundle=args.ca_bundle,
        concurrency=args.concurrency or DEFAULT_CONCURRENCY,
        max_attempts=args.max_attempts or 10,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scanner",
        description="List an S3 bucket (or a prefix of it) fast, exactly once, in key order.",
    )
    parser.add_argument("--version", action="version", version=f"scanner {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    scan = commands.add_parser(
        "scan",
        help="list a bucket or prefix",
        description=(
            "List every object under s3://BUCKET[/PREFIX]. Every option can also be set with "
            "an environment variable SCANNER_<OPTION> (for example SCANNER_OUTPUT, "
            "SCANNER_CONCURRENCY, SCANNER_NO_SIGN_REQUEST=true); the URI with SCANNER_URI."
        ),
    )
    scan.add_argument("uri", nargs="?", help="s3://BUCKET[/PREFIX]")
    scan.add_argument("-o", "--output", help="output path, or - for standard output (default)")
    scan.add_argument(
        "-f",
        "--format",
        choices=("jsonl", "csv", "items", "parquet"),
        help="jsonl (default), csv, a RedBrick items list, or parquet (needs bucket-scanner[arrow])",
    )
    add_compress_argument(scan)
    scan.add_argument(
        "--unordered",
        action="store_true",
        default=None,
        help="write pages as they arrive instead of in key order",
    )
    scan.add_argument(
        "--server-profile",
        metavar="NAME",
        help="what the server does when it lists: auto (the default: learned from its answers), "
        "aws, rgw, minio, moto, rclone, juicefs (byte order, StartAfter), or directory, seaweedfs, "
        "noobaa, unordered (listed folder by folder, sorted on the client)",
    )
    add_connection_arguments(scan)
    scan.add_argument(
        "--processes",
        type=_processes,
        help="processes that list the key space: N from the start, or auto (the default): "
        "one, and workers up to the usable CPUs while it is CPU-bound",
    )
    scan.add_argument("--temp-dir", help="directory for spill files (default: the system's)")
    _flag(scan, "-q", "--quiet", help="no summary or progress on standard error")
    scan.add_argument(
        "--log-format", choices=("text", "json"), help="log events as text (default) or JSON lines"
    )
    scan.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")
    scan.add_argument("--summary", help="write the final summary as a JSON object to this file")
    scan.add_argument("--pushgateway", help="push run metrics to this Prometheus Pushgateway URL at the end")
    scan.add_argument(
        "--shard",
        help="list only shard INDEX/COUNT of the --plan (default from JOB_COMPLETION_INDEX and "
        "SCANNER_SHARD_COUNT when both are set)",
    )
    scan.add_argument(
        "--plan", help="with --shard: the shard plan every shard shares (file or s3://BUCKET/KEY)"
    )
    _flag(
        scan,
        "--create-plan",
        help="with an s3:// --plan: if there is none yet, make it and store it with a conditional put "
        "(the first shard's wins; every shard uses the stored one)",
    )
    scan.add_argument(
        "--state", help="snapshot of this run (path or s3://BUCKET/KEY), replaced only after success"
    )
    _flag(scan, "--changes-only", help="with --state: emit only objects (or tasks) new or changed since then")
    scan.add_argument(
        "--checkpoint",
        help="save progress to this directory or s3://BUCKET/PREFIX; a stopped scan run again "
        "with the same options resumes from it (removed on success)",
    )
    scan.add_argument(
        "--checkpoint-interval",
        type=_positive_seconds,
        help="seconds between checkpoint saves (default 30)",
    )
    add_selection_arguments(scan, _positive_int)
    add_shard_commands(commands, add_connection_arguments, _positive_int)
    return parser


def _apply_environment(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill options not given on the command line from SCANNER_<OPTION>."""
    command = _subparser(parser, args.command)
    for action in command._actions:
        if action.dest in ("help",) or getattr(args, action.dest, None) is not None:
            continue
        raw = os.environ.get(_env_name(action.dest))
        if raw is None:
            continue
        setattr(args, action.dest, _convert(action, raw))


def _convert(action: argparse.Action, raw: str) -> Any:
    name = _env_name(action.dest)
    if isinstance(action, argparse._AppendAction):
        # Repeatable options take a comma-separated list from the environment.
        values = [part.strip() for part in raw.split(",") if part.strip()]
        if action.choices is not None:
            for value in values:
                if value not in action.choices:
                    raise UsageError(
                        f"{name}: {value!r} is not one of: {', '.join(map(str, action.choices))}"
                    )
        return values or None
    if isinstance(action, argparse._StoreTrueAction):
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return None
        raise UsageError(f"{name} must be true or false, not {raw!r}")
    if action.choices is not None and raw not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"{name}={raw!r} is not one of: {choices}")
    if action.type is not None:
        convert: Callable[[str], Any] = action.type  # type: ignore[assignment]
        try:
            return convert(raw)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{name}: {exc}") from None
    return raw


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


def config_from_args(args: argparse.Namespace) -> ScanConfig:
    if not args.uri:
        raise UsageError("no S3 URI given (scanner scan s3://BUCKET[/PREFIX], or SCANNER_URI)")
    connection = connection_from_args(args)
    output = args.output or "-"
    location = parse_s3_uri(args.uri)
    output_format: OutputFormat = args.format or "jsonl"
    compression = output_compression(output, args.compress, output_format)
    selection = selection_from_args(args, location, output_format)
    if output_format == "items" and args.unordered:
        raise UsageError("--unordered cannot make an items list: tasks need keys in order")
    if selection.max_tasks_per_file is not None and output == "-":
        raise UsageError("--max-tasks-per-file writes numbered files: give --output")
    check_output(output)
    if args.changes_only and not args.state:
        raise UsageError("--changes-only needs --state PATH (the previous run's snapshot)")
    if args.state and args.unordered:
        raise UsageError("--state needs key order: it cannot be used with --unordered")
    if args.state:
        if args.state == "-":
            raise UsageError("--state must be a file path or an s3:// URI")
        check_output(args.state)
    if args.checkpoint:
        check_checkpoint(args, output)
    elif args.checkpoint_interval:
        raise UsageError("--checkpoint-interval needs --checkpoint")
    config = ScanConfig(
        location=location,
        connection=connection,
        output=output,
        output_format=output_format,
        compression=compression,
        ordered=not args.unordered,
        temp_dir=args.temp_dir or os.environ.get("TMPDIR"),
        **processes_from_args(args),
        filters=selection.filters,
        grouping=selection.grouping,
        legacy_items=selection.legacy_items,
        max_tasks_per_file=selection.max_tasks_per_file,
        # Which range is known once the plan is read (or made): after every check that takes no
        # request. Until then the whole prefix stands for it.
        shard_range=KeyRange(location.prefix) if shard_from_args(args) else None,
        state=args.state,
        changes_only=bool(args.changes_only),
        checkpoint=args.checkpoint,
        checkpoint_interval=args.checkpoint_interval or 30.0,
        server_profile=args.server_profile or "auto",
    )
    config = _fit_profile(config)
    return replace(config, shard_range=shard_range_from_args(args, location, connection))


def add_compress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compress",
        choices=("gzip", "zstd", "none"),
        help="compress the output (jsonl, csv, items); default: as its name says (.gz, .zst), else none",
    )


def output_compression(output: str, asked: str | None, output_format: str) -> Compression:
    """The output's compression, checked with its format; Parquet needs pyarrow."""
    from scanner.output.compression import choose_compression

    if output_format == "parquet":
        from scanner.output.arrow import require_pyarrow

        require_pyarrow("--format parquet")
    return choose_compression(output, asked, output_format)


def _fit_profile(config: ScanConfig) -> ScanConfig:
    """Refuse what the server profile cannot do; a tree walk lists in one process."""
    profile = check_profile(config)
    if not profile.ranged and config.processes_on_demand:
        return replace(config, processes=1, processes_on_demand=False)
    return config


def processes_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``ScanConfig``'s process settings from ``--processes``."""
    if args.checkpoint:
        return {"processes": 1}  # a checkpoint journals the one ordered output of one process
    if args.processes in (None, "auto"):
        return {"processes": usable_cpus(), "processes_on_demand": True}
    return {"processes": args.processes}


def check_checkpoint(args: argparse.Namespace, output: str) -> None:
    from scanner.checkpoint.store import check_location

    if args.unordered:
        raise UsageError("--checkpoint needs key order: it cannot be used with --unordered")
    if output == "-":
        raise UsageError(
            "--checkpoint needs --output (a file or s3://): what went to standard output cannot be taken back"
        )
    if args.checkpoint == "-":
        raise UsageError("--checkpoint must be a directory or an s3:// URI")
    check_location(args.checkpoint)


def check_output(output: str) -> None:
    """Reject an unusable output before any request is made."""
    if output == "-":
        return
    if output.startswith("s3://"):
        parse_s3_object_uri(output)
        return
    directory = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise UsageError(f"output path {output!r} is a directory")
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"cannot write to output directory {directory!r}")


def _format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _print_error(message: str, secrets: tuple[str, ...] = ()) -> None:
    print(f"error: {redact(message, secrets)}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _apply_environment(parser, args)
        if args.command != "scan":
            return run_shard_command(args, connection_from_args)
        config = config_from_args(args)
    except UsageError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except ScanError as exc:
        _print_error(str(exc))
        return exc.exit_code
    return _run(config, reporting_from_args(args))


@dataclass(frozen=True)
class Reporting:
    quiet: bool = False
    log_format: str = "text"
    log_level: str = "info"
    summary_path: str | None = None
    pushgateway: str | None = None


def reporting_from_args(args: argparse.Namespace) -> Reporting:
    return Reporting(
        quiet=bool(args.quiet),
        log_format=args.log_format or "text",
        log_level=args.log_level or "info",
        summary_path=args.summary,
        pushgateway=args.pushgateway,
    )


def _run(config: ScanConfig, reporting: Reporting) -> int:
    import anyio

    from scanner.report.events import EventLog, show_progress
    from scanner.run.pipeline import run_scan

    received: list[int] = []
    secrets = tuple(
        v for v in (os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")) if v
    )
    log = EventLog(reporting.log_format, reporting.log_level)
    log.secrets = secrets
    structured = reporting.log_format == "json"
    terminal = sys.stderr.isatty() and not structured
    live = ScanSummary()

    def progress() -> dict[str, Any]:
        stats = live.enumeration
        return {
            "objects": live.objects,
            "done": stats.ranges_done,
            "active": stats.ranges - stats.ranges_done,
            "retries": live.requests.retries,
        }

    def run_until_signalled(function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in a fresh event loop; None if SIGINT or SIGTERM stopped it."""

        async def guarded() -> Any:
            result: list[Any] = []
            async with anyio.create_task_group() as group:

                async def watch_signals() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for signum in signals:
                            received.append(signum)
                            group.cancel_scope.cancel()
                            return

                async def work() -> None:
                    result.append(await function(*args))
                    group.cancel_scope.cancel()

                group.start_soon(watch_signals)
                if not reporting.quiet and (terminal or structured) and function is run_scan:
                    group.start_soon(show_progress, progress, log, terminal)
                group.start_soon(work)
            return result[0] if result else None

        return anyio.run(guarded, backend="asyncio", backend_options={"use_uvloop": True})

    started_level = "info" if structured else "debug"
    log.event(started_level, "scan-started", uri=str(config.location), output=config.output)
    summary: ScanSummary | None = None
    failure: ScanError | None = None
    code = 0
    try:
        if config.shard_range is not None:
            summary = run_until_signalled(run_scan, config, None, [config.shard_range], live)
        elif config.processes > 1 and not config.processes_on_demand and can_fork():
            summary = scan_with_processes(config, run_until_signalled)
        else:
            summary = run_until_signalled(run_scan, config, None, None, live)
    except KeyboardInterrupt:
        received.append(signal.SIGINT)
    except BaseException as exc:
        found = first_failure(exc)
        if isinstance(found, OutputClosed):
            return 141
        if isinstance(found, KeyboardInterrupt):
            received.append(signal.SIGINT)
        elif isinstance(found, ScanError):
            failure = found
        elif isinstance(found, ItemsError):
            failure = ScanError(str(found))
        else:
            if os.environ.get("SCANNER_DEBUG"):
                raise
            failure = ScanError(f"unexpected {type(found).__name__}: {found}")
    if received:
        name = "interrupted" if received[0] == signal.SIGINT else "terminated"
        failure = ScanError(f"{name}; no output was written")
        code = 128 + received[0]
    elif failure is not None:
        code = failure.exit_code
    if failure is not None and live.checkpoint_saved:
        failure = type(failure)(
            f"{failure}; progress is saved in {config.checkpoint}: run the same command again to resume"
        )
    if failure is not None:
        _print_error(str(failure), secrets)
    elif summary is not None and not reporting.quiet:
        _report_success(summary, log, structured)
    return _publish(config, reporting, summary, failure, code, secrets)


def _report_success(summary: ScanSummary, log: Any, structured: bool) -> None:
    if structured:
        from scanner.report.events import summary_document

        log.event("info", "scan-finished", **summary_document(summary, "", "succeeded"))
        return
    print(
        f"scanned {summary.objects:,} objects, {_format_bytes(summary.bytes)}, "
        f"in {summary.seconds:.2f} s ({summary.keys_per_second:,.0f} keys/s); "
        f"{summary.requests.requests:,} requests, {summary.requests.retries:,} retries",
        file=sys.stderr,
        flush=True,
    )
    if summary.enumeration.handed_over:
        print(
            f"{summary.enumeration.handed_over:,} ranges were listed by worker processes "
            "(this process was CPU-bound)",
            file=sys.stderr,
            flush=True,
        )
    if summary.switched_because:
        print(
            f"{summary.switched_because}: listed folder by folder instead (--server-profile "
            "unordered skips the first attempt)",
            file=sys.stderr,
            flush=True,
        )
    if summary.resumed_objects:
        print(
            f"resumed from the checkpoint: {summary.resumed_objects:,} of those objects were listed "
            "by the run that saved it",
            file=sys.stderr,
            flush=True,
        )
    report = selection_report(summary)
    if report:
        print(report, file=sys.stderr, flush=True)


def _publish(
    config: ScanConfig,
    reporting: Reporting,
    summary: ScanSummary | None,
    failure: ScanError | None,
    code: int,
    secrets: tuple[str, ...],
) -> int:
    """The summary file and pushed metrics, after success and failure alike."""
    if reporting.summary_path is None and reporting.pushgateway is None:
        return code
    from scanner.report.events import prometheus_text, push_metrics, summary_document, write_summary

    status = "succeeded" if failure is None else "failed"
    document = summary_document(summary, str(config.location), status, failure)
    if failure is not None and code >= 128:
        document["exit_code"] = code
    try:
        if reporting.summary_path is not None:
            write_summary(reporting.summary_path, document)
    except ScanError as exc:
        _print_error(str(exc), secrets)
        return code or exc.exit_code
    if reporting.pushgateway is not None:
        labels = {"bucket": config.location.bucket}
        shard = os.environ.get("JOB_COMPLETION_INDEX")
        if config.shard_range is not None and shard is not None:
            labels["shard"] = shard
        try:
            push_metrics(reporting.pushgateway, labels, prometheus_text(document, failure is None))
        except ScanError as exc:
            # Metrics are not the scan's result: by now its output and state are committed, and
            # failing the run would make a Job retry it, replacing a good output with a later
            # listing (an empty change list, for an incremental run).
            print(f"warning: {redact(str(exc), secrets)}", file=sys.stderr, flush=True)
    return code


def selection_report(summary: ScanSummary) -> str:
    """What the filters and grouping kept and left out, by reason; empty when neither ran."""
    parts = []
    if summary.matched is not None:
        parts.append(f"{summary.matched:,} objects matched")
    if summary.tasks is not None:
        parts.append(f"{summary.tasks:,} tasks written")
    if summary.changes:
        changes = ", ".join(f"{name} {count:,}" for name, count in summary.changes.items())
        parts.append(f"since the last run: {changes}")
    if summary.skipped:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(summary.skipped.items()))
        parts.append(f"skipped: {reasons}")
    return "; ".join(parts)
