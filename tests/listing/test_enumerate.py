"""The enumerator and the ordered output against an in-memory bucket with tiny pages."""

from __future__ import annotations

import itertools

import anyio
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.keyspace import KeyRange
from scanner.listing.enumerate import EnumerationStats, Enumerator, OutputSlot
from scanner.output.ordering import OrderedOutput, Segment
from scanner.records import ObjectRecord
from scanner.storage.base import ListPage
from tests.memory_source import MemoryBucket

key_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)
folder_keys = st.builds(
    lambda a, b, c: f"{a}/{b}/{c}",
    st.sampled_from(["s1", "s2", "s10", "t"]),
    st.text("xyz", max_size=2),
    key_text,
)
# Counters (sequential numbers, hex, letters) are where ranges split at sibling blocks.
numbered_keys = st.builds(
    lambda folder, number, form: f"{folder}/{format(number, form)}",
    st.sampled_from(["n", "n/a", "m9"]),
    st.integers(min_value=0, max_value=5000),
    st.sampled_from(["05d", "04x", "d"]),
)


async def scan_ordered(
    bucket: MemoryBucket,
    prefix: str,
    parallelism: int,
    budget: int,
    stats: list[EnumerationStats] | None = None,
) -> list[str]:
    output = OrderedOutput(memory_budget=budget, head_limit=64)
    written: list[bytes] = []

    async def emit(slot: OutputSlot, records: list[ObjectRecord]) -> None:
        assert isinstance(slot, Segment)
        await output.put(slot, orjson.dumps([r.key for r in records]) + b"\n")

    async def write(chunk: bytes) -> None:
        written.append(chunk)

    def split_slot(slot: OutputSlot, parts: list[KeyRange]) -> list[OutputSlot]:
        assert isinstance(slot, Segment)
        return list(output.insert_after(slot, [(p.start_after, p.end) for p in parts]))

    def finish_slot(slot: OutputSlot, complete: bool) -> None:
        assert isinstance(slot, Segment)
        output.finish(slot, complete)

    released: list[Segment] = []
    output.on_release = released.append

    enumerator = Enumerator(
        bucket,
        KeyRange(prefix),
        parallelism=parallelism,
        emit=emit,
        split_slot=split_slot,
        finish_slot=finish_slot,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(output.drain, write)
        await enumerator.run(output.first)
    output.close()
    if stats is not None:
        stats.append(enumerator.stats)
    # The segments the writer went through tile the key space, each listed to its end: what a
    # checkpoint relies on.
    assert released[0].after is None
    assert released[-1].end is None
    assert all(segment.complete for segment in released)
    for before, after in itertools.pairwise(released):
        assert before.end == after.after
    keys: list[str] = []
    for line in b"".join(written).splitlines():
        keys.extend(orjson.loads(line))
    return keys


@given(
    st.sets(st.one_of(key_text, folder_keys, numbered_keys), max_size=150),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=2, max_value=9),
    st.booleans(),
    st.sampled_from([0, 50, 10**9]),
    st.sampled_from(["", "s1/", "s", "t/x"]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_key_exactly_once_in_order(
    keys: set[str], parallelism: int, page_size: int, short: bool, budget: int, prefix: str
) -> None:
    bucket = MemoryBucket(sorted(keys), short_pages=short, page_size=page_size)
    got = anyio.run(scan_ordered, bucket, prefix, parallelism, budget)
    assert got == sorted(k for k in keys if k.startswith(prefix))


def test_split_points_that_are_keys() -> None:
    """Keys placed exactly on the midpoints the splitter picks are listed once."""
    from scanner.keyspace import split

    base = [f"k{i:03d}" for i in range(40)]
    extra = [p.end for p in split(KeyRange(""), "k004", 8)[:-1] if p.end]
    extra += [p.end for p in split(KeyRange(""), "k010", 3)[:-1] if p.end]
    bucket = MemoryBucket(base + extra, page_size=5)
    got = anyio.run(scan_ordered, bucket, "", 8, 10**9)
    assert got == sorted(set(base + extra))


def test_a_wide_bucket_fans_out_without_much_waste() -> None:
    """Splitting spreads a flat namespace over workers, and costs few wasted keys."""
    keys = [f"{i * 7919 % 20011:05d}-{i}" for i in range(20_000)]
    bucket = MemoryBucket(keys, short_pages=True, latency=0.002, per_key=0.00001)
    got = anyio.run(scan_ordered, bucket, "", 8, 10**9)
    assert got == sorted(keys)
    ideal_pages = len(keys) // 1000 + 1
    assert bucket.returned < len(keys) * 1.3
    assert len(bucket.requests) < ideal_pages * 4
    # More than one range was listed at a time.
    assert len({after for _, after, _ in bucket.requests}) > ideal_pages


def test_ranges_cut_at_folders_are_not_split_again_by_bytes() -> None:
    """Evenly filled folders: discovery's cuts balance the work, byte-wise cuts would only waste.

    Byte-wise midpoints of hierarchical keys mostly fall where no key is, and each split costs
    probes and a partial page where ranges meet: requests a CPU-bound server pays for in full.
    """
    keys = [f"study{s:03d}/series{r}/img{i:03d}.dcm" for s in range(40) for r in range(4) for i in range(25)]
    bucket = MemoryBucket(keys, page_size=100, latency=0.002)
    stats: list[EnumerationStats] = []
    assert anyio.run(scan_ordered, bucket, "", 8, 10**9, stats) == sorted(keys)
    assert stats[0].splits == 1  # the cut at discovery's folders, nothing after it
    assert stats[0].probes == 0
    assert len(bucket.requests) <= len(keys) // 100 + 8 + 3


def test_a_heavy_folder_still_fans_out_after_discovery() -> None:
    """One folder holds 90% of the keys: its range proves heavy and splits as it goes."""
    keys = [f"big/{i:06d}.bin" for i in range(18_000)]
    keys += [f"small{i % 9}/{i:06d}.bin" for i in range(2_000)]
    bucket = MemoryBucket(keys, page_size=100, latency=0.002)
    stats: list[EnumerationStats] = []
    assert anyio.run(scan_ordered, bucket, "", 8, 10**9, stats) == sorted(keys)
    assert stats[0].splits > 1
    # A range that starts at a byte-wise cut begins after a point that is no key.
    listed = set(keys)
    cut_inside_big = {a for _, a, _ in bucket.requests if a and a.startswith("big/") and a not in listed}
    assert len(cut_inside_big) >= 3
    # Blocks of numbers exactly a page long are the worst case: each part's full first page
    # needs a second request to find its end.
    assert bucket.returned < len(keys) * 1.5
    assert len(bucket.requests) < 2.5 * len(keys) / 100


def test_flat_names_are_cut_at_counter_blocks_without_discovery() -> None:
    """Random hex names in one folder: the first pages show the counter, and the rest is cut at
    its next blocks at once. The discovery started with the first page is called off: no probes,
    and no delimiter listing past the root's and its only folder's."""
    import random

    rng = random.Random(7)
    keys = sorted({f"scans/{rng.getrandbits(64):016x}.dcm" for _ in range(20_000)})
    bucket = MemoryBucket(keys, latency=0.002)
    stats: list[EnumerationStats] = []
    assert anyio.run(scan_ordered, bucket, "", 16, 10**9, stats) == keys
    assert sum(1 for _, _, delimiter in bucket.requests if delimiter) <= 2
    assert stats[0].probes == 0
    assert stats[0].ranges >= 8
    assert len(bucket.requests) <= len(keys) // 1000 + 16 + 4


class _SlowDiscovery(MemoryBucket):
    """Delimiter listings take ``discovery_latency`` (RGW walks its index for them); the order in
    which requests start, and how many delimiter listings were answered, are kept."""

    discovery_latency: float = 0.0
    started: list[str | None]
    answered_delimiter_listings: int = 0

    async def list_page(
        self,
        key_range: KeyRange,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        self.started.append(delimiter)
        if delimiter is not None:
            await anyio.sleep(self.discovery_latency)
        page = await super().list_page(key_range, delimiter=delimiter, token=token, max_keys=max_keys)
        if delimiter is not None:
            self.answered_delimiter_listings += 1
        return page


def _slow_discovery_bucket(keys: list[str], discovery_latency: float) -> _SlowDiscovery:
    bucket = _SlowDiscovery(keys, page_size=10, latency=0.005)
    bucket.discovery_latency = discovery_latency
    bucket.started = []
    return bucket


def test_discovery_starts_with_the_first_page() -> None:
    """The slow delimiter listing runs while the first pages are listed, not after them."""
    keys = [f"study{s:03d}/img{i:02d}" for s in range(100) for i in range(10)]
    bucket = _slow_discovery_bucket(keys, discovery_latency=0.05)
    stats: list[EnumerationStats] = []
    assert anyio.run(scan_ordered, bucket, "", 8, 10**9, stats) == keys
    assert bucket.started[:2] in (["/", None], [None, "/"])
    assert stats[0].ranges > 1


def test_a_prefix_of_one_page_does_not_wait_for_discovery() -> None:
    """A prefix listed in its first page is done then: the discovery started with it is called
    off, not waited for."""
    keys = [f"study{s:03d}/img0" for s in range(5)]
    bucket = _slow_discovery_bucket(keys, discovery_latency=0.5)
    assert anyio.run(scan_ordered, bucket, "", 8, 10**9) == keys
    assert bucket.started.count("/") == 1
    assert bucket.answered_delimiter_listings == 0


def test_keys_per_folder_come_from_the_whole_folders_of_a_page() -> None:
    """A short page (RGW's) spanning parts of five folders of 200 keys still says 200."""
    from scanner.listing.enumerate import _keys_per_boundary

    keys = [f"s{folder:03d}/{n:03d}" for folder in range(10) for n in range(200)]
    page = [ObjectRecord(key, 1, "2026-11-28T01:28:50.000Z", "e", "STANDARD") for key in keys[90:1017]]
    folders = [f"s{folder:03d}/" for folder in range(10)]
    assert _keys_per_boundary(page, folders) == 200.0
    within_one = page[:100]
    assert _keys_per_boundary(within_one, folders) is None


def test_ranges_cut_at_folders_are_sized_to_whole_pages() -> None:
    """100 folders of 200 keys, 1000-key pages, 16 requests in flight: ranges of 8 folders (1.6
    pages, two requests each) instead of 16 ranges of about 6 (1.2 pages, two requests too)."""
    keys = [f"study{s:03d}/img{i:03d}" for s in range(100) for i in range(200)]
    bucket = MemoryBucket(keys, latency=0.002)
    stats: list[EnumerationStats] = []
    assert anyio.run(scan_ordered, bucket, "", 16, 10**9, stats) == keys
    listings = [request for request in bucket.requests if request[2] is None]
    assert stats[0].ranges <= 14
    assert len(listings) <= 2 + 2 * 14


def test_ranges_past_a_wide_level_are_cut_evenly() -> None:
    """More folders than a delimiter page holds: the cuts end at the last folder it found, and
    the range past it splits itself; the ranges before it are not sized to pages."""
    keys = [f"f{folder:03d}/x{n:02d}" for folder in range(150) for n in range(20)]
    bucket = MemoryBucket(keys, page_size=100, latency=0.002)
    assert anyio.run(scan_ordered, bucket, "", 16, 10**9) == keys
    # The first 100 folders, cut evenly: ranges of about 6. Sized to 1000-key pages, they would
    # hold 37 folders (740 keys) each.
    cuts = sorted({a for _, a, delimiter in bucket.requests if a and a.endswith("/") and not delimiter})
    assert cuts[0] <= "f025/"
