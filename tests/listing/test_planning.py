"""The sample shard plans are cut from: the scale, the sampler's model, and how balanced the
plans are on the benchmark layouts (an in-memory ListObjectsV2 that counts requests)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.plan_balance import layout_keys
from scanner.config import S3Location
from scanner.listing.plan import plan_budget, plan_from_source
from scanner.listing.planning import Alphabet, KeyScale, Sample, Sampler, ServerOrderError, cut_points
from tests.memory_source import MemoryBucket

# Code points of every width in UTF-8, the ends of the planes included (no surrogates).
any_char = st.characters(blacklist_categories=("Cs",))
tails = st.text(any_char, max_size=8)


def scale_of(samples: list[str], neighbours: Sequence[tuple[str, str]] = ()) -> KeyScale:
    alphabet = Alphabet()
    for tail in samples:
        alphabet.add(tail)
    for before, after in neighbours:
        alphabet.add_neighbours(before, after)
    return KeyScale(alphabet)


@given(st.lists(tails, max_size=30), st.lists(tails, min_size=2, max_size=30))
def test_the_scale_keeps_key_order(samples: list[str], queries: list[str]) -> None:
    scale = scale_of(samples)
    ordered = sorted(queries)
    values = [scale.value(tail) for tail in ordered]
    assert values == sorted(values)
    assert all(0 <= value <= scale.total for value in values)


@given(st.lists(tails, min_size=1, max_size=30), st.integers(min_value=0))
def test_a_point_of_the_scale_lies_at_or_before_its_value(samples: list[str], seed: int) -> None:
    scale = scale_of(samples)
    value = seed % scale.total
    assert scale.value(scale.tail_at(value)) <= value


def test_a_counter_is_evenly_spread_on_the_scale() -> None:
    """Byte-wise, ``0``-``9`` are 10 of 256 values: a page of a counter looks far denser than the
    run it is part of. On the scale, a thousand keys of a million take a thousandth of it."""
    keys = [f"{n:06d}" for n in range(0, 1_000_000, 997)]
    scale = scale_of(keys)
    width = scale.value("001999") - scale.value("001000")
    assert width / scale.total == pytest.approx(1 / 1000, rel=0.01)


def test_digits_a_level_was_seen_to_end_at_get_no_room() -> None:
    """``0``-``2`` of a folder level whose last child was listed: ``3`` to ``9`` take no room;
    without that evidence they would, as a counter's missing digits do."""
    samples = [f"{a}/{b}" for a in "012" for b in "012"]

    def share_of_its_folder(scale: KeyScale) -> float:
        """How much of folder 0/'s room its keys 0/0 to 0/2 take."""
        return (scale.value("0/2") - scale.value("0/0")) / (scale.value("1/0") - scale.value("0/0"))

    assert share_of_its_folder(scale_of(samples)) == pytest.approx(2 / 10)
    assert share_of_its_folder(scale_of(samples, [("0/2", "1/0"), ("1/2", "2/0")])) == pytest.approx(2 / 3)


def test_the_scale_has_no_room_for_letters_a_name_lacks() -> None:
    scale = scale_of(["small0/1", "small1/1", "big/1"])
    assert scale.value("smallz") == scale.value("small~")  # past what the sample has: one point


def run_sampler(keys: list[str], *, budget: int, parallel: int = 16) -> tuple[MemoryBucket, Sampler, Sample]:
    bucket = MemoryBucket(keys)
    sampler = Sampler(bucket, "", budget=budget, parallel=parallel)
    return bucket, sampler, anyio.run(sampler.run)


@settings(max_examples=40, deadline=None)
@given(
    st.sets(st.text(st.sampled_from("ab/0129é😀"), min_size=1, max_size=6), max_size=3000),
    st.integers(2, 40),
    st.integers(1, 8),
)
def test_the_sample_counts_what_it_listed_exactly(keys: set[str], budget: int, parallel: int) -> None:
    bucket, sampler, sample = run_sampler(sorted(keys), budget=budget, parallel=parallel)
    assert sampler.requests == len(bucket.requests) <= max(2, budget) + 64  # + the block probes
    listed = bucket.keys
    for stretch in sample.stretches:
        low = 0 if stretch.start is None else bisect.bisect_right(listed, stretch.start)
        high = bisect.bisect_right(listed, stretch.last) if stretch.last is not None else low
        assert stretch.count == high - low
        for rank, key in stretch.samples:
            assert listed[low + rank - 1] == key
    if sample.exact:
        assert sum(s.count for s in sample.stretches) == len(listed)


@settings(max_examples=30, deadline=None)
@given(st.sets(st.text(st.sampled_from("ab/09é"), min_size=1, max_size=5), max_size=400), st.integers(1, 9))
def test_cuts_increase_and_estimates_add_up(keys: set[str], count: int) -> None:
    _, _, sample = run_sampler(sorted(keys), budget=50)
    cuts, estimates = cut_points(sample, count)
    assert cuts == sorted(set(cuts))
    assert len(cuts) <= count - 1
    assert len(estimates) == len(cuts) + 1
    assert sum(estimates) == pytest.approx(sample.estimated_keys)


def test_a_server_that_ignores_start_after_is_refused() -> None:
    class Ignoring(MemoryBucket):
        async def list_page(self, key_range, **kwargs):  # type: ignore[no-untyped-def,override]
            return await super().list_page(type(key_range)(key_range.prefix), **kwargs)

    bucket = Ignoring([f"k{n:05d}" for n in range(5000)])
    with pytest.raises(ServerOrderError, match="StartAfter"):
        anyio.run(Sampler(bucket, "", budget=100, parallel=4).run)


def shard_sizes(keys: list[str], count: int, budget: int | None = None) -> tuple[list[int], int]:
    """Keys in each shard of a plan of ``keys``, and the requests the plan took."""
    bucket = MemoryBucket(keys)
    location = S3Location("bucket", "")
    plan = anyio.run(
        lambda: plan_from_source(bucket, location, count, budget=budget or plan_budget(count), parallel=16)
    )
    assert len(plan.ranges) == count
    sizes = []
    for key_range in plan.ranges:
        low = 0 if key_range.start_after is None else bisect.bisect_right(bucket.keys, key_range.start_after)
        high = len(bucket.keys) if key_range.end is None else bisect.bisect_right(bucket.keys, key_range.end)
        sizes.append(high - low)
    assert sum(sizes) == len(bucket.keys)  # the ranges tile the keys
    assert plan.requests == len(bucket.requests)
    return sizes, plan.requests


def test_one_top_folder_is_cut_inside_it() -> None:
    """The issue's buckets: 3,000 keys under archive/ gave 3000/0/0/0; 50,000 under scans/,
    50000/0/0/0. Every cut point now lies among the keys."""
    for keys in (
        [f"archive/{n:06d}.dcm" for n in range(3000)],
        [f"scans/{n // 250:04d}/{n % 250:03d}.dcm" for n in range(50_000)],
    ):
        sizes, requests = shard_sizes(keys, 4)
        assert max(sizes) <= 1.02 * len(keys) / 4, sizes
        assert requests < 200, requests


LAYOUTS = ["dicom", "flat", "skewed", "deep", "unicode", "studies", "clustered", "dated"]


@pytest.mark.parametrize("count", [4, 16, 64])
@pytest.mark.parametrize("layout", [*LAYOUTS, *(f"archive/{name}" for name in LAYOUTS)])
def test_plans_of_100k_keys_are_balanced(layout: str, count: int) -> None:
    """The default budget lists a bucket of this size whole: the plan is exact (to the sampling
    stride), whatever the layout."""
    keys = layout_keys(layout, 100_000)
    sizes, requests = shard_sizes(keys, count)
    assert max(sizes) <= 1.25 * len(keys) / count, sizes
    assert requests <= plan_budget(count) + 64


@pytest.mark.parametrize("layout", ["dicom", "flat", "studies"])
def test_plans_estimated_from_a_sample_of_regular_layouts_are_balanced(layout: str) -> None:
    """400,000 keys, 128 requests (a third of the pages): what is cut inside gaps is estimated.
    Layouts whose structure repeats estimate well; see the README for those that do not."""
    keys = layout_keys(layout, 400_000)
    sizes, requests = shard_sizes(keys, 4, budget=128)
    assert max(sizes) <= 1.25 * len(keys) / 4, sizes
    assert requests <= 128 + 64
