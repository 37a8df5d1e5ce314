"""Synthetic memory benchmark: millions of records through the scanner's pipeline, no S3 at all.

A bucket's size must not show up in the scanner's memory. No server here can hold 10M objects,
so a generator-backed page source synthesises them instead: key i is ``f"{i:012d}"``, and a page
is computed from its StartAfter/continuation key by binary search over i, so the source itself
holds nothing. Everything downstream (splitting, ordering, encoding, the one writer) is the real
pipeline, ordered by default like the CLI, writing JSON Lines to standard output, which the
parent sends to /dev/null.

    python -m benchmarks.memory                       # 100k, 1M and 10M, one subprocess each
    python -m benchmarks.memory --records 1000000 --result out.json   # one size, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
_WIDTH = 12
_LAST_MODIFIED = "2026-01-02T03:04:05.000Z"
_ETAG = '"9dd4e461268c8034f5c8564e155c67a6"'


class SyntheticSource:
    """A ``PageSource`` over keys 000000000000 .. count-1, computed on demand."""

    def __init__(self, count: int, latency: float = 0.0) -> None:
        self.count = count
        self.latency = latency
        self.requests = 0

    @staticmethod
    def key(index: int) -> str:
        return f"{index:0{_WIDTH}d}"

    def _first(self, bound: str, *, inclusive: bool) -> int:
        """Smallest index whose key is > bound (>= when inclusive); works for any string,
        including the byte-wise midpoints the splitter invents between real keys."""
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            key = self.key(middle)
            if key > bound or (inclusive and key == bound):
                high = middle
            else:
                low = middle + 1
        return low

    async def list_page(
        self,
        key_range: Any,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = 1000,
    ) -> Any:
        import anyio

        from scanner.records import ObjectRecord
        from scanner.storage.base import ListPage

        # Yield like a network call would, so concurrent workers interleave as they do on S3.
        if self.latency:
            await anyio.sleep(self.latency)
        else:
            await anyio.lowlevel.checkpoint()
        self.requests += 1
        prefix: str = key_range.request_prefix()
        after = token if token is not None else key_range.start_after
        start = self._first(after, inclusive=False) if after is not None else 0
        if prefix:
            start = max(start, self._first(prefix, inclusive=True))
        stop = min(self.count, start + max_keys)
        records = []
        for index in range(start, stop):
            key = self.key(index)
            if not key.startswith(prefix):
                stop = index
                break
            records.append(ObjectRecord(key, index % 4096, _LAST_MODIFIED, _ETAG, "STANDARD"))
        truncated = stop < self.count and self.key(stop).startswith(prefix) and bool(records)
        # No common prefixes: no key holds a delimiter.
        return ListPage(records, [], truncated, records[-1].key if truncated else None)


def peak_rss_mb() -> float:
    """This process's peak RSS.

    VmHWM belongs to the address space, which execve replaces; ``ru_maxrss`` survives execve, so
    in a child of a big parent (the harness hosts moto) it would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(records: int, *, ordered: bool = True) -> dict[str, Any]:
    """Scan ``records`` synthetic keys to standard output in this process; figures as a dict."""
    import anyio

    from scanner.config import ConnectionConfig, S3Location, ScanConfig
    from scanner.run.pipeline import run_scan

    baseline = peak_rss_mb()
    config = ScanConfig(
        location=S3Location("synthetic-bucket", ""),
        connection=ConnectionConfig(),
        output="-",
        ordered=ordered,
        temp_dir=tempfile.gettempdir(),
    )
    source = SyntheticSource(records)
    started = time.perf_counter()
    summary = anyio.run(run_scan, config, source, backend="asyncio", backend_options={"use_uvloop": True})
    seconds = time.perf_counter() - started
    if summary.objects != records:
        raise RuntimeError(f"the pipeline wrote {summary.objects:,} records, expected {records:,}")
    return {
        "records": records,
        "mode": "ordered" if ordered else "unordered",
        "seconds": seconds,
        "requests": source.requests,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "spilled_bytes": getattr(summary, "spilled_bytes", 0),
    }


def run_sizes(
    sizes: Sequence[int], log: Callable[[str], None] = print, *, ordered: bool = True
) -> list[dict[str, Any]]:
    """Each size in a fresh subprocess, so one size's peak never hides in another's."""
    repo = Path(__file__).resolve().parent.parent
    results: list[dict[str, Any]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            result_file = Path(tmp) / "result.json"
            argv = [
                sys.executable,
                "-m",
                "benchmarks.memory",
                "--records",
                str(size),
                "--result",
                str(result_file),
            ]
            if not ordered:
                argv.append("--unordered")
            env = {**os.environ, "PYTHONPATH": str(repo), "TMPDIR": tmp}
            with open(os.devnull, "wb") as devnull:
                done = subprocess.run(
                    argv, cwd=repo, env=env, stdout=devnull, stderr=subprocess.PIPE, check=False, timeout=3600
                )
            if done.returncode != 0 or not result_file.exists():
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no message)"]
                results.append({"records": size, "error": f"exit {done.returncode}: {tail[0]}"[:300]})
                log(f"  memory {size:>12,}: FAILED {results[-1]['error']}")
                continue
            result = json.loads(result_file.read_text())
        results.append(result)
        log(
            f"  memory {size:>12,}: {result['seconds']:6.1f} s, "
            f"{result['records'] / result['seconds']:,.0f} records/s, peak RSS {result['peak_rss_mb']:.0f} MB"
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, help="one size, run in this process (stdout gets the records)")
    parser.add_argument("--result", type=Path, help="with --records: write the figures here as JSON")
    parser.add_argument("--unordered", action="store_true", help="the --unordered pipeline instead")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="without --records: comma-separated sizes, one subprocess each",
    )
    args = parser.parse_args(argv)
    if args.records is not None:
        result = run_one(args.records, ordered=not args.unordered)
        text = json.dumps(result)
        if args.result is not None:
            args.result.write_text(text)
        else:
            print(text, file=sys.stderr)
        return 0
    sizes = [int(size) for size in args.sizes.split(",") if size]
    run_sizes(sizes, lambda line: print(line, file=sys.stderr), ordered=not args.unordered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
