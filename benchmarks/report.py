"""Medians, derived figures and the three report files: latest.json, latest.md, keys_per_second.png.

"After start-up" figures take each tool's own start-up out: its median run on the empty bucket
(process start, imports, credentials, the first request) is subtracted from its median run on
the N-key bucket, so keys/s after start-up = N / (wall_N - wall_empty) and CPU per key after
start-up = (cpu_N - cpu_empty) / N.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.runner import Run
from benchmarks.servers import EMPTY_LABEL

BASELINES = ("boto3", "obstore")


@dataclass
class Summary:
    variant: str
    dataset: str
    tool: str
    label: str
    keys: int
    runs: int
    failed: str | None = None
    wall: float | None = None
    cpu: float | None = None
    server_cpu: float | None = None
    peak_rss_mb: float | None = None
    requests: int | None = None
    empty_wall: float | None = None
    empty_cpu: float | None = None
    keys_per_second: float | None = None
    keys_per_second_after_startup: float | None = None
    cpu_us_per_key_after_startup: float | None = None
    vs_boto3: float | None = None
    vs_obstore: float | None = None
    of_ceiling: float | None = None


def summarise(runs: Sequence[Run], labels: dict[str, str], sizes: dict[str, int]) -> list[Summary]:
    """One row per (variant, dataset, tool): medians over repetitions, failures kept as failures."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.variant, run.dataset, run.tool), []).append(run)
    rows: list[Summary] = []
    for (variant, dataset, tool), group in groups.items():
        if dataset == EMPTY_LABEL:
            continue
        empty = groups.get((variant, EMPTY_LABEL, tool), [])
        row = Summary(variant, dataset, tool, labels.get(tool, tool), sizes[dataset], len(group))
        failures = [run for run in (*group, *empty) if not run.ok]
        if failures:
            first = failures[0]
            row.failed = f"{first.dataset} run {first.repetition + 1}: {first.error}"
            rows.append(row)
            continue
        row.wall = statistics.median(run.wall for run in group)
        row.cpu = statistics.median(run.cpu for run in group)
        server = [run.server_cpu for run in group if run.server_cpu is not None]
        row.server_cpu = statistics.median(server) if server else None
        # The worst run's peak: a memory bound has to hold every time, not on the median run.
        row.peak_rss_mb = max(run.max_rss_kb for run in group) / 1024
        requests = [run.requests for run in group if run.requests is not None]
        row.requests = round(statistics.median(requests)) if requests else None
        row.keys_per_second = row.keys / row.wall if row.wall else None
        if empty:
            row.empty_wall = statistics.median(run.wall for run in empty)
            row.empty_cpu = statistics.median(run.cpu for run in empty)
            listing = row.wall - row.empty_wall
            row.keys_per_second_after_startup = row.keys / listing if listing > 0 else None
            row.cpu_us_per_key_after_startup = (
                (row.cpu - row.empty_cpu) / row.keys * 1e6 if row.keys else None
            )
        rows.append(row)
    for row in rows:
        peers = {
            other.tool: other
            for other in rows
            if (other.variant, other.dataset) == (row.variant, row.dataset)
        }
        row.vs_boto3 = _ratio(row, peers.get("boto3"))
        row.vs_obstore = _ratio(row, peers.get("obstore"))
        row.of_ceiling = _ratio(row, peers.get("ceiling"))
    return rows


def _ratio(row: Summary, base: Summary | None) -> float | None:
    mine = row.keys_per_second_after_startup
    theirs = base.keys_per_second_after_startup if base else None
    return mine / theirs if mine and theirs else None


def machine_info(server: str) -> dict[str, Any]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "load_average_at_start": load_average(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "server": server,
    }


def load_average() -> float | None:
    """1-minute load: another busy process on a 2-core machine skews every figure."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# -- writing ------------------------------------------------------------------------------------


def write_reports(
    results_dir: Path,
    *,
    meta: dict[str, Any],
    runs: Sequence[Run],
    rows: Sequence[Summary],
    memory: Sequence[dict[str, Any]],
) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    document = {
        **meta,
        "summary": [asdict(row) for row in rows],
        "memory": list(memory),
        "runs": [run.as_dict() for run in runs],
    }
    json_path = results_dir / "latest.json"
    md_path = results_dir / "latest.md"
    png_path = results_dir / "keys_per_second.png"
    _write_atomic(json_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(md_path, markdown(meta, rows, memory))
    written = [json_path, md_path]
    if chart(rows, png_path):
        written.append(png_path)
    return written


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def markdown(meta: dict[str, Any], rows: Sequence[Summary], memory: Sequence[dict[str, Any]]) -> str:
    machine = meta["machine"]
    config = meta["config"]
    lines = [
        "# Listing benchmark",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB RAM, "
        f"Python {machine['python']}, {machine['os']}; server: {machine['server']}; "
        f"{meta['started']}, {config['repeat']} repetition(s), median reported.",
        "",
        _load_line(meta),
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in meta["versions"].items()) + ".",
        "",
        "keys/s after start-up = N / (median wall on the N-key bucket - median wall on an empty bucket); "
        "CPU = user+sys of the whole process tree; server CPU = user+sys of the server's processes "
        "during the run (when the harness runs the server), which shares the machine's CPUs with the "
        "client; peak RSS = worst run's largest process. Ratios compare keys/s after start-up.",
    ]
    variants: dict[tuple[str, str], list[Summary]] = {}
    for row in rows:
        variants.setdefault((row.variant, row.dataset), []).append(row)
    for (variant, dataset), group in variants.items():
        lines += ["", f"## {dataset} ({variant})", ""]
        lines += [
            "| tool | wall s | keys/s | keys/s after start-up | CPU s | µs CPU/key after start-up "
            "| server CPU s | peak RSS MB | requests | vs boto3 | vs obstore | % of ceiling |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        ranked = sorted(group, key=lambda r: -(r.keys_per_second_after_startup or 0))
        for row in ranked:
            if row.failed:
                failure = row.failed.replace("|", "/")
                lines.append(f"| {row.label} | failed: {failure} |" + " |" * 10)
                continue
            lines.append(
                f"| {row.label} | {_fmt(row.wall, '.2f')} | {_fmt(row.keys_per_second, ',.0f')} "
                f"| {_fmt(row.keys_per_second_after_startup, ',.0f')} | {_fmt(row.cpu, '.2f')} "
                f"| {_fmt(row.cpu_us_per_key_after_startup, '.1f')} | {_fmt(row.server_cpu, '.2f')} "
                f"| {_fmt(row.peak_rss_mb, '.0f')} "
                f"| {_fmt(row.requests, 'd')} | {_fmt(row.vs_boto3, '.1f', 'x')} "
                f"| {_fmt(row.vs_obstore, '.2f', 'x')} | {_fmt(_percent(row.of_ceiling), '.0f', '%')} |"
            )
    if memory:
        lines += [
            "",
            "## Memory: synthetic records through the scanner's pipeline (no S3)",
            "",
            "| records | mode | seconds | records/s | peak RSS MB | RSS before the scan MB |",
            "|--:|---|--:|--:|--:|--:|",
        ]
        for entry in memory:
            if "error" in entry:
                lines.append(f"| {entry['records']:,} | | failed: {entry['error']} | | | |")
                continue
            lines.append(
                f"| {entry['records']:,} | {entry['mode']} | {entry['seconds']:.1f} "
                f"| {entry['records'] / entry['seconds']:,.0f} | {entry['peak_rss_mb']:.0f} "
                f"| {entry['baseline_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _load_line(meta: dict[str, Any]) -> str:
    machine = meta["machine"]
    start, end = machine.get("load_average_at_start"), meta.get("load_average_at_end")
    line = f"1-minute load average at start / end: {_fmt(start, '.1f')} / {_fmt(end, '.1f')}."
    busiest = max((value for value in (start, end) if value is not None), default=0.0)
    if busiest > machine["nproc"] * 0.75:
        line += " Other processes competed for the CPUs during this run: expect noisy figures."
    return line


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100


def chart(rows: Sequence[Summary], path: Path) -> bool:
    """Grouped bars: keys/s after start-up per tool, one group per dataset; one panel per variant."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    variants = sorted({row.variant for row in rows}, key=lambda v: (v != "direct", v))
    if not variants:
        return False
    fig, axes = plt.subplots(len(variants), 1, figsize=(11, 4.2 * len(variants)), squeeze=False)
    for ax, variant in zip(axes[:, 0], variants, strict=True):
        subset = [row for row in rows if row.variant == variant]
        datasets = list(dict.fromkeys(row.dataset for row in subset))
        tools = list(dict.fromkeys(row.label for row in subset))
        width = 0.8 / max(1, len(datasets))
        for index, dataset in enumerate(datasets):
            values = {
                row.label: row.keys_per_second_after_startup or 0 for row in subset if row.dataset == dataset
            }
            xs = [i + index * width for i in range(len(tools))]
            bars = ax.bar(xs, [values.get(tool, 0) for tool in tools], width, label=dataset)
            ax.bar_label(bars, labels=[f"{values.get(t, 0) / 1000:.0f}k" for t in tools], fontsize=7)
        ax.set_xticks(
            [i + width * (len(datasets) - 1) / 2 for i in range(len(tools))], tools, rotation=20, ha="right"
        )
        ax.set_ylabel("keys/s after start-up")
        ax.set_title(f"Listing throughput ({variant})")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
