"""Two scanner trees (and obstore) side by side on the in-memory endpoint: ``python -m benchmarks.ab``.

For a before/after measurement of a change: each tree is a checkout of this repository (its
``scanner`` package is put first on ``PYTHONPATH``), run with the project's Python; obstore
comes from ``.bench/tools-venv`` (``python -m benchmarks`` installs it). Every repetition runs
every tool on every bucket, tools in a rotated order, each from ``launch.py`` (whole-process
wall, CPU, peak RSS). Reported: medians, and after start-up figures taken from the smallest
bucket (``N / (wall(N) - wall(smallest))``), as issue tables do.

    python -m benchmarks.ab --tree before=/tmp/base --tree after=. --sizes 0,3000,300000 --repeat 5
    python -m benchmarks.ab --tree after=. --args "--unordered" --args "-f csv" --no-obstore
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks.children import listening_child
from benchmarks.synthetic_s3 import EMPTY
from benchmarks.tools import PEERS, TOOLS_VENV

LAUNCH = Path(__file__).resolve().parent / "launch.py"


def _bucket(layout: str, size: int) -> str:
    return EMPTY if size == 0 else f"bench-{layout}-{size}"


def _launch(argv: list[str], env: dict[str, str], workdir: Path) -> tuple[float, float, float]:
    report = workdir / "report"
    with open(workdir / "stderr", "wb") as stderr:
        subprocess.run(
            [sys.executable, "-I", "-S", str(LAUNCH), str(report), *argv],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    wall, code, user, system, rss_kb = report.read_text().split()
    if code != "0":
        raise SystemExit(f"{argv} exited {code}: {(workdir / 'stderr').read_text()[-400:]}")
    return float(wall), float(user) + float(system), int(rss_kb) / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR, a checkout to run")
    parser.add_argument("--args", action="append", default=None, help="extra scanner arguments (repeatable)")
    parser.add_argument("--layout", default="dicom")
    parser.add_argument("--sizes", default="0,3000,300000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-obstore", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    extras = args.args or [""]

    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    config = workdir / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    buckets = [_bucket(args.layout, size) for size in sizes if size]
    with listening_child(
        "benchmarks.synthetic_s3", "--buckets", ",".join(buckets or [EMPTY]), what="the in-memory endpoint"
    ) as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCANNER_", "PYTHONPATH"))}
        env.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
        )
        tools: list[tuple[str, list[str], dict[str, str]]] = []
        for tree in args.tree:
            name, _, directory = tree.partition("=")
            for extra in extras:
                label = f"{name} {extra}".strip()
                # -P: without it ``-m`` puts the working directory first on sys.path, and every
                # tree would run the scanner of the directory the harness was started in.
                command = [
                    sys.executable,
                    "-P",
                    "-m",
                    "scanner",
                    "scan",
                    "{bucket}",
                    "-o",
                    "{out}",
                    *extra.split(),
                ]
                tools.append((label, command, {"PYTHONPATH": str(Path(directory).resolve())}))
        if not args.no_obstore:
            script = str(PEERS / "obstore_list.py")
            tools.append(
                ("obstore", [str(TOOLS_VENV / "bin" / "python"), script, "{bucket_name}", "{out}"], {})
            )

        runs: dict[tuple[str, int], list[tuple[float, float, float]]] = defaultdict(list)
        for repetition in range(-1, args.repeat):
            rotated = tools[repetition % len(tools) :] + tools[: repetition % len(tools)]
            for label, command, extra_env in rotated:
                for size in sizes:
                    bucket = _bucket(args.layout, size)
                    out = workdir / "out"
                    out.unlink(missing_ok=True)
                    argv_ = [
                        part.format(bucket=f"s3://{bucket}", bucket_name=bucket, out=out) for part in command
                    ]
                    result = _launch(argv_, {**env, **extra_env}, workdir)
                    lines = out.read_bytes().count(b"\n") if out.exists() else 0
                    if "-f csv" in " ".join(command) and lines:
                        lines -= 1
                    if lines != size and "items" not in " ".join(command):
                        raise SystemExit(f"{label} listed {lines} of {size} keys in {bucket}")
                    if repetition >= 0:
                        runs[label, size].append(result)
                    print(
                        f"  [{repetition + 1}/{args.repeat}] {label:<28} {size:>9,} {result[0]:6.2f} s "
                        f"{result[1]:6.2f} cpu {result[2]:5.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )

    base = min(sizes)
    print(
        "| tool | keys | wall s | CPU s | peak RSS MB | keys/s after start-up | µs CPU/key after start-up |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for label, _, _ in tools:
        base_wall, base_cpu, _ = (
            statistics.median(column) for column in zip(*runs[label, base], strict=True)
        )
        for size in sizes:
            wall, cpu, rss = (statistics.median(column) for column in zip(*runs[label, size], strict=True))
            marginal = "-"
            per_key = "-"
            if size > base:
                marginal = f"{(size - base) / (wall - base_wall):,.0f}"
                per_key = f"{(cpu - base_cpu) / (size - base) * 1e6:.2f}"
            print(f"| {label} | {size:,} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {marginal} | {per_key} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
