"""The sharded scan as Kubernetes runs it, outside Docker: the Indexed Job's pods, then the merge
Job, against Ceph RGW, compared byte for byte with the one-pod Job's output.

Each pod is built the way ``tests/end_to_end/test_entrypoint.py`` builds the CronJob's, from the files
themselves: the image's entrypoint and environment (Dockerfile), the container's args with
``$(VAR)`` expanded as the kubelet does, its env (the downward API's completion index and job
name) and envFrom (the ConfigMap, the example Secret's keys and endpoint). Only the bucket, the
endpoint, the Pushgateway and the pod's writable paths are stand-ins. All shard pods start at
once and race for the plan, as they do when the Job is resumed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks.layouts import LAYOUTS
from scanner.listing.plan import ShardPlanFile
from tests.conftest import S3Target
from tests.end_to_end import test_report
from tests.end_to_end.test_entrypoint import (
    CONTAINER,
    IMAGE_VENV,
    K8S_DIR,
    Filesystem,
    expand_kubelet_references,
    load_image,
    load_manifest,
    read_only_root,
)

pushgateway = test_report.pushgateway

COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
JOB_NAME_FIELD = "metadata.labels['batch.kubernetes.io/job-name']"
JOB_UID_FIELD = "metadata.labels['batch.kubernetes.io/controller-uid']"
# Besides a DICOM archive under archive/: what the ConfigMap's filter and prefix leave out.
EXTRA_KEYS = [
    "archive/study00000/report.txt",
    "archive/study00001/volume.nii.gz",
    "archive10/study9/001.dcm",
    "other/001.dcm",
]


def container_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = (c for c in manifest["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER)
    return container


def job_pod(
    name: str,
    files: Filesystem,
    bucket: str,
    s3: S3Target,
    pushgateway: str,
    index: int | None = None,
    uid: str = "6f1c0c2e-0000-4000-8000-000000000001",
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of the pod (completion ``index``) of the Job in deploy/k8s/``name``."""
    image = load_image()
    manifest = load_manifest(name)
    container = container_of(manifest)
    config = load_manifest("configmap.yaml")
    (secret,) = (doc for doc in yaml.safe_load_all((K8S_DIR / "secret.example.yaml").read_text()) if doc)
    assert "command" not in container, "a command would replace the image's ENTRYPOINT"
    scratch = "/tmp"
    assert image.workdir == scratch
    manifest_bucket = re.fullmatch(r"s3://([^/]+)/.*", config["data"]["SCANNER_URI"])
    assert manifest_bucket is not None

    def local(value: str) -> str:
        if value == scratch or value.startswith(scratch + "/"):
            return str(files.tmp) + value[len(scratch) :]
        if value == container["terminationMessagePath"]:
            return str(files.termination_log)
        return value.replace(f"s3://{manifest_bucket.group(1)}/", f"s3://{bucket}/")

    env = {key: local(value) for key, value in image.env.items()}
    env["PATH"] = str(Path(sys.prefix) / "bin") + env["PATH"][len(IMAGE_VENV + "/bin") :]
    env["HOME"] = str(files.home)
    sources = container["envFrom"]
    assert sources[0] == {"configMapRef": {"name": config["metadata"]["name"]}}
    assert sources[1]["secretRef"] == {"name": secret["metadata"]["name"], "optional": True}
    env.update({key: local(value) for key, value in config["data"].items()})
    env["SCANNER_PUSHGATEWAY"] = pushgateway
    env.update(
        AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_ENDPOINT_URL=s3.endpoint_url
    )
    downward = {
        COMPLETION_INDEX_FIELD: str(index),
        JOB_NAME_FIELD: manifest["metadata"]["name"],
        JOB_UID_FIELD: uid,
    }
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand_kubelet_references(entry["value"], env)
        else:
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    if index is not None:
        # The Job controller sets it in every pod of an Indexed Job, declared or not.
        env["JOB_COMPLETION_INDEX"] = str(index)
    args = []
    for arg in container["args"]:
        option, equals, value = expand_kubelet_references(arg, env).partition("=")
        args.append(option + equals + local(value) if equals else local(option))
    entrypoint = shutil.which(image.entrypoint[0], path=env["PATH"])
    assert entrypoint == str(Path(sys.prefix) / "bin" / image.entrypoint[0])
    argv = read_only_root(
        [*image.entrypoint, *args], writable=[files.tmp, files.termination_log], cwd=files.tmp
    )
    return argv, env


def pod_files(root: Path, name: str) -> Filesystem:
    files = Filesystem(root / name)
    files.root.mkdir()
    files.create()
    return files


def run_job_pods(
    name: str,
    count: int,
    root: Path,
    tag: str,
    bucket: str,
    s3: S3Target,
    pushgateway: str,
    uid: str = "6f1c0c2e-0000-4000-8000-000000000001",
) -> None:
    """Every pod of the Indexed Job in deploy/k8s/``name`` at once, as one run of it (``uid``):
    each succeeds, says so in its summary, and leaves nothing behind."""
    pods = []
    for index in range(count):
        files = pod_files(root, f"{tag}-{index}")
        argv, env = job_pod(name, files, bucket, s3, pushgateway, index, uid)
        process = subprocess.Popen(argv, env=env, cwd=files.tmp, stderr=subprocess.PIPE, text=True)
        pods.append((files, process))
    for files, process in pods:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert files.summary()["status"] == "succeeded"
        files.assert_nothing_left_behind()


def one_pod_job_items(root: Path, bucket: str, s3: S3Target, pushgateway: str) -> bytes:
    """The items list the one-pod Job (job.yaml) writes for ``bucket``."""
    files = pod_files(root, "once")
    argv, env = job_pod("job.yaml", files, bucket, s3, pushgateway)
    once = subprocess.run(
        argv, env=env, cwd=files.tmp, capture_output=True, text=True, timeout=300, check=False
    )
    assert once.returncode == 0, once.stderr
    return body(s3.client(), bucket, "bucket-scanner/output/items.json")


def body(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def test_the_sharded_job_and_its_merge_equal_the_one_pod_job(
    rgw_target: S3Target, tmp_path: Path, pushgateway: str
) -> None:
    keys = ["archive/" + key for key in LAYOUTS["dicom"](4200)] + EXTRA_KEYS
    bucket = rgw_target.new_bucket(keys)
    client = rgw_target.client()
    sharded = load_manifest("indexed-job.yaml")
    count = int(next(e["value"] for e in container_of(sharded)["env"] if e["name"] == "SCANNER_SHARD_COUNT"))
    assert sharded["spec"]["completions"] == count

    # Every pod of the Indexed Job at once: they race for the plan, and each lists its shard.
    run_job_pods("indexed-job.yaml", count, tmp_path, "shard", bucket, rgw_target, pushgateway)
    stored = client.list_objects_v2(Bucket=bucket, Prefix="bucket-scanner/shards/")["Contents"]
    assert sorted(entry["Key"] for entry in stored) == ["bucket-scanner/shards/plan.json"] + [
        f"bucket-scanner/shards/shard-{index}.jsonl" for index in range(count)
    ]
    plan = ShardPlanFile.from_json(body(client, bucket, "bucket-scanner/shards/plan.json"))
    sizes = [
        len(body(client, bucket, f"bucket-scanner/shards/shard-{i}.jsonl").splitlines()) for i in range(count)
    ]
    assert plan.exact
    assert max(sizes) <= 1.25 * sum(sizes) / count, sizes

    # The merge Job, once the sharded Job is complete.
    files = pod_files(tmp_path, "merge")
    argv, env = job_pod("merge-job.yaml", files, bucket, rgw_target, pushgateway)
    merge = subprocess.run(
        argv, env=env, cwd=files.tmp, capture_output=True, text=True, timeout=300, check=False
    )
    assert merge.returncode == 0, merge.stderr
    files.assert_nothing_left_behind()

    # The one-pod Job over the same bucket: the same items list, byte for byte.
    merged = body(client, bucket, "bucket-scanner/output/items-sharded.json")
    assert merged == one_pod_job_items(tmp_path, bucket, rgw_target, pushgateway)
    tasks = json.loads(merged)
    assert sum(len(series["items"]) for task in tasks for series in task["series"]) == sum(sizes) == 4200

    # And as JSON Lines: the merge Job's pod with --format=jsonl, and one process scanning the
    # same bucket with the same settings (the ConfigMap's), give the same bytes.
    files = pod_files(tmp_path, "merge-jsonl")
    argv, env = job_pod("merge-job.yaml", files, bucket, rgw_target, pushgateway)
    argv = [arg for arg in argv if not arg.startswith(("--format=", "--group=", "--output="))]
    argv += ["--format=jsonl", f"--output=s3://{bucket}/bucket-scanner/output/objects-sharded.jsonl"]
    result = subprocess.run(
        argv, env=env, cwd=files.tmp, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    single = [
        sys.executable,
        "-m",
        "scanner",
        "scan",
        f"--output=s3://{bucket}/bucket-scanner/output/objects.jsonl",
    ]
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        single, env=env, cwd=files.tmp, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert body(client, bucket, "bucket-scanner/output/objects-sharded.jsonl") == body(
        client, bucket, "bucket-scanner/output/objects.jsonl"
    )


def test_the_shared_job_merges_in_one_pod_to_the_one_pod_jobs_items_list(
    rgw_target: S3Target, tmp_path: Path, pushgateway: str
) -> None:
    """The pods of shared-job.yaml at once, as one run of the Job: they share one plan and one
    board, and one of them writes the items list, byte for byte the one-pod Job's. A second run
    (another Job uid) gets a board of its own and writes the same bytes again."""
    keys = ["archive/" + key for key in LAYOUTS["dicom"](4200)] + EXTRA_KEYS
    bucket = rgw_target.new_bucket(keys)
    client = rgw_target.client()
    shared = load_manifest("shared-job.yaml")
    count = int(next(e["value"] for e in container_of(shared)["env"] if e["name"] == "SCANNER_SHARD_COUNT"))
    outputs = []
    for run in ("1", "2"):
        uid = f"6f1c0c2e-0000-4000-8000-00000000000{run}"
        run_job_pods(
            "shared-job.yaml", count, tmp_path, f"run-{run}-pod", bucket, rgw_target, pushgateway, uid
        )
        merged = json.loads(body(client, bucket, f"bucket-scanner/checkpoints/shared-{uid}/merged.json"))
        assert merged["output"] == f"s3://{bucket}/bucket-scanner/output/items-shared.json"
        outputs.append(body(client, bucket, "bucket-scanner/output/items-shared.json"))
    single = one_pod_job_items(tmp_path, bucket, rgw_target, pushgateway)
    assert outputs == [single, single]
