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
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn

from scanner import __version__
from scanner.cli import checks
from scanner.cli.checks import check_output, output_compression
from scanner.cli.completion import add_completion_command, run_completion
from scanner.cli.features import add_feature_arguments, features_from_args, log_level_from_args
from scanner.cli.ls import add_ls_command, run_ls
from scanner.cli.selection import add_selection_arguments, selection_from_args
from scanner.cli.shards import (
    PARTS_HELP,
    add_shard_commands,
    run_shard_command,
    shard_from_args,
    sharded_from_args,
)
from scanner.config import (
    DEFAULT_CONCURRENCY,
    ConnectionConfig,
    OutputFormat,
    ScanConfig,
    parse_s3_uri,
)
from scanner.errors import Interrupted, OutputClosed, ScanError, UsageError, first_failure, stopped_by
from scanner.keyspace import KeyRange
from scanner.listing.dialect import check_profile
from scanner.output.items import ItemsError
from scanner.report.console import Console
from scanner.report.events import (
    EventLog,
    prometheus_text,
    push_metrics,
    route_library_logs,
    show_progress,
    summary_document,
    write_summary,
)
from scanner.run.cpus import usable_cpus

if TYPE_CHECKING:
    from scanner.run.entry import Watcher
    from scanner.run.summary import ScanSummary

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
        type=checks.concurrency,
        help=f"most ListObjectsV2 requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--max-attempts", type=_positive_int, help="attempts per request before the scan fails (default 10)"
    )


def connection_from_args(args: argparse.Namespace) -> ConnectionConfig:
    if args.ca_bundle and not os.path.isfile(args.ca_bundle):
        raise UsageError(f"CA bundle {args.ca_bundle!r} does not exist")
    checks.check_endpoint_url(args.endpoint_url)
    return ConnectionConfig(
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
        addressing_style=args.addressing_style or "auto",
        no_sign_request=bool(args.no_sign_request),
        request_payer=bool(args.request_payer),
        ca_bundle=args.ca_bundle,
        concurrency=checks.fit_concurrency(args.concurrency or DEFAULT_CONCURRENCY),
        max_attempts=args.max_attempts or 10,
    )


# Longer than a screen: one add_argument per option of `scan`, in --help order; split up,
# the options a user reads in --help would be scattered over several functions.
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
    scan.add_argument("--parts-per-shard", type=_positive_int, help="with --create-plan: " + PARTS_HELP)
    scan.add_argument(
        "--share-work",
        metavar="BOARD",
        help="with --shard and --plan: the pods share the plan's parts while they run, through small "
        "objects under BOARD (a directory or s3://BUCKET/PREFIX/, one per run), claiming parts with "
        "conditional puts and handing the rest of ranges to pods that ran out; one pod merges every "
        "piece into --output",
    )
    scan.add_argument(
        "--state", help="snapshot of this run (path or s3://BUCKET/KEY), replaced only after success"
    )
    _flag(scan, "--changes-only", help="with --state: emit only objects (or tasks) new or changed since then")
    _flag(
        scan,
        "--deletions",
        help="with --changes-only (JSON Lines, CSV): also a record for each object gone since then, "
        'marked "deleted": true',
    )
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
    add_feature_arguments(scan, _positive_int)
    add_shard_commands(commands, add_connection_arguments, _positive_int)
    add_ls_command(commands, add_connection_arguments)
    add_completion_command(commands)
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
    checks.check_deletions(args, output_format)
    if args.state and args.unordered:
        raise UsageError("--state needs key order: it cannot be used with --unordered")
    if args.state:
        if args.state == "-":
            raise UsageError("--state must be a file path or an s3:// URI")
        check_output(args.state, "state")
    if args.checkpoint:
        check_checkpoint(args, output)
    elif args.checkpoint_interval:
        raise UsageError("--checkpoint-interval needs --checkpoint")
    if args.temp_dir:
        checks.check_temp_dir(args.temp_dir)
    if args.summary:
        checks.check_summary(args.summary)
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
        shard_ranges=(KeyRange(location.prefix),) if shard_from_args(args) else None,
        state=args.state,
        changes_only=bool(args.changes_only),
        deletions=bool(args.deletions),
        checkpoint=args.checkpoint,
        checkpoint_interval=args.checkpoint_interval or 30.0,
        server_profile=args.server_profile or "auto",
        **features_from_args(args, location, output_format),
    )
    config = _fit_profile(config)
    return replace(config, **sharded_from_args(args, location, connection))


def add_compress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compress",
        choices=("gzip", "zstd", "none"),
        help="compress the output (jsonl, csv, items); default: as its name says (.gz, .zst), else none",
    )


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
    if args.limit is not None:
        return {"processes": 1}  # the first N records come from one writer: a short scan
    if args.processes in (None, "auto"):
        return {"processes": usable_cpus(), "processes_on_demand": True}
    return {"processes": args.processes}


def check_checkpoint(args: argparse.Namespace, output: str) -> None:
    # only this option needs it (start-up)
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


def _print_error(message: str, secrets: tuple[str, ...] = ()) -> None:
    Console(secrets).error(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        parsed = parser.parse_args(argv)
        _apply_environment(parser, parsed)
        args = parsed
        warning = checks.unknown_environment(parser)
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        if args.command == "completion":
            return run_completion(parser, args)
        if args.command == "ls":
            return run_ls(args, connection_from_args(args))
        if args.command != "scan":
            return run_shard_command(args, connection_from_args)
        config = config_from_args(args)
        reporting = reporting_from_args(args)
    except ScanError as exc:
        uri = checks.uri_given(argv, args)
        if checks.option_value(argv, args, "log_format") == "json":
            EventLog("json").event("error", "scan-failed", uri=uri, error=str(exc), exit_code=exc.exit_code)
        else:
            _print_error(str(exc))
        checks.write_failure_summary(checks.option_value(argv, args, "summary"), uri, exc)
        return exc.exit_code
    return _run(config, reporting)


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
        log_level=log_level_from_args(args),
        summary_path=args.summary,
        pushgateway=args.pushgateway,
    )


def _secrets() -> tuple[str, ...]:
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    return tuple(value for name in names if (value := os.environ.get(name)))


def _run(config: ScanConfig, reporting: Reporting) -> int:
    """Run the scan through ``scanner.run.entry.run``; report it; the exit code."""
    # Imported here, not above: --version, --help and usage errors need none of the listing.
    from scanner.run.entry import run
    from scanner.run.summary import ScanSummary

    console = Console(_secrets())
    log = EventLog(reporting.log_format, reporting.log_level)
    log.secrets = console.secrets
    route_library_logs(log, reporting.log_level)
    started = time.perf_counter()
    structured = reporting.log_format == "json"
    live = ScanSummary()
    log.event(
        "info" if structured else "debug", "scan-started", uri=str(config.location), output=config.output
    )
    summary: ScanSummary | None = None
    failure: ScanError | None = None
    try:
        summary = run(config, live=live, watchers=_watchers(live, log, reporting))
    except BaseException as exc:  # noqa: BLE001 - every ending becomes an exit code here
        found = first_failure(exc)
        if isinstance(found, OutputClosed):
            return 141
        failure = _as_scan_error(found)
    if failure is not None:
        failure = _explained(failure, config, live)
        if structured:
            log.event(
                "error",
                "scan-failed",
                uri=str(config.location),
                error=str(failure),
                exit_code=failure.exit_code,
            )
        else:
            console.error(str(failure))
    elif summary is not None and not reporting.quiet:
        if structured:
            log.event("info", "scan-finished", **summary_document(summary, str(config.location), "succeeded"))
        else:
            console.finished(summary)
    if summary is None:
        # What the scan that failed or was stopped did: its requests, its objects so far.
        live.seconds = time.perf_counter() - started
        summary = live
    code = failure.exit_code if failure is not None else 0
    return _publish(config, reporting, summary, failure, code, console)


def _watchers(live: ScanSummary, log: EventLog, reporting: Reporting) -> list[Watcher]:
    """The progress display, on a terminal or as log events (never with --quiet)."""
    structured = reporting.log_format == "json"
    terminal = sys.stderr.isatty() and not structured
    if reporting.quiet or not (terminal or structured):
        return []

    def snapshot() -> dict[str, Any]:
        stats = live.enumeration
        return {
            "objects": live.objects,
            "done": stats.ranges_done,
            "active": stats.ranges - stats.ranges_done,
            "retries": live.requests.retries,
        }

    return [functools.partial(show_progress, snapshot, log, terminal)]


def _as_scan_error(found: BaseException) -> ScanError:
    if isinstance(found, KeyboardInterrupt):
        return stopped_by(signal.SIGINT)
    if isinstance(found, ScanError):
        return found
    if isinstance(found, ItemsError):
        return ScanError(str(found))
    if os.environ.get("SCANNER_DEBUG"):
        raise found
    return checks.unexpected_failure(found)


def _explained(failure: ScanError, config: ScanConfig, live: ScanSummary) -> ScanError:
    """The failure's message with what is left behind: nothing, or a checkpoint to resume from."""
    if isinstance(failure, Interrupted):
        failure = type(failure)(f"{failure.signal_name}; {checks.what_was_written(config.output, live)}")
    if live.checkpoint_saved:
        failure = type(failure)(
            f"{failure}; progress is saved in {config.checkpoint}: run the same command again to resume"
        )
    return failure


def _publish(
    config: ScanConfig,
    reporting: Reporting,
    summary: ScanSummary | None,
    failure: ScanError | None,
    code: int,
    console: Console,
) -> int:
    """The summary file and pushed metrics, after success and failure alike."""
    if reporting.summary_path is None and reporting.pushgateway is None:
        return code
    status = "succeeded" if failure is None else "failed"
    document = summary_document(summary, str(config.location), status, failure)
    try:
        if reporting.summary_path is not None:
            write_summary(reporting.summary_path, document)
    except ScanError as exc:
        console.error(str(exc))
        return code or exc.exit_code
    if reporting.pushgateway is not None:
        labels = {"bucket": config.location.bucket}
        shard = os.environ.get("JOB_COMPLETION_INDEX")
        if config.shard_ranges is not None and shard is not None:
            labels["shard"] = shard
        try:
            push_metrics(reporting.pushgateway, labels, prometheus_text(document, failure is None))
        except ScanError as exc:
            # Metrics are not the scan's result: by now its output and state are committed, and
            # failing the run would make a Job retry it, replacing a good output with a later
            # listing (an empty change list, for an incremental run).
            console.warning(str(exc))
    return code
