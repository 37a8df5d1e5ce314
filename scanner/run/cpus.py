"""How many CPUs a scan may use, and whether it can fork workers at all (cheap to import)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, and its container's CPU limit if lower.

    A pod limited to 2 CPUs on a 64-CPU node sees all 64 in its affinity; forking 64 workers
    there would only make them wait for each other's CPU time.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit))) if limit is not None else cpus


def cgroup_cpu_limit() -> float | None:
    """The CPU limit (quota / period) of this process's cgroup, if it has one."""
    membership = _read_text(Path("/proc/self/cgroup"))
    for line in (membership or "").splitlines():
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2: one unified hierarchy, "0::/path"
            for directory in (Path("/sys/fs/cgroup", relative), Path("/sys/fs/cgroup")):
                limit = cpu_limit_from_cpu_max(_read_text(directory / "cpu.max") or "")
                if limit is not None:
                    return limit
        elif "cpu" in controllers.split(","):  # cgroup v1: quota and period in two files
            for base in (Path("/sys/fs/cgroup/cpu,cpuacct"), Path("/sys/fs/cgroup/cpu")):
                for directory in (base / relative, base):
                    quota = _read_text(directory / "cpu.cfs_quota_us")
                    period = _read_text(directory / "cpu.cfs_period_us")
                    if quota is not None and period is not None:
                        return cpu_limit_from_cpu_max(f"{quota} {period}")
    return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cpu_limit_from_cpu_max(text: str) -> float | None:
    """``cpu.max`` ("200000 100000", or "max 100000" for none) as CPUs (2.0), or None."""
    fields = text.split()
    if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) <= 0:
        return None
    quota = fields[0]
    if quota == "max" or not quota.isdigit() or int(quota) <= 0:
        return None  # no limit ("max"; "-1" in cgroup v1)
    return int(quota) / int(fields[1])


def can_fork() -> bool:
    return hasattr(os, "fork")
