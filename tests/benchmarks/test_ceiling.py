"""The benchmark's ceiling lister against a real server: plain, and with the scanner's records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.ceiling import write_plan
from tests.conftest import REPO_ROOT, S3Target

# Two ideal pages and a part: the plan's second StartAfter, and RGW's short pages, are used.
_KEYS = sorted(
    [f"study{i // 200:03d}/series{i // 25 % 8}/img{i % 25:04d}.dcm" for i in range(2000)]
    + [f"odd/{name}" for name in ("a b", "a+b", "100%", "é/ü", "日本", "q?x=1&y", "tab\there")]
)


def _ceiling(target: S3Target, bucket: str, plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ceiling",
            "--endpoint-url",
            target.endpoint_url,
            "--bucket",
            bucket,
            "--plan",
            str(plan),
            *extra,
        ],
        env={**target.env(), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_ceiling_counts_every_key_and_with_records_writes_each_once(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.shared_bucket("ceiling", _KEYS)
    plan = tmp_path / "plan.json"
    write_plan(plan, _KEYS)

    plain = _ceiling(s3, bucket, plan)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"{len(_KEYS)} keys, ")

    records = tmp_path / "records.jsonl"
    parsed = _ceiling(s3, bucket, plan, "--records", str(records))
    assert parsed.returncode == 0, parsed.stderr
    assert parsed.stdout == ""  # the count goes to stderr: stdout may be where records go
    assert parsed.stderr.startswith(f"{len(_KEYS)} keys, ")
    lines = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["key"] for line in lines) == _KEYS
    assert {line["size"] for line in lines} == {1}
