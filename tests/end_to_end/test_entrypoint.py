"""The image's entrypoint, run outside Docker exactly as the CronJob's pod runs it.

There is no Docker engine and no cluster here, so the test builds what the container runtime and
the kubelet would hand the process, from the files themselves:

- from the Dockerfile's final stage: ``ENTRYPOINT``, ``ENV``, ``WORKDIR`` and ``USER``;
- from ``deploy/k8s/cronjob.yaml``: the container's ``args`` (``$(VAR)`` references expanded as
  the kubelet expands them), its ``env`` and its ``envFrom`` sources; from ``configmap.yaml``: the
  settings, which reach the scanner only as ``SCANNER_*`` variables; from
  ``secret.example.yaml``: the static keys (with the endpoint the example mentions).

The process gets that environment and nothing from the machine running the tests. Only what
must point at the local server or filesystem is swapped for a stand-in: the bucket, the endpoint,
the Pushgateway (a real local HTTP endpoint), ``/opt/scanner/bin`` (the venv's ``bin``), the
``/tmp`` emptyDir (a temporary directory, also the working directory), the kubelet's
``/dev/termination-log`` (an empty file) and ``HOME`` (the image user's home, ``/nonexistent``).

Where the tests may create a private mount namespace (root with CAP_SYS_ADMIN and ``unshare``),
the root filesystem is made read-only in it, as ``readOnlyRootFilesystem: true`` makes it in the
pod, and only the two stand-ins stay writable. Elsewhere the process runs as the current user and
the tests check what it left behind instead. Either way the uid is the test runner's, not the
image's 10001: the venv's interpreter may live where another user cannot read it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import S3Target
from tests.end_to_end import test_report
from tests.faultproxy import Request, fault_proxy

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
CONTAINER = "scanner"
# Where the Dockerfile installs the scanner's venv (COPY --from=build /opt/scanner /opt/scanner).
IMAGE_VENV = "/opt/scanner"
# PATH of the base image (python:3.11-slim-bookworm), which the Dockerfile's ENV extends.
BASE_IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The home directory the Dockerfile gives the image's user (useradd --home-dir): runtimes set HOME
# to it, and it does not exist in the image.
IMAGE_HOME = "/nonexistent"
# The downward API values the manifest's env asks for.
JOB_NAME_FIELD = "metadata.labels['batch.kubernetes.io/job-name']"
KUBELET_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
DOCKERFILE_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

# A local HTTP endpoint that records pushes as a Pushgateway accepts them (the fixture of
# test_report, used here under the same name).
pushgateway = test_report.pushgateway

# One hourly run's worth of objects: what becomes items, what never does, and what lies outside
# the scanned folder (the ConfigMap's SCANNER_URI, s3://BUCKET/archive/).
LAYOUT = {
    "archive/study1/ct/001.dcm": b"d",
    "archive/study1/ct/002.dcm": b"d",
    "archive/study1/mr/": b"",  # a folder marker
    "archive/study1/mr/001.DCM": b"d",
    "archive/study1/report.txt": b"side file",
    "archive/study2/top.dcm": b"d",
    "archive/study2/volume.nii.gz": b"n",  # not DICOM: SCANNER_TYPE=dicom leaves it out
    "archive10/study9/001.dcm": b"d",  # a sibling folder, not inside archive/
    "other/001.dcm": b"d",
}
FIRST_RUN = [
    {
        "name": "study1/ct",
        "series": [{"items": ["archive/study1/ct/001.dcm", "archive/study1/ct/002.dcm"]}],
        "metaData": {"scanChange": "new"},
    },
    {
        "name": "study1/mr",
        "series": [{"items": ["archive/study1/mr/001.DCM"]}],
        "metaData": {"scanChange": "new"},
    },
    {"name": "study2", "series": [{"items": ["archive/study2/top.dcm"]}], "metaData": {"scanChange": "new"}},
]


# --- what the image and the manifests say ------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """The final stage of the Dockerfile, as the container runtime applies it."""

    entrypoint: list[str]
    env: dict[str, str]
    workdir: str
    user: str


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every instruction, continuation lines joined, comments out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def expand_dockerfile_variables(value: str, env: Mapping[str, str]) -> str:
    return DOCKERFILE_REFERENCE.sub(lambda match: env.get(match.group(1) or match.group(2), ""), value)


def load_image() -> Image:
    instructions = dockerfile_instructions((REPO_ROOT / "Dockerfile").read_text())
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    env = {"PATH": BASE_IMAGE_PATH}
    entrypoint: list[str] = []
    workdir = "/"
    user = "root"
    for keyword, arguments in instructions[last_from + 1 :]:
        if keyword == "ENV":
            before = dict(env)  # one ENV instruction sees the variables as they were before it
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                env[name] = expand_dockerfile_variables(value, before)
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(arguments)
        elif keyword == "WORKDIR":
            workdir = arguments
        elif keyword == "USER":
            user = arguments
    assert entrypoint, "the final stage has no ENTRYPOINT in exec (JSON) form"
    return Image(entrypoint, env, workdir, user)


def load_manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S_DIR / name).read_text())
    return loaded


def cronjob_container() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(CronJob name, pod spec, scanner container) of deploy/k8s/cronjob.yaml."""
    cronjob = load_manifest("cronjob.yaml")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == CONTAINER)
    return cronjob["metadata"]["name"], pod, container


def scheduled_job_name(cronjob: str, hour: int) -> str:
    """The name the CronJob controller gives a scheduled Job: NAME-<scheduled time in minutes>."""
    scheduled = datetime(2026, 1, 1, hour, 15, tzinfo=UTC)
    return f"{cronjob}-{int(scheduled.timestamp()) // 60}"


def expand_kubelet_references(value: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in args: defined variables only, ``$$`` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return KUBELET_REFERENCE.sub(replace, value)


# --- the pod, outside Docker -------------------------------------------------------------------


@dataclass(frozen=True)
class Filesystem:
    """The stand-ins for the pod's writable paths, all under one temporary directory."""

    root: Path

    @property
    def tmp(self) -> Path:
        """The /tmp emptyDir: the working directory, TMPDIR and the scanner's temp dir."""
        return self.root / "tmp"

    @property
    def termination_log(self) -> Path:
        return self.root / "kubelet" / "termination-log"

    @property
    def home(self) -> Path:
        return self.root / IMAGE_HOME.lstrip("/")

    def create(self) -> None:
        self.tmp.mkdir()
        # The kubelet creates the file empty and mounts it; the container writes into it.
        self.termination_log.parent.mkdir()
        self.termination_log.touch()

    def summary(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.termination_log.read_text())
        return document

    def assert_nothing_left_behind(self) -> None:
        """Spill files and atomic-output temporaries are gone, and nothing was written elsewhere."""
        assert sorted(os.listdir(self.root)) == ["kubelet", "tmp"], os.listdir(self.root)
        assert os.listdir(self.tmp) == [], os.listdir(self.tmp)
        assert os.listdir(self.termination_log.parent) == ["termination-log"]
        assert not self.home.exists()


@dataclass(frozen=True)
class Pod:
    """The CronJob's container process: argv, environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    files: Filesystem

    def command(self) -> list[str]:
        return read_only_root(self.argv, writable=[self.files.tmp, self.files.termination_log], cwd=self.cwd)

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(),
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(),
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def cronjob_pod(
    files: Filesystem, bucket: str, s3: S3Target, endpoint: str, pushgateway: str, job: str
) -> Pod:
    """The CronJob's pod for the scheduled Job ``job``, pointed at ``bucket`` on a local server."""
    image = load_image()
    _, pod, container = cronjob_container()
    config = load_manifest("configmap.yaml")
    (secret,) = (doc for doc in yaml.safe_load_all((K8S_DIR / "secret.example.yaml").read_text()) if doc)
    assert "command" not in container, "a command would replace the image's ENTRYPOINT"
    sources = container["envFrom"]
    assert sources[0] == {"configMapRef": {"name": config["metadata"]["name"]}}
    assert sources[1]["secretRef"]["name"] == secret["metadata"]["name"]

    # The pod's filesystem: only the emptyDir is writable (readOnlyRootFilesystem), and the image
    # works in it.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (scratch,) = (m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]])
    assert image.workdir == scratch
    assert image.user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    manifest_bucket = re.fullmatch(r"s3://([^/]+)/.*", config["data"]["SCANNER_URI"])
    assert manifest_bucket is not None

    def local(value: str) -> str:
        """A value of the pod, with what must change to run it here swapped for its stand-in."""
        if value == scratch or value.startswith(scratch + "/"):
            return str(files.tmp) + value[len(scratch) :]
        if value == container["terminationMessagePath"]:
            return str(files.termination_log)
        return value.replace(f"s3://{manifest_bucket.group(1)}/", f"s3://{bucket}/")

    # The container runtime starts from the image's environment; the image's venv is the test's.
    env = {name: local(value) for name, value in image.env.items()}
    assert env["PATH"].startswith(IMAGE_VENV + "/bin:"), env["PATH"]
    env["PATH"] = str(Path(sys.prefix) / "bin") + env["PATH"][len(IMAGE_VENV + "/bin") :]
    env["HOME"] = str(files.home)
    # envFrom in order, then env: what Kubernetes adds on top of the image's environment.
    env.update({name: local(value) for name, value in config["data"].items()})
    if "SCANNER_PUSHGATEWAY" in env:  # the in-cluster Pushgateway: a local HTTP endpoint here
        env["SCANNER_PUSHGATEWAY"] = pushgateway
    keys = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    assert set(secret["stringData"]) == set(keys)
    # The endpoint travels with the keys, as secret.example.yaml shows for S3-compatible servers.
    env.update(keys, AWS_ENDPOINT_URL=endpoint)
    downward = {JOB_NAME_FIELD: job}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand_kubelet_references(entry["value"], env)
        else:
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    args = []
    for arg in container["args"]:
        option, equals, value = expand_kubelet_references(arg, env).partition("=")
        args.append(option + equals + local(value) if equals else local(option))
    entrypoint = shutil.which(image.entrypoint[0], path=env["PATH"])
    assert entrypoint == str(Path(sys.prefix) / "bin" / image.entrypoint[0]), entrypoint
    return Pod([*image.entrypoint, *args], env, Path(local(image.workdir)), files)


@functools.cache
def root_can_be_made_read_only() -> bool:
    """Whether this process may make a private mount namespace and remount / read-only in it."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if unshare is None or mount is None:
        return False
    probe = [unshare, "--mount", "--propagation", "private", mount, "-o", "remount,bind,ro", "/"]
    return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0


def read_only_root(command: Sequence[str], writable: Sequence[Path], cwd: Path) -> list[str]:
    """``command`` in a private mount namespace whose / is read-only except ``writable``.

    ``remount,bind`` changes the flags of this namespace's copy of the mount only, never the
    filesystem, and private propagation keeps every mount change inside the namespace, which ends
    with the process. The command is exec'd, so signals sent to the child reach it directly.
    """
    if not root_can_be_made_read_only():
        return list(command)
    mount = shutil.which("mount")
    assert mount is not None
    steps = [f"{mount} --bind {shlex.quote(str(path))} {shlex.quote(str(path))}" for path in writable]
    # Re-enter the working directory through its now-writable mount.
    steps += [f"cd {shlex.quote(str(cwd))}", f"{mount} -o remount,bind,ro /", 'exec "$@"']
    unshare = shutil.which("unshare")
    assert unshare is not None
    return [unshare, "--mount", "--propagation", "private", "sh", "-ec", " && ".join(steps), "sh", *command]


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Filesystem:
    filesystem = Filesystem(tmp_path / "pod")
    filesystem.root.mkdir()
    filesystem.create()
    return filesystem


def read_json(client: Any, bucket: str, key: str) -> Any:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def bucket_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [entry["Key"] for page in pages for entry in page.get("Contents", [])]


def json_events(stderr: str) -> Iterator[dict[str, Any]]:
    """Every line of a successful run's stderr is one JSON event (SCANNER_LOG_FORMAT=json)."""
    for line in stderr.splitlines():
        event: dict[str, Any] = json.loads(line)
        yield event


def test_cronjob_runs_hour_after_hour(moto_target: S3Target, files: Filesystem, pushgateway: str) -> None:
    """Two scheduled runs: the first writes every series, the next only what changed since."""
    bucket = moto_target.new_bucket()
    client = moto_target.client()
    for key, body in LAYOUT.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    cronjob, _, _ = cronjob_container()
    job = scheduled_job_name(cronjob, hour=0)
    output = f"bucket-scanner/output/changes/{job}.json"
    state = "bucket-scanner/state/archive.state"

    result = cronjob_pod(files, bucket, moto_target, moto_target.endpoint_url, pushgateway, job).run()

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    events = list(json_events(result.stderr))
    assert [event["event"] for event in events] == ["scan-started", "scan-finished"], result.stderr
    assert read_json(client, bucket, output) == FIRST_RUN
    # The scan wrote its output and its state, and nothing else: the checkpoint is gone.
    assert sorted(bucket_keys(client, bucket)) == sorted([*LAYOUT, output, state])
    summary = files.summary()
    assert (summary["status"], summary["uri"]) == ("succeeded", f"s3://{bucket}/archive/")
    scanned = sum(key.startswith("archive/") for key in LAYOUT)
    assert (summary["objects"], summary["tasks"]) == (scanned, len(FIRST_RUN))
    [(method, path, body)] = test_report._Capture.pushes
    assert (method, path) == ("PUT", f"/metrics/job/bucket_scanner/bucket/{bucket}")
    assert "bucket_scanner_last_run_success 1" in body.decode()
    files.assert_nothing_left_behind()

    # An hour later: a slice added to a known series, and a new study.
    client.put_object(Bucket=bucket, Key="archive/study1/ct/003.dcm", Body=b"d")
    client.put_object(Bucket=bucket, Key="archive/study3/ct/001.dcm", Body=b"d")
    files.termination_log.write_bytes(b"")  # a new pod, a new termination log
    later = scheduled_job_name(cronjob, hour=1)
    result = cronjob_pod(files, bucket, moto_target, moto_target.endpoint_url, pushgateway, later).run()

    assert result.returncode == 0, result.stderr
    assert read_json(client, bucket, f"bucket-scanner/output/changes/{later}.json") == [
        {
            "name": "study1/ct",
            "series": [
                {
                    "items": [
                        "archive/study1/ct/001.dcm",
                        "archive/study1/ct/002.dcm",
                        "archive/study1/ct/003.dcm",
                    ]
                }
            ],
            "metaData": {"scanChange": "changed"},
        },
        {
            "name": "study3/ct",
            "series": [{"items": ["archive/study3/ct/001.dcm"]}],
            "metaData": {"scanChange": "new"},
        },
    ]
    assert files.summary()["changes"] == {"added": 2, "changed": 0, "removed": 0, "unchanged": scanned}
    assert len(test_report._Capture.pushes) == 2
    files.assert_nothing_left_behind()


def test_sigterm_mid_scan_exits_143_and_writes_nothing(
    moto_target: S3Target, files: Filesystem, pushgateway: str
) -> None:
    """A stopped pod (activeDeadlineSeconds, eviction, node drain) leaves no output and no state;
    the retried pod of the same Job resumes from the checkpoint and writes the whole list."""
    folders, per_folder = 5, 400  # two pages of 1000 keys: the signal comes while the second is held
    keys = [
        f"archive/s{folder}/{number:03d}.dcm" for folder in range(folders) for number in range(per_folder)
    ]
    bucket = moto_target.new_bucket(keys)
    client = moto_target.client()
    cronjob, _, _ = cronjob_container()
    job = scheduled_job_name(cronjob, hour=2)
    listings = 0
    stalled = threading.Event()

    def latency(request: Request) -> float:
        """Answer the first page of the scanned folder at once, then hold every later listing
        (the discovery listing sent along with the first page too)."""
        nonlocal listings
        if "list-type" not in request.query or not request.query.get("prefix", "").startswith("archive/"):
            return 0.0  # state, checkpoint and upload requests go through at once
        if "delimiter" in request.query:
            return 60.0
        listings += 1  # only the proxy's event loop thread calls this
        if listings == 1:
            return 0.0
        stalled.set()
        return 60.0

    with fault_proxy(moto_target.endpoint_url, latency=latency) as proxy:
        process = cronjob_pod(files, bucket, moto_target, proxy.url, pushgateway, job).start()
        try:
            assert stalled.wait(timeout=60), "the scan never reached its held listings"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    checkpoint = f"s3://{bucket}/bucket-scanner/checkpoints/archive/"
    # The CronJob logs JSON: the failure is the last event.
    failed = json.loads(stderr.splitlines()[-1])
    assert (failed["event"], failed["exit_code"]) == ("scan-failed", 143)
    assert failed["error"] == (
        f"terminated; no output was written; progress is saved in {checkpoint}: "
        "run the same command again to resume"
    )
    assert bucket_keys(client, bucket, "bucket-scanner/output/") == []
    assert bucket_keys(client, bucket, "bucket-scanner/state/") == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    summary = files.summary()
    assert (summary["status"], summary["exit_code"]) == ("failed", 143)
    assert "bucket_scanner_last_run_success 0" in test_report._Capture.pushes[-1][2].decode()
    files.assert_nothing_left_behind()

    # backoffLimit retries the pod of the same Job, under the same name.
    files.termination_log.write_bytes(b"")
    result = cronjob_pod(files, bucket, moto_target, moto_target.endpoint_url, pushgateway, job).run()

    assert result.returncode == 0, result.stderr
    expected = [
        {
            "name": f"s{folder}",
            "series": [{"items": [f"archive/s{folder}/{number:03d}.dcm" for number in range(per_folder)]}],
            "metaData": {"scanChange": "new"},
        }
        for folder in range(folders)
    ]
    assert read_json(client, bucket, f"bucket-scanner/output/changes/{job}.json") == expected
    assert files.summary()["resumed_objects"] > 0
    assert bucket_keys(client, bucket, "bucket-scanner/checkpoints/") == []
    files.assert_nothing_left_behind()
