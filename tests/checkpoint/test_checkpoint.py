"""``--checkpoint``: a scan stopped at any moment resumes without losing or repeating a key.

The pure parts (folding saved segments, what is left to list) are property-tested. The pipeline
is stopped mid-way in-process against an in-memory source, to count exactly what a resumed run
lists again. End to end, ``python -m scanner`` is killed with SIGKILL and stopped with SIGTERM
while it lists a real S3 server through a latency proxy, resumed, and compared byte for byte with
an uninterrupted scan, with the checkpoint in a directory and in S3.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.checkpoint.checkpoint import VERSION, SavedSegment, merge_segments
from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.errors import ScanError, first_failure
from scanner.keyspace import KeyRange
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary
from tests.conftest import REPO_ROOT, S3Target, run_scanner
from tests.faultproxy import FaultProxy
from tests.keysets import nested_keys, utf8_sorted
from tests.memory_source import MemoryBucket

# -- pure: folding saved segments ---------------------------------------------------------------

_points = st.lists(st.text("abcd", min_size=1, max_size=3), min_size=0, max_size=8, unique=True)


@st.composite
def saved_tilings(draw: st.DrawFn) -> list[SavedSegment]:
    """Segments tiling the whole key space, each partly or wholly listed, with extents."""
    bounds: list[str | None] = [None, *sorted(draw(_points)), None]
    segments = []
    for index in range(len(bounds) - 1):
        after, end = bounds[index], bounds[index + 1]
        complete = draw(st.booleans())
        listed = None
        if not complete and draw(st.booleans()):
            listed = (after or "") + "a"
            if end is not None and listed > end:
                listed = end
        extents = tuple(("piece", index * 100 + n, 1 + n) for n in range(draw(st.integers(0, 3))))
        segments.append(SavedSegment(after, listed, end, complete, extents))
    return segments


def _remaining_covers(segments: list[SavedSegment], key: str) -> bool:
    return any((r := s.remaining("")) is not None and r.contains(key) for s in segments)


@given(saved_tilings(), st.lists(st.text("abcde", max_size=4), max_size=20))
@settings(max_examples=300)
def test_merging_keeps_bytes_and_what_is_left(segments: list[SavedSegment], probes: list[str]) -> None:
    merged = merge_segments(segments)
    assert [e for s in merged for e in s.extents] == [e for s in segments for e in s.extents]
    assert merged[0].after is None
    assert merged[-1].end is None
    for before, after in itertools.pairwise(merged):
        assert before.end == after.after
        assert not before.complete  # a complete segment takes in the one after it
    for key in probes:
        assert _remaining_covers(merged, key) == _remaining_covers(segments, key)


def test_remaining_starts_after_the_last_key_listed() -> None:
    segment = SavedSegment("a/", "a/5", "b/", complete=False)
    remaining = segment.remaining("")
    assert remaining is not None
    assert (remaining.start_after, remaining.end) == ("a/5", "b/")
    assert SavedSegment("a/", None, "b/", complete=False).remaining("p") is not None
    assert SavedSegment("a/", "a/9", "b/", complete=True).remaining("") is None


# -- in-process: stop the pipeline mid-way, count what the resumed run lists ------------------------


class StopAfter(Exception):
    pass


class FailingBucket(MemoryBucket):
    """Fails every request after the first ``pages`` (a scan that dies mid-way)."""

    def __init__(self, keys: list[str], pages: int, latency: float = 0.0) -> None:
        super().__init__(keys, latency=latency)
        self.pages = pages

    async def list_page(self, key_range: Any, **options: Any) -> Any:
        if len(self.requests) >= self.pages:
            raise StopAfter
        return await super().list_page(key_range, **options)


def _config(tmp_path: Path, **options: Any) -> ScanConfig:
    return ScanConfig(
        location=parse_s3_uri("s3://bucket"),
        connection=ConnectionConfig(concurrency=8),
        output=str(tmp_path / "out.jsonl"),
        checkpoint=str(tmp_path / "checkpoint"),
        checkpoint_interval=0.01,
        temp_dir=str(tmp_path),
        **options,
    )


def _scan(config: ScanConfig, source: Any) -> ScanSummary:
    return anyio.run(run_scan, config, source, None, None)


def _scan_until_it_fails(config: ScanConfig, source: FailingBucket) -> None:
    with pytest.raises(BaseException) as stopped:  # noqa: PT011 - task groups wrap the failure
        _scan(config, source)
    assert isinstance(first_failure(stopped.value), StopAfter)


# 30,000 keys take at least 30 pages of 1000, so every stop point below falls mid-scan.
@pytest.mark.parametrize("stop_at", [1, 3, 12, 27])
def test_a_stopped_scan_resumes_without_listing_finished_ranges(tmp_path: Path, stop_at: int) -> None:
    keys = nested_keys(30_000)
    reference = tmp_path / "reference.jsonl"
    _scan(ScanConfig(parse_s3_uri("s3://bucket"), ConnectionConfig(), str(reference)), MemoryBucket(keys))

    config = _config(tmp_path)
    _scan_until_it_fails(config, FailingBucket(keys, stop_at, latency=0.002))
    assert not Path(config.output).exists()
    assert (tmp_path / "checkpoint" / "manifest.json").exists()

    resumed_source = MemoryBucket(keys)
    summary = _scan(config, resumed_source)
    assert Path(config.output).read_bytes() == reference.read_bytes()
    assert summary.objects == len(keys)
    assert summary.resumed_objects >= 1000
    # Only what the stopped run had not listed is listed again (plus the ends of the pages at
    # range boundaries).
    assert resumed_source.returned <= len(keys) - summary.resumed_objects + 1000 * 8
    assert os.listdir(tmp_path / "checkpoint") == []


def test_a_checkpoint_that_fails_to_journal_records_no_key_without_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk under the checkpoint fills up mid-scan: what is saved must still resume exactly."""
    from scanner.checkpoint import store as checkpoint_store

    keys = nested_keys(20_000)
    reference = tmp_path / "reference.jsonl"
    _scan(ScanConfig(parse_s3_uri("s3://bucket"), ConnectionConfig(), str(reference)), MemoryBucket(keys))
    append = checkpoint_store.Piece.append
    calls = 0

    def append_until_full(piece: checkpoint_store.Piece, chunk: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls > 6:
            raise ScanError("cannot write the checkpoint: No space left on device")
        return append(piece, chunk)

    config = _config(tmp_path)
    monkeypatch.setattr(checkpoint_store.Piece, "append", append_until_full)
    with pytest.raises(BaseException) as stopped:  # noqa: PT011 - task groups wrap the failure
        _scan(config, MemoryBucket(keys, latency=0.002))
    assert "No space left" in str(first_failure(stopped.value))
    monkeypatch.setattr(checkpoint_store.Piece, "append", append)
    summary = _scan(config, MemoryBucket(keys))
    # The last save before the failure, at most the 6 pages journaled.
    assert summary.resumed_objects <= 6000
    assert Path(config.output).read_bytes() == reference.read_bytes()


def _every_other_part(keys: list[str], parts: int) -> tuple[KeyRange, ...]:
    """Shard 0 of 2 of a plan of ``parts`` parts cut at keys: parts 0, 2, 4, ... (round-robin)."""
    ordered = utf8_sorted(keys)
    cuts = [None, *(ordered[len(ordered) * index // parts] for index in range(1, parts)), None]
    return tuple(KeyRange("", cuts[index], cuts[index + 1]) for index in range(0, parts, 2))


# Shard 0 holds half of 30,000 keys in four parts, 15 pages or more: each stop falls mid-scan.
@pytest.mark.parametrize("stop_at", [2, 7, 12])
def test_a_stopped_shard_of_several_parts_resumes_to_the_same_output(tmp_path: Path, stop_at: int) -> None:
    keys = nested_keys(30_000)
    parts = _every_other_part(keys, 8)
    reference = tmp_path / "reference.jsonl"
    whole = ScanConfig(parse_s3_uri("s3://bucket"), ConnectionConfig(), str(reference), shard_ranges=parts)
    anyio.run(run_scan, whole, MemoryBucket(keys), list(parts), None)
    expected = {key for key in keys if any(part.contains(key) for part in parts)}
    assert set(_keys(reference)) == expected

    config = _config(tmp_path, shard_ranges=parts)
    with pytest.raises(BaseException) as stopped:  # noqa: PT011 - task groups wrap the failure
        anyio.run(run_scan, config, FailingBucket(keys, stop_at, latency=0.002), list(parts), None)
    assert isinstance(first_failure(stopped.value), StopAfter)
    assert not Path(config.output).exists()

    summary: ScanSummary = anyio.run(run_scan, config, MemoryBucket(keys), list(parts), None)
    assert Path(config.output).read_bytes() == reference.read_bytes()
    assert summary.resumed_objects > 0
    assert os.listdir(tmp_path / "checkpoint") == []


def test_resume_with_items_and_filters(tmp_path: Path) -> None:
    from scanner.grouping import GroupingSpec

    keys = [*nested_keys(12_000), "a/notes.txt", "b/readme.md"]
    grouping = GroupingSpec(mode="series")
    reference = tmp_path / "reference.json"
    base = ScanConfig(
        parse_s3_uri("s3://bucket"),
        ConnectionConfig(),
        str(reference),
        output_format="items",
        grouping=grouping,
    )
    _scan(base, MemoryBucket(keys))
    config = _config(tmp_path, output_format="items", grouping=grouping)
    _scan_until_it_fails(config, FailingBucket(keys, 5, latency=0.002))
    assert _scan(config, MemoryBucket(keys)).resumed_objects > 0
    assert Path(config.output).read_bytes() == reference.read_bytes()


# -- end to end: SIGKILL and SIGTERM against a real S3 server --------------------------------------


@pytest.fixture
def slow_moto(moto_target: S3Target) -> Iterator[tuple[FaultProxy, str, list[str]]]:
    """A 20k-key bucket behind 40 ms per request: a few seconds of listing at concurrency 2."""
    keys = nested_keys(20_000)
    bucket = moto_target.shared_bucket("nested", keys)
    with FaultProxy(
        moto_target.endpoint_url,
        credentials=(moto_target.access_key, moto_target.secret_key),
        latency=0.04,
    ) as proxy:
        yield proxy, bucket, utf8_sorted(keys)


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scanner", *args],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _saved_objects(read_manifest: Any) -> int:
    data = read_manifest()
    return int(orjson.loads(data)["counters"]["objects"]) if data else 0


def _wait_for_progress(process: subprocess.Popen[str], read_manifest: Any, at_least: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the scan ended first: {process.communicate()[1]}"
        saved = _saved_objects(read_manifest)
        if saved >= at_least:
            return saved
        time.sleep(0.05)
    raise AssertionError("no checkpoint with progress was saved")


def _keys(path: Path) -> list[str]:
    return [orjson.loads(line)["key"] for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("where", ["directory", "s3"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_scan_resumes_to_the_same_output(
    moto_target: S3Target,
    slow_moto: tuple[FaultProxy, str, list[str]],
    tmp_path: Path,
    signum: int,
    where: str,
) -> None:
    proxy, bucket, expected = slow_moto
    env = {**moto_target.env(), "AWS_ENDPOINT_URL": proxy.url}
    if where == "s3":
        state_bucket = moto_target.new_bucket()
        checkpoint = f"s3://{state_bucket}/checkpoints/nightly"

        def read_manifest() -> bytes | None:
            client = moto_target.client()
            try:
                body: bytes = client.get_object(Bucket=state_bucket, Key="checkpoints/nightly/manifest.json")[
                    "Body"
                ].read()
            except client.exceptions.NoSuchKey:
                return None
            return body

        def left_behind() -> list[str]:
            listing = moto_target.client().list_objects_v2(Bucket=state_bucket)
            return [entry["Key"] for entry in listing.get("Contents", [])]
    else:
        directory = tmp_path / "checkpoint"
        checkpoint = str(directory)

        def read_manifest() -> bytes | None:
            try:
                return (directory / "manifest.json").read_bytes()
            except FileNotFoundError:
                return None

        def left_behind() -> list[str]:
            return os.listdir(directory)

    out = tmp_path / "out" / "objects.jsonl"
    out.parent.mkdir()
    args = [
        "scan",
        f"s3://{bucket}",
        "-o",
        str(out),
        "--concurrency",
        "2",
        "--checkpoint",
        checkpoint,
        "--checkpoint-interval",
        "0.2",
    ]
    process = _start(args, env)
    saved = _wait_for_progress(process, read_manifest, 3000)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 143), stderr
    assert "Traceback" not in stderr
    assert os.listdir(out.parent) == [], "a stopped scan leaves nothing at the output path"
    if signum == signal.SIGTERM:
        assert stderr.count("\n") == 1, stderr
        assert "run the same command again to resume" in stderr
        # The stop saved once more: at least what the last periodic save had.
        assert _saved_objects(read_manifest) >= saved

    # Listings only: how often the resumed run saves its checkpoint depends on how long it
    # takes, which a busy machine decides.
    listings_before = proxy.listings
    resumed = run_scanner([*args, "--summary", str(tmp_path / "summary.json")], env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _keys(out) == expected
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["objects"] == len(expected)
    assert summary["resumed_objects"] >= saved
    assert "resumed from the checkpoint" in resumed.stderr
    # Finished ranges are not listed again: about the pages left, not the whole bucket.
    pages_left = (len(expected) - summary["resumed_objects"]) / 1000
    assert proxy.listings - listings_before < pages_left + 25
    assert left_behind() == []


def test_uninterrupted_scan_with_a_checkpoint_leaves_nothing(moto_target: S3Target, tmp_path: Path) -> None:
    keys = nested_keys(3000)
    bucket = moto_target.new_bucket(keys)
    out = tmp_path / "objects.jsonl"
    checkpoint = tmp_path / "checkpoint"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(out), "--checkpoint", str(checkpoint)], moto_target.env()
    )
    assert result.returncode == 0, result.stderr
    assert _keys(out) == utf8_sorted(keys)
    assert os.listdir(checkpoint) == []


def test_checkpoint_of_another_scan_is_refused(moto_target: S3Target, tmp_path: Path) -> None:
    first = moto_target.new_bucket(["a/1", "a/2"])
    second = moto_target.new_bucket(["b/1"])
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    manifest = {
        "format": "bucket-scanner-checkpoint",
        "version": VERSION,
        "scan": {"uri": f"s3://{first}/", "shard": "", "encoding": "0"},
        "counters": {"objects": 0, "bytes": 0},
        "pieces": [],
        "segments": [{"after": None, "listed": None, "end": None, "complete": False, "extents": []}],
    }
    (checkpoint / "manifest.json").write_bytes(orjson.dumps(manifest))
    out = tmp_path / "out.jsonl"
    result = run_scanner(
        ["scan", f"s3://{second}", "-o", str(out), "--checkpoint", str(checkpoint)], moto_target.env()
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the checkpoint at ")
    assert "another bucket or prefix" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not out.exists()
    # Left as it was: it may be the one the user wants to resume.
    assert (checkpoint / "manifest.json").exists()


def test_a_checkpoint_of_an_earlier_version_is_refused(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a/1"])
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    manifest = {"format": "bucket-scanner-checkpoint", "version": VERSION - 1, "scan": {}, "segments": []}
    (checkpoint / "manifest.json").write_bytes(orjson.dumps(manifest))
    out = tmp_path / "items.json"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-f", "items", "-o", str(out), "--checkpoint", str(checkpoint)],
        moto_target.env(),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: the checkpoint at {checkpoint} has version {VERSION - 1}, this scanner reads {VERSION}; "
        "remove it to start over\n"
    )
    assert not out.exists()


def test_damaged_checkpoint_is_refused(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a/1"])
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "manifest.json").write_bytes(b"{not json")
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-o", str(tmp_path / "o.jsonl"), "--checkpoint", str(checkpoint)],
        moto_target.env(),
    )
    assert result.returncode == 2, result.stderr
    assert "damaged" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--unordered"], "cannot be used with --unordered"),
        (["-o", "-"], "needs --output"),
        (["--checkpoint-interval", "0"], "must be more than 0 seconds"),
    ],
)
def test_checkpoint_option_conflicts(tmp_path: Path, extra: list[str], fragment: str) -> None:
    args = [
        "scan",
        "s3://bucket",
        "-o",
        str(tmp_path / "o.jsonl"),
        "--checkpoint",
        str(tmp_path / "c"),
        *extra,
    ]
    result = run_scanner(args, {k: v for k, v in os.environ.items() if not k.startswith("SCANNER_")})
    assert result.returncode == 2
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_checkpoint_interval_needs_a_checkpoint(tmp_path: Path) -> None:
    result = run_scanner(["scan", "s3://bucket", "--checkpoint-interval", "5"], dict(os.environ))
    assert result.returncode == 2
    assert "--checkpoint-interval needs --checkpoint" in result.stderr
