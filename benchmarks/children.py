"""Benchmark servers that run in a process of their own (the latency proxy, the in-memory
endpoint): starting one, learning where it listens, and stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
_READY = "listening on "


@contextlib.contextmanager
def listening_child(module: str, *args: str, what: str) -> Iterator[str]:
    """``python -m MODULE ARGS`` for the block; yields the URL its ``listening on URL`` line gives."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(_READY):
            raise RuntimeError(f"{what} did not start (exit {process.poll()}): {line!r}")
        yield line.removeprefix(_READY).strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def announce(url: str) -> None:
    """What ``listening_child`` waits for."""
    print(f"{_READY}{url}", flush=True)


def fast_runner() -> asyncio.Runner:
    """An event loop runner on uvloop when it is installed: a server's own overhead should be as
    small as it can be next to the clients it serves."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
