"""Sharded scans: plans, shards that tile the key space, and merging their outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.errors import UsageError
from scanner.keyspace import KeyRange
from scanner.shards import Shard, ShardPlanFile, _tile, blind_ranges
from tests.conftest import REPO_ROOT, S3Target, run_scanner
from tests.keysets import ODD_KEYS, flat_keys, nested_keys, utf8_sorted

any_keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


@pytest.mark.parametrize("text", ["3", "a/b", "4/4", "-1/3", "1/0", "1/2/3", ""])
def test_bad_shard_specs(text: str) -> None:
    with pytest.raises(UsageError):
        Shard.parse(text)


def test_shard_spec() -> None:
    assert Shard.parse("2/8") == Shard(2, 8)


@given(st.sets(any_keys, max_size=50), st.integers(1, 12), st.sampled_from(["", "p/", "s"]))
def test_blind_ranges_tile_the_prefix(keys: set[str], count: int, prefix: str) -> None:
    ranges = blind_ranges(prefix, count)
    assert len(ranges) == count or count < 2
    for key in (prefix + k for k in keys):
        assert sum(r.contains(key) for r in ranges) == 1


@given(st.sets(any_keys, max_size=50), st.lists(any_keys, max_size=10), st.integers(1, 12))
def test_planned_ranges_tile_and_have_the_count(keys: set[str], points: list[str], count: int) -> None:
    ranges = _tile("", sorted(points), count)
    assert len(ranges) == count
    for key in keys:
        assert sum(r.contains(key) for r in ranges) == 1
    plan = ShardPlanFile("s3://b/", ranges)
    assert ShardPlanFile.from_json(plan.to_json(), "").ranges == ranges


def test_damaged_plan_is_rejected() -> None:
    bad = ShardPlanFile("s3://b/", [KeyRange("", None, "m"), KeyRange("", "n", None)]).to_json()
    with pytest.raises(UsageError, match="gaps or overlaps"):
        ShardPlanFile.from_json(bad, "")
    with pytest.raises(UsageError, match="not a bucket-scanner plan"):
        ShardPlanFile.from_json(b'{"hello": 1}', "")


@pytest.mark.parametrize("layout", ["nested", "flat"])
@pytest.mark.parametrize("planned", [True, False])
def test_shards_merge_to_a_single_scan(s3: S3Target, tmp_path: Path, layout: str, planned: bool) -> None:
    keys = nested_keys() if layout == "nested" else flat_keys()
    bucket = s3.shared_bucket(layout, keys)
    uri = f"s3://{bucket}"
    count = 4
    plan_args: list[str] = []
    if planned:
        plan = tmp_path / "plan.json"
        result = run_scanner(["plan", uri, "--shards", str(count), "-o", str(plan)], s3.env())
        assert result.returncode == 0, result.stderr
        plan_args = ["--plan", str(plan)]
    # N shard processes at once against one bucket, as an Indexed Job's pods would run.
    shards = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scanner",
                "scan",
                uri,
                "--shard",
                f"{i}/{count}",
                *plan_args,
                "-o",
                str(tmp_path / f"shard-{i}.jsonl"),
            ],
            env={**s3.env(), "PYTHONPATH": str(REPO_ROOT)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    for process in shards:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    outputs = [str(tmp_path / f"shard-{i}.jsonl") for i in range(count)]
    merged = tmp_path / "merged.jsonl"
    result = run_scanner(["merge", *outputs, "-o", str(merged)], s3.env())
    assert result.returncode == 0, result.stderr
    single = tmp_path / "single.jsonl"
    result = run_scanner(["scan", uri, "-o", str(single)], s3.env())
    assert result.returncode == 0, result.stderr
    assert merged.read_bytes() == single.read_bytes()
    if planned:
        sizes = [len(Path(path).read_bytes().splitlines()) for path in outputs]
        assert max(sizes) < 2 * len(keys) / count, sizes  # balanced, not by first letter


def test_shard_from_the_job_completion_index(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(ODD_KEYS)
    outputs = []
    for index in range(3):
        out = tmp_path / f"shard-{index}.jsonl"
        env = {**moto_target.env(), "JOB_COMPLETION_INDEX": str(index), "SCANNER_SHARD_COUNT": "3"}
        result = run_scanner(["scan", f"s3://{bucket}", "-o", str(out)], env)
        assert result.returncode == 0, result.stderr
        outputs.append(str(out))
    merged = tmp_path / "merged.jsonl"
    result = run_scanner(["merge", *outputs, "-o", str(merged)], moto_target.env())
    assert result.returncode == 0, result.stderr
    import json

    assert [json.loads(line)["key"] for line in merged.read_text().splitlines()] == utf8_sorted(ODD_KEYS)


def test_merge_rejects_overlapping_shards(tmp_path: Path) -> None:
    line = (
        b'{"key":"a","size":1,"last_modified":"2026-11-28T01:28:50.000Z","etag":"e",'
        b'"storage_class":"STANDARD"}\n'
    )
    (tmp_path / "a.jsonl").write_bytes(line)
    (tmp_path / "b.jsonl").write_bytes(line)
    result = run_scanner(["merge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], dict(os.environ))
    assert result.returncode == 1
    assert "overlap" in result.stderr


def test_invalid_shard_option(moto_target: S3Target) -> None:
    result = run_scanner(["scan", "s3://bucket", "--shard", "5/4"], moto_target.env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: --shard")
