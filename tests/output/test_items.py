"""Tests of scanner.output.items: grouping modes, names, streaming order, encoders and the schemas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.filters import prefix_base
from scanner.grouping import GroupingMode, GroupingSpec, ItemsFormat, TaskOrder
from scanner.output.items import (
    EmptyNameError,
    ItemsListChunk,
    ItemsListEncoder,
    KeyOrderError,
    NameCollisionError,
    RollingItemsListEncoder,
    Series,
    Task,
    TaskGrouper,
)
from scanner.records import ObjectRecord


def rec(key: str) -> ObjectRecord:
    return ObjectRecord(key, 1, "2026-11-28T01:28:50.000Z", '"etag"', "STANDARD")


def group(keys: Iterable[str], **spec: Any) -> list[Task]:
    grouper = TaskGrouper(GroupingSpec(**spec))
    tasks: list[Task] = []
    for key in sorted(keys):
        tasks += grouper.feed(rec(key))
    return tasks + grouper.finish()


def encode(tasks: Iterable[Task], fmt: ItemsFormat = "current") -> bytes:
    encoder = ItemsListEncoder(fmt)
    return encoder.start() + encoder.encode_many(tasks) + encoder.end()


def lines(*objects: object) -> bytes:
    """The expected pretty form: one compact JSON object per line."""
    if not objects:
        return b"[]\n"
    return b"[\n" + b",\n".join(json.dumps(o, separators=(",", ":")).encode() for o in objects) + b"\n]\n"


def schema(name: str) -> dict[str, Any]:
    text = resources.files("scanner").joinpath("schemas", name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


CURRENT = jsonschema.Draft202012Validator(schema("redbrick-items.schema.json"))
LEGACY = jsonschema.Draft202012Validator(schema("redbrick-items-legacy.schema.json"))

LAYOUT = [
    "study001/series001/001.dcm",
    "study001/series001/002.dcm",
    "study001/series002/001.dcm",
    "study001/notes.dcm",
    "study002/t1.nii.gz",
    "study002/t2.nii.gz",
    "top.dcm",
]


# --- exact output per mode ----------------------------------------------------------------------


def test_file_mode_exact() -> None:
    out = encode(group(["scans/brain01.nii.gz", "scans/a/1.dcm", "scans/b.NII"], mode="file"))
    assert out == lines(
        {"name": "scans/a/1.dcm", "series": [{"items": ["scans/a/1.dcm"]}]},
        {"name": "scans/b.NII", "series": [{"items": "scans/b.NII"}]},
        {"name": "scans/brain01.nii.gz", "series": [{"items": "scans/brain01.nii.gz"}]},
    )


def test_series_mode_exact() -> None:
    out = encode(group(LAYOUT, mode="series"))
    assert out == lines(
        {"name": "study001", "series": [{"items": ["study001/notes.dcm"]}]},
        {
            "name": "study001/series001",
            "series": [{"items": ["study001/series001/001.dcm", "study001/series001/002.dcm"]}],
        },
        {"name": "study001/series002", "series": [{"items": ["study001/series002/001.dcm"]}]},
        {
            "name": "study002",
            "series": [
                {"name": "t1.nii.gz", "items": "study002/t1.nii.gz"},
                {"name": "t2.nii.gz", "items": "study002/t2.nii.gz"},
            ],
        },
        {"name": ".", "series": [{"items": ["top.dcm"]}]},
    )


def test_study_mode_exact() -> None:
    grouper = TaskGrouper(GroupingSpec(mode="study", study_depth=1))
    tasks = grouper.feed_page([rec(k) for k in sorted(LAYOUT)]) + grouper.finish()
    assert encode(tasks) == lines(
        {
            "name": "study001",
            "series": [
                {"name": ".", "items": ["study001/notes.dcm"]},
                {"name": "series001", "items": ["study001/series001/001.dcm", "study001/series001/002.dcm"]},
                {"name": "series002", "items": ["study001/series002/001.dcm"]},
            ],
        },
        {
            "name": "study002",
            "series": [
                {"name": "t1.nii.gz", "items": "study002/t1.nii.gz"},
                {"name": "t2.nii.gz", "items": "study002/t2.nii.gz"},
            ],
        },
    )
    assert grouper.skipped == {"above-study-depth": 1}


def test_legacy_format_exact() -> None:
    out = encode(group(LAYOUT, mode="study"), "legacy")
    assert out == lines(
        {
            "name": "study001",
            "items": [
                "study001/notes.dcm",
                "study001/series001/001.dcm",
                "study001/series001/002.dcm",
                "study001/series002/001.dcm",
            ],
        },
        {"name": "study002", "items": ["study002/t1.nii.gz", "study002/t2.nii.gz"]},
    )


def test_doc_examples_reproduced() -> None:
    keys = ["study001/series001/001.dcm", "study001/series001/002.dcm"]
    assert encode(group(keys, mode="series", name_template="{key}")) == lines(
        {"name": "study001/series001", "series": [{"items": keys}]}
    )
    study = ["study001/series001/001.dcm", "study001/series002/001.dcm"]
    assert encode(group(study, mode="study")) == lines(
        {
            "name": "study001",
            "series": [
                {"name": "series001", "items": ["study001/series001/001.dcm"]},
                {"name": "series002", "items": ["study001/series002/001.dcm"]},
            ],
        }
    )


def test_study_depth_two_and_zero() -> None:
    keys = ["p1/s1/a/1.dcm", "p1/s1/a/b/2.dcm", "p1/s2/1.dcm", "p1/x.dcm", "p2/s1/1.dcm"]
    tasks = group(keys, mode="study", study_depth=2)
    assert [(t.name, [s.name for s in t.series]) for t in tasks] == [
        ("p1/s1", ["a", "a/b"]),
        ("p1/s2", ["."]),
        ("p2/s1", ["."]),
    ]
    # depth 0: the scanned folder itself is the one study
    (whole,) = group(["data/" + k for k in keys], mode="study", study_depth=0, prefix="data/")
    assert whole.name == "data"
    assert [s.name for s in whole.series] == ["p1/s1/a", "p1/s1/a/b", "p1/s2", "p1", "p2/s1"]


def test_study_depth_zero_at_bucket_root() -> None:
    (whole,) = group(["a/1.dcm", "b.dcm"], mode="study", study_depth=0)
    assert whole.name == "."
    assert [(s.name, s.items) for s in whole.series] == [("a", ("a/1.dcm",)), (".", ("b.dcm",))]


def test_prefix_without_slash_names_relative_to_its_folder() -> None:
    keys = ["scans/ct1/a.dcm", "scans/ct2/b.dcm", "scans/ct9.dcm"]
    tasks = group(keys, mode="series", prefix="scans/ct")
    assert [t.name for t in tasks] == ["ct1", "ct2", "scans"]


def test_root_group_named_after_scanned_folder() -> None:
    tasks = group(["data/ct/1.dcm", "data/ct/sub/2.dcm"], mode="series", prefix="data/ct/")
    assert [t.name for t in tasks] == ["ct", "sub"]


# --- streaming order ----------------------------------------------------------------------------


def test_interleaved_folder_is_held_until_it_closes() -> None:
    grouper = TaskGrouper(GroupingSpec(mode="series"))
    assert grouper.feed(rec("F/a.dcm")) == []
    assert grouper.feed(rec("F/sub/x.dcm")) == []
    assert grouper.feed(rec("F/z.dcm")) == []  # F/sub closed, but F opened first
    done = grouper.feed(rec("G/1.dcm"))
    assert [t.name for t in done] == ["F", "F/sub"]
    assert done[0].series[0].items == ("F/a.dcm", "F/z.dcm")
    assert [t.name for t in grouper.finish()] == ["G"]


def test_completion_order_emits_as_soon_as_closed() -> None:
    grouper = TaskGrouper(GroupingSpec(mode="series", order="completion"))
    grouper.feed(rec("F/a.dcm"))
    grouper.feed(rec("F/sub/x.dcm"))
    assert [t.name for t in grouper.feed(rec("F/z.dcm"))] == ["F/sub"]
    assert [t.name for t in grouper.feed(rec("G/1.dcm"))] == ["F"]


def test_tasks_come_out_as_soon_as_their_folder_is_passed() -> None:
    grouper = TaskGrouper(GroupingSpec(mode="series"))
    assert grouper.feed(rec("a.b/1.dcm")) == []  # "a.b/" sorts before "a/": '.' < '/'
    assert [t.name for t in grouper.feed(rec("a/1.dcm"))] == ["a.b"]
    assert grouper.feed(rec("a/2.dcm")) == []
    assert [t.name for t in grouper.feed(rec("a0/1.dcm"))] == ["a"]


def test_utf8_order_of_sibling_names() -> None:
    keys = ["a/b.x", "a/b/1.dcm", "a/b/2.dcm", "a/b0/1.dcm", "a/b!/1.dcm", "a/é/1.dcm"]
    tasks = group(keys, mode="series")
    # '!' < '.' < '/' < '0': "a/b!/1.dcm" is the first key, "a/b.x" (folder "a/") the second
    assert [t.name for t in tasks] == ["a/b!", "a", "a/b", "a/b0", "a/é"]


def test_rejects_out_of_order_duplicate_and_outside_keys() -> None:
    grouper = TaskGrouper(GroupingSpec(prefix="p/"))
    grouper.feed(rec("p/b"))
    with pytest.raises(KeyOrderError, match="in order"):
        grouper.feed(rec("p/a"))
    with pytest.raises(KeyOrderError, match="in order"):
        grouper.feed(rec("p/b"))
    with pytest.raises(KeyOrderError, match="outside"):
        grouper.feed(rec("q/c"))


def test_folder_markers_are_skipped() -> None:
    grouper = TaskGrouper(GroupingSpec(mode="file"))
    assert grouper.feed(rec("a/")) == []
    assert grouper.skipped == {"folder-marker": 1}


def test_feed_page_equals_feed() -> None:
    keys = sorted(LAYOUT)
    one = TaskGrouper(GroupingSpec(mode="series"))
    page = TaskGrouper(GroupingSpec(mode="series"))
    by_one = [t for k in keys for t in one.feed(rec(k))] + one.finish()
    by_page = page.feed_page(map(rec, keys[:3])) + page.feed_page(map(rec, keys[3:])) + page.finish()
    assert by_one == by_page
    by_keys = TaskGrouper(GroupingSpec(mode="series"))
    assert by_keys.feed_keys(keys[:4]) + by_keys.feed_keys(iter(keys[4:])) + by_keys.finish() == by_one


# --- names --------------------------------------------------------------------------------------


def test_name_template_fields() -> None:
    template = "{index:03d}|{path}|{folder}|{parent}|{stem}|{key}"
    (task,) = group(["data/scans/a/brain.nii.gz"], mode="file", prefix="data/", name_template=template)
    assert task.name == "001|scans/a/brain.nii.gz|brain.nii.gz|scans/a|brain|data/scans/a/brain.nii.gz"
    tasks = group(
        ["data/s1/x/1.dcm", "data/s2/1.dcm"], mode="study", prefix="data/", name_template="{study}-{index}"
    )
    assert [t.name for t in tasks] == ["s1-1", "s2-2"]
    (series,) = group(["data/s1/x.v2/1.dcm"], mode="series", prefix="data/", name_template="{series}/{stem}")
    assert series.name == "s1/x.v2/x.v2"  # folders keep their dots


@pytest.mark.parametrize(
    ("template", "mode", "message"),
    [
        ("{bogus}", "series", "unknown field {bogus}"),
        ("{study}", "series", "only in study mode"),
        ("{series}", "file", "only in series mode"),
        ("{path.upper}", "file", "unknown field"),
        ("{}", "file", "unknown field {}"),
        ("{path!r}", "file", "conversions"),
        ("{path", "file", "invalid name template"),
        ("{index:q}", "file", "invalid name template"),
    ],
)
def test_name_template_validation(template: str, mode: GroupingMode, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        GroupingSpec(mode=mode, name_template=template)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="study_depth"):
        GroupingSpec(mode="study", study_depth=-1)
    with pytest.raises(ValueError, match="mode"):
        GroupingSpec(mode="folder")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order"):
        GroupingSpec(order="random")  # type: ignore[arg-type]


def test_name_collision_names_both_keys() -> None:
    with pytest.raises(NameCollisionError) as info:
        group(["a/x/1.dcm", "b/x/2.dcm"], mode="series", name_template="{folder}")
    assert info.value.name == "x"
    assert (info.value.first, info.value.second) == ("a/x", "b/x")
    assert "'a/x'" in str(info.value)
    assert "'b/x'" in str(info.value)


def test_dedupe_names_is_stable() -> None:
    keys = ["a/x/1.dcm", "b/x/1.dcm", "c/x (2)/1.dcm", "d/x/1.dcm"]
    tasks = group(keys, mode="series", name_template="{folder}", dedupe_names=True)
    assert [t.name for t in tasks] == ["x", "x (2)", "x (2) (2)", "x (3)"]


def test_root_name_collision_is_detected() -> None:
    with pytest.raises(NameCollisionError):
        group(["ct/1.dcm", "ct/ct/1.dcm"], mode="series", prefix="ct/")


def test_series_names_in_a_task_are_unique() -> None:
    keys = ["s/1.dcm", "s//2.dcm"]  # "s/" and "s//" would both be the series "."
    with pytest.raises(NameCollisionError, match="series name"):
        group(keys, mode="study")
    (task,) = group(keys, mode="study", dedupe_names=True)
    # claimed in first-item order: "s//2.dcm" < "s/1.dcm"
    assert [(s.name, s.items) for s in task.series] == [(".", ("s//2.dcm",)), (". (2)", ("s/1.dcm",))]


def test_empty_rendered_name_is_an_error() -> None:
    with pytest.raises(EmptyNameError):
        group(["a/1.dcm"], mode="series", name_template="{parent}")


# --- encoders -----------------------------------------------------------------------------------


def test_encoder_empty_and_single() -> None:
    assert encode([]) == b"[]\n"
    assert encode([], "legacy") == b"[]\n"
    task = Task("t", (Series(("a", "b")),))
    assert encode([task]) == b'[\n{"name":"t","series":[{"items":["a","b"]}]}\n]\n'
    assert encode([task], "legacy") == b'[\n{"name":"t","items":["a","b"]}\n]\n'


def test_encoder_escapes_like_json() -> None:
    task = Task('q"\\\n/é', (Series('a"b\x00', "n"),))
    assert json.loads(encode([task])) == [{"name": 'q"\\\n/é', "series": [{"name": "n", "items": 'a"b\x00'}]}]


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        ItemsListEncoder("v3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format"):
        RollingItemsListEncoder("v3", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        RollingItemsListEncoder(max_tasks_per_file=0)


def _files(chunks: list[ItemsListChunk]) -> list[bytes]:
    files: dict[int, bytes] = {}
    closed: set[int] = set()
    for chunk in chunks:
        assert chunk.file_index not in closed
        files[chunk.file_index] = files.get(chunk.file_index, b"") + chunk.data
        if chunk.closes_file:
            closed.add(chunk.file_index)
    assert closed == set(files) == set(range(len(files)))
    return [files[i] for i in range(len(files))]


@pytest.mark.parametrize(
    ("count", "limit", "sizes"), [(5, 2, [2, 2, 1]), (4, 2, [2, 2]), (0, 2, [0]), (3, None, [3])]
)
def test_rolling_encoder(count: int, limit: int | None, sizes: list[int]) -> None:
    tasks = [Task(f"t{i}", (Series(f"k{i}"),)) for i in range(count)]
    roller = RollingItemsListEncoder(max_tasks_per_file=limit)
    chunks = [c for t in tasks for c in roller.encode(t)] + roller.finish()
    files = _files(chunks)
    assert [len(json.loads(f)) for f in files] == sizes
    assert [t["name"] for f in files for t in json.loads(f)] == [t.name for t in tasks]
    merged = RollingItemsListEncoder("current", limit)
    assert _files(merged.encode_many(tasks) + merged.finish()) == files
    assert roller.files == len(files)


# --- a huge series ------------------------------------------------------------------------------


def test_huge_series_streams_through() -> None:
    count = 100_000
    grouper = TaskGrouper(GroupingSpec(mode="series", prefix="big/"))
    encoder = ItemsListEncoder()
    out = [encoder.start()]
    keys = [f"big/series/{i:06d}.dcm" for i in range(count)]
    for start in range(0, count, 1000):
        tasks = grouper.feed_page(rec(k) for k in keys[start : start + 1000])
        assert tasks == []
    out += [encoder.encode(t) for t in grouper.feed(rec("big/t.dcm")) + grouper.finish()]
    out.append(encoder.end())
    parsed = orjson.loads(b"".join(out))
    assert [t["name"] for t in parsed] == ["series", "big"]
    assert parsed[0]["series"][0]["items"] == keys


def test_huge_series_under_a_stray_top_file_in_both_orders() -> None:
    keys = ["d/a.dcm", *(f"d/s/{i:06d}.dcm" for i in range(100_000)), "d/z.dcm"]
    first = group(keys, mode="series")
    assert [(t.name, len(t.items())) for t in first] == [("d", 2), ("d/s", 100_000)]
    completion = group(keys, mode="series", order="completion")
    assert [(t.name, len(t.items())) for t in completion] == [("d/s", 100_000), ("d", 2)]


# --- properties on random layouts ---------------------------------------------------------------

_SEGMENTS = [
    "a",
    "b",
    "a.b",
    "a!",
    "a-b",
    "a0",
    "B",
    "é",
    "",
    "1.dcm",
    "x.nii.gz",
    "y.nii",
    "z.nrrd",
    "m.mha",
]
_keys = st.lists(
    st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4).map("/".join),
    max_size=40,
    unique=True,
)


def _reference(keys: list[str], mode: GroupingMode, depth: int, base: str) -> list[list[str]]:
    """Non-streaming grouping: the item keys of each task, tasks in first-key order."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if mode == "file":
            folder = key
        elif mode == "series":
            folder = key[: key.rfind("/") + 1]
        else:
            parts = key[len(base) :].split("/")
            if len(parts) <= depth:
                continue
            folder = base + "".join(p + "/" for p in parts[:depth])
        groups.setdefault(folder, []).append(key)
    return sorted(groups.values())


@settings(max_examples=300, deadline=None)
@given(
    _keys,
    st.sampled_from(["", "a/", "a", "a/b", "é/"]),
    st.sampled_from(["file", "series", "study"]),
    st.integers(0, 3),
    st.sampled_from(["first-item", "completion"]),
    st.data(),
)
def test_grouping_invariants(
    rel_keys: list[str], prefix: str, mode: GroupingMode, depth: int, order: TaskOrder, data: st.DataObject
) -> None:
    keys = sorted({prefix + k for k in rel_keys} - {""})
    keys = [k for k in keys if not k.endswith("/")]  # the filter drops folder markers
    base = prefix_base(prefix)
    spec = GroupingSpec(mode=mode, study_depth=depth, prefix=prefix, dedupe_names=True, order=order)
    grouper = TaskGrouper(spec)
    tasks: list[Task] = []
    position = 0
    while position < len(keys):  # random page sizes, as the pipeline would deliver them
        size = data.draw(st.integers(1, 8))
        tasks += grouper.feed_page(rec(k) for k in keys[position : position + size])
        position += size
    tasks += grouper.finish()

    # every key exactly once, grouped as the non-streaming reference groups it
    expected = _reference(keys, mode, depth, base)
    assert sorted(t.items() for t in tasks) == expected
    skipped = len(keys) - sum(len(g) for g in expected)
    assert grouper.skipped == ({"above-study-depth": skipped} if skipped else {})
    if order == "first-item":
        firsts = [t.first_item for t in tasks]
        assert firsts == sorted(firsts)
        assert len(set(firsts)) == len(firsts)
    # series are in first-key order, items within a series in key order, NIfTI as strings
    for task in tasks:
        assert [s.first_item for s in task.series] == sorted(s.first_item for s in task.series)
        names = [s.name for s in task.series]
        assert len(set(names)) == len(names)
        for series in task.series:
            if isinstance(series.items, str):
                assert series.items.lower().endswith((".nii", ".nii.gz"))
            else:
                assert list(series.items) == sorted(set(series.items))
                if mode != "file" and len(series.items) > 1:
                    assert not any(i.endswith((".nii", ".nii.gz", ".nrrd", ".mha")) for i in series.items)
    # names are unique and, without collisions, the relative paths
    assert len({t.name for t in tasks}) == len(tasks)
    # the output parses and validates in both formats
    current = orjson.loads(encode(tasks))
    CURRENT.validate(current)
    assert current == orjson.loads(orjson.dumps([t.to_json() for t in tasks])) == json.loads(encode(tasks))
    legacy = orjson.loads(encode(tasks, "legacy"))
    LEGACY.validate(legacy)
    assert [t["items"] for t in legacy] == [t.items() for t in tasks]


@settings(max_examples=100, deadline=None)
@given(_keys, st.sampled_from(["file", "series", "study"]))
def test_without_dedupe_names_match_or_collision_is_raised(rel_keys: list[str], mode: GroupingMode) -> None:
    keys = sorted(k for k in rel_keys if k and not k.endswith("/"))
    deduped = group(keys, mode=mode, dedupe_names=True)
    suffixed = any(" (" in t.name or any(" (" in (s.name or "") for s in t.series) for t in deduped)
    if suffixed:
        with pytest.raises(NameCollisionError) as info:
            group(keys, mode=mode)
        assert info.value.first != info.value.second
    else:
        assert group(keys, mode=mode) == deduped


def test_schema_rejects_malformed_lists() -> None:
    bad_current: list[object] = [
        {"name": "t"},
        {"name": "t", "series": []},
        {"name": "t", "series": [{"items": []}]},
        {"name": "", "series": [{"items": "a"}]},
        {"name": "t", "series": [{"items": "a"}], "priority": 2},
        {"name": "t", "series": [{"items": "a"}], "items": ["a"]},
        {"name": "t", "series": [{"items": ["a"], "metaData": {"k": 1}}]},
    ]
    for task in bad_current:
        assert not CURRENT.is_valid([task]), task
    assert CURRENT.is_valid(
        [
            {
                "name": "t",
                "series": [{"items": "a.nii.gz", "name": "s", "metaData": {"k": "v"}}],
                "metaData": {"site": "x"},
                "priority": 0.5,
                "preAssign": {"Label": "a@example.com"},
                "classification": {"attributes": {}},
            }
        ]
    )
    assert not LEGACY.is_valid([{"name": "t", "items": "a"}])
    assert not LEGACY.is_valid([{"name": "t", "items": ["a"], "series": []}])
    assert LEGACY.is_valid([{"name": "t", "items": ["a"]}])
