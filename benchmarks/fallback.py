"""The fallback benchmark: listing servers that do not list in UTF-8 byte order.

The scanner's ranged listing needs byte order and an exact ``StartAfter``; on a server without
them (SeaweedFS's filesystem walk, S3 Express directory buckets) it has to list by folders and
continuation tokens instead. This measures what that costs: one in-memory endpoint
(``benchmarks.synthetic_s3``, a process of its own) serves the same prefix-rich layout
(``studies``: folders of series in folders of studies, with sidecar names that list in a
different order in a walk) in the three dialects, and each tool lists each of them:

* ``sorted``: ``bench-studies-N``, UTF-8 byte order (the baseline);
* ``walk``: ``bench-studies-N-walk``, SeaweedFS's folder-by-folder order;
* ``directory``: ``bench-studies-N--use1-az4--x-s3``, an S3 Express One Zone directory bucket
  (hash order, no ``StartAfter``, folder prefixes only, CreateSession first).

    python -m benchmarks.fallback [--keys 100000] [--repeat 5] [--out benchmarks/results/]
                                  [--tools boto3,scanner] [--dialects sorted,walk,directory]
                                  [--peer-python PATH]

Tools are the main benchmark's (``benchmarks.tools``): by default the boto3 paginator (the
peers' venv, ``.bench/tools-venv``, installed when missing; ``--peer-python`` names another
Python with boto3 instead) and ``python -m scanner scan s3://BUCKET -o FILE``.

Order of a run: first every tool lists every dialect's bucket once, untimed, and what it wrote
is checked against the layout's key set exactly (and the ordered scanner's output against byte
order); a tool that fails that (its exit code and the line of its stderr that names the error
are reported) is not timed on that dialect, and the run carries on. Then ``--repeat``
repetitions, each running every dialect (in a rotated order) through the main benchmark's
runner (``benchmarks.runner.measure``: a warm-up on the dialect's empty bucket, every tool on
the empty bucket and on the N-key bucket in a rotated order, measured from outside by
``launch.py``, every run verified again). Figures are medians: keys/s of the whole process and
after start-up (the run on the empty bucket of the same dialect subtracted), the ratio to the
boto3 paginator on the same dialect, and the ratio to the same tool on the sorted dialect.

Writes ``fallback-YYYYMMDDTHHMMSSZ.json`` (config, machine, versions, verification, every run,
summaries) and ``.md`` into ``--out``. Exits 1 when a scanner tool failed anywhere, else 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from benchmarks import report
from benchmarks.layouts import LAYOUTS
from benchmarks.runner import Bench, Run, _base_env, _error_line, measure
from benchmarks.servers import Dataset, Target
from benchmarks.synthetic_s3 import DIALECTS, DIRECTORY_SUFFIX, EMPTY, Dialect, running_synthetic_s3
from benchmarks.tools import REPO, TOOLS, Invocation, Tool, Toolbox, ensure_toolbox, tool_versions

# A zone id of AWS's form, so that botocore takes the name for a directory bucket.
ZONE = "use1-az4"
# The tools that can list a bucket whose order and StartAfter are not S3's: the ceiling lister
# needs StartAfter and byte order by construction, and the other peers are not what this is about.
FALLBACK_TOOLS = ("boto3", "aioboto3", "scanner", "scanner-unordered", "scanner-1proc", "scanner-2proc")
DEFAULT_TOOLS = ("boto3", "scanner")
# Prefix-rich, and listed in a different order by a walk than in bytes: see layouts.studies.
LAYOUT = "studies"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bucket_names(layout: str, keys: int, dialect: Dialect) -> tuple[str, str]:
    """(the N-key bucket, the empty bucket) of one dialect on the endpoint."""
    if dialect == "directory":
        return f"bench-{layout}-{keys}--{ZONE}{DIRECTORY_SUFFIX}", f"{EMPTY}--{ZONE}{DIRECTORY_SUFFIX}"
    if dialect == "walk":
        return f"bench-{layout}-{keys}-walk", f"{EMPTY}-walk"
    return f"bench-{layout}-{keys}", EMPTY


@dataclass
class Check:
    """The untimed, exactly verified listing of one tool on one dialect."""

    dialect: str
    tool: str
    ok: bool
    exit_code: int | None
    keys: int | None
    seconds: float
    error: str = ""


def verify_listing(bench: Bench, tool: Tool, dialect: str, dataset: Dataset) -> Check:
    """Run ``tool`` once on ``dataset`` and check the keys it wrote are exactly the bucket's."""
    output = bench.workdir / f"verify-{dialect}-{tool.name}.out"
    output.unlink(missing_ok=True)
    invocation = Invocation(
        toolbox=bench.toolbox,
        endpoint_url=bench.endpoint_url,
        bucket=dataset.bucket,
        output=output,
        plan=bench.workdir / "no-plan.json",
        access_key=bench.target.access_key,
        secret_key=bench.target.secret_key,
    )
    timeout = 120 + bench.timeout_per_key * dataset.size
    started = time.perf_counter()
    try:
        with open(output if tool.stdout_is_output else os.devnull, "ab") as stdout:
            done = subprocess.run(
                tool.argv(invocation),
                env={**_base_env(bench), **tool.env(invocation)},
                cwd=bench.workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
    except subprocess.TimeoutExpired:
        return Check(dialect, tool.name, False, None, None, timeout, f"timed out after {timeout:.0f} s")
    except OSError as exc:
        return Check(dialect, tool.name, False, None, None, 0.0, f"cannot run it: {exc}")
    seconds = time.perf_counter() - started
    check = Check(dialect, tool.name, False, done.returncode, None, seconds)
    try:
        if done.returncode != 0:
            check.error = f"exit {done.returncode}: {_error_line(done.stderr)}"[:300]
            return check
        data = output.read_bytes() if output.exists() else b""
        check.error = _compare(check, tool, data, dataset.keys)
        check.ok = not check.error
        return check
    finally:
        output.unlink(missing_ok=True)


def _compare(check: Check, tool: Tool, data: bytes, expected: list[str]) -> str:
    """What is wrong with the keys in ``data`` (bare lines or JSON Lines), or ""."""
    try:
        if tool.verify == "lines":
            listed = data.decode("utf-8").split("\n")
            listed = listed[:-1] if listed and listed[-1] == "" else listed
        else:
            listed = [json.loads(line)["key"] for line in data.splitlines() if line]
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable output: {exc}"
    check.keys = len(listed)
    if sorted(listed) != expected:
        missing = len(set(expected) - set(listed))
        extra = len(set(listed) - set(expected))
        repeated = len(listed) - len(set(listed))
        return (
            f"key set differs: {missing:,} missing, {extra:,} not in the bucket, {repeated:,} repeated, "
            f"{len(listed):,} listed"
        )
    if tool.verify == "jsonl" and listed != expected:
        first = next(i for i, (a, b) in enumerate(zip(listed, expected, strict=True)) if a != b)
        return f"keys out of byte order from line {first + 1}"
    return ""


def _failed_row(check: Check, tool: Tool, dataset: Dataset) -> report.Summary:
    return report.Summary(
        check.dialect,
        dataset.label,
        tool.name,
        tool.label,
        dataset.size,
        0,
        failed=f"untimed check: {check.error}",
    )


def _ratio(mine: float | None, base: float | None) -> float | None:
    return mine / base if mine and base else None


def summarise(runs: Sequence[Run], failed: Sequence[report.Summary], size: int) -> list[dict[str, Any]]:
    """The main benchmark's summaries (medians, after start-up, vs boto3 on the same dialect),
    plus each tool's ratio to itself on the sorted dialect."""
    labels = {name: tool.label for name, tool in TOOLS.items()}
    rows = [*report.summarise(runs, labels, {f"{LAYOUT}-{size}": size}), *failed]
    sorted_rows = {row.tool: row for row in rows if row.variant == "sorted" and not row.failed}
    summaries = []
    for row in sorted(rows, key=lambda r: (DIALECTS.index(cast(Dialect, r.variant)), r.tool)):
        entry = {"dialect": row.variant, **asdict(row)}
        base = sorted_rows.get(row.tool)
        entry["vs_same_tool_on_sorted"] = _ratio(
            row.keys_per_second_after_startup, base.keys_per_second_after_startup if base else None
        )
        summaries.append(entry)
    return summaries


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def markdown(meta: dict[str, Any], checks: Sequence[Check], summaries: Sequence[dict[str, Any]]) -> str:
    machine, config = meta["machine"], meta["config"]
    lines = [
        "# Fallback benchmark: listing servers that do not list in byte order",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB RAM, "
        f"Python {machine['python']}, {machine['os']}; server: {machine['server']}; {meta['started']}; "
        f"1-minute load at start / end: {_fmt(machine['load_average_at_start'], '.1f')} / "
        f"{_fmt(meta.get('load_average_at_end'), '.1f')}.",
        "",
        f"Layout `{config['layout']}`, {config['keys']:,} keys, the same keys in each dialect; "
        f"{config['repeat']} repetition(s), median reported.",
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in meta["versions"].items()) + ".",
        "",
        "keys/s after start-up = N / (median wall on the N-key bucket - median wall on the same "
        "dialect's empty bucket). vs boto3: keys/s after start-up over the boto3 paginator's on the "
        "same dialect; vs sorted: over the same tool's on the sorted dialect.",
        "",
        "## Exact key-set check (one untimed run each, before any timing)",
        "",
        "| dialect | tool | result | keys | seconds |",
        "|---|---|---|--:|--:|",
    ]
    for check in checks:
        result = "same key set as the layout" if check.ok else "FAILED: " + check.error.replace("|", "/")
        lines.append(
            f"| {check.dialect} | {check.tool} | {result} | {_fmt(check.keys, ',d')} | {check.seconds:.2f} |"
        )
    lines += [
        "",
        "## Timed runs",
        "",
        "| dialect | tool | wall s | keys/s | keys/s after start-up | CPU s | peak RSS MB | requests "
        "| vs boto3 | vs sorted |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in summaries:
        if row["failed"]:
            lines.append(
                f"| {row['dialect']} | {row['label']} | failed: {row['failed'].replace('|', '/')} |"
                + " |" * 7
            )
            continue
        lines.append(
            f"| {row['dialect']} | {row['label']} | {_fmt(row['wall'], '.2f')} "
            f"| {_fmt(row['keys_per_second'], ',.0f')} "
            f"| {_fmt(row['keys_per_second_after_startup'], ',.0f')} "
            f"| {_fmt(row['cpu'], '.2f')} | {_fmt(row['peak_rss_mb'], '.0f')} | {_fmt(row['requests'], 'd')} "
            f"| {_fmt(row['vs_boto3'], '.1f', 'x')} | {_fmt(row['vs_same_tool_on_sorted'], '.2f', 'x')} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fallback", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("--keys", type=int, default=100_000, help="keys per bucket (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results directory")
    parser.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma-separated, of {', '.join(FALLBACK_TOOLS)} (default {','.join(DEFAULT_TOOLS)})",
    )
    parser.add_argument(
        "--dialects", default=",".join(DIALECTS), help=f"comma-separated, of {', '.join(DIALECTS)}"
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        help="a Python with boto3 (and aioboto3) to run the peer listers with, instead of .bench/tools-venv",
    )
    return parser


def _peer_versions(python: Path) -> dict[str, str]:
    probe = "import boto3, botocore; print(boto3.__version__, botocore.__version__)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {}
    boto3_version, botocore_version = done.stdout.split()
    return {"boto3": boto3_version, "botocore": botocore_version}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.tools.split(",") if name.strip()]
    dialects = [cast(Dialect, name.strip()) for name in args.dialects.split(",") if name.strip()]
    if unknown := [name for name in names if name not in FALLBACK_TOOLS]:
        parser.error(f"unknown tool(s) {', '.join(unknown)} (known: {', '.join(FALLBACK_TOOLS)})")
    if unknown := [name for name in dialects if name not in DIALECTS]:
        parser.error(f"unknown dialect(s) {', '.join(unknown)} (known: {', '.join(DIALECTS)})")
    if args.keys < 1 or args.repeat < 1:
        parser.error("--keys and --repeat must be at least 1")
    started = time.monotonic()
    tools = [TOOLS[name] for name in names]
    if args.peer_python is not None:
        # Absolute, not resolved: tools run in a scratch directory, and a venv's python is a
        # symlink whose target would not know the venv.
        toolbox = Toolbox(tools_python=args.peer_python.absolute())
    else:
        toolbox = ensure_toolbox(tools, log)
    keys = sorted(LAYOUTS[LAYOUT](args.keys), key=lambda key: key.encode("utf-8"))
    datasets: dict[str, tuple[Dataset, Dataset]] = {}
    for dialect in dialects:
        bucket, empty = bucket_names(LAYOUT, args.keys, dialect)
        datasets[dialect] = (Dataset("empty", 0, empty, []), Dataset(LAYOUT, len(keys), bucket, keys))
    server = "synthetic in-memory endpoint (benchmarks.synthetic_s3), " + ", ".join(dialects)
    meta: dict[str, Any] = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": report.machine_info(server),
        "versions": {**tool_versions(toolbox, tools), **_peer_versions(toolbox.tools_python)},
        "config": {
            "layout": LAYOUT,
            "keys": len(keys),
            "repeat": args.repeat,
            "tools": names,
            "dialects": dialects,
            "buckets": {dialect: pair[1].bucket for dialect, pair in datasets.items()},
        },
    }
    buckets = [dataset.bucket for pair in datasets.values() for dataset in pair]
    log(f"serving {len(keys):,} {LAYOUT} keys in {', '.join(dialects)} ...")
    checks: list[Check] = []
    failed_rows: list[report.Summary] = []
    runs: list[Run] = []
    with running_synthetic_s3(buckets) as url, tempfile.TemporaryDirectory(prefix="bench-fallback-") as work:
        target = Target("synthetic", url, "synthetic", "synthetic")
        bench = Bench(target, url, toolbox, Path(work), log)
        timed: dict[str, list[Tool]] = {}
        for dialect in dialects:
            timed[dialect] = []
            for tool in tools:
                check = verify_listing(bench, tool, dialect, datasets[dialect][1])
                checks.append(check)
                status = "same key set as the layout" if check.ok else f"FAILED: {check.error}"
                log(f"  check {dialect:<9} {tool.name:<18} {check.seconds:6.2f} s  {status}")
                if check.ok:
                    timed[dialect].append(tool)
                else:
                    failed_rows.append(_failed_row(check, tool, datasets[dialect][1]))
        for repetition in range(args.repeat):
            shift = repetition % len(dialects)
            for dialect in [*dialects[shift:], *dialects[:shift]]:
                if not timed[dialect]:
                    continue
                log(f"repetition {repetition + 1}/{args.repeat}, {dialect}:")
                new = measure(bench, dialect, timed[dialect], list(datasets[dialect]), 1)
                for run in new:
                    run.repetition = repetition
                runs += new
    summaries = summarise(runs, failed_rows, len(keys))
    meta["elapsed_seconds"] = round(time.monotonic() - started, 1)
    meta["load_average_at_end"] = report.load_average()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"fallback-{stamp}.json", args.out / f"fallback-{stamp}.md"
    document = {
        **meta,
        "checks": [asdict(check) for check in checks],
        "summary": summaries,
        "runs": [run.as_dict() for run in runs],
    }
    text = markdown(meta, checks, summaries)
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(text, encoding="utf-8")
    log(text)
    log(f"wrote {json_path} and {md_path} after {meta['elapsed_seconds']:.0f} s")
    scanner_failed = any(row["failed"] for row in summaries if row["tool"].startswith("scanner"))
    return 1 if scanner_failed else 0


if __name__ == "__main__":
    sys.exit(main())
