"""``python -m benchmarks``: install the tools, start or reuse a server, seed, measure, report.

The order of a run:
1. peers into ``.bench/tools-venv`` (pinned), rclone from Debian, matplotlib into .venv;
2. the server (RGW by default) and its buckets: every layout x size, plus ``bench-empty``;
3. the direct pass: every tool, round-robin, ``--repeat`` times, every run verified;
4. the latency pass: scanner (default and one process), boto3 paginator and ceiling through the
   latency proxy;
5. the scaling pass: the scanner with 1, auto and 2 processes against an in-memory endpoint
   (``benchmarks.synthetic_s3``), where the client, not the server, is the bottleneck;
6. the synthetic memory benchmark (no server);
7. results/latest.json, latest.md and keys_per_second.png.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import memory, report
from benchmarks.layouts import LAYOUTS
from benchmarks.proxy import running_proxy
from benchmarks.runner import Bench, Run, measure
from benchmarks.seed import bucket_name
from benchmarks.servers import EMPTY_BUCKET, Dataset, Target, ensure_dataset, ensure_empty_bucket, open_target
from benchmarks.synthetic_s3 import running_synthetic_s3
from benchmarks.tools import (
    LATENCY_TOOLS,
    REPO,
    TOOLS,
    ensure_report_dependencies,
    ensure_rgw_binaries,
    ensure_toolbox,
    select_tools,
    tool_versions,
)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be whole numbers: {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be at least 1")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Side-by-side S3 listing benchmark: this scanner against its peers on one server.",
    )
    parser.add_argument(
        "--server",
        choices=("rgw", "moto"),
        default="rgw",
        help="server to start (default rgw: bluestore Ceph RGW in .bench/rgw, reused if running)",
    )
    parser.add_argument("--endpoint-url", help="use this running S3 server instead of starting one")
    parser.add_argument("--access-key", help="with --endpoint-url")
    parser.add_argument("--secret-key", help="with --endpoint-url")
    parser.add_argument(
        "--layouts",
        type=_csv,
        default=["dicom"],
        help=f"comma-separated, of {', '.join(LAYOUTS)} (default dicom)",
    )
    parser.add_argument("--sizes", type=_sizes, default=[100_000], help="keys per bucket, e.g. 10000,100000")
    parser.add_argument("--repeat", type=int, default=5, help="round-robin repetitions (default 5)")
    parser.add_argument(
        "--tools",
        type=_csv,
        default=None,
        help=f"subset of {', '.join(TOOLS)} (default: all)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="latency-proxy pass delay (default 50; 0 skips it)"
    )
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="latency-proxy jitter, +/- (default 0)")
    parser.add_argument(
        "--memory-sizes",
        type=lambda text: [] if text in ("0", "none", "") else _sizes(text),
        default=list(memory.DEFAULT_SIZES),
        help="synthetic memory benchmark sizes (default 100000,1000000,10000000; 0 skips it)",
    )
    parser.add_argument(
        "--scaling-keys",
        type=int,
        default=1_000_000,
        help="keys of the scaling pass: the scanner with 1, auto and 2 processes against an in-memory "
        "endpoint, where the client is the bottleneck (default 1000000; 0 skips it)",
    )
    parser.add_argument(
        "--results", type=Path, default=REPO / "benchmarks" / "results", help="output directory"
    )
    return parser


SCALING_TOOLS = ("scanner-1proc", "scanner", "scanner-2proc")
SCALING_VARIANT = "in-memory endpoint"


def _scaling_pass(args: argparse.Namespace, toolbox: Any, workdir: Path) -> tuple[list[Run], list[Dataset]]:
    """The scanner by processes against an endpoint that is never the bottleneck.

    On a small machine shared with RGW the server limits every scan, and a second process can
    only show its cost. Against ``benchmarks.synthetic_s3`` the client is the limit, so this
    pass shows what ``--processes`` adds and whether the default forks its workers in time.
    """
    layout = "dicom"
    keys = sorted(LAYOUTS[layout](args.scaling_keys), key=lambda key: key.encode("utf-8"))
    dataset = Dataset(layout, len(keys), bucket_name(layout, len(keys)), keys)
    empty = Dataset("empty", 0, EMPTY_BUCKET, [])
    log(f"scaling pass: {len(keys):,} {layout} keys from an in-memory endpoint ...")
    with running_synthetic_s3([dataset.bucket]) as url:
        target = Target("synthetic", url, "synthetic", "synthetic")
        bench = Bench(target, url, toolbox, workdir, log)
        tools = [TOOLS[name] for name in SCALING_TOOLS]
        return measure(bench, SCALING_VARIANT, tools, [empty, dataset], args.repeat), [dataset]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [name for name in args.layouts if name not in LAYOUTS]
    if unknown:
        log(f"error: unknown layout(s) {', '.join(unknown)} (known: {', '.join(LAYOUTS)})")
        return 2
    if args.repeat < 1:
        log("error: --repeat must be at least 1")
        return 2
    if args.endpoint_url and not (args.access_key and args.secret_key):
        log("error: --endpoint-url needs --access-key and --secret-key")
        return 2
    started = time.monotonic()
    tools = select_tools(args.tools)
    latency_tools = [tool for tool in tools if tool.name in LATENCY_TOOLS] if args.latency_ms > 0 else []
    toolbox = ensure_toolbox(tools, log)
    ensure_report_dependencies(log)
    if args.endpoint_url is None and args.server == "rgw":
        ensure_rgw_binaries(log)
    server = "endpoint " + args.endpoint_url if args.endpoint_url else args.server
    meta: dict[str, object] = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": report.machine_info(server),
        "versions": tool_versions(toolbox, tools),
        "config": {
            "server": server,
            "layouts": args.layouts,
            "sizes": args.sizes,
            "repeat": args.repeat,
            "tools": [tool.name for tool in tools],
            "latency_ms": args.latency_ms,
            "jitter_ms": args.jitter_ms,
        },
    }
    runs: list[Run] = []
    with (
        open_target(args.server, REPO, log, args.endpoint_url, args.access_key, args.secret_key) as target,
        tempfile.TemporaryDirectory(prefix="bench-runs-") as workdir,
    ):
        datasets: list[Dataset] = [ensure_empty_bucket(target)]
        for layout in args.layouts:
            for size in args.sizes:
                datasets.append(ensure_dataset(target, layout, size, log))
        log(f"server {target.endpoint_url}: buckets ready after {time.monotonic() - started:.0f} s")
        bench = Bench(target, target.endpoint_url, toolbox, Path(workdir), log)
        runs += measure(bench, "direct", tools, datasets, args.repeat)
        if latency_tools:
            with running_proxy(target.endpoint_url, args.latency_ms, args.jitter_ms) as proxy_url:
                variant = f"latency {args.latency_ms:g} ms"
                log(f"latency pass through {proxy_url} ({variant})")
                slow = Bench(target, proxy_url, toolbox, Path(workdir), log)
                runs += measure(slow, variant, latency_tools, datasets, args.repeat)
        if args.scaling_keys > 0:
            scaling_runs, scaling_datasets = _scaling_pass(args, toolbox, Path(workdir))
            runs += scaling_runs
            datasets += scaling_datasets
    memory_results = []
    if args.memory_sizes:
        log("synthetic memory benchmark (no S3) ...")
        memory_results = memory.run_sizes(args.memory_sizes, log)
        memory_results += memory.run_sizes(args.memory_sizes[-1:], log, ordered=False)
    labels = {name: tool.label for name, tool in TOOLS.items()}
    sizes = {dataset.label: dataset.size for dataset in datasets}
    rows = report.summarise(runs, labels, sizes)
    elapsed = round(time.monotonic() - started, 1)
    meta["elapsed_seconds"] = elapsed
    meta["load_average_at_end"] = report.load_average()
    written = report.write_reports(args.results, meta=meta, runs=runs, rows=rows, memory=memory_results)
    log(report.markdown(meta, rows, memory_results))
    log("wrote " + ", ".join(str(path) for path in written) + f" after {elapsed:.0f} s")
    return 1 if any(row.failed for row in rows if row.tool.startswith("scanner")) else 0
