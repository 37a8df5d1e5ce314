"""Run every tool as its own process, round-robin, and check what each one listed.

One repetition runs every tool once on every bucket (the empty one first), the tools in a
rotated order each time so no tool always follows the same neighbour or always runs first. Each
run is measured from outside by ``launch.py``: wall-clock around spawn/exit, and the tool's own
user+sys CPU and peak RSS from ``os.wait4`` (which include any worker processes the tool itself
waited for; peak RSS is then the largest single process, not a sum).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.ceiling import write_plan
from benchmarks.servers import Dataset, Target
from benchmarks.tools import Invocation, Tool, Toolbox

Log = Callable[[str], None]
_LAUNCHER = Path(__file__).resolve().parent / "launch.py"
_REQUESTS = re.compile(rb"([\d,]+) requests")
_CEILING = re.compile(rb"(\d+) keys, (\d+) requests")


@dataclass
class Run:
    variant: str
    dataset: str
    tool: str
    repetition: int
    wall: float
    cpu_user: float
    cpu_sys: float
    max_rss_kb: int
    exit_code: int
    keys: int | None
    requests: int | None
    ok: bool
    error: str = ""
    # CPU seconds the server used during the run (None when it runs elsewhere).
    server_cpu: float | None = None

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Bench:
    """Everything a measuring pass needs."""

    target: Target
    endpoint_url: str  # the server's, or the latency proxy's in front of it
    toolbox: Toolbox
    workdir: Path
    log: Log
    timeout_per_key: float = 0.002  # seconds, on top of a fixed 120 s allowance


def measure(
    bench: Bench,
    variant: str,
    tools: Sequence[Tool],
    datasets: Sequence[Dataset],
    repeat: int,
) -> list[Run]:
    """``repeat`` round-robin repetitions of every tool on every dataset; every run, failed or not."""
    plans: dict[str, Path] = {}
    for dataset in datasets:
        plans[dataset.bucket] = bench.workdir / f"plan-{dataset.bucket}.json"
        write_plan(plans[dataset.bucket], dataset.keys)
    env = _base_env(bench)
    # One untimed run each first, on the first dataset (the empty bucket): page cache and
    # byte-compiled files warm for everyone, and a tool that cannot work at all says so before
    # the timed runs start.
    for tool in tools:
        warm = _run(bench, env, variant, tool, datasets[0], plans[datasets[0].bucket], -1)
        if not warm.ok:
            bench.log(f"  warm-up of {tool.name} failed: {warm.error}")
    runs: list[Run] = []
    for repetition in range(repeat):
        shift = repetition % len(tools)
        order = [*tools[shift:], *tools[:shift]]
        for dataset in datasets:
            for tool in order:
                run = _run(bench, env, variant, tool, dataset, plans[dataset.bucket], repetition)
                runs.append(run)
                status = "ok" if run.ok else f"FAILED: {run.error}"
                bench.log(
                    f"  [{variant} {repetition + 1}/{repeat}] {dataset.label:>16} {tool.name:<18} "
                    f"{run.wall:7.2f} s wall {run.cpu:7.2f} s cpu {run.max_rss_kb / 1024:6.0f} MB  {status}"
                )
    return runs


def _base_env(bench: Bench) -> dict[str, str]:
    # Nothing from the machine's AWS/rclone/scanner settings may change what a tool does, and
    # PYTHONDONTWRITEBYTECODE would make every Python tool recompile its imports on every run.
    dropped = ("AWS_", "SCANNER_", "RCLONE_", "S3_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
    }
    config = bench.workdir / "aws-config"
    # Path-style addressing: virtual-hosted names do not resolve for 127.0.0.1 endpoints.
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    env.update(
        AWS_ACCESS_KEY_ID=bench.target.access_key,
        AWS_SECRET_ACCESS_KEY=bench.target.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=bench.endpoint_url,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _run(
    bench: Bench,
    env: dict[str, str],
    variant: str,
    tool: Tool,
    dataset: Dataset,
    plan: Path,
    repetition: int,
) -> Run:
    output = bench.workdir / f"out-{tool.name}.txt"
    stdout_path = output if tool.stdout_is_output else bench.workdir / f"stdout-{tool.name}.txt"
    stderr_path = bench.workdir / f"stderr-{tool.name}.txt"
    output.unlink(missing_ok=True)
    invocation = Invocation(
        toolbox=bench.toolbox,
        endpoint_url=bench.endpoint_url,
        bucket=dataset.bucket,
        output=output,
        plan=plan,
        access_key=bench.target.access_key,
        secret_key=bench.target.secret_key,
        rclone_provider=bench.target.rclone_provider,
    )
    timeout = 120 + bench.timeout_per_key * dataset.size
    server_cpu = bench.target.server_cpu
    server_cpu_before = server_cpu() if server_cpu is not None else 0.0
    usage = _spawn(
        tool.argv(invocation),
        {**env, **tool.env(invocation)},
        bench.workdir,
        stdout_path,
        stderr_path,
        timeout,
    )
    stderr = stderr_path.read_bytes()
    run = Run(
        variant=variant,
        dataset=dataset.label,
        tool=tool.name,
        repetition=repetition,
        wall=usage.wall,
        cpu_user=usage.cpu_user,
        cpu_sys=usage.cpu_sys,
        max_rss_kb=usage.max_rss_kb,
        exit_code=-1 if usage.exit_code is None else usage.exit_code,
        keys=None,
        requests=None,
        ok=False,
        server_cpu=server_cpu() - server_cpu_before if server_cpu is not None else None,
    )
    if usage.exit_code is None:
        run.error = f"timed out after {timeout:.0f} s"
    else:
        _verify(run, tool, dataset, output, stderr)
    output.unlink(missing_ok=True)
    return run


@dataclass(frozen=True)
class _Usage:
    wall: float
    exit_code: int | None  # None: killed at the timeout
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    max_rss_kb: int = 0


def _spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    stdout_path: Path,
    stderr_path: Path,
    timeout: float,
) -> _Usage:
    """Run ``argv`` through launch.py, which measures it from a small fresh process."""
    report = cwd / "launch-report.txt"
    report.unlink(missing_ok=True)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_LAUNCHER), str(report), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            # Its own process group, so a timeout kills the tool and any workers it forked.
            start_new_session=True,
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            launcher_code = proc.wait()
        finally:
            timer.cancel()
    if not report.exists():
        return _Usage(timeout, None if launcher_code < 0 else launcher_code)
    wall, code, user, system, rss = report.read_text().split()
    return _Usage(float(wall), int(code), float(user), float(system), int(rss))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _verify(run: Run, tool: Tool, dataset: Dataset, output: Path, stderr: bytes) -> None:
    """Fill keys/requests/ok; ``ok`` only when the tool listed exactly the bucket."""
    if run.exit_code != 0:
        if tool.no_keys_message and tool.no_keys_message.encode() in stderr and not dataset.keys:
            run.keys, run.ok = 0, True
            return
        run.error = f"exit {run.exit_code}: {_error_line(stderr)}"[:300]
        return
    data = output.read_bytes() if output.exists() else b""
    if tool.verify == "count":
        match = _CEILING.search(data)
        if match is None:
            run.error = f"no 'N keys' line in its output: {data[:200]!r}"
            return
        run.keys, run.requests = int(match.group(1)), int(match.group(2))
    elif tool.verify == "lines":
        # Keys never hold "\n" in any layout; other line breaks (U+2028, \v) must not split.
        run.keys = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    else:
        if not _verify_key_set(run, data, dataset.keys, ordered=tool.verify == "jsonl"):
            return
    if run.requests is None and (match := _REQUESTS.search(stderr)):
        run.requests = int(match.group(1).replace(b",", b""))
    if run.keys != len(dataset.keys):
        run.error = f"listed {run.keys:,} keys, the bucket holds {len(dataset.keys):,}"
        return
    run.ok = True


def _error_line(stderr: bytes) -> str:
    """The line of a failed tool's stderr that names the error: Python tracebacks and Rust
    debug dumps (obstore) end in a line that says nothing, like ``}``."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "exception" in line.lower():
            return line
    meaningful = [line for line in lines if sum(ch.isalnum() for ch in line) >= 8]
    return meaningful[-1] if meaningful else "(no message)"


def _verify_key_set(run: Run, data: bytes, expected: list[str], *, ordered: bool) -> bool:
    try:
        keys = [json.loads(line)["key"] for line in data.splitlines(keepends=False) if line]
    except (ValueError, KeyError, TypeError) as exc:
        run.error = f"unreadable JSON Lines output: {exc}"
        return False
    run.keys = len(keys)
    listed = keys if ordered else sorted(keys)
    if listed == expected:
        return True
    if not ordered or sorted(keys) != expected:
        missing = len(set(expected) - set(keys))
        extra = len(keys) - len(set(keys))
        run.error = f"key set differs: {missing:,} missing, {extra:,} duplicated, {run.keys:,} listed"
    else:
        first = next(i for i, (a, b) in enumerate(zip(listed, expected, strict=True)) if a != b)
        run.error = f"keys out of order from line {first + 1}"
    return False
