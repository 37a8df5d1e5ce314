from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.keyspace import KeyRange, aligned_step, midpoint, ranges_from_boundaries, sibling_split, split

# Any valid key text: every plane, no surrogates (they cannot be UTF-8 encoded).
key_chars = st.characters(blacklist_categories=("Cs",))
keys = st.text(key_chars, max_size=12)
ascii_keys = st.text(st.sampled_from("0189/.-_azAZ~ \x00\x7f"), max_size=8)
any_keys = st.one_of(keys, ascii_keys)


def utf8_order(values: list[str]) -> list[str]:
    return sorted(values, key=lambda v: v.encode("utf-8"))


@given(any_keys, any_keys)
def test_midpoint_lies_strictly_between(a: str, b: str) -> None:
    low, high = sorted([a, b])
    middle = midpoint(low, high)
    if middle is not None:
        assert low < middle < high
        assert low.encode() < middle.encode() < high.encode()
        middle.encode("utf-8")  # a real key


@given(any_keys)
def test_midpoint_without_upper_bound_is_after_low(low: str) -> None:
    middle = midpoint(low, None)
    assert middle is not None
    assert middle > low


@given(any_keys, any_keys)
def test_midpoint_is_none_only_when_nothing_fits(a: str, b: str) -> None:
    low, high = sorted([a, b])
    if low != high and midpoint(low, high) is None:
        # The only gap without room: high is low followed by the smallest character.
        assert high == low + "\x00"


def test_utf8_order_is_str_order() -> None:
    values = ["a", "\x7f", "\x80", "\uffff", "\U00010000", "\U0010ffff", "\ue000", ""]
    assert sorted(values) == utf8_order(values)


@given(
    st.sets(any_keys, max_size=60),
    any_keys,
    st.integers(min_value=2, max_value=9),
    st.text("ab/", max_size=2),
)
@settings(max_examples=300)
def test_split_tiles_the_range_exactly(bucket: set[str], after: str, parts: int, prefix: str) -> None:
    keys = sorted(prefix + k for k in bucket)
    after = prefix + after
    whole = KeyRange(prefix, None, None)
    pieces = split(whole, after, parts)
    assert 1 <= len(pieces) <= parts
    assert pieces[0].start_after == after
    assert pieces[-1].end is None
    for left, right in itertools.pairwise(pieces):
        assert left.end == right.start_after
    for key in keys:
        owners = [p for p in pieces if p.contains(key)]
        assert len(owners) == (1 if key > after else 0), (key, pieces)


@given(st.sets(any_keys, min_size=1, max_size=40), st.integers(min_value=2, max_value=6))
def test_split_points_as_keys_are_listed_once(bucket: set[str], parts: int) -> None:
    """A key equal to a split point belongs to the range it ends, and to no other."""
    keys = sorted(bucket)
    pieces = split(KeyRange(""), keys[0], parts)
    points = [p.end for p in pieces[:-1]]
    extended = sorted({*keys, *(p for p in points if p is not None)})
    for key in extended:
        if key > keys[0]:
            assert sum(p.contains(key) for p in pieces) == 1


@given(st.sets(any_keys, max_size=40), st.lists(any_keys, max_size=30), st.integers(1, 20))
def test_ranges_from_boundaries_tile_the_prefix(bucket: set[str], bounds: list[str], parts: int) -> None:
    pieces = ranges_from_boundaries(KeyRange(""), bounds, parts)
    assert pieces[0].start_after is None
    assert pieces[-1].end is None
    assert len(pieces) <= max(parts, 1)
    for key in bucket:
        assert sum(p.contains(key) for p in pieces) == 1


@given(st.sets(any_keys, max_size=40), st.lists(any_keys, max_size=30), any_keys, st.integers(1, 20))
def test_ranges_from_boundaries_tile_a_partial_range(
    bucket: set[str], bounds: list[str], after: str, parts: int
) -> None:
    whole = KeyRange("", after, None)
    pieces = ranges_from_boundaries(whole, bounds, parts)
    for key in bucket:
        assert sum(p.contains(key) for p in pieces) == whole.contains(key)


@given(
    st.sets(any_keys, max_size=40),
    st.lists(any_keys, max_size=30),
    st.one_of(st.none(), any_keys),
    st.integers(1, 20),
    st.floats(0.5, 2000),
)
def test_ranges_aligned_to_pages_tile_the_range(
    bucket: set[str], bounds: list[str], after: str | None, parts: int, density: float
) -> None:
    whole = KeyRange("", after, None)
    pieces = ranges_from_boundaries(whole, bounds, parts, keys_per_boundary=density, page_keys=100)
    assert len(pieces) <= max(parts, 1)
    assert pieces[0].start_after == after
    assert pieces[-1].end is None
    for key in bucket:
        assert sum(p.contains(key) for p in pieces) == whole.contains(key)


@given(st.integers(0, 100_000), st.integers(0, 64), st.floats(0.01, 5000), st.sampled_from([10, 1000]))
@settings(max_examples=500)
def test_aligned_ranges_end_short_of_a_whole_page(
    folders: int, parts: int, keys_per_folder: float, page_keys: int
) -> None:
    step = aligned_step(folders, parts, keys_per_folder, page_keys)
    if step is None:
        return
    assert math.ceil(folders / step) <= parts
    pages = step * keys_per_folder / page_keys
    # Short of its whole number of pages by a quarter of a page at least, and past the one before.
    assert math.ceil(pages) - 1 < pages <= math.ceil(pages) - 0.25 + 1e-9


def test_folders_of_a_fifth_of_a_page_make_ranges_of_less_than_six_pages() -> None:
    """491 folders of 200 keys among 16 ranges: 33 folders a range, 6.6 pages, not 30.7 (6.1)."""
    assert aligned_step(491, 16, 200.0, 1000) == 33
    whole = KeyRange("", "s00019/x", None)
    folders = [f"s{n:05d}/" for n in range(500)]
    pieces = ranges_from_boundaries(whole, folders, 16, keys_per_boundary=200.0, page_keys=1000)
    assert [p.end for p in pieces[:3]] == ["s00052/", "s00085/", "s00118/"]
    assert len(pieces) == 15


def test_folders_too_large_to_align_with_are_cut_evenly() -> None:
    assert aligned_step(491, 16, 400.0, 1000) is None
    assert aligned_step(491, 16, 200.0, 100) is None
    whole = KeyRange("", None, None)
    folders = [f"s{n:05d}/" for n in range(64)]
    even = ranges_from_boundaries(whole, folders, 16)
    assert ranges_from_boundaries(whole, folders, 16, keys_per_boundary=400.0, page_keys=1000) == even


@given(any_keys, any_keys)
def test_request_prefix_covers_every_key_of_the_range(a: str, b: str) -> None:
    low, high = sorted([a, b])
    key_range = KeyRange("", low, high)
    narrowed = key_range.request_prefix()
    assert low.startswith(narrowed)
    assert high.startswith(narrowed)
    samples = [low + "x", high, high[:-1] if high else "", low + "\U0010ffff"]
    for key in samples:
        if key_range.contains(key):
            assert key.startswith(narrowed)


def test_hex_split_lands_inside_the_alphabet() -> None:
    pieces = split(KeyRange(""), "003e", 4)
    ends = [p.end for p in pieces[:-1]]
    assert all(e is not None and e < "\x80" for e in ends[:2])


@given(
    st.sets(any_keys, min_size=2, max_size=60),
    st.data(),
    st.one_of(st.none(), any_keys),
    st.integers(min_value=2, max_value=9),
    st.text("ab/", max_size=2),
)
@settings(max_examples=300)
def test_sibling_split_tiles_the_range_exactly(
    bucket: set[str], data: st.DataObject, end: str | None, parts: int, prefix: str
) -> None:
    keys = sorted(prefix + k for k in bucket)
    low = data.draw(st.integers(0, len(keys) - 2))
    high = data.draw(st.integers(low + 1, len(keys) - 1))
    first, last = keys[low], keys[high]
    end = None if end is None else prefix + end
    if end is not None and end <= last:
        end = None
    rest = KeyRange(prefix, last, end)
    # Whatever block size the page's density suggests, the parts still tile the range.
    minimum = data.draw(st.sampled_from([0, 1, 5_000, 10**9]))
    pieces = sibling_split(rest, first, last, parts, page_keys=high - low + 1, min_block_keys=minimum)
    assert 1 <= len(pieces) <= parts
    assert pieces[0].start_after == last
    assert pieces[-1].end == end
    for left, right in itertools.pairwise(pieces):
        assert left.end == right.start_after
        assert left.end is not None
        assert left.end.startswith(prefix)
        assert (left.start_after or "") < left.end
    for key in keys + [p.end for p in pieces if p.end is not None]:
        owners = [p for p in pieces if p.contains(key)]
        assert len(owners) == (1 if rest.contains(key) else 0), (key, pieces)


def test_sibling_split_follows_sequential_numbers() -> None:
    """Dense numbered keys: the parts are the next blocks of numbers, not slivers of bytes."""
    rest = KeyRange("big/", "big/000001999.bin", "small0/")
    pieces = sibling_split(rest, "big/000001000.bin", "big/000001999.bin", 4)
    assert [(p.start_after, p.end) for p in pieces] == [
        ("big/000001999.bin", "big/000002"),
        ("big/000002", "big/000003"),
        ("big/000003", "big/000004"),
        ("big/000004", "small0/"),
    ]
    # The last blocks of an alphabet: no sibling past its last character.
    near_end = KeyRange("", "img8871", None)
    assert sibling_split(near_end, "img8702", "img8871", 4) == [
        KeyRange("", "img8871", "img9"),
        KeyRange("", "img9", None),
    ]
    # Past the alphabet's end, the counter's digit before goes on, in blocks ten times larger.
    rest = KeyRange("", "n/00018999", None)
    assert [p.end for p in sibling_split(rest, "n/00018000", "n/00018999", 5)] == [
        "n/00019",
        "n/0002",
        "n/0003",
        "n/0004",
        None,
    ]
    # Hex counts from 9 to a: no part falls on the punctuation between them.
    hex_rest = KeyRange("", "h/08ff", None)
    assert [p.end for p in sibling_split(hex_rest, "h/08a0", "h/08ff", 4)] == ["h/09", "h/0a", "h/0b", None]
    # Keys that differ in a counter's leading digit: that digit counts up from the last key's.
    series = sibling_split(KeyRange("", "s/series7/a", None), "s/series2/a", "s/series7/a", 4)
    assert [p.end for p in series] == ["s/series8", "s/series9", None]
    flat = sibling_split(KeyRange("scans/", "scans/1f3", None), "scans/0a1", "scans/1f3", 4)
    assert [p.end for p in flat] == ["scans/2", "scans/3", "scans/4", None]
    # Blocks smaller than asked for, at the page's density, give way to the next level's.
    one_page_blocks = KeyRange("", "big/000000999.bin", None)
    ends = [p.end for p in sibling_split(one_page_blocks, "big/000000000.bin", "big/000000999.bin", 4)]
    assert ends == ["big/000001", "big/000002", "big/000003", None]
    sized = sibling_split(
        one_page_blocks, "big/000000000.bin", "big/000000999.bin", 4, page_keys=1000, min_block_keys=5000
    )
    assert [p.end for p in sized] == ["big/00001", "big/00002", "big/00003", None]
    first, last = "study01000/series0/img00.dcm", "study01004/series7/img24.dcm"
    sized = sibling_split(KeyRange("", last, None), first, last, 3, page_keys=1000, min_block_keys=5000)
    assert [p.end for p in sized] == ["study011", "study012", None]  # 100 studies each, not 10
    # When no level's blocks are that large, the coarsest level is kept.
    coarsest = sibling_split(rest, "n/00018000", "n/00018999", 3, page_keys=1000, min_block_keys=10**9)
    assert [p.end for p in coarsest] == ["n/1", "n/2", None]
    # Pages that do not differ inside a counter keep byte-wise splitting.
    assert len(sibling_split(KeyRange("", "s/_b", None), "s/-a", "s/_b", 4)) == 1
