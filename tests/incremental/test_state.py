"""Incremental-scan state: the snapshot format, its writer and reader, the change detector, diffs.

Property tests compare the streaming code with a brute-force reference built from plain dicts and
sets; the S3 tests run the real upload and download paths against a moto server over HTTP.
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.config import ConnectionConfig
from scanner.errors import AccessError, BucketNotFoundError, ScanError, UsageError
from scanner.incremental.state import (
    ChangeDetector,
    DiffEntry,
    StateEntry,
    StateError,
    StateReader,
    StateWriter,
    diff_states,
    encode_diff,
)
from scanner.records import ObjectRecord
from tests.conftest import S3Target
from tests.http_stub import stub_server
from tests.keysets import ODD_KEYS

URI = "s3://bucket/prefix/"
Fields = tuple[int, str, str]  # size, etag, last_modified

# Keys from a tiny alphabet share prefixes and collide between old and new; the full alphabet
# (anything UTF-8 can carry: newlines, NUL and other controls, emoji) checks nothing is escaped
# or ordered wrongly.
_tiny_keys = st.text(alphabet="ab/\n\x00\x7fé😀", min_size=1, max_size=6)
_any_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
KEYS = st.one_of(_tiny_keys, _any_keys, st.sampled_from(ODD_KEYS))
# Few distinct values, so that "unchanged" and "changed in one field only" both come up often.
FIELDS: st.SearchStrategy[Fields] = st.tuples(
    st.integers(0, 2), st.sampled_from(["e1", "e2"]), st.sampled_from(["2026-01-01T00:00:00.000Z", "t2"])
)
ANY_FIELDS: st.SearchStrategy[Fields] = st.tuples(
    st.integers(0, 2**63 - 1), st.text(st.characters(codec="utf-8"), max_size=40), st.text(max_size=30)
)


def record(key: str, fields: Fields) -> ObjectRecord:
    size, etag, last_modified = fields
    return ObjectRecord(key, size, last_modified, etag, "STANDARD")


def entry(key: str, fields: Fields) -> StateEntry:
    return StateEntry(key, *fields)


def records_of(objects: dict[str, Fields]) -> list[ObjectRecord]:
    return [record(key, objects[key]) for key in sorted(objects)]


def split(items: Sequence[Any], cuts: list[int]) -> list[list[Any]]:
    """``items`` in consecutive pieces at the given cut points (empty pieces included)."""
    points = sorted(min(cut, len(items)) for cut in cuts)
    bounds = [0, *points, len(items)]
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds)]


async def write_state(path: str, pages: Sequence[Sequence[ObjectRecord]], **kwargs: Any) -> None:
    writer = StateWriter(path, URI, **kwargs)
    await writer.open()
    try:
        for page in pages:
            await writer.add_page(page)
    except BaseException:
        await writer.abort()
        raise
    await writer.commit()


async def read_state(source: str, **kwargs: Any) -> tuple[bool, list[StateEntry]]:
    async with StateReader(source, **kwargs) as reader:
        entries = [entry async for entry in reader]
        if reader.exists:
            assert reader.objects == len(entries)
        return reader.exists, entries


def read_sync(source: str, **kwargs: Any) -> tuple[bool, list[StateEntry]]:
    async def run() -> tuple[bool, list[StateEntry]]:
        return await read_state(source, **kwargs)

    return anyio.run(run)


def write_sync(path: str | Path, pages: Sequence[Sequence[ObjectRecord]], **kwargs: Any) -> None:
    anyio.run(lambda: write_state(str(path), pages, **kwargs))


def as_entries(records: Sequence[ObjectRecord]) -> list[StateEntry]:
    return [StateEntry(r.key, r.size, r.etag, r.last_modified) for r in records]


# --- the file format -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    objects=st.dictionaries(KEYS, ANY_FIELDS, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    block_size=st.one_of(st.integers(1, 64), st.just(1 << 20)),
)
def test_round_trip(objects: dict[str, Fields], cuts: list[int], block_size: int) -> None:
    records = records_of(objects)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "state.gz")
        write_sync(path, split(records, cuts))
        # Tiny read blocks put every line, gzip header and trailer boundary in every position.
        exists, entries = read_sync(path, block_size=block_size)
        assert os.listdir(directory) == ["state.gz"]
    assert exists
    assert entries == as_entries(records)


def test_file_is_plain_gzip_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "state.gz"
    records = [
        record(key, (i, f"etag{i}", "2026-01-01T00:00:00.000Z")) for i, key in enumerate(sorted(ODD_KEYS))
    ]
    write_sync(path, [records[:5], records[5:]], created="2026-01-02T03:04:05+00:00")
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    assert orjson.loads(lines[0]) == {
        "format": "bucket-scanner-state",
        "version": 1,
        "uri": URI,
        "created": "2026-01-02T03:04:05+00:00",
    }
    assert [orjson.loads(line) for line in lines[1:-2]] == [list(e) for e in as_entries(records)]
    assert orjson.loads(lines[-2]) == {"objects": len(records)}
    assert lines[-1] == b""

    async def header() -> tuple[str | None, str | None]:
        async with StateReader(str(path)) as reader:
            return reader.uri, reader.created

    assert anyio.run(header) == (URI, "2026-01-02T03:04:05+00:00")


def test_empty_scan_is_a_valid_state(tmp_path: Path) -> None:
    write_sync(tmp_path / "state.gz", [])
    assert read_sync(str(tmp_path / "state.gz")) == (True, [])


@pytest.mark.parametrize(
    "pages",
    [
        [[("b", 1), ("a", 1)]],  # within a page
        [[("a", 1), ("c", 1)], [("b", 1)]],  # across pages
        [[("a", 1)], [("a", 2)]],  # a repeated key
        [[("é", 1), ("z", 1)]],  # code point order, not a locale's
    ],
)
def test_out_of_order_records_are_refused(tmp_path: Path, pages: list[list[tuple[str, int]]]) -> None:
    target = tmp_path / "state.gz"
    target.write_bytes(b"previous state")
    with pytest.raises(StateError, match="key order"):
        write_sync(target, [[record(k, (s, "e", "t")) for k, s in page] for page in pages])
    # The writer was aborted: the previous state is untouched and no temporary file is left.
    assert target.read_bytes() == b"previous state"
    assert os.listdir(tmp_path) == ["state.gz"]


def test_commit_replaces_the_state_atomically(tmp_path: Path) -> None:
    target = tmp_path / "state.gz"
    write_sync(target, [[record("old", (1, "e", "t"))]])

    async def write_without_commit() -> None:
        writer = StateWriter(str(target), URI)
        await writer.open()
        await writer.add_page([record("new", (1, "e", "t"))])
        assert (await read_state(str(target)))[1] == [StateEntry("old", 1, "e", "t")]
        await writer.abort()

    anyio.run(write_without_commit)
    assert read_sync(str(target))[1] == [StateEntry("old", 1, "e", "t")]
    write_sync(target, [[record("new", (1, "e", "t"))]])
    assert read_sync(str(target))[1] == [StateEntry("new", 1, "e", "t")]
    assert os.listdir(tmp_path) == ["state.gz"]


def test_standard_streams_are_refused() -> None:
    with pytest.raises(UsageError):
        StateWriter("-", URI)
    with pytest.raises(UsageError):
        StateReader("-")


def test_missing_state_is_a_first_run(tmp_path: Path) -> None:
    assert read_sync(str(tmp_path / "none.gz")) == (False, [])
    with pytest.raises(StateError, match="does not exist"):
        read_sync(str(tmp_path / "none.gz"), missing_ok=False)


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        read_sync(str(tmp_path))


def _gz(*lines: bytes) -> bytes:
    return gzip.compress(b"".join(line + b"\n" for line in lines))


HEADER = orjson.dumps({"format": "bucket-scanner-state", "version": 1, "uri": URI, "created": "x"})
A = orjson.dumps(["a", 1, "e", "t"])
B = orjson.dumps(["b", 2, "e", "t"])


def _valid() -> bytes:
    records = [
        record(f"key{i:06d}", (i, f"{random.Random(i).getrandbits(128):032x}", "t")) for i in range(5000)
    ]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "s.gz"
        write_sync(path, [records])
        return path.read_bytes()


VALID = _valid()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a bucket-scanner state file"),
        (b"key,size\nfoo,1\n", "not a bucket-scanner state file"),
        (b"\x1f", "not a bucket-scanner state file"),
        (_gz(b'{"key":"a","size":1}'), "not a bucket-scanner state file"),
        (_gz(b'{"format":"something-else","version":1}', A), "not a bucket-scanner state file"),
        (gzip.compress(b"x" * (3 << 20)), "not a bucket-scanner state file"),
        (_gz(orjson.dumps({"format": "bucket-scanner-state", "version": 2}), A), "version 2"),
        (VALID[: len(VALID) // 2], "damaged"),  # truncated
        (VALID[:-4], "damaged"),  # the gzip length field cut off
        (
            VALID[: len(VALID) // 2] + bytes([VALID[len(VALID) // 2] ^ 0x55]) + VALID[len(VALID) // 2 + 1 :],
            "damaged",
        ),
        (VALID + b"garbage", "damaged"),
        (_gz(HEADER, A, B), "end-of-snapshot line is missing"),
        (_gz(HEADER, A, B, b'{"objects":3}'), "damaged"),
        (_gz(HEADER, B, A, b'{"objects":2}'), "out of order"),
        (_gz(HEADER, A, A, b'{"objects":2}'), "out of order"),
        (_gz(HEADER, b'["a",1,"e"]', b'{"objects":1}'), "not \\[key, size"),
        (_gz(HEADER, b'["a","1","e","t"]', b'{"objects":1}'), "damaged"),
        (_gz(HEADER, b"not json", b'{"objects":0}'), "damaged"),
        (_gz(HEADER, b"", A, b'{"objects":1}'), "damaged"),
        (_gz(HEADER, A, b'{"objects":1}', B), "damaged"),
        (_gz(HEADER, A, b'{"objects":1}') + gzip.compress(B + b"\n"), "damaged"),
        (_gz(HEADER, A, b'{"objects":"1"}'), "damaged"),
        (gzip.compress(HEADER + b"\n" + A + b"\n" + b'{"objects":1}'), "incomplete"),
    ],
)
@pytest.mark.parametrize("block_size", [7, 1 << 20])
def test_foreign_or_damaged_files_are_clear_errors(
    tmp_path: Path, content: bytes, message: str, block_size: int
) -> None:
    path = tmp_path / "state.gz"
    path.write_bytes(content)
    # Tiny reads put every boundary everywhere; a large damaged file gets medium ones (fast enough).
    block_size = block_size if len(content) < 4096 else max(block_size, 997)
    with pytest.raises(StateError, match=message) as caught:
        read_sync(str(path), block_size=block_size)
    assert isinstance(caught.value, ScanError)
    assert "\n" not in str(caught.value)


def test_concatenated_gzip_members_are_one_file(tmp_path: Path) -> None:
    path = tmp_path / "state.gz"
    path.write_bytes(_gz(HEADER, A) + _gz(B) + _gz(b'{"objects":2}'))
    assert read_sync(str(path), block_size=5) == (
        True,
        [StateEntry("a", 1, "e", "t"), StateEntry("b", 2, "e", "t")],
    )


# --- change detection ----------------------------------------------------------------------------


class MemorySnapshot:
    """A snapshot in batches that records how far it was read, to check the merge is lazy."""

    def __init__(self, batches: list[list[StateEntry]]) -> None:
        self._batches = batches
        self.pulled = 0

    async def batches(self) -> AsyncIterator[list[StateEntry]]:
        for batch in self._batches:
            self.pulled += 1
            yield batch


def reference_changes(
    old: dict[str, Fields], new: dict[str, Fields]
) -> tuple[list[str], set[str], list[str]]:
    """(added or changed keys in order, changed keys, removed keys in order), by brute force."""
    fresh = [key for key in sorted(new) if old.get(key) != new[key]]
    changed = {key for key in new if key in old and old[key] != new[key]}
    return fresh, changed, sorted(old.keys() - new.keys())


@st.composite
def old_and_new(draw: st.DrawFn) -> tuple[dict[str, Fields], dict[str, Fields]]:
    old = draw(st.dictionaries(KEYS, FIELDS, max_size=30))
    pool = st.one_of(st.sampled_from(sorted(old)), KEYS) if old else KEYS
    new_keys = draw(st.sets(pool, max_size=30))
    # An object kept from the old scan keeps its fields half of the time.
    new = {
        key: draw(st.one_of(st.just(old[key]), FIELDS)) if key in old else draw(FIELDS) for key in new_keys
    }
    return old, new


@settings(max_examples=300, deadline=None)
@given(
    pair=old_and_new(),
    old_cuts=st.lists(st.integers(0, 30), max_size=8),
    new_cuts=st.lists(st.integers(0, 30), max_size=8),
)
def test_change_detector_matches_brute_force(
    pair: tuple[dict[str, Fields], dict[str, Fields]], old_cuts: list[int], new_cuts: list[int]
) -> None:
    old, new = pair
    old_batches = split([entry(k, old[k]) for k in sorted(old)], old_cuts)
    pages = split(records_of(new), new_cuts)
    snapshot = MemorySnapshot(old_batches)

    async def run() -> tuple[list[ObjectRecord], set[str], list[str], ChangeDetector]:
        detector = ChangeDetector(snapshot)
        fresh: list[ObjectRecord] = []
        changed: set[str] = set()
        removed: list[str] = []
        for page in pages:
            result = await detector.classify(page)
            fresh += result.fresh
            changed |= result.changed
            removed += result.removed
            # Removed keys are reported as the merge passes them, never ahead of the scan...
            assert all(key < page[-1].key for key in result.removed) if page else not result.removed
            # ...and the snapshot is read no further than the page needs.
            if page:
                needed = len(old_batches)
                for count, batch in enumerate(old_batches, 1):
                    if batch and batch[-1].key >= page[-1].key:
                        needed = count
                        break
                assert snapshot.pulled <= needed
        removed += await detector.finish()
        return fresh, changed, removed, detector

    fresh, changed, removed, detector = anyio.run(run)
    expected_fresh, expected_changed, expected_removed = reference_changes(old, new)
    assert [r.key for r in fresh] == expected_fresh
    assert fresh == [record(k, new[k]) for k in expected_fresh]
    assert changed == expected_changed
    assert removed == expected_removed
    assert (detector.added, detector.changed, detector.removed, detector.unchanged) == (
        len(expected_fresh) - len(expected_changed),
        len(expected_changed),
        len(expected_removed),
        len(new) - len(expected_fresh),
    )


def test_change_detector_refuses_out_of_order_pages() -> None:
    async def run() -> None:
        detector = ChangeDetector(MemorySnapshot([]))
        await detector.classify([record("b", (1, "e", "t"))])
        await detector.classify([record("a", (1, "e", "t"))])

    with pytest.raises(StateError, match="key order"):
        anyio.run(run)


def test_change_detector_takes_plain_batches_and_needs_an_opened_reader(tmp_path: Path) -> None:
    async def batches() -> AsyncIterator[list[StateEntry]]:
        yield [StateEntry("a", 1, "e", "t"), StateEntry("c", 1, "e", "t")]

    async def run() -> tuple[list[ObjectRecord], list[str]]:
        detector = ChangeDetector(batches())
        page = await detector.classify([record("a", (1, "e", "t")), record("b", (1, "e", "t"))])
        return page.fresh, await detector.finish()

    assert anyio.run(run) == ([record("b", (1, "e", "t"))], ["c"])

    async def unopened() -> None:
        await ChangeDetector(StateReader(str(tmp_path / "s.gz"))).classify([record("a", (1, "e", "t"))])

    with pytest.raises(RuntimeError, match="open"):
        anyio.run(unopened)


def test_change_detector_reads_a_state_file(tmp_path: Path) -> None:
    """The whole CronJob cycle: first run (no state), a second run with changes."""
    path = str(tmp_path / "state.gz")
    first = [record(f"s/{i:03d}", (i, "e", "t")) for i in range(50)]
    second = [r for r in first if r.key != "s/010"] + [record("s/100", (1, "e", "t"))]
    second[3] = record("s/003", (3, "other", "t"))

    async def run(records: list[ObjectRecord]) -> tuple[list[ObjectRecord], list[str]]:
        async with StateReader(path, block_size=64) as old:
            detector = ChangeDetector(old)
            writer = StateWriter(path, URI)
            await writer.open()
            fresh: list[ObjectRecord] = []
            removed: list[str] = []
            for page in split(records, [7, 20, 21, 45]):
                result = await detector.classify(page)
                await writer.add_page(page)
                fresh += result.fresh
                removed += result.removed
            removed += await detector.finish()
            await writer.commit()
            return fresh, removed

    assert anyio.run(run, first) == (first, [])
    fresh, removed = anyio.run(run, second)
    assert [r.key for r in fresh] == ["s/003", "s/100"]
    assert removed == ["s/010"]
    assert anyio.run(run, second) == ([], [])


# --- diffs ---------------------------------------------------------------------------------------


def reference_diff(old: dict[str, Fields], new: dict[str, Fields]) -> list[DiffEntry]:
    entries = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            entries.append(DiffEntry("added", key, None, entry(key, new[key])))
        elif key not in new:
            entries.append(DiffEntry("removed", key, entry(key, old[key]), None))
        elif old[key] != new[key]:
            entries.append(DiffEntry("changed", key, entry(key, old[key]), entry(key, new[key])))
    return entries


async def diff_files(old: str, new: str) -> list[DiffEntry]:
    async with StateReader(old, block_size=32) as before, StateReader(new, block_size=32) as after:
        return [difference async for difference in diff_states(before, after)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=old_and_new(), cuts=st.lists(st.integers(0, 30), max_size=4))
def test_diff_states_matches_brute_force(
    pair: tuple[dict[str, Fields], dict[str, Fields]], cuts: list[int]
) -> None:
    old, new = pair
    with tempfile.TemporaryDirectory() as directory:
        old_path, new_path = os.path.join(directory, "old.gz"), os.path.join(directory, "new.gz")
        write_sync(old_path, split(records_of(old), cuts))
        write_sync(new_path, split(records_of(new), cuts))
        assert anyio.run(diff_files, old_path, new_path) == reference_diff(old, new)
        # A missing old state is an empty one: everything is added.
        assert anyio.run(diff_files, os.path.join(directory, "none.gz"), new_path) == reference_diff({}, new)


def test_diff_encoding() -> None:
    one = StateEntry("a\nb", 1, "e1", "t1")
    two = StateEntry("a\nb", 2, "e2", "t2")
    encoded = encode_diff(
        [
            DiffEntry("added", "a\nb", None, one),
            DiffEntry("removed", "c", one._replace(key="c"), None),
            DiffEntry("changed", "a\nb", one, two),
        ]
    )
    lines = encoded.split(b"\n")
    assert lines[-1] == b""
    assert [orjson.loads(line) for line in lines[:-1]] == [
        {"change": "added", "key": "a\nb", "size": 1, "etag": "e1", "last_modified": "t1"},
        {"change": "removed", "key": "c", "size": 1, "etag": "e1", "last_modified": "t1"},
        {
            "change": "changed",
            "key": "a\nb",
            "old": {"size": 1, "etag": "e1", "last_modified": "t1"},
            "new": {"size": 2, "etag": "e2", "last_modified": "t2"},
        },
    ]
    assert encode_diff([]) == b""


# --- S3 ------------------------------------------------------------------------------------------


def _connection(s3: S3Target, monkeypatch: pytest.MonkeyPatch) -> ConnectionConfig:
    s3.use_in(monkeypatch)
    return ConnectionConfig(addressing_style="path")


def _big(count: int) -> list[ObjectRecord]:
    rng = random.Random(count)
    return [
        record(
            f"study{i // 400:04d}/series{i // 50 % 8}/img{i % 50:05d}.dcm",
            (rng.getrandbits(20), f"{rng.getrandbits(128):032x}", "t"),
        )
        for i in range(count)
    ]


def test_s3_state_appears_on_commit_and_reads_back(
    moto_target: S3Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = moto_target.new_bucket()
    connection = _connection(moto_target, monkeypatch)
    uri = f"s3://{bucket}/state/scan.state.gz"
    odd = [record(key, (i, "e", "t")) for i, key in enumerate(sorted(ODD_KEYS))]
    # ~300k objects make a state over one 8 MiB part, so the multipart path is the one tested.
    big = _big(300_000)
    client = moto_target.client()

    async def write(records: list[ObjectRecord], first: bool) -> None:
        writer = StateWriter(uri, URI, connection)
        await writer.open()
        for start in range(0, len(records), 1000):
            await writer.add_page(records[start : start + 1000])
        if first:
            assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        await writer.commit()

    anyio.run(write, odd, True)
    assert read_sync(uri, connection=connection) == (True, as_entries(odd))
    anyio.run(write, big, False)
    assert client.head_object(Bucket=bucket, Key="state/scan.state.gz")["ContentLength"] > 8 * 1024 * 1024
    assert read_sync(uri, connection=connection) == (True, as_entries(big))


def test_s3_abort_leaves_nothing(moto_target: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_target.new_bucket()
    connection = _connection(moto_target, monkeypatch)
    big = _big(300_000)

    async def write_then_abort(records: list[ObjectRecord]) -> None:
        writer = StateWriter(f"s3://{bucket}/state.gz", URI, connection)
        await writer.open()
        for start in range(0, len(records), 1000):
            await writer.add_page(records[start : start + 1000])
        await writer.abort()

    anyio.run(write_then_abort, big[:10])
    anyio.run(write_then_abort, big)  # a multipart upload was under way
    client = moto_target.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_missing_state_is_a_first_run(moto_target: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = moto_target.new_bucket()
    connection = _connection(moto_target, monkeypatch)
    uri = f"s3://{bucket}/never/written.gz"
    assert read_sync(uri, connection=connection) == (False, [])
    with pytest.raises(StateError, match="does not exist"):
        read_sync(uri, connection=connection, missing_ok=False)

    async def classify() -> list[ObjectRecord]:
        async with StateReader(uri, connection) as old:
            return (await ChangeDetector(old).classify([record("a", (1, "e", "t"))])).fresh

    assert anyio.run(classify) == [record("a", (1, "e", "t"))]


def test_s3_missing_bucket_and_foreign_object(moto_target: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = _connection(moto_target, monkeypatch)
    with pytest.raises(BucketNotFoundError, match="does not exist"):
        read_sync("s3://no-such-state-bucket/state.gz", connection=connection)
    bucket = moto_target.new_bucket()
    moto_target.client().put_object(Bucket=bucket, Key="listing.jsonl", Body=b'{"key": "a"}\n')
    with pytest.raises(StateError, match="not a bucket-scanner state file"):
        read_sync(f"s3://{bucket}/listing.jsonl", connection=connection)


ACCESS_DENIED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"""
NO_SUCH_KEY = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"""


def _stub_connection(url: str, monkeypatch: pytest.MonkeyPatch) -> ConnectionConfig:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "stub-access")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "stub-secret")
    return ConnectionConfig(endpoint_url=url, region="us-east-1", addressing_style="path", max_attempts=1)


def test_s3_403_is_access_denied_not_a_first_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without s3:ListBucket, S3 answers 403 for a missing key: that must not look like a first run."""
    with (
        stub_server(403, ACCESS_DENIED) as url,
        pytest.raises(AccessError, match=r"s3:GetObject.*s3:ListBucket"),
    ):
        read_sync("s3://bucket/state.gz", connection=_stub_connection(url, monkeypatch))


@pytest.mark.parametrize("body", [NO_SUCH_KEY, b""])
def test_s3_404_is_a_first_run(monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    with stub_server(404, body) as url:
        assert read_sync("s3://bucket/state.gz", connection=_stub_connection(url, monkeypatch)) == (False, [])


def test_s3_server_error_is_not_a_first_run(monkeypatch: pytest.MonkeyPatch) -> None:
    with stub_server(500, b"<html>oops</html>", "text/html") as url, pytest.raises(ScanError, match="500"):
        read_sync("s3://bucket/state.gz", connection=_stub_connection(url, monkeypatch))
