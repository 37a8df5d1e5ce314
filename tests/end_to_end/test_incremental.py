"""Incremental runs end to end: --state, --changes-only, items flags, and scanner diff."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import S3Target, run_scanner


def jsonl_keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def test_second_run_emits_only_what_changed(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(["a/1.dcm", "a/2.dcm", "b/1.dcm", "c/1.dcm"])
    state = tmp_path / "state.gz"
    out = tmp_path / "run1.jsonl"
    first = run_scanner(
        ["scan", f"s3://{bucket}", "--state", str(state), "--changes-only", "-o", str(out)], s3.env()
    )
    assert first.returncode == 0, first.stderr
    assert jsonl_keys(out) == ["a/1.dcm", "a/2.dcm", "b/1.dcm", "c/1.dcm"]  # first run: all new
    assert state.read_bytes()[:2] == b"\x1f\x8b"  # gzip

    client = s3.client()
    time.sleep(1.1)  # a new LastModified second
    client.put_object(Bucket=bucket, Key="a/2.dcm", Body=b"changed")
    client.put_object(Bucket=bucket, Key="d/1.dcm", Body=b"new")
    client.delete_object(Bucket=bucket, Key="c/1.dcm")
    out2 = tmp_path / "run2.jsonl"
    second = run_scanner(
        ["scan", f"s3://{bucket}", "--state", str(state), "--changes-only", "-o", str(out2)], s3.env()
    )
    assert second.returncode == 0, second.stderr
    assert jsonl_keys(out2) == ["a/2.dcm", "d/1.dcm"]
    assert "since the last run: added 1, changed 1, removed 1, unchanged 2" in second.stderr

    out3 = tmp_path / "run3.jsonl"
    third = run_scanner(
        ["scan", f"s3://{bucket}", "--state", str(state), "--changes-only", "-o", str(out3)], s3.env()
    )
    assert third.returncode == 0, third.stderr
    assert out3.read_text() == ""


def test_items_list_keeps_new_and_changed_groups_flagged(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(["s1/a.dcm", "s1/b.dcm", "s2/a.dcm", "s3/a.dcm"])
    state = f"s3://{bucket}/state/archive.state"  # the snapshot can live in S3 too
    options = ["-f", "items", "--type", "dicom", "--state", state, "--changes-only"]
    first = run_scanner(["scan", f"s3://{bucket}", *options, "-o", str(tmp_path / "i1.json")], s3.env())
    assert first.returncode == 0, first.stderr
    assert [t["metaData"]["scanChange"] for t in json.loads((tmp_path / "i1.json").read_text())] == [
        "new"
    ] * 3

    time.sleep(1.1)
    client = s3.client()
    client.put_object(Bucket=bucket, Key="s1/c.dcm", Body=b"x")  # a slice added to an old series
    client.put_object(Bucket=bucket, Key="s4/a.dcm", Body=b"x")  # a new series
    second = run_scanner(["scan", f"s3://{bucket}", *options, "-o", str(tmp_path / "i2.json")], s3.env())
    assert second.returncode == 0, second.stderr
    assert json.loads((tmp_path / "i2.json").read_text()) == [
        {
            "name": "s1",
            "series": [{"items": ["s1/a.dcm", "s1/b.dcm", "s1/c.dcm"]}],
            "metaData": {"scanChange": "changed"},
        },
        {"name": "s4", "series": [{"items": ["s4/a.dcm"]}], "metaData": {"scanChange": "new"}},
    ]


def test_failed_run_never_advances_the_state(s3: S3Target, tmp_path: Path) -> None:
    bucket = s3.new_bucket(["x/1", "x/2"])
    state = tmp_path / "state.gz"
    ok = run_scanner(["scan", f"s3://{bucket}", "--state", str(state), "-o", str(tmp_path / "o1")], s3.env())
    assert ok.returncode == 0, ok.stderr
    before = state.read_bytes()
    s3.client().put_object(Bucket=bucket, Key="x/3", Body=b"x")
    failed = run_scanner(
        [
            "scan",
            f"s3://{bucket}",
            "-f",
            "items",
            "--group",
            "file",
            "--name-template",
            "x",
            "--state",
            str(state),
            "-o",
            str(tmp_path / "o2"),
        ],
        s3.env(),
    )
    assert failed.returncode == 1  # the name collides: the output fails after the listing
    assert state.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o1", "state.gz"]


def test_diff_of_two_snapshots(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["k1", "k2", "k3"])
    old, new = tmp_path / "old.gz", tmp_path / "new.gz"
    assert (
        run_scanner(
            ["scan", f"s3://{bucket}", "--state", str(old), "-o", "/dev/null"], moto_target.env()
        ).returncode
        == 0
    )
    client = moto_target.client()
    client.delete_object(Bucket=bucket, Key="k1")
    client.put_object(Bucket=bucket, Key="k2", Body=b"longer body")
    client.put_object(Bucket=bucket, Key="k4", Body=b"x")
    assert (
        run_scanner(
            ["scan", f"s3://{bucket}", "--state", str(new), "-o", "/dev/null"], moto_target.env()
        ).returncode
        == 0
    )
    result = run_scanner(["diff", str(old), str(new)], moto_target.env())
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["change"], e["key"]) for e in entries] == [
        ("removed", "k1"),
        ("changed", "k2"),
        ("added", "k4"),
    ]
    assert entries[1]["new"]["size"] == len(b"longer body")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--changes-only"], "--changes-only needs --state"),
        (["--state", "s.gz", "--unordered"], "--unordered"),
        (["--state", "/no/such/dir/s.gz"], "does not exist"),
    ],
)
def test_bad_state_options(moto_target: S3Target, options: list[str], fragment: str) -> None:
    result = run_scanner(["scan", "s3://bucket", *options], moto_target.env())
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
