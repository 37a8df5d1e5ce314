"""Start one measured tool from a small, freshly exec'd process and report its rusage.

Linux carries a process's peak RSS across execve, and a forked child starts with its parent's
resident pages, so a tool forked straight from the harness (which hosts moto and has boto3
imported) would report the harness's peak as its own. This launcher is exec'd fresh with no site
imports (about 8 MB), spawns the tool, reaps it with wait4 and writes
``wall exit_code user sys maxrss_kb`` to REPORT. The tool inherits its environment, working
directory and standard streams.

    python -I -S launch.py REPORT PROGRAM [ARG...]
"""

import os
import sys
import time


def main() -> int:
    report, argv = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ)
    except OSError as exc:
        print(f"cannot run {argv[0]}: {exc}", file=sys.stderr)
        return 127
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(report, "w") as out:
        code = os.waitstatus_to_exitcode(status)
        out.write(f"{wall} {code} {usage.ru_utime} {usage.ru_stime} {usage.ru_maxrss}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
