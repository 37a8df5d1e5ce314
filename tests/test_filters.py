"""Tests of scanner.filters: globs against fnmatch, types, skip reasons, CLI value parsing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from fnmatch import fnmatchcase

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from scanner.filters import (
    SKIP_REASONS,
    FilterSpec,
    RecordFilter,
    compile_glob,
    compile_globs,
    file_extension,
    file_type,
    glob_never_matches,
    parse_size,
    parse_time,
    prefix_base,
)
from scanner.records import ObjectRecord


def rec(key: str, size: int = 10, modified: str = "2026-06-01T12:00:00.000Z") -> ObjectRecord:
    return ObjectRecord(key, size, modified, '"etag"', "STANDARD")


# --- globs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("*.dcm", "a.dcm", True),
        ("*.dcm", "x/a.dcm", False),  # "*" stays in one segment
        ("**/*.dcm", "a.dcm", True),  # "**/" may match zero folders
        ("**/*.dcm", "x/y/a.dcm", True),
        ("x/**/a.dcm", "x/a.dcm", True),
        ("x/**/a.dcm", "x/1/2/a.dcm", True),
        ("x/**/a.dcm", "xa.dcm", False),
        ("x/**", "x/a/b", True),
        ("x/**", "x", False),  # everything inside x/, not a file named x
        ("**", "any/thing/at/all", True),
        ("**.dcm", "deep/down/a.dcm", True),  # "**" inside a segment crosses folders
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab]*", "b1", True),
        ("[!ab]*", "c1", True),
        ("[!ab]*", "a1", False),
        ("[!a]", "/", False),  # classes never match "/"
        ("[a-c]x", "bx", True),
        ("[z-a]x", "zx", False),
        ("a[", "a[", True),  # unclosed: literal
        ("[a/b]", "[a/b]", True),  # "[" not closed within its segment: literal
        ("[a/b]", "a", False),
        ("[+-0]", "/", False),  # a range spanning "/" still stays in one segment
        ("[+-0]", ".", True),
        ("[]]", "]", True),
        ("a+b(c)$.^{1}|\\", "a+b(c)$.^{1}|\\", True),  # regex metacharacters are literal
        ("[*]", "*", True),
        ("[*]", "x", False),
        ("line*", "line\nbreak", True),
        ("CT/*", "ct/1", False),  # case-sensitive like S3 keys
    ],
)
def test_compile_glob_examples(pattern: str, key: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(key)) is matches


_SEG_CHARS = "ab.-!]"
_literal = st.sampled_from(list(_SEG_CHARS))
_class = st.builds(
    lambda neg, body: "[" + ("!" if neg else "") + body + "]",
    st.booleans(),
    # no "!" inside: fnmatch misreads "[a-.!]" (after dropping the reversed range "a-.") as "[!]"
    st.text(alphabet="ab.-c", min_size=1, max_size=4),
)
_token = st.one_of(_literal, st.just("*"), st.just("?"), _class)
_segment = st.lists(_token, min_size=1, max_size=4).map("".join)
_simple_pattern = st.lists(_segment, min_size=1, max_size=3).map("/".join)
_key = st.text(alphabet="ab.-!]c/", min_size=1, max_size=10)


def _fnmatch_segments(pattern: str, key: str) -> bool:
    pattern_segments = pattern.split("/")
    key_segments = key.split("/")
    return len(pattern_segments) == len(key_segments) and all(
        fnmatchcase(k, p) for p, k in zip(pattern_segments, key_segments, strict=True)
    )


@given(_simple_pattern, st.lists(_key, min_size=1, max_size=20))
@example("a*", ["ab", "a/b"])
@example("[a-]", ["-", "a", "b"])
@example("[!]a]", ["]", "b"])
def test_simple_globs_match_fnmatch_per_segment(pattern: str, keys: list[str]) -> None:
    assume("**" not in pattern)
    regex = compile_glob(pattern)
    for key in keys:
        assert bool(regex.fullmatch(key)) is _fnmatch_segments(pattern, key), (pattern, key)


def _reference(pattern_segments: list[str], key_segments: list[str]) -> bool:
    """Segment matcher: "**" is zero or more whole segments, or one or more when it is last."""
    if not pattern_segments:
        return not key_segments
    head, rest = pattern_segments[0], pattern_segments[1:]
    if head == "**":
        if not rest:
            return len(key_segments) >= 1
        return any(_reference(rest, key_segments[i:]) for i in range(len(key_segments) + 1))
    return bool(key_segments) and fnmatchcase(key_segments[0], head) and _reference(rest, key_segments[1:])


@given(
    st.lists(st.one_of(_segment, st.just("**")), min_size=1, max_size=4),
    st.lists(_key, min_size=1, max_size=20),
)
@example(["**", "a"], ["a", "b/a", "b/c/a", "ba"])
def test_double_star_segments_match_reference(segments: list[str], keys: list[str]) -> None:
    pattern = "/".join(segments)
    assume(all(s == "**" or "**" not in s for s in segments))  # "a**" crosses folders: not here
    regex = compile_glob(pattern)
    for key in keys:
        assert bool(regex.fullmatch(key)) is _reference(segments, key.split("/")), (pattern, key)


@given(st.lists(_simple_pattern, max_size=4), _key)
def test_compile_globs_is_any_of(patterns: list[str], key: str) -> None:
    combined = compile_globs(patterns)
    expected = any(compile_glob(p).fullmatch(key) for p in patterns)
    if combined is None:
        assert patterns == []
    else:
        assert bool(combined.fullmatch(key)) is expected


@pytest.mark.parametrize("pattern", ["", "scans/", "**/", "a/[z-a]", "[b-a]x"])
def test_never_matching_patterns_are_reported(pattern: str) -> None:
    assert glob_never_matches(pattern)


def test_trailing_slash_reason_suggests_double_star() -> None:
    reason = glob_never_matches("scans/")
    assert reason is not None
    assert "'scans/**'" in reason


@pytest.mark.parametrize("pattern", ["*", "**", "a/**", "[!/]", "a[", "x/[ab]"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert glob_never_matches(pattern) is None


@given(st.one_of(_simple_pattern, _simple_pattern.map(lambda p: p + "/")), _key)
def test_never_matching_patterns_match_no_file_key(pattern: str, key: str) -> None:
    assume(not key.endswith("/"))
    if glob_never_matches(pattern) is not None:
        assert not compile_glob(pattern).fullmatch(key)


# --- file types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ext", "kind"),
    [
        ("a.dcm", ".dcm", "dicom"),
        ("A.DCM", ".dcm", "dicom"),
        ("b.DiCoM", ".dicom", "dicom"),
        ("c.IMA", ".ima", "dicom"),
        ("brain.nii.gz", ".nii.gz", "nifti"),
        ("brain.NII.GZ", ".nii.gz", "nifti"),
        ("brain.nii", ".nii", "nifti"),
        ("x.gz", ".gz", None),
        ("v.nrrd", ".nrrd", "nrrd"),
        ("m.mha", ".mha", "metaimage"),
        ("m.mhd", ".mhd", "metaimage"),
        ("p.JPEG", ".jpeg", "image"),
        ("p.bmp", ".bmp", "image"),
        ("clip.MOV", ".mov", "video"),
        ("IM0001", "", None),
        (".dcm", "", None),  # a hidden file named ".dcm" has no extension
        (".nii.gz", ".gz", None),
    ],
)
def test_file_types(name: str, ext: str, kind: str | None) -> None:
    assert file_extension(name) == ext
    assert file_type("some/folder.nii/" + name) == kind


def test_prefix_base() -> None:
    assert prefix_base("") == ""
    assert prefix_base("scans/") == "scans/"
    assert prefix_base("scans/2024") == "scans/"
    assert prefix_base("2024") == ""


# --- FilterSpec validation and is_noop ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"types": ("dicoms",)}, "unknown file type 'dicoms'"),
        ({"types": ("nifti",), "dicom_no_extension": True}, "dicom_no_extension"),
        ({"include": ("scans/",)}, "include pattern never matches"),
        ({"exclude": ("",)}, "exclude pattern never matches"),
        ({"min_size": -1}, "min_size"),
        ({"min_size": 10, "max_size": 9}, "larger than max_size"),
        ({"modified_after": datetime(2026, 1, 1)}, "timezone-aware"),
        (
            {
                "modified_after": datetime(2026, 1, 2, tzinfo=UTC),
                "modified_before": datetime(2026, 1, 1, tzinfo=UTC),
            },
            "not before",
        ),
    ],
)
def test_spec_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FilterSpec(**kwargs)  # type: ignore[arg-type]


def test_is_noop() -> None:
    assert FilterSpec().is_noop
    assert FilterSpec(types=("any",)).is_noop
    assert FilterSpec(skip_side_files=False, prefix="x/").is_noop
    assert not FilterSpec(items_mode=True).is_noop
    assert not FilterSpec(skip_side_files=True).is_noop
    assert not FilterSpec(types=("dicom",)).is_noop
    assert not FilterSpec(include=("*",)).is_noop
    assert not FilterSpec(min_size=0).is_noop
    assert not FilterSpec(modified_before=datetime(2026, 1, 1, tzinfo=UTC)).is_noop


def test_noop_filter_keeps_everything_including_markers_and_empty_objects() -> None:
    f = RecordFilter(FilterSpec())
    records = [rec("a/"), rec("a/.hidden", 0), rec("a/notes.txt"), rec("a/x.dcm")]
    assert f.select(records) == records
    assert [f.check(r) for r in records] == [None] * 4
    assert f.matched == 8
    assert f.skipped == {}


# --- RecordFilter reasons ----------------------------------------------------------------------


def test_items_mode_reasons_in_order() -> None:
    f = RecordFilter(FilterSpec(items_mode=True, types=("dicom",), exclude=("**/bad/**",), prefix="p/"))
    cases = {
        "p/a/": "folder-marker",
        "p/.a/x.dcm": "hidden",
        "p/a/.x.dcm": "hidden",
        "p/a/info.JSON": "side-file",
        "p/a/readme.txt": "side-file",
        "p/a/x.png": "type",
        "p/a/bad/x.dcm": "excluded",
        "p/a/x.dcm": None,
    }
    for key, reason in cases.items():
        assert f.check(rec(key)) == reason, key
    assert f.check(rec("p/a/empty.dcm", size=0)) == "zero-byte"
    assert f.matched == 1
    assert f.skipped == {
        "folder-marker": 1,
        "hidden": 2,
        "side-file": 2,
        "type": 1,
        "excluded": 1,
        "zero-byte": 1,
    }
    assert set(f.skipped) <= set(SKIP_REASONS)


def test_listing_mode_keeps_zero_byte_and_side_files_but_not_markers() -> None:
    f = RecordFilter(FilterSpec(min_size=0))
    assert f.check(rec("a/empty", size=0)) is None
    assert f.check(rec("a/.hidden/notes.txt")) is None
    assert f.check(rec("a/")) == "folder-marker"


def test_skip_side_files_can_be_turned_off_in_items_mode() -> None:
    f = RecordFilter(FilterSpec(items_mode=True, skip_side_files=False))
    assert f.check(rec(".git/config")) is None
    assert f.check(rec("labels.json")) is None
    assert f.check(rec("zero", size=0)) == "zero-byte"


def test_hidden_is_judged_below_the_scanned_folder() -> None:
    f = RecordFilter(FilterSpec(items_mode=True, prefix=".data/scans"))
    assert f.check(rec(".data/scans1/x.dcm")) is None
    assert f.check(rec(".data/scans1/.cache/x.dcm")) == "hidden"


def test_globs_see_the_key_relative_to_the_scanned_folder() -> None:
    f = RecordFilter(FilterSpec(include=("2024-*/**",), prefix="scans/2024"))
    assert f.check(rec("scans/2024-01/a/b.dcm")) is None
    assert f.check(rec("scans/2024/a.dcm")) == "not-included"


def test_include_and_exclude() -> None:
    f = RecordFilter(FilterSpec(include=("**/*.dcm", "**/*.nii.gz"), exclude=("tmp/**",)))
    assert f.check(rec("a/b.dcm")) is None
    assert f.check(rec("c.nii.gz")) is None
    assert f.check(rec("a/b.png")) == "not-included"
    assert f.check(rec("tmp/b.dcm")) == "excluded"


def test_dicom_without_extension() -> None:
    spec = FilterSpec(types=("dicom",), dicom_no_extension=True)
    f = RecordFilter(spec)
    for key in ("s/IM0001", "s/1.2.840.113619.2.55.3.6046", "s/a.DCM"):
        assert f.check(rec(key)) is None, key
    for key in ("s/x.png", "s/v1.raw", "s/brain.nii"):
        assert f.check(rec(key)) == "type", key
    plain = RecordFilter(FilterSpec(types=("dicom",)))
    assert plain.check(rec("s/IM0001")) == "type"


def test_several_types() -> None:
    f = RecordFilter(FilterSpec(types=("nifti", "image")))
    assert f.check(rec("a.nii.gz")) is None
    assert f.check(rec("a.PNG")) is None
    assert f.check(rec("a.dcm")) == "type"


def test_size_bounds_are_inclusive() -> None:
    f = RecordFilter(FilterSpec(min_size=10, max_size=20))
    assert [f.check(rec("k", size=s)) for s in (9, 10, 20, 21)] == ["size", None, None, "size"]


def test_modified_window_is_half_open() -> None:
    after = datetime(2026, 1, 1, tzinfo=UTC)
    before = datetime(2026, 2, 1, tzinfo=UTC)
    f = RecordFilter(FilterSpec(modified_after=after, modified_before=before))
    assert f.check(rec("k", modified="2026-01-01T00:00:00.000Z")) is None
    assert f.check(rec("k", modified="2025-12-31T23:59:59.999Z")) == "modified"
    assert f.check(rec("k", modified="2026-02-01T00:00:00.000Z")) == "modified"
    assert f.check(rec("k", modified="2026-01-31T23:59:59.999Z")) is None
    # other spellings a compatible server might send
    assert f.check(rec("k", modified="2026-01-15T10:00:00Z")) is None
    assert f.check(rec("k", modified="2026-01-15T10:00:00+00:00")) is None
    assert f.check(rec("k", modified="2026-02-01T00:30:00+01:00")) is None
    assert f.check(rec("k", modified="not a time")) == "modified"


_times = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC),
)


@given(_times, _times, _times)
def test_fast_time_comparison_equals_datetime_comparison(a: datetime, b: datetime, t: datetime) -> None:
    assume(a < b)
    t = t.replace(microsecond=t.microsecond // 1000 * 1000)  # S3 has millisecond precision
    text = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    f = RecordFilter(FilterSpec(modified_after=a, modified_before=b))
    assert (f.check(rec("k", modified=text)) is None) is (a <= t < b)
    slow = text.replace(".000Z", "Z").replace("Z", "+00:00")
    assert (f.check(rec("k", modified=slow)) is None) is (a <= t < b)


def test_bound_in_another_zone() -> None:
    after = datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))  # midnight UTC
    f = RecordFilter(FilterSpec(modified_after=after))
    assert f.check(rec("k", modified="2026-01-01T00:00:00.000Z")) is None
    assert f.check(rec("k", modified="2025-12-31T23:59:59.999Z")) == "modified"


def test_counters_add_up() -> None:
    f = RecordFilter(FilterSpec(items_mode=True, types=("dicom",)))
    keys = ["a/", "a/b.dcm", "a/c.png", "a/.d.dcm", "a/e.txt", "a/f.dcm"]
    kept = f.select([rec(k) for k in keys])
    assert [r.key for r in kept] == ["a/b.dcm", "a/f.dcm"]
    assert f.matched + sum(f.skipped.values()) == len(keys)
    assert f.reason(rec("a/c.png")) == "type"
    assert f.skipped["type"] == 1  # reason() does not count


# --- CLI value parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("123", 123),
        ("0", 0),
        ("10MB", 10_000_000),
        ("10 mb", 10_000_000),
        ("1k", 1000),
        ("1GiB", 2**30),
        ("1.5KiB", 1536),
        ("0.5 GB", 500_000_000),
        ("2TB", 2 * 10**12),
        ("3 B", 3),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "-1", "1.5", "10 XB", "1e3", "ten", "1,000"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2026-01-01", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T12:30:00Z", datetime(2026, 1, 1, 12, 30, tzinfo=UTC)),
        ("2026-01-01T12:30:00+02:00", datetime(2026, 1, 1, 10, 30, tzinfo=UTC)),
        ("2026-01-01 00:00:00.5-01:00", datetime(2026, 1, 1, 1, 0, 0, 500_000, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, value: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == value
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "expected YYYY-MM-DD"),
        ("2026-13-01", "expected YYYY-MM-DD"),
        ("2026-01-01T12:00", "add a UTC offset"),
        ("", "expected YYYY-MM-DD"),
    ],
)
def test_parse_time_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text)
