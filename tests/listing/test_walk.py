"""The order-independent listing: the tree walk, the external sort and the dialect checks, on the
in-memory store in each dialect (the real servers are in ``test_contract.py``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.errors import InconsistentListing, UsageError
from scanner.listing.dialect import check_profile, choose_profile, first_page_contradiction
from scanner.listing.walk import TreeWalk, group_folders, request_root
from scanner.output.external_sort import ExternalSort
from scanner.records import ObjectRecord
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary
from scanner.storage.memory import Dialect, MemoryStore, walk_order
from tests.keysets import ODD_KEYS, nested_keys, utf8_sorted

DIALECTS: tuple[Dialect, ...] = ("sorted", "walk", "directory")

_part = st.text(alphabet="ab-./_0é", min_size=1, max_size=4).filter(lambda p: p not in (".", ".."))
_keys = st.lists(st.lists(_part, min_size=1, max_size=4).map("/".join), max_size=60, unique=True)


def _walk(store: MemoryStore, prefix: str, parallelism: int, folder_only: bool) -> list[str]:
    listed: list[str] = []

    async def emit(records: Sequence[ObjectRecord]) -> None:
        listed.extend(record.key for record in records)

    walk = TreeWalk(store, prefix, parallelism=parallelism, emit=emit, folder_prefixes_only=folder_only)
    anyio.run(walk.run)
    return listed


@settings(max_examples=150, deadline=None)
@given(keys=_keys, dialect=st.sampled_from(DIALECTS), parallelism=st.integers(1, 6), page=st.integers(1, 7))
def test_walk_lists_every_key_exactly_once(
    keys: list[str], dialect: Dialect, parallelism: int, page: int
) -> None:
    store = MemoryStore(keys, dialect, page_size=page)
    listed = _walk(store, "", parallelism, dialect == "directory")
    assert Counter(listed) == Counter(keys)


@settings(max_examples=100, deadline=None)
@given(keys=_keys, prefix=st.text(alphabet="ab-/", max_size=3), dialect=st.sampled_from(DIALECTS))
def test_walk_of_a_prefix_lists_exactly_its_keys(keys: list[str], prefix: str, dialect: Dialect) -> None:
    store = MemoryStore(keys, dialect, page_size=3)
    listed = _walk(store, prefix, 4, dialect == "directory")
    assert Counter(listed) == Counter(k for k in keys if k.startswith(prefix))
    if dialect == "directory":
        assert all(p == "" or p.endswith("/") for p, _, _ in store.requests)


def test_request_root_goes_through_the_parent_folder() -> None:
    assert request_root("study1", folder_prefixes_only=True) == ("", "study1")
    assert request_root("a/b/st", folder_prefixes_only=True) == ("a/b/", "a/b/st")
    assert request_root("a/b/", folder_prefixes_only=True) == ("a/b/", None)
    assert request_root("study1", folder_prefixes_only=False) == ("study1", None)


def test_one_top_folder_fans_out() -> None:
    keys = [f"archive/s{s:02d}/i{i}" for s in range(20) for i in range(30)]
    store = MemoryStore(keys, "walk", page_size=50)
    assert Counter(_walk(store, "", 8, False)) == Counter(keys)
    # The root and archive/ were descended: the 20 studies were listed side by side.
    assert sum(1 for _, _, delimiter in store.requests if delimiter == "/") >= 2


def test_walk_order_is_by_path_parts() -> None:
    keys = ["study0-thumb/t.png", "study0/series2/img9.dcm", "study0/series10/a"]
    assert sorted(keys, key=walk_order) == [
        "study0/series10/a",
        "study0/series2/img9.dcm",
        "study0-thumb/t.png",
    ]


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(st.text(min_size=1, max_size=8), max_size=300, unique=True),
    budget=st.integers(200, 5000),
)
def test_external_sort_puts_records_in_byte_order(keys: list[str], budget: int) -> None:
    records = [ObjectRecord(k, len(k), "2026-11-28T00:00:00.000Z", "e", "STANDARD") for k in keys]
    sorter = ExternalSort(budget)
    for start in range(0, len(records), 7):
        sorter.add(records[start : start + 7])
    got = [record for page in sorter.pages(size=10) for record in page]
    sorter.close()
    assert [r.key for r in got] == utf8_sorted(keys)
    assert got == sorted(records)


def test_external_sort_merges_in_passes_and_refuses_a_repeated_key() -> None:
    records = [ObjectRecord(f"k{i:05d}", i, "t", "e", "STANDARD") for i in range(3000)]
    sorter = ExternalSort(400)  # a run every record or two: more runs than one merge takes
    for record in reversed(records):
        sorter.add([record])
    assert sorter.runs > 64
    assert [r for page in sorter.pages() for r in page] == records
    sorter.close()
    repeated = ExternalSort(1000)
    repeated.add(records[:10])
    repeated.add(records[5:6])
    with pytest.raises(InconsistentListing, match="k00005"):
        list(repeated.pages())


def test_first_page_contradiction_sees_a_walk_order_server() -> None:
    flat = [f"study0/series{s}/img{i}" for s in range(2) for i in range(5)]
    # A walk lists study0/ first, flat; its delimited listing also names study0-thumb/.
    assert first_page_contradiction(flat, True, ["study0/", "study0-thumb/"], [])
    assert first_page_contradiction(flat, True, ["study0/", "study1/"], []) is None
    assert first_page_contradiction(flat, False, ["study0/", "study1/"], [])  # the page was all
    assert first_page_contradiction(["a/1", "b"], True, ["a/"], ["b", "a.txt"])
    assert first_page_contradiction(["a.txt", "a/1"], True, ["a/"], ["a.txt"]) is None


def test_profiles_are_chosen_by_name_and_bucket() -> None:
    assert choose_profile("auto", "data--use1-az4--x-s3").name == "directory"
    assert choose_profile("auto", "plain").name == "auto"
    assert not choose_profile("seaweedfs", "b").ranged
    with pytest.raises(UsageError, match="unknown --server-profile 'nope'"):
        choose_profile("nope", "b")
    with pytest.raises(UsageError, match="s3rver"):
        choose_profile("s3rver", "b")
    config = ScanConfig(parse_s3_uri("s3://b--use1-az4--x-s3/x/"), ConnectionConfig(), checkpoint="/tmp/c")
    with pytest.raises(UsageError, match="--checkpoint"):
        check_profile(config)


def _scan(
    store: MemoryStore, tmp_path: Path, uri: str = "s3://bucket", **options: object
) -> tuple[list[str], ScanSummary]:
    out = tmp_path / "out.jsonl"
    config = ScanConfig(parse_s3_uri(uri), ConnectionConfig(concurrency=8), output=str(out), **options)  # type: ignore[arg-type]
    summary = anyio.run(run_scan, config, store)
    return [json.loads(line)["key"] for line in out.read_text().splitlines()], summary


@pytest.mark.parametrize("dialect", DIALECTS)
def test_scan_is_exact_and_ordered_in_every_dialect(dialect: Dialect, tmp_path: Path) -> None:
    keys = set(nested_keys(3000)) | {k for k in ODD_KEYS if k} | {"study0-thumb/t.png", "study0/series2/i"}
    bucket = "bucket--use1-az4--x-s3" if dialect == "directory" else "bucket"
    got, summary = _scan(MemoryStore(keys, dialect, page_size=100), tmp_path, f"s3://{bucket}")
    assert got == utf8_sorted(keys)
    assert summary.strategy == ("ranges" if dialect == "sorted" else "tree walk")
    assert summary.objects == len(keys)
    unordered, _ = _scan(MemoryStore(keys, dialect, page_size=100), tmp_path, f"s3://{bucket}", ordered=False)
    assert Counter(unordered) == Counter(keys)


def test_a_switch_mid_scan_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # Byte order and walk order agree on the first pages; they part at the end of the bucket.
    keys = [f"a/{i:05d}" for i in range(2500)] + ["z/a/1", "z/a-b/2", "z/a/3"]
    got, summary = _scan(MemoryStore(keys, "walk", page_size=100), tmp_path)
    assert got == utf8_sorted(keys)
    assert summary.switched_because is not None
    assert summary.objects == len(keys)


def test_a_directory_bucket_prefix_without_slash_goes_through_its_parent(tmp_path: Path) -> None:
    keys = ["study1/a", "study10/b", "study1.txt", "study2/c", "x"]
    store = MemoryStore(keys, "directory")
    got, _ = _scan(store, tmp_path, "s3://b--use1-az4--x-s3/study1")
    assert got == ["study1.txt", "study1/a", "study10/b"]


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(
        st.text(alphabet="ab-0/é", min_size=1, max_size=5).filter(lambda n: "/" not in n), unique=True
    ),
    parent=st.sampled_from(["", "p/", "st"]),
    per_group=st.integers(1, 6),
)
def test_folder_groups_cover_each_folder_once(names: list[str], parent: str, per_group: int) -> None:
    folders = sorted(f"{parent}{name}/" for name in names)
    groups = group_folders(parent, folders, per_group)
    assert all(not a.startswith(b) for a in groups for b in groups if a != b)
    for folder in folders:
        assert sum(folder.startswith(g) for g in groups) == 1
    assert all(g.startswith(parent) for g in groups)
    sizes = [sum(f.startswith(g) for f in folders) for g in groups]
    assert all(size <= per_group or size == 1 for size in sizes)


def test_many_small_folders_are_listed_in_groups() -> None:
    keys = [f"study{s:03d}{suffix}/img{i}" for s in range(300) for suffix in ("", "-t") for i in range(10)]
    keys += ["study007.txt", "study1"]  # direct keys a group prefix also matches
    store = MemoryStore(keys, "walk", page_size=100)
    assert Counter(_walk(store, "", 4, False)) == Counter(keys)
    assert len(store.requests) < 200  # 600 folders, listed about 40 at a time
