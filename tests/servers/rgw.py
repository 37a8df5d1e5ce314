"""A single-node Ceph RADOS Gateway on loopback: a real S3 server for tests and benchmarks.

One monitor, one OSD, no manager, auth none and RGW with the beast frontend, every daemon bound to
127.0.0.1 and every file under one directory. The configuration and the start sequence follow
``shared/docs/local-s3-servers.md``; the settings that look arbitrary are explained there.

    with RgwServer(tmp_path) as rgw:          # memstore: empty and in memory, about 2 s to start
        client = boto3.client("s3", endpoint_url=rgw.endpoint_url, ...)

    RgwServer(Path("~/.cache/rgw").expanduser(), objectstore="bluestore").start()
                                              # bluestore: a sparse file, kept across restarts

From a shell (the daemons keep running after the command returns)::

    eval "$(python -m tests.servers.rgw start --dir /tmp/rgw --objectstore bluestore)"
    python -m tests.servers.rgw stop --dir /tmp/rgw

Files under ``base_dir``: ``ceph.conf``, ``rgw-cluster.json`` (fsid, ports, objectstore),
``rgw-daemons.json`` (PIDs of the running daemons, so any process can stop them) and ``log/``.
"""

from __future__ import annotations

import argparse
import json
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
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, get_args

Objectstore = Literal["memstore", "bluestore"]

REQUIRED_TOOLS = (
    "radosgw",
    "ceph-mon",
    "ceph-osd",
    "ceph",
    "monmaptool",
    "ceph-authtool",
    "radosgw-admin",
)

_STATE_FILE = "rgw-cluster.json"
_PID_FILE = "rgw-daemons.json"
# Everything start() creates under base_dir; a fresh cluster removes these and nothing else.
_OWNED = (
    "ceph.conf",
    "keyring",
    "monmap",
    "mon",
    "osd",
    "rgw",
    "run",
    "log",
    "crash",
    _STATE_FILE,
    _PID_FILE,
)

_MON_ID = "a"
_OSD_ID = 0
_RGW_NAME = "client.rgw.a"


@dataclass(frozen=True)
class _Daemon:
    key: str  # key in the PID file
    exe: str
    name: str  # ceph entity name, which also names the log file


_MON = _Daemon("mon", "ceph-mon", f"mon.{_MON_ID}")
_OSD = _Daemon("osd", "ceph-osd", f"osd.{_OSD_ID}")
_RGW = _Daemon("rgw", "radosgw", _RGW_NAME)
_STOP_ORDER = (_RGW, _OSD, _MON)

_STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL; a bluestore OSD flushes on SIGTERM
_LOG_TAIL_LINES = 40
# Auto-chosen ports come from below the kernel's ephemeral range (so no outgoing connection can
# hold them) and above the range Ceph daemons bind their own ports in (6800-7568).
_AUTO_PORT_MIN = 20000
_UNIX_SOCKET_PATH_MAX = 107


def rgw_available() -> bool:
    """True when every Ceph program the launcher runs is on PATH (see ``.ci/install-rgw``)."""
    return all(shutil.which(tool) is not None for tool in REQUIRED_TOOLS)


@dataclass
class _ClusterState:
    """What must survive between starts of one cluster (``rgw-cluster.json``)."""

    fsid: str
    objectstore: str
    osd_uuid: str
    mon_port: int
    rgw_port: int
    initialised: bool = False  # set once a first start got as far as a working S3 user


@dataclass
class RgwServer:
    """A Ceph RGW cluster living in ``base_dir``, started and stopped by PID.

    ``port`` (RGW's HTTP port) and ``mon_port`` are picked free at start when 0; a restarted
    bluestore cluster keeps its previous ports when they are still free. A memstore cluster is
    created anew, empty, at every start; a bluestore cluster already initialised in ``base_dir``
    is reused with its buckets. ``start()`` never leaves a daemon running when it fails.
    """

    base_dir: Path
    port: int = 0
    objectstore: Objectstore = "memstore"
    access_key: str = "rgw-test-access"
    secret_key: str = "rgw-test-secret"
    mon_port: int = 0
    user_id: str = "rgw-test"
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False, repr=False)
    _auto_port: bool = field(default=False, init=False, repr=False)
    _auto_mon_port: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).expanduser().absolute()
        if self.objectstore not in get_args(Objectstore):
            raise ValueError(f"objectstore must be memstore or bluestore, not {self.objectstore!r}")
        # ceph.conf has no quoting: '#' and ';' start comments and '$' expands metavariables.
        if any(ch in str(self.base_dir) for ch in "#;$\n"):
            raise ValueError(f"base_dir must not contain '#', ';', '$' or newlines: {self.base_dir}")
        self._auto_port = self.port == 0
        self._auto_mon_port = self.mon_port == 0

    # -- public API -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self.port == 0:
            raise RuntimeError("RgwServer has no port yet: call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.base_dir / "ceph.conf"

    def start(self, timeout: float = 60) -> None:
        """Start mon, OSD and RGW and return once S3 requests signed with the keys work.

        Raises RuntimeError (with the tail of the failing daemon's log) on failure or timeout,
        after stopping whatever it had started.
        """
        if not rgw_available():
            missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
            raise RuntimeError(
                f"Ceph RGW is not installed (missing {', '.join(missing)}); run .ci/install-rgw"
            )
        if self._procs:
            raise RuntimeError(f"RGW in {self.base_dir} is already started by this object")
        running = self._running_pids()
        if running:
            raise RuntimeError(
                f"RGW daemons from {self.base_dir} are already running "
                f"(PIDs {sorted(running.values())}); stop them first"
            )
        deadline = time.monotonic() + timeout
        for attempt in range(1, 4):
            try:
                self._start_once(deadline)
                return
            except RuntimeError as exc:
                # A port picked free can be taken before the daemon binds it: pick again.
                retry = attempt < 3 and time.monotonic() < deadline
                if not (retry and self._forget_taken_ports(str(exc))):
                    raise

    def stop(self) -> None:
        """Stop RGW, OSD and mon in that order: SIGTERM, then SIGKILL after a grace period.

        Works from any process: PIDs come from this object or from the PID file in base_dir.
        """
        recorded = self._read_pid_file()
        for daemon in _STOP_ORDER:
            proc = self._procs.get(daemon.key)
            if proc is not None:
                if proc.poll() is None:
                    self._terminate(proc.pid, proc)
            else:
                pid = recorded.get(daemon.key)
                if pid is not None and self._is_our_daemon(pid, daemon):
                    self._terminate(pid, None)
        self._procs.clear()
        (self.base_dir / _PID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        if not self._procs:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start sequence ---------------------------------------------------------------------

    def _forget_taken_ports(self, error: str) -> bool:
        """Reset the auto-chosen ports that a failed start found taken; True if there were any."""
        if "Address already in use" not in error:
            return False
        taken = False
        if self._auto_port and f"127.0.0.1:{self.port}" in error:
            self.port, taken = 0, True
        if self._auto_mon_port and f"127.0.0.1:{self.mon_port}" in error:
            self.mon_port, taken = 0, True
        return taken

    def _start_once(self, deadline: float) -> None:
        state, fresh = self._prepare(deadline)
        try:
            self._spawn(_MON, ["ceph-mon", "-c", str(self.conf_path), "-f", "-i", _MON_ID])
            self._wait_for_mon(deadline)
            if fresh:
                self._create_osd(state, deadline)
            self._spawn(_OSD, ["ceph-osd", "-c", str(self.conf_path), "-f", "-i", str(_OSD_ID)])
            self._wait_for_osd(deadline)
            self._spawn(_RGW, ["radosgw", "-c", str(self.conf_path), "-f", "-n", _RGW_NAME])
            self._wait_for_http(deadline)
            self._ensure_user(deadline)
            if not state.initialised:
                state.initialised = True
                self._save_state(state)
        except BaseException:
            self.stop()
            raise

    def _prepare(self, deadline: float) -> tuple[_ClusterState, bool]:
        """Write ceph.conf; create the monitor store unless a bluestore cluster is reused."""
        state = self._load_state()
        holds_data = state is not None and state.initialised and state.objectstore == "bluestore"
        if holds_data and self.objectstore == "memstore":
            raise RuntimeError(
                f"{self.base_dir} holds a bluestore cluster with data; refusing to "
                "wipe it for a memstore one (use another directory or delete it)"
            )
        if state is not None and holds_data:
            self.mon_port = self._choose_port(self.mon_port, state.mon_port, exclude=self.port)
            self.port = self._choose_port(self.port, state.rgw_port, exclude=self.mon_port)
            self._write_conf(state.fsid)
            if self.mon_port != state.mon_port:
                self._move_monitor(deadline)
            state.mon_port, state.rgw_port = self.mon_port, self.port
            self._save_state(state)
            return state, False

        self._wipe(state)
        self.mon_port = self._choose_port(self.mon_port, 0, exclude=self.port)
        self.port = self._choose_port(self.port, 0, exclude=self.mon_port)
        state = _ClusterState(
            fsid=str(uuid.uuid4()),
            objectstore=self.objectstore,
            osd_uuid=str(uuid.uuid4()),
            mon_port=self.mon_port,
            rgw_port=self.port,
        )
        # The state file goes first: it marks everything else here as ours to wipe later.
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._save_state(state)
        for sub in ("run", "log", "crash", f"mon/{_MON_ID}", f"osd/{_OSD_ID}", "rgw"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self._write_conf(state.fsid)
        conf, keyring, monmap = (str(self.base_dir / n) for n in ("ceph.conf", "keyring", "monmap"))
        mon_key = ["-n", "mon.", "--cap", "mon", "allow *"]
        self._run(["ceph-authtool", "--create-keyring", keyring, "--gen-key", *mon_key], deadline)
        mon_addr = ["--addv", _MON_ID, self._mon_addr()]
        self._run(["monmaptool", "--create", *mon_addr, "--fsid", state.fsid, monmap], deadline)
        mkfs = ["ceph-mon", "-c", conf, "--mkfs", "-i", _MON_ID]
        self._run([*mkfs, "--monmap", monmap, "--keyring", keyring], deadline, log=_MON)
        return state, True

    def _wipe(self, state: _ClusterState | None) -> None:
        """Remove a previous cluster's files, refusing to touch a directory that is not one."""
        present = [name for name in _OWNED if (self.base_dir / name).exists()]
        if state is None and present:
            raise RuntimeError(
                f"{self.base_dir} is not an RGW cluster directory but holds {', '.join(present)}; "
                "use an empty or new directory"
            )
        for name in present:
            path = self.base_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _move_monitor(self, deadline: float) -> None:
        """Rewrite the stored monmap so the monitor listens on the new mon_port."""
        monmap, conf = str(self.base_dir / "monmap"), str(self.conf_path)
        self._run(["ceph-mon", "-c", conf, "-i", _MON_ID, "--extract-monmap", monmap], deadline)
        # Two calls: monmaptool checks --addv against the map before applying --rm.
        self._run(["monmaptool", monmap, "--rm", _MON_ID], deadline)
        self._run(["monmaptool", monmap, "--addv", _MON_ID, self._mon_addr()], deadline)
        self._run(["ceph-mon", "-c", conf, "-i", _MON_ID, "--inject-monmap", monmap], deadline)

    def _create_osd(self, state: _ClusterState, deadline: float) -> None:
        osd_id = self._ceph(["osd", "new", state.osd_uuid], deadline).strip()
        if osd_id != str(_OSD_ID):
            raise RuntimeError(f"ceph osd new gave id {osd_id!r}, expected {_OSD_ID}")
        self._ceph(["osd", "crush", "add", f"osd.{_OSD_ID}", "1.0", "root=default"], deadline)
        mkfs = ["ceph-osd", "-c", str(self.conf_path), "-i", str(_OSD_ID), "--mkfs"]
        self._run([*mkfs, "--osd-uuid", state.osd_uuid], deadline, log=_OSD)

    def _ensure_user(self, deadline: float) -> None:
        cmd = ["radosgw-admin", "-c", str(self.conf_path)]
        keys = ["--access-key", self.access_key, "--secret-key", self.secret_key]
        user = [f"--uid={self.user_id}", f"--display-name={self.user_id}"]
        created = self._run([*cmd, "user", "create", *user, *keys], deadline, check=False)
        if created.returncode == 0:
            return
        if "exists" not in created.stderr:
            raise RuntimeError(
                f"radosgw-admin user create failed (exit {created.returncode}):\n{created.stderr.strip()}"
            )
        # A reused cluster: make sure this object's keys work too.
        self._run(
            [*cmd, "key", "create", f"--uid={self.user_id}", "--key-type=s3", *keys],
            deadline,
        )

    # -- readiness --------------------------------------------------------------------------

    def _wait_for_mon(self, deadline: float) -> None:
        mon_stat = ["ceph", "-c", str(self.conf_path), "--connect-timeout", "5", "mon", "stat"]
        while True:
            self._check_alive(_MON, deadline, "the monitor to answer")
            if _port_open(self.mon_port) and _succeeds(mon_stat, limit=10.0):
                return
            time.sleep(0.05)

    def _wait_for_osd(self, deadline: float) -> None:
        while True:
            self._check_alive(_OSD, deadline, f"osd.{_OSD_ID} to be up")
            dump = json.loads(self._ceph(["osd", "dump", "--format", "json"], deadline))
            if any(osd["osd"] == _OSD_ID and osd["up"] == 1 for osd in dump["osds"]):
                return
            time.sleep(0.1)

    def _wait_for_http(self, deadline: float) -> None:
        # Loopback must not go through a proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            self._check_alive(_RGW, deadline, f"HTTP 200 from {self.endpoint_url}/")
            try:
                with opener.open(f"{self.endpoint_url}/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)

    def _check_alive(self, daemon: _Daemon, deadline: float, waiting_for: str) -> None:
        proc = self._procs[daemon.key]
        code = proc.poll()
        if code is not None:
            raise RuntimeError(
                f"{daemon.exe} exited with code {code} while waiting for "
                f"{waiting_for}\n{self._log_tail(daemon)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {waiting_for}\n{self._log_tail(daemon)}")

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, daemon: _Daemon, argv: list[str]) -> None:
        # Output goes to a file: a daemon holding the launcher's stdout would keep a shell's
        # $(...) waiting. A new session keeps it alive when the launching terminal goes away.
        with open(self.base_dir / "log" / f"{daemon.name}.out", "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_ceph_env(),
                start_new_session=True,
            )
        self._procs[daemon.key] = proc
        self._write_pid_file({key: p.pid for key, p in self._procs.items()})

    def _terminate(self, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        for sig, grace in ((signal.SIGTERM, _STOP_GRACE), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if proc is not None:
                try:
                    proc.wait(grace)
                    return
                except subprocess.TimeoutExpired:
                    continue
            end = time.monotonic() + grace
            while time.monotonic() < end:
                if _pid_gone(pid):
                    return
                time.sleep(0.05)
        raise RuntimeError(f"process {pid} survived SIGKILL")

    def _running_pids(self) -> dict[str, int]:
        recorded = self._read_pid_file()
        return {
            d.key: recorded[d.key]
            for d in _STOP_ORDER
            if d.key in recorded and self._is_our_daemon(recorded[d.key], d)
        }

    def _is_our_daemon(self, pid: int, daemon: _Daemon) -> bool:
        """Guard against PID reuse: the process must be that program with our ceph.conf."""
        if _pid_gone(pid):
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return not Path("/proc/self").exists()  # no procfs: trust the PID file
        except OSError:
            return False
        return (
            bool(argv)
            and os.path.basename(argv[0]) == daemon.exe.encode()
            and str(self.conf_path).encode() in argv
        )

    # -- files ------------------------------------------------------------------------------

    def _write_conf(self, fsid: str) -> None:
        base = self.base_dir
        asok = f"{base}/run/$name.asok"
        if len(f"{base}/run/{_RGW_NAME}.asok") > _UNIX_SOCKET_PATH_MAX:
            asok = ""  # too long for a unix socket: go without admin sockets
        if self.objectstore == "memstore":
            store = "osd objectstore = memstore\nmemstore device bytes = 8589934592\n"
        else:
            # Not BASE/osd/0/block: the OSD makes that a symlink to this path (a loop).
            store = (
                "osd objectstore = bluestore\n"
                f"bluestore block path = {base}/osd/{_OSD_ID}.block\n"
                "bluestore block create = true\n"
                "bluestore block size = 21474836480\n"
                "bluestore fsck on mkfs = false\n"
                "osd memory target = 1073741824\n"
            )
        conf = f"""\
[global]
fsid = {fsid}
mon initial members = {_MON_ID}
mon host = {self._mon_addr()}
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
mon warn on insecure global id reclaim allowed = false
mon warn on pool no redundancy = false
mon data avail warn = 2
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
paxos propose interval = 0.05
paxos min wait = 0.01
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
run dir = {base}/run
admin socket = {asok}
log file = {base}/log/$name.log
mon cluster log file = {base}/log/cluster.log
crash dir = {base}/crash
keyring = {base}/keyring

[mon.{_MON_ID}]
mon data = {base}/mon/{_MON_ID}

[osd.{_OSD_ID}]
osd data = {base}/osd/{_OSD_ID}
{store}osd crush update on start = false
osd class update on start = false

[{_RGW_NAME}]
rgw frontends = beast endpoint=127.0.0.1:{self.port} tcp_nodelay=1
rgw data = {base}/rgw
rgw thread pool size = 128
debug rgw = 0/0
"""
        _write_atomic(self.conf_path, conf)

    def _load_state(self) -> _ClusterState | None:
        try:
            raw = json.loads((self.base_dir / _STATE_FILE).read_text())
            return _ClusterState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _save_state(self, state: _ClusterState) -> None:
        _write_atomic(self.base_dir / _STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")

    def _read_pid_file(self) -> dict[str, int]:
        try:
            raw = json.loads((self.base_dir / _PID_FILE).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): v for k, v in raw.items() if isinstance(v, int)}

    def _write_pid_file(self, pids: dict[str, int]) -> None:
        _write_atomic(self.base_dir / _PID_FILE, json.dumps(pids) + "\n")

    def _log_tail(self, daemon: _Daemon) -> str:
        parts = []
        for suffix in (".log", ".out"):
            path = self.base_dir / "log" / f"{daemon.name}{suffix}"
            try:
                lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            except OSError:
                continue
            if lines:
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or f"(no log for {daemon.name} in {self.base_dir / 'log'})"

    # -- helpers ----------------------------------------------------------------------------

    def _mon_addr(self) -> str:
        return f"[v1:127.0.0.1:{self.mon_port}]"

    def _choose_port(self, requested: int, previous: int, exclude: int) -> int:
        if requested:
            return requested
        if previous and previous != exclude and _port_free(previous):
            return previous
        return _free_port(exclude)

    def _ceph(self, args: list[str], deadline: float) -> str:
        """Run a ``ceph`` command; every command used here is safe to repeat."""
        cmd = ["ceph", "-c", str(self.conf_path), "--connect-timeout", "10", *args]
        for attempt in range(1, 5):
            result = self._run(cmd, deadline, check=False)
            if result.returncode == 0:
                return result.stdout
            # A client can send its first command before it has the monmap; the monitor then
            # refuses it with EPERM ("problem getting command descriptions", "handle_command on
            # fsid 00000000-..." in the mon log). Seen on a loaded machine; a retry succeeds.
            time.sleep(0.2 * attempt)
        return self._run(cmd, deadline).stdout

    def _run(
        self,
        argv: list[str],
        deadline: float,
        *,
        check: bool = True,
        log: _Daemon | None = None,
    ) -> subprocess.CompletedProcess[str]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"timed out before running {' '.join(argv[:3])}")
        try:
            result = subprocess.run(
                argv,
                check=False,
                capture_output=True,
                text=True,
                env=_ceph_env(),
                stdin=subprocess.DEVNULL,
                timeout=min(remaining, 60.0),
            )
        except subprocess.TimeoutExpired as exc:
            tail = f"\n{self._log_tail(log)}" if log is not None else ""
            raise RuntimeError(f"timed out running {' '.join(argv)}{tail}") from exc
        if check and result.returncode != 0:
            output = (result.stderr + result.stdout).strip()
            tail = f"\n{self._log_tail(log)}" if log is not None else ""
            raise RuntimeError(f"{' '.join(argv)} failed (exit {result.returncode}):\n{output}{tail}")
        return result


def _ceph_env() -> dict[str, str]:
    # CEPH_ARGS/CEPH_CONF from the caller's shell could point the tools at another cluster.
    return {k: v for k, v in os.environ.items() if k not in ("CEPH_ARGS", "CEPH_CONF")}


def _succeeds(argv: list[str], limit: float) -> bool:
    """Run a probe; False when it fails or hangs (the caller's loop owns the deadline)."""
    try:
        result = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            env=_ceph_env(),
            stdin=subprocess.DEVNULL,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _port_free(port: int) -> bool:
    # SO_REUSEADDR like the daemons use, so TIME_WAIT leftovers do not count as taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _free_port(exclude: int) -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low - _AUTO_PORT_MIN >= 1000:
        for _ in range(100):
            port = random.randrange(_AUTO_PORT_MIN, low)
            if port != exclude and _port_free(port):
                return port
    while True:  # fall back to whatever the kernel hands out
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != exclude:
            return port


def _pid_gone(pid: int) -> bool:
    """True once pid has exited, counting a zombie (exited, parent has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # With procfs the process just exited; without procfs, kill(0) said it is alive.
        return Path("/proc/self").exists()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


# -- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.rgw",
        description="Start or stop a single-node Ceph RGW (S3) on 127.0.0.1. "
        "Exit codes: 0 done, 1 failed, 2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser(
        "start",
        help="start the daemons and leave them running; prints export lines",
        description="Start the daemons and leave them running. Prints shell `export` lines on "
        "stdout (use with eval) and the endpoint on stderr.",
    )
    start.add_argument("--dir", type=Path, required=True, help="cluster directory")
    start.add_argument("--port", type=int, default=0, help="RGW HTTP port (default: a free one)")
    start.add_argument(
        "--objectstore",
        choices=get_args(Objectstore),
        default="bluestore",
        help="bluestore keeps data across restarts (default); memstore is empty at every start",
    )
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for ready")
    stop = commands.add_parser("stop", help="stop the daemons started from --dir")
    stop.add_argument("--dir", type=Path, required=True, help="cluster directory")
    args = parser.parse_args(argv)

    server = RgwServer(
        base_dir=args.dir,
        port=getattr(args, "port", 0),
        objectstore=getattr(args, "objectstore", "memstore"),
    )
    try:
        if args.command == "stop":
            server.stop()
            print(f"rgw: stopped the daemons of {server.base_dir}", file=sys.stderr)
            return 0
        started = time.monotonic()
        server.start(timeout=args.timeout)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    # The daemons are meant to outlive this process; Popen would warn that they still run.
    warnings.simplefilter("ignore", ResourceWarning)
    print(f"export AWS_ACCESS_KEY_ID={server.access_key}")
    print(f"export AWS_SECRET_ACCESS_KEY={server.secret_key}")
    print(f"export AWS_ENDPOINT_URL={server.endpoint_url}")
    print("export AWS_DEFAULT_REGION=us-east-1")
    print(
        f"rgw: {server.endpoint_url} ready in {time.monotonic() - started:.1f} s "
        f"({server.objectstore}, {server.base_dir}); stop with: "
        f"python -m tests.servers.rgw stop --dir {server.base_dir}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
