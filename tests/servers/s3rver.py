"""s3rver 3.7.1 (a Node S3 server over a local directory) on loopback.

    with S3rverServer(tmp_path) as s3rver:    # well under 1 s to start
        client = boto3.client("s3", endpoint_url=s3rver.endpoint_url, ...)

Installed by ``.ci/install-servers`` into ``tests/servers/node/node_modules`` from the lock file
next to this module; it runs on Node (with ``--openssl-legacy-provider``, as documented for Node
17+). Credentials are fixed: ``S3RVER``/``S3RVER``. Signed requests must carry
``x-amz-content-sha256`` (botocore sends it on plain HTTP). Its quirks: bucket names of 3
characters or more, listings in file system order, no ``Server`` header, and keys that break it: a
name part (the text after the last ``/``) over 233 bytes leaves the bucket unlistable or kills the
server, a control character makes the bucket's listings fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.servers.process import ServerProcess, free_port, server_environment

NODE_DIR = Path(__file__).resolve().parent / "node"
S3RVER_SCRIPT = NODE_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"
_INSTALL_HINT = "bash .ci/install-servers"
# s3rver keeps a key as NAME._S3rver_object plus NAME._S3rver_metadata.json; a name part longer
# than 255 - len("._S3rver_metadata.json") fails half-written (the bucket then fails to list) and
# a few bytes more throw inside a stream, which ends the process.
MAX_NAME_PART_BYTES = 233


def node_binary() -> str | None:
    return shutil.which("node")


def s3rver_available() -> bool:
    """True when Node is on PATH and s3rver is installed next to this module."""
    return node_binary() is not None and S3RVER_SCRIPT.is_file()


def s3rver_breaks_on(key: str) -> bool:
    """True for a key whose PUT leaves s3rver dead or its bucket unlistable (see above)."""
    last = key.rsplit("/", 1)[-1]
    return len(last.encode("utf-8", "surrogatepass")) > MAX_NAME_PART_BYTES


class S3rverServer(ServerProcess):
    """s3rver with its data in ``base_dir/data``; it accepts only its built-in key pair."""

    name = "s3rver"
    access_key = "S3RVER"
    secret_key = "S3RVER"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _binary_missing(self) -> str | None:
        if node_binary() is None:
            return "node is not on PATH; install Node.js 20 or later"
        if not S3RVER_SCRIPT.is_file():
            return f"s3rver is not installed ({S3RVER_SCRIPT} missing); run {_INSTALL_HINT}"
        return None

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _prepare(self, deadline: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        node = node_binary()
        assert node is not None
        return [
            node,
            str(S3RVER_SCRIPT),
            "--directory",
            str(self.data_dir),
            "--address",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--silent",  # else one log line per request
        ]

    def _environment(self) -> dict[str, str]:
        # The documented way to run s3rver 3.7 on Node 17+ (OpenSSL 3). The requests the tests
        # make work without it too; it keeps whatever older crypto a dependency asks for loadable.
        return server_environment(self.base_dir / "home", NODE_OPTIONS="--openssl-legacy-provider")
