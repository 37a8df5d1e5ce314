"""Sharded scans: plans, shards that tile the key space, one plan shared through S3, and merging
the shards' outputs from files or S3 into files or S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.config import ConnectionConfig
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.listing.plan import Shard, ShardPlanFile, tile
from scanner.output.merge import merge_shards
from tests.conftest import REPO_ROOT, S3Target, run_scanner
from tests.keysets import ODD_KEYS, flat_keys, nested_keys, utf8_sorted

any_keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


@pytest.mark.parametrize("text", ["3", "a/b", "4/4", "-1/3", "1/0", "1/2/3", ""])
def test_bad_shard_specs(text: str) -> None:
    with pytest.raises(UsageError):
        Shard.parse(text)


def test_shard_spec() -> None:
    assert Shard.parse("2/8") == Shard(2, 8)


@given(
    st.sets(any_keys, max_size=50),
    st.sets(any_keys, max_size=10),
    st.integers(1, 12),
    st.sampled_from(["", "p/", "s"]),
)
def test_a_plan_tiles_the_prefix_and_survives_its_file(
    keys: set[str], points: set[str], count: int, prefix: str
) -> None:
    cuts = sorted(prefix + point for point in points)
    ranges = tile(prefix, cuts, count)
    assert len(ranges) == count
    for key in (prefix + k for k in keys):
        assert sum(r.contains(key) for r in ranges) == 1
    plan = ShardPlanFile(f"s3://bucket/{prefix}", ranges, 12, False, [1] * count)
    assert ShardPlanFile.from_json(plan.to_json(), prefix) == plan
    assert ShardPlanFile.from_json(plan.to_json()) == plan  # the prefix from the plan's own URI


def test_damaged_plan_is_rejected() -> None:
    bad = ShardPlanFile("s3://b/", [KeyRange("", None, "m"), KeyRange("", "n", None)]).to_json()
    with pytest.raises(UsageError, match="gaps or overlaps"):
        ShardPlanFile.from_json(bad, "")
    with pytest.raises(UsageError, match="not a bucket-scanner plan"):
        ShardPlanFile.from_json(b'{"hello": 1}', "")
    backwards = [KeyRange("", None, "m"), KeyRange("", "m", "c"), KeyRange("", "c", None)]
    with pytest.raises(UsageError, match="not in key order"):
        ShardPlanFile.from_json(ShardPlanFile("s3://b/", backwards).to_json(), "")


def test_an_over_decomposed_plan_gives_each_shard_every_nth_part() -> None:
    ranges = tile("", [f"k{n:02d}" for n in range(11)], 12)
    plan = ShardPlanFile("s3://bucket/", ranges, 40, True, list(range(12)), shards=3)
    assert plan.shard_count == 3
    assert plan.parts_per_shard == 4
    assert plan.owners == [0, 1, 2] * 4
    assert plan.parts_of(Shard(1, 3)) == [ranges[1], ranges[4], ranges[7], ranges[10]]
    assert plan.shard_estimates() == [0 + 3 + 6 + 9, 1 + 4 + 7 + 10, 2 + 5 + 8 + 11]
    assert "4 parts a shard, round-robin" in plan.describe()
    document = orjson.loads(plan.to_json())
    assert (document["version"], document["shards"], document["assignment"]) == (2, 3, "round-robin")
    assert len(document["parts"]) == 12
    assert ShardPlanFile.from_json(plan.to_json()) == plan
    with pytest.raises(UsageError, match="has 3 shards, not 12"):
        plan.parts_of(Shard(0, 12))
    with pytest.raises(UsageError, match="a plan of 12 parts cannot be shared among 5 shards"):
        ShardPlanFile("s3://bucket/", ranges, shards=5)


def test_a_version_1_plan_is_read_as_one_part_a_shard() -> None:
    shards = [
        {"start_after": None, "end": "m", "estimated_keys": 5},
        {"start_after": "m", "end": None, "estimated_keys": 7},
    ]
    document = {"format": "bucket-scanner-plan", "version": 1, "uri": "s3://bucket/p/", "exact": True}
    plan = ShardPlanFile.from_json(orjson.dumps({**document, "shards": shards}))
    assert plan.ranges == [KeyRange("p/", None, "m"), KeyRange("p/", "m", None)]
    assert (plan.shard_count, plan.parts_per_shard, plan.shard_estimates()) == (2, 1, [5, 7])


def test_merge_takes_each_input_as_the_parts_of_one_shard(tmp_path: Path) -> None:
    """Inputs hold interleaved parts (round-robin); a part in the wrong input is refused."""
    ranges = tile("", ["b", "d", "f"], 4)  # parts: ..b, b..d, d..f, f..
    owners = [0, 1, 0, 1]
    shard_keys = [["a", "e", "f"], ["c", "d", "g", "z"]]
    paths = []
    for index, keys in enumerate(shard_keys):
        path = tmp_path / f"shard-{index}.jsonl"
        path.write_bytes(b"".join(record_line(key) for key in keys))
        paths.append(str(path))

    async def merged(inputs: list[str]) -> list[str]:
        return [record.key async for record in merge_shards(inputs, ConnectionConfig(), ranges, owners)]

    assert anyio.run(merged, paths) == ["a", "c", "d", "e", "f", "g", "z"]
    assert anyio.run(merged, paths[::-1]) == ["a", "c", "d", "e", "f", "g", "z"]
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_bytes(record_line("a") + record_line("c"))  # parts 0 and 1: shards 0 and 1
    with pytest.raises(ScanError, match="holds keys of shards 0 and 1 of the plan"):
        anyio.run(merged, [str(wrong), paths[1]])


def record_line(key: str) -> bytes:
    fields = {"key": key, "size": 1, "last_modified": "2026-11-28T01:28:50.000Z", "etag": "e"}
    return orjson.dumps({**fields, "storage_class": "STANDARD"}) + b"\n"


def test_merge_reads_lines_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs are read a block at a time; a line cut by a block boundary is joined again."""
    import scanner.output.merge

    monkeypatch.setattr(scanner.output.merge, "_MERGE_BLOCK", 7)
    keys = [[f"a{n:03d}" for n in range(0, 60, 2)], [f"a{n:03d}" for n in range(1, 60, 2)]]
    paths = []
    for index, shard in enumerate(keys):
        path = tmp_path / f"shard-{index}.jsonl"
        path.write_bytes(b"".join(record_line(key) for key in shard))
        paths.append(str(path))

    async def merged() -> list[str]:
        return [record.key async for record in merge_shards(paths, ConnectionConfig())]

    assert anyio.run(merged) == sorted(keys[0] + keys[1])


def shard_processes(args: list[list[str]], env: dict[str, str]) -> None:
    """The shards at once against one bucket, as an Indexed Job's pods run."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "scanner", *arguments],
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for arguments in args
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr


def line_count(data: bytes) -> int:
    return len(data.splitlines())


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_shards_of_a_plan_file_merge_to_a_single_scan(s3: S3Target, tmp_path: Path, layout: str) -> None:
    keys = nested_keys() if layout == "nested" else flat_keys()
    bucket = s3.shared_bucket(layout, keys)
    uri = f"s3://{bucket}"
    count = 4
    plan = tmp_path / "plan.json"
    result = run_scanner(["plan", uri, "--shards", str(count), "-o", str(plan)], s3.env())
    assert result.returncode == 0, result.stderr
    # The plan says what it cost and what it expects.
    assert "requests" in result.stderr
    assert "every key listed" in result.stderr
    document = json.loads(plan.read_text())
    assert document["exact"] is True
    assert document["shards"] == count
    assert sum(part["estimated_keys"] for part in document["parts"]) == len(keys)
    outputs = [str(tmp_path / f"shard-{i}.jsonl") for i in range(count)]
    shard_processes(
        [
            ["scan", uri, "--shard", f"{i}/{count}", "--plan", str(plan), "-o", outputs[i]]
            for i in range(count)
        ],
        s3.env(),
    )
    merged = tmp_path / "merged.jsonl"
    result = run_scanner(["merge", *outputs, "--plan", str(plan), "-o", str(merged)], s3.env())
    assert result.returncode == 0, result.stderr
    single = tmp_path / "single.jsonl"
    result = run_scanner(["scan", uri, "-o", str(single)], s3.env())
    assert result.returncode == 0, result.stderr
    assert merged.read_bytes() == single.read_bytes()
    sizes = [line_count(Path(path).read_bytes()) for path in outputs]
    assert max(sizes) <= 1.25 * len(keys) / count, sizes


def test_shards_share_the_one_plan_the_first_stores_and_merge_from_s3_to_s3(s3: S3Target) -> None:
    """Four shards race to plan at one key: one conditional put wins, and all use that plan.
    Their outputs, merged from S3 to S3, are the single scan's in every format."""
    keys = nested_keys()
    bucket = s3.shared_bucket("nested", keys)
    out = s3.new_bucket()
    uri = f"s3://{bucket}"
    plan = f"s3://{out}/shards/plan.json"
    count = 4
    outputs = [f"s3://{out}/shards/shard-{i}.jsonl" for i in range(count)]
    shard_processes(
        [
            ["scan", uri, "--shard", f"{i}/{count}", "--plan", plan, "--create-plan", "-o", outputs[i]]
            for i in range(count)
        ],
        s3.env(),
    )
    client = s3.client()
    listed = client.list_objects_v2(Bucket=out, Prefix="shards/")["Contents"]
    assert sorted(entry["Key"] for entry in listed) == ["shards/plan.json"] + [
        f"shards/shard-{i}.jsonl" for i in range(count)
    ]
    stored = ShardPlanFile.from_json(client.get_object(Bucket=out, Key="shards/plan.json")["Body"].read())
    sizes = [
        line_count(client.get_object(Bucket=out, Key=f"shards/shard-{i}.jsonl")["Body"].read())
        for i in range(count)
    ]
    assert sum(sizes) == len(keys)
    assert max(sizes) <= 1.25 * len(keys) / count, sizes
    assert stored.estimated_keys == sizes  # an exact plan: its estimates are the counts
    for output_format, extra in (("jsonl", []), ("csv", []), ("items", ["--group", "series"])):
        merged = f"s3://{out}/merged.{output_format}"
        single = f"s3://{out}/single.{output_format}"
        result = run_scanner(
            ["merge", *outputs, "--plan", plan, "-f", output_format, *extra, "-o", merged], s3.env()
        )
        assert result.returncode == 0, result.stderr
        result = run_scanner(["scan", uri, "-f", output_format, *extra, "-o", single], s3.env())
        assert result.returncode == 0, result.stderr
        merged_body = client.get_object(Bucket=out, Key=f"merged.{output_format}")["Body"].read()
        single_body = client.get_object(Bucket=out, Key=f"single.{output_format}")["Body"].read()
        assert merged_body == single_body, output_format


def test_over_decomposed_shards_share_one_plan_and_merge_to_a_single_scan(s3: S3Target) -> None:
    """Three shards of four parts each (SCANNER_PARTS_PER_SHARD, as the Indexed Job sets it),
    the plan shared through S3, outputs to S3 and merged from S3: the single scan's bytes."""
    keys = nested_keys()
    bucket = s3.shared_bucket("nested", keys)
    out = s3.new_bucket()
    uri = f"s3://{bucket}"
    plan = f"s3://{out}/shards/plan.json"
    count = 3
    outputs = [f"s3://{out}/shards/shard-{i}.jsonl" for i in range(count)]
    shard_processes(
        [
            ["scan", uri, "--shard", f"{i}/{count}", "--plan", plan, "--create-plan", "-o", outputs[i]]
            for i in range(count)
        ],
        {**s3.env(), "SCANNER_PARTS_PER_SHARD": "4"},
    )
    client = s3.client()
    stored = ShardPlanFile.from_json(client.get_object(Bucket=out, Key="shards/plan.json")["Body"].read())
    assert (stored.shard_count, len(stored.ranges)) == (count, 12)
    for index in range(count):
        body = client.get_object(Bucket=out, Key=f"shards/shard-{index}.jsonl")["Body"].read()
        listed = [orjson.loads(line)["key"] for line in body.splitlines()]
        assert listed == sorted(
            key for key in keys if any(r.contains(key) for r in stored.parts_of(Shard(index, count)))
        )
    merged = f"s3://{out}/merged.jsonl"
    result = run_scanner(["merge", *outputs, "--plan", plan, "-o", merged], s3.env())
    assert result.returncode == 0, result.stderr
    single = f"s3://{out}/single.jsonl"
    result = run_scanner(["scan", uri, "-o", single], s3.env())
    assert result.returncode == 0, result.stderr
    merged_body = client.get_object(Bucket=out, Key="merged.jsonl")["Body"].read()
    assert merged_body == client.get_object(Bucket=out, Key="single.jsonl")["Body"].read()


def test_a_stored_plan_is_what_every_later_shard_uses(moto_target: S3Target, tmp_path: Path) -> None:
    """A plan at the key wins over the one a shard would make: even one made for the same
    bucket by hand is used as it is, and one for another shard count stops the shard."""
    bucket = moto_target.new_bucket([f"k{n:04d}" for n in range(3000)])
    out = moto_target.new_bucket()
    uri = f"s3://{bucket}"
    plan = f"s3://{out}/plan.json"
    result = run_scanner(["plan", uri, "--shards", "3", "-o", plan], moto_target.env())
    assert result.returncode == 0, result.stderr
    # Replacing it would change the cuts under the feet of shards that use it.
    result = run_scanner(["plan", uri, "--shards", "3", "-o", plan], moto_target.env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "exists already" in result.stderr
    outputs = [str(tmp_path / f"shard-{i}.jsonl") for i in range(3)]
    for index in range(3):
        args = ["scan", uri, "--shard", f"{index}/3", "--plan", plan, "--create-plan", "-o", outputs[index]]
        result = run_scanner(args, moto_target.env())
        assert result.returncode == 0, result.stderr
    assert [line_count(Path(path).read_bytes()) for path in outputs] == [1000, 1000, 1000]
    result = run_scanner(["scan", uri, "--shard", "0/4", "--plan", plan, "--create-plan"], moto_target.env())
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: the shard plan {plan} has 3 shards, not 4"
    result = run_scanner(["scan", f"{uri}/k1", "--shard", "0/3", "--plan", plan], moto_target.env())
    assert result.returncode == 2
    assert "is for s3://" in result.stderr


def test_shards_need_a_plan(moto_target: S3Target) -> None:
    """Shards that each cut the key space themselves would not agree: there is no such mode."""
    env = moto_target.env()
    for args, extra in (
        (["scan", "s3://bucket", "--shard", "0/4"], {}),
        (["scan", "s3://bucket"], {"JOB_COMPLETION_INDEX": "0", "SCANNER_SHARD_COUNT": "4"}),
    ):
        result = run_scanner(args, {**env, **extra})
        assert result.returncode == 2
        assert result.stderr.startswith("error: --shard needs --plan")
        assert len(result.stderr.splitlines()) == 1
    result = run_scanner(["scan", "s3://bucket", "--shard", "0/4", "--plan", "/nonexistent/plan.json"], env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: there is no shard plan at /nonexistent/plan.json")
    result = run_scanner(
        ["scan", "s3://bucket", "--shard", "0/4", "--plan", "plan.json", "--create-plan"], env
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --create-plan needs an s3://")


def test_shard_from_the_job_completion_index(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(ODD_KEYS)
    plan = tmp_path / "plan.json"
    result = run_scanner(["plan", f"s3://{bucket}", "--shards", "3", "-o", str(plan)], moto_target.env())
    assert result.returncode == 0, result.stderr
    outputs = []
    for index in range(3):
        out = tmp_path / f"shard-{index}.jsonl"
        env = {**moto_target.env(), "JOB_COMPLETION_INDEX": str(index), "SCANNER_SHARD_COUNT": "3"}
        result = run_scanner(["scan", f"s3://{bucket}", "--plan", str(plan), "-o", str(out)], env)
        assert result.returncode == 0, result.stderr
        outputs.append(str(out))
    merged = tmp_path / "merged.jsonl"
    result = run_scanner(["merge", *outputs, "-o", str(merged)], moto_target.env())
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["key"] for line in merged.read_text().splitlines()] == utf8_sorted(ODD_KEYS)


def test_merge_refuses_shards_that_do_not_fit(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket([f"k{n:04d}" for n in range(2000)])
    out = moto_target.new_bucket()
    plan = tmp_path / "plan.json"
    env = moto_target.env()
    assert run_scanner(["plan", f"s3://{bucket}", "--shards", "2", "-o", str(plan)], env).returncode == 0
    outputs = [f"s3://{out}/shard-{i}.jsonl" for i in range(2)]
    for index in range(2):
        args = ["scan", f"s3://{bucket}", "--shard", f"{index}/2", "--plan", str(plan), "-o", outputs[index]]
        assert run_scanner(args, env).returncode == 0
    single = f"s3://{out}/single.jsonl"
    assert run_scanner(["scan", f"s3://{bucket}", "-o", single], env).returncode == 0
    cases = [
        (
            [outputs[0], outputs[0]],
            1,
            f"error: {outputs[0]} and {outputs[0]} both hold keys of shard 0 of the plan",
        ),
        ([single, outputs[1]], 1, f"error: {single} holds keys of shards 0 and 1 of the plan"),
        (outputs[:1], 2, "error: the shard plan has 2 shards, but 1 inputs were given"),
        (
            [outputs[0], f"s3://{out}/missing.jsonl"],
            2,
            f"error: cannot read 's3://{out}/missing.jsonl': no such object",
        ),
    ]
    for inputs, code, message in cases:
        result = run_scanner(["merge", *inputs, "--plan", str(plan), "-o", str(tmp_path / "m.jsonl")], env)
        assert result.returncode == code, result.stderr
        assert result.stderr.strip() == message
        assert not (tmp_path / "m.jsonl").exists()
    # In any order: a shell glob puts shard-10 before shard-2.
    result = run_scanner(
        ["merge", outputs[1], outputs[0], "--plan", str(plan), "-o", str(tmp_path / "m.jsonl")], env
    )
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "m.jsonl").read_bytes().splitlines()) == 2000
    result = run_scanner(["merge", *outputs, "--plan", f"s3://{out}/no-plan.json"], env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: there is no shard plan at s3://{out}/no-plan.json"


def test_merge_rejects_overlapping_shards(tmp_path: Path) -> None:
    line = record_line("a")
    (tmp_path / "a.jsonl").write_bytes(line)
    (tmp_path / "b.jsonl").write_bytes(line)
    result = run_scanner(
        ["merge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], {"PATH": "/usr/bin"}
    )
    assert result.returncode == 1
    assert "overlap" in result.stderr


def test_invalid_shard_option(moto_target: S3Target) -> None:
    result = run_scanner(["scan", "s3://bucket", "--shard", "5/4"], moto_target.env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: --shard")


def test_shards_racing_to_plan_end_up_with_one_plan(s3: S3Target) -> None:
    """No shard waits here: all make a plan and try to store it at once. One conditional put
    wins, and every shard, the winner too, returns the plan stored at the key."""
    from scanner.config import parse_s3_uri
    from scanner.listing.plan import shared_plan

    bucket = s3.shared_bucket("flat", flat_keys())
    out = s3.new_bucket()
    location = parse_s3_uri(f"s3://{bucket}")
    connection = ConnectionConfig(endpoint_url=s3.endpoint_url, addressing_style="path")
    path = f"s3://{out}/plan.json"
    results: list[tuple[ShardPlanFile, bool]] = []

    async def race() -> None:
        async def one() -> None:
            results.append(await shared_plan(path, location, connection, 4, 64))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)

    with pytest.MonkeyPatch.context() as patch:
        s3.use_in(patch)
        anyio.run(race)
    assert sum(created for _, created in results) == 1
    stored = s3.client().get_object(Bucket=out, Key="plan.json")["Body"].read()
    assert all(plan.to_json() == stored for plan, _ in results)


def test_a_server_that_ignores_the_condition_is_refused(
    rclone_target: S3Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rclone serve s3 stores a PUT with If-None-Match over an existing key (the object contract
    suite records it): pods could each have stored and used a plan of their own there, so the
    shard stops (exit code 2) rather than list with one."""
    from scanner.config import parse_s3_uri
    from scanner.listing.plan import shared_plan

    rclone_target.use_in(monkeypatch)
    bucket = rclone_target.new_bucket([f"k{n:04d}" for n in range(1500)])
    out = rclone_target.new_bucket()
    connection = ConnectionConfig(endpoint_url=rclone_target.endpoint_url, addressing_style="path")
    with pytest.raises(UsageError, match="ignored If-None-Match"):
        anyio.run(shared_plan, f"s3://{out}/plan.json", parse_s3_uri(f"s3://{bucket}"), connection, 2)


def test_a_shards_parts_keep_their_own_ends_in_the_output_order() -> None:
    """The segments a shard's parts are written through stand for those parts only: a resumed
    scan lists what is left of each, never the other shards' keys between them."""
    from scanner.output.ordering import OrderedOutput, Segment

    output = OrderedOutput(1 << 20, first=Segment(None, "b"))
    later = output.insert_after(output.first, [("d", "f"), ("h", None)])
    assert [(s.after, s.end) for s in output.segments()] == [(None, "b"), ("d", "f"), ("h", None)]
    # Splitting the rest of a range still hands its tail to the new segment.
    inside = output.insert_after(later[0], [("e", "f")])
    assert (later[0].end, inside[0].after, inside[0].end) == ("e", "e", "f")


@pytest.mark.parametrize("parts_per_shard", [1, 2])
def test_shard_outputs_kept_as_parts_with_a_manifest(
    moto_target: S3Target, tmp_path: Path, parts_per_shard: int
) -> None:
    """``merge --manifest-only``: the outputs stay where they are, listed with what a reader
    needs and checked against the plan; with one part a shard, in order they are the scan."""
    import hashlib

    keys = [f"k{n:05d}" for n in range(3000)]
    bucket = moto_target.shared_bucket("manifest-flat", keys)
    out = moto_target.new_bucket()
    env = moto_target.env()
    uri, count = f"s3://{bucket}", 3
    plan = tmp_path / "plan.json"
    args = ["plan", uri, "--shards", str(count), "--parts-per-shard", str(parts_per_shard), "-o", str(plan)]
    assert run_scanner(args, env).returncode == 0
    outputs = [f"s3://{out}/shards/shard-{i}.jsonl" for i in range(count)]
    shard_processes(
        [
            ["scan", uri, "--shard", f"{i}/{count}", "--plan", str(plan), "-o", outputs[i]]
            for i in range(count)
        ],
        env,
    )
    manifest = f"s3://{out}/shards/manifest.json"
    result = run_scanner(
        ["merge", *outputs[::-1], "--plan", str(plan), "--manifest-only", "-o", manifest], env
    )
    assert result.returncode == 0, result.stderr
    client = moto_target.client()
    document = orjson.loads(client.get_object(Bucket=out, Key="shards/manifest.json")["Body"].read())
    assert (document["format"], document["fileFormat"]) == ("bucket-scanner-parts-manifest", "jsonl")
    assert (document["shards"], document["parts"], document["records"]) == (
        count,
        count * parts_per_shard,
        3000,
    )
    assert document["in_key_order"] is (parts_per_shard == 1)
    stored = ShardPlanFile.from_json(plan.read_bytes())
    bodies = []
    for index, entry in enumerate(document["files"]):
        assert (entry["key"], entry["shard"]) == (outputs[index], index)  # in shard order
        body = client.get_object(Bucket=out, Key=f"shards/shard-{index}.jsonl")["Body"].read()
        bodies.append(body)
        listed = [orjson.loads(line)["key"] for line in body.splitlines()]
        assert (entry["size"], entry["records"]) == (len(body), len(listed))
        assert (entry["first_key"], entry["last_key"]) == (listed[0], listed[-1])
        assert entry["MD5checksum"] == hashlib.md5(body).hexdigest()
        assert entry["SHA256checksum"] == hashlib.sha256(body).hexdigest()
        parts = stored.parts_of(Shard(index, count))
        assert entry["parts"] == [{"start_after": p.start_after, "end": p.end} for p in parts]
    single = tmp_path / "single.jsonl"
    assert run_scanner(["scan", uri, "-o", str(single)], env).returncode == 0
    if parts_per_shard == 1:
        assert b"".join(bodies) == single.read_bytes()
    else:
        assert sorted(b"".join(bodies).splitlines()) == single.read_bytes().splitlines()
    for inputs, message in (
        ([outputs[0], outputs[0], outputs[1]], "both hold keys of shard 0 of the plan"),
        (outputs[:2], "the shard plan has 3 shards, but 2 inputs were given"),
    ):
        result = run_scanner(
            ["merge", *inputs, "--plan", str(plan), "--manifest-only", "-o", str(tmp_path / "m")], env
        )
        assert result.returncode in (1, 2)
        assert message in result.stderr
        assert not (tmp_path / "m").exists()
    result = run_scanner(["merge", *outputs, "--manifest-only"], env)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "error: --manifest-only needs the --plan the shards used",
    )
