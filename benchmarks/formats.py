"""Output formats and compression side by side: bytes per key and keys per second.

One bucket, served by the in-memory endpoint (``benchmarks.synthetic_s3``) with the metadata a
real archive has (a distinct ETag per object, sizes from 40 KB to 1 MB, times spread over a
year: the endpoint's own entries are all alike, which would flatter every compressor), is
scanned by the command into each format and compression, one process (``--processes 1``) so the
formats compare on the same footing; then through the library API (``scan`` and
``scan_arrow``). Each row is the best of ``--repeat`` runs.

    python -m benchmarks.formats                       # 200,000 keys of the dicom layout
    python -m benchmarks.formats --keys 50000 --repeat 3 --out /tmp/formats.md

Writes a Markdown report (with the machine it ran on) to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.children import listening_child

_REPO = Path(__file__).resolve().parent.parent
_EPOCH = datetime(2025, 12, 1, tzinfo=UTC)

# (format, compression, output name)
CASES: tuple[tuple[str, str, str], ...] = (
    ("jsonl", "none", "out.jsonl"),
    ("jsonl", "gzip", "out.jsonl.gz"),
    ("jsonl", "zstd", "out.jsonl.zst"),
    ("csv", "none", "out.csv"),
    ("csv", "gzip", "out.csv.gz"),
    ("csv", "zstd", "out.csv.zst"),
    ("parquet", "(zstd columns)", "out.parquet"),
    ("items", "none", "items.json"),
    ("items", "gzip", "items.json.gz"),
    ("items", "zstd", "items.json.zst"),
)


def _varied_entry(key: str, url: bool) -> str:
    """A ``<Contents>`` entry with the metadata of a real object, the same for a key every run."""
    from benchmarks import synthetic_s3

    digest = hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest()
    number = int.from_bytes(digest[:8], "big")
    size = 40_000 + number % 960_000
    when = _EPOCH + timedelta(milliseconds=number % (365 * 86_400_000))
    modified = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return (
        f"<Contents><Key>{synthetic_s3._encode(key, url)}</Key><LastModified>{modified}</LastModified>"
        f"<ETag>&quot;{digest.hex()}&quot;</ETag><Size>{size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
    )


def serve(bucket: str) -> int:
    """The in-memory endpoint, with varied metadata (this module run with ``--serve``)."""
    from benchmarks import synthetic_s3
    from benchmarks.children import fast_runner

    synthetic_s3._entry = _varied_entry  # type: ignore[assignment]
    with fast_runner() as runner:
        runner.run(synthetic_s3.serve([bucket], 0))
    return 0


@dataclass
class Row:
    format: str
    compression: str
    keys: int
    bytes: int | None
    seconds: float

    @property
    def keys_per_second(self) -> float:
        return self.keys / self.seconds if self.seconds else 0.0


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCANNER_"))}
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(_REPO),
    )
    return env


def scan_once(uri: str, endpoint: str, output_format: str, name: str, work: Path) -> tuple[int, int, float]:
    """(keys, output bytes, seconds of the scan) for one run of the command."""
    out, summary = work / name, work / "summary.json"
    command = [sys.executable, "-m", "scanner", "scan", uri, "-f", output_format, "-o", str(out)]
    command += ["--processes", "1", "-q", "--summary", str(summary)]
    result = subprocess.run(
        command, env=_env(endpoint), cwd=_REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    document = json.loads(summary.read_text())
    size = out.stat().st_size
    if name == "out.jsonl":
        out.replace(work / "listing.jsonl")  # kept for the compression levels
    else:
        out.unlink()
    return int(document["objects"]), size, float(document["seconds"])


def api_once(uri: str, endpoint: str, arrow: bool) -> tuple[int, float]:
    code = (
        "import sys, time, scanner\n"
        "started = time.perf_counter()\n"
        f"if {arrow}:\n"
        f"    count = sum(b.num_rows for b in scanner.scan_arrow({uri!r}, endpoint_url={endpoint!r}))\n"
        "else:\n"
        f"    count = sum(1 for _ in scanner.scan({uri!r}, endpoint_url={endpoint!r}))\n"
        "print(count, time.perf_counter() - started)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(endpoint),
        cwd=_REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the API run failed: {result.stderr.strip()}")
    count, seconds = result.stdout.split()
    return int(count), float(seconds)


def levels(listing: bytes, keys: int) -> list[str]:
    """Markdown rows: bytes per key and speed of a few levels of each codec, on ``listing``."""
    import zlib

    import zstandard

    rows = []
    for codec, level in (("gzip", 1), ("gzip", 3), ("gzip", 6), ("zstd", 1), ("zstd", 3), ("zstd", 9)):
        started = time.perf_counter()
        if codec == "gzip":
            compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
            size = len(compressor.compress(listing) + compressor.flush())
        else:
            size = len(zstandard.ZstdCompressor(level=level).compress(listing))
        seconds = time.perf_counter() - started
        rows.append(f"| {codec} | {level} | {size / keys:.1f} | {len(listing) / seconds / 1e6:,.0f} |")
    return rows


def run(keys: int, layout: str, repeat: int) -> tuple[list[Row], list[str]]:
    bucket = f"bench-{layout}-{keys}"
    uri = f"s3://{bucket}"
    rows: list[Row] = []
    level_rows: list[str] = []
    with listening_child("benchmarks.formats", "--serve", bucket, what="the in-memory endpoint") as endpoint:
        with tempfile.TemporaryDirectory(prefix="scanner-formats-") as directory:
            work = Path(directory)
            for output_format, compression, name in CASES:
                best: tuple[int, int, float] | None = None
                for _ in range(repeat):
                    found = scan_once(uri, endpoint, output_format, name, work)
                    if best is None or found[2] < best[2]:
                        best = found
                assert best is not None
                rows.append(Row(output_format, compression, best[0], best[1], best[2]))
                if name == "out.jsonl":
                    level_rows = levels((work / "listing.jsonl").read_bytes(), best[0])
                print(f"{output_format:8} {compression:15} {best[1] / best[0]:8.1f} B/key", file=sys.stderr)
        for label, arrow in (("scanner.scan", False), ("scanner.scan_arrow", True)):
            runs = [api_once(uri, endpoint, arrow) for _ in range(repeat)]
            count, seconds = min(runs, key=lambda found: found[1])
            rows.append(Row(label, "(records in Python)", count, None, seconds))
    return rows, level_rows


def report(
    rows: Sequence[Row], level_rows: Sequence[str], keys: int, layout: str, repeat: int, load: str
) -> str:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        f"# Output formats: bytes per key and keys per second ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"`python -m benchmarks.formats --keys {keys} --layout {layout} --repeat {repeat}`: one bucket of "
        f"{keys:,} keys (`{layout}` layout) on the in-memory endpoint, with a distinct ETag per object, "
        "sizes from 40 KB to 1 MB and times spread over a year; the command with `--processes 1`; best "
        f"of {repeat}.",
        "",
        f"- machine: {os.cpu_count()} cores (shared with other work: load average {load} at the start), "
        f"`{uname}`",
        f"- Python {platform.python_version()}",
        "",
        "| format | compression | bytes/key | vs JSON Lines | keys/s |",
        "|---|---|---:|---:|---:|",
    ]
    plain = next(row.bytes for row in rows if row.format == "jsonl" and row.compression == "none")
    for row in rows:
        if row.bytes is None:
            size, ratio = "", ""
        else:
            size = f"{row.bytes / row.keys:.1f}"
            ratio = f"{row.bytes / plain:.1%}" if plain else ""
        lines.append(f"| {row.format} | {row.compression} | {size} | {ratio} | {row.keys_per_second:,.0f} |")
    lines += [
        "",
        "keys/s is the scan's own time (from `--summary`), start-up excluded; for the API rows, the time",
        "from the call to the last record, in a fresh interpreter. Items lists group keys into tasks,",
        "so their bytes per key are of a different kind (no sizes, times or ETags).",
        "",
        "## Compression levels, on the JSON Lines listing",
        "",
        "One thread compressing the whole plain listing above in one call (the output compresses",
        "1 MiB blocks in a worker thread at gzip 3 and zstd 1).",
        "",
        "| codec | level | bytes/key | MB/s |",
        "|---|---:|---:|---:|",
        *level_rows,
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.formats", description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=200_000, help="keys in the bucket (default 200000)")
    parser.add_argument("--layout", default="dicom", help="a layout of benchmarks.layouts (default dicom)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case; the best counts")
    parser.add_argument(
        "--out",
        default=str(_REPO / "benchmarks" / "results" / f"formats-{datetime.now(UTC):%Y-%m-%d}.md"),
        help="the Markdown report to write",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    started = time.perf_counter()
    rows, level_rows = run(args.keys, args.layout, args.repeat)
    text = report(rows, level_rows, args.keys, args.layout, args.repeat, load)
    Path(args.out).write_text(text)
    print(text)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
