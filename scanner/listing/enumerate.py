"""Enumerating a prefix exactly once with many concurrent ranges.

1. Discovery: one ``Delimiter="/"`` listing of the prefix (and of its only folders, while there
   are too few of them) finds common prefixes; it starts with the first page. When the first
   pages' keys differ only in a name (a counter, random hex), it is called off and the rest is
   cut at that name's next blocks at once. Otherwise the folders it found are real points of
   the key space, so the first ranges are cut there: each covers a run of consecutive folders,
   as many as end a little short of a whole number of pages at the density the listed pages
   show (a range of 6.1 pages costs 7 requests, one of 5.7 costs 6).
2. Each range is listed flat, page after page with ``StartAfter`` = the last key seen, and stops
   at its inclusive upper bound (the rest of that page belongs to the next range).
3. When a range comes back truncated and fewer ranges are alive than requests may be in flight,
   the rest of it, (last key seen, upper bound], is split: at the next blocks of a counter when
   the page ended inside one (``img0...`` -> ``img1``, ``img2``; blocks of a few pages at
   least, at the page's density), else at byte-wise midpoints.
   The worker keeps the first part and new workers take the others. So a flat or skewed key
   space fans out as it goes, and no hint is needed. Once discovery has cut the key space, a
   range splits only after it has proved heavy (a skewed folder), and the ranges split off it
   split freely: byte-wise cuts of hierarchical keys mostly land in empty space, and every
   split adds probes and partial pages the server pays for in full.

Every key lands in exactly one range (``keyspace`` proves the tiling), every page is checked to
start after its ``StartAfter`` (a server ignoring it would otherwise duplicate keys), and pages
are paged on ``IsTruncated``, never on page size (Ceph RGW returns short truncated pages).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import anyio
from anyio.abc import TaskGroup

from scanner.config import MAX_KEYS_PER_PAGE
from scanner.errors import ServerOrderDiffers, StartAfterIgnored
from scanner.keyspace import (
    KeyRange,
    estimate_remaining,
    name_counter_split,
    ranges_from_boundaries,
    sibling_split,
    split,
)
from scanner.listing.dialect import first_page_contradiction, order_break
from scanner.records import ObjectRecord, keys_of
from scanner.storage.base import ListPage, PageSource, next_token

__all__ = ["EnumerationStats", "Enumerator", "OutputSlot", "PageSource"]

# Discovery descends into a level's folders only while it has fewer than this many of them,
# and no deeper than this: a few requests, never a crawl of the tree.
_DISCOVERY_MAX_DEPTH: Final = 3
# Discovery and probes look for at most this many cut points, however many requests may be in
# flight: each costs a request, and ranges split themselves once they prove heavy. Cutting for
# every slot of --concurrency 1000 cost 2,131 requests on a 3,075-key bucket (12 at 16).
_MAX_CUT_PARTS: Final = 64
_MAX_SPLIT_WAYS: Final = 8
# A range cut at a byte-wise midpoint may well be empty, and then its first page is all keys of
# the next range, thrown away. Its first request asks for this many keys instead of a full page.
_PROBE_KEYS: Final = 100
# Splitting off less than this many keys costs more (a partly wasted page where the new range
# meets the next one) than it saves.
_MIN_KEYS_PER_PART: Final = 2 * MAX_KEYS_PER_PAGE
# After discovery has cut the key space at real points, a range splits only once it has listed
# this many pages: about 8,000 keys, more than its share unless the bucket is skewed or large.
# Splitting earlier costs requests and throughput, because the estimate of what is left is
# rough across folders (figures: benchmarks/results/design-figures-2026-12-03.md).
_PAGES_BEFORE_SPLIT_AFTER_CUTS: Final = 8
# A counter block of a page or two costs a request more to find where it ends than it holds
# pages: split at the next counter level up instead (blocks ten times larger), which saves
# requests on every layout measured (benchmarks/results/design-figures-2026-12-03.md).
_MIN_COUNTER_BLOCK_KEYS: Final = 5 * MAX_KEYS_PER_PAGE


class OutputSlot(Protocol):
    """Where one range's records go, in its own key order."""


class HandOver(Protocol):
    """Takes whole ranges off this process: to worker processes while it is CPU-bound, or to
    other pods of a sharded scan that have run out of work (``scanner.run.sharing``)."""

    def wants(self, remaining_keys: float) -> bool: ...

    def take(self, key_range: KeyRange, slot: OutputSlot) -> None: ...


EmitFn = Callable[[OutputSlot, Sequence[ObjectRecord]], Awaitable[None]]
# New slots for the ranges split off the end of a slot's range, in order.
SplitFn = Callable[[OutputSlot, list[KeyRange]], list[OutputSlot]]
# A slot gets no more records; ``complete`` says whether its range was listed to the end.
FinishFn = Callable[[OutputSlot, bool], None]


@dataclass
class EnumerationStats:
    ranges: int = 0
    ranges_done: int = 0
    splits: int = 0
    discarded_keys: int = 0
    probes: int = 0
    # Ranges handed whole to worker processes (``--processes auto``).
    handed_over: int = 0
    # The server ignored StartAfter, so the scan went on page by page with continuation tokens.
    sequential: bool = False


@dataclass
class _Folders:
    """What the root's discovery found, once ``done`` is set."""

    found: list[str] = field(default_factory=list)
    # Every folder of the level, not just the first page of a wide one: the cuts then span the
    # whole key space, and ranges can be sized to whole pages (``aligned_step``).
    complete: bool = False
    # The root's first delimited page: what the flat first page is checked against.
    first_page: ListPage | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class Enumerator:
    """Lists ``root`` through ``source`` and hands each range's records to ``emit``."""

    def __init__(
        self,
        source: PageSource,
        root: KeyRange,
        *,
        parallelism: int,
        emit: EmitFn,
        split_slot: SplitFn | None = None,
        finish_slot: FinishFn | None = None,
        hand_over: HandOver | None = None,
        vetted: anyio.Event | None = None,
    ) -> None:
        self._source = source
        self._hand_over = hand_over
        self._root = root
        self._parallelism = max(1, parallelism)
        self._cut_parts = min(self._parallelism, _MAX_CUT_PARTS)
        self._emit = emit
        # Without them every range shares one slot (output in arrival order, or none at all).
        self._split_slot: SplitFn = split_slot or _same_slot
        self._finish_slot: FinishFn = finish_slot or _nothing_to_finish
        self._alive = 0
        self._cuts_pending = False
        self._cuts: list[str] | None = None
        self._cuts_span_the_rest = False
        self._cut_at_discovered_points = False
        self.stats = EnumerationStats()
        # Set once the first answers have shown byte order and StartAfter (or the listing is
        # whole): output that cannot be taken back (standard output) waits for it.
        self.vetted = vetted if vetted is not None else anyio.Event()

    async def run(self, first_slot: OutputSlot) -> None:
        # Discovery (a delimiter listing of the root) is a slow request on some servers (RGW walks
        # its index to group prefixes: many pages' worth of server time), and nothing else can
        # fan the listing out: it starts with the first page, not after the first two. A prefix
        # that fits in one page pays one request more for it (called off, not waited for).
        folders = _Folders()
        async with anyio.create_task_group() as discovery:
            discovery.start_soon(self._discover_root_folders, folders)
            try:
                await self._run_lead(first_slot, folders)
            finally:
                discovery.cancel_scope.cancel()

    async def _run_lead(self, first_slot: OutputSlot, folders: _Folders) -> None:
        page = await self._list_page(self._root)
        if page.records:
            await self._emit(first_slot, page.records)
        if not page.is_truncated:
            self.vetted.set()
            self._finish_slot(first_slot, True)
            return
        if not page.records:
            await self._sequential(first_slot, page.next_token)
            return
        rest = self._root.after(page.records[-1].key)
        # One more page before fanning out: it shows whether the server honours StartAfter,
        # which every range relies on. Some S3-compatible stores ignore it; then the only exact
        # way on is the continuation token, one page after another.
        second = await self._list_page(rest)
        if second.records and second.records[0].key <= page.records[-1].key:
            raise StartAfterIgnored(
                f"the server ignored StartAfter (returned {second.records[0].key!r} "
                f"after {page.records[-1].key!r})"
            )
        if second.records:
            await self._emit(first_slot, second.records)
        if not second.is_truncated:
            self.vetted.set()
            self._finish_slot(first_slot, True)
            return
        if second.records:
            rest = rest.after(second.records[-1].key)
        # Keys that differ below a folder level (study00001/... to study00009/...) are cut best at
        # the folders discovery finds. Keys that differ within one name (a counter, random hex)
        # are cut at once at the blocks that follow: discovery, which for such keys finds no
        # folders and would fall back to rounds of probes, is called off.
        last = (second.records or page.records)[-1].key
        parts = name_counter_split(rest, page.records[0].key, last, self._parallelism)
        if len(parts) > 1:
            self.vetted.set()
            await self.run_ranges(parts, first_slot)
            return
        async with anyio.create_task_group() as group:
            # List the rest meanwhile, and cut it where discovery says once it answers.
            self._cuts_pending = True
            self._start(group, rest, first_slot, probe=False)
            try:
                self._cuts, self._cuts_span_the_rest = await self._cuts_in(rest, folders)
                self._vet(page, folders.first_page)
            finally:
                self._cuts_pending = False

    async def _discover_root_folders(self, folders: _Folders) -> None:
        try:
            if self._parallelism > 1:
                found = await self._discover_folders(self._root, self._cut_parts)
                folders.found, folders.complete, folders.first_page = found
        finally:
            folders.done.set()

    def _vet(self, first: ListPage, delimited: ListPage | None) -> None:
        """Check the flat first page against the delimited one: a walk-order server shows there."""
        if delimited is not None:
            contradiction = first_page_contradiction(
                keys_of(first.records),
                first.is_truncated,
                delimited.common_prefixes,
                keys_of(delimited.records),
            )
            if contradiction is not None:
                raise ServerOrderDiffers(f"the server does not list in byte order: {contradiction}")
        self.vetted.set()

    async def _list_page(
        self,
        key_range: KeyRange,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = MAX_KEYS_PER_PAGE,
    ) -> ListPage:
        """A page, checked for the byte order every range relies on."""
        page = await self._source.list_page(key_range, delimiter=delimiter, token=token, max_keys=max_keys)
        broken = None if page.in_key_order else order_break(keys_of(page.records))
        broken = broken or order_break(page.common_prefixes)
        if broken is not None:
            raise ServerOrderDiffers(f"the server does not list in byte order: {broken}")
        return page

    async def _cuts_in(self, rest: KeyRange, folders: _Folders) -> tuple[list[str], bool]:
        """Where to cut ``rest``: the root's folders inside it, or else real keys found by
        probing; and whether they are every folder of their level."""
        await folders.done.wait()
        boundaries = [b for b in folders.found if rest.contains(b)]
        if self._parallelism > 1 and len(boundaries) < self._cut_parts // 2:
            return boundaries + await self._probe_keys(rest, self._cut_parts), False
        return boundaries, folders.complete

    async def _sequential(self, slot: OutputSlot, token: str | None) -> None:
        """List on from ``token`` with continuation tokens only (no StartAfter, no splitting)."""
        complete = False
        self.vetted.set()
        try:
            while token is not None:
                page = await self._list_page(self._root, token=token)
                if page.records:
                    await self._emit(slot, page.records)
                if not page.is_truncated:
                    complete = True
                    return
                token = next_token(page, token)
        finally:
            self._finish_slot(slot, complete)

    async def plan(
        self, parts: int, lead_pages: int = 1, *, cut_at_counters: bool = True
    ) -> tuple[list[ObjectRecord], list[KeyRange]]:
        """The root's first pages, and up to ``parts`` ranges that tile the rest of the root.

        Most prefixes people scan fit in a page or two: listing ``lead_pages`` flat first makes
        that a request or two, with nothing to plan, and the pages are part of the output either
        way. Blocks of a counter differ in size from one digit to the next, which ranges that
        split themselves absorb; ``cut_at_counters=False`` plans from discovery only.
        """
        records: list[ObjectRecord] = []
        rest = self._root
        for _ in range(lead_pages):
            page = await self._list_page(rest)
            if records and page.records and page.records[0].key <= records[-1].key:
                raise StartAfterIgnored(f"the server ignored StartAfter (returned {page.records[0].key!r})")
            records.extend(page.records)
            if not page.is_truncated:
                return records, []
            if not page.records:
                return records, [rest]
            rest = self._root.after(records[-1].key)
        if cut_at_counters:
            ranges = name_counter_split(rest, records[0].key, records[-1].key, parts)
            if len(ranges) > 1:
                return records, ranges  # cut at a counter's blocks, as ``run`` does
        return records, ranges_from_boundaries(rest, await self._discover(rest, parts), parts)

    async def run_ranges(self, ranges: Sequence[KeyRange], first_slot: OutputSlot) -> None:
        """List ``ranges`` (in key order) concurrently; the first one continues ``first_slot``."""
        if not ranges:
            self._finish_slot(first_slot, True)
            return
        slots = [first_slot, *self._split_slot(first_slot, list(ranges[1:]))]
        await self.run_slots(list(zip(ranges, slots, strict=True)))

    async def run_slots(self, work: Sequence[tuple[KeyRange, OutputSlot]]) -> None:
        """List each range into its own slot, concurrently (a resumed scan's unfinished ranges)."""
        # Ranges planned at discovered points, or left by a scan that was: they split by bytes
        # only once heavy, as the ones ``run`` cuts.
        self._cut_at_discovered_points = len(work) > 1
        # Planned or resumed ranges were cut on a server already listed in byte order.
        self.vetted.set()
        async with anyio.create_task_group() as group:
            for key_range, slot in work:
                self._start(group, key_range, slot, probe=False)

    async def _discover(self, rest: KeyRange, parts: int) -> list[str]:
        """Where to cut ``rest``: common prefixes, or else real keys found by probing."""
        if parts < 2:
            return []
        boundaries, _, _ = await self._discover_folders(rest, parts)
        if len(boundaries) < parts // 2 and rest.start_after is not None:
            boundaries += await self._probe_keys(rest, parts)
        return boundaries

    async def _probe_keys(self, rest: KeyRange, parts: int) -> list[str]:
        """Real keys spread over ``rest``, from two rounds of one-key probes.

        A flat namespace has no folders to cut at. Probes at byte-wise midpoints each return the
        first key after their point; the first round finds where the keys end (most of the
        byte space past them is empty), the second spreads its probes over the part that holds
        keys. Each round is one round trip of tiny requests.
        """
        assert rest.start_after is not None
        found: set[str] = set()
        low, high = rest.start_after, rest.end
        for _ in range(2):
            points = [p.start_after for p in split(KeyRange(rest.prefix, low, high), low, parts)[1:]]
            keys: list[str] = []

            async def probe(point: str | None, keys: list[str] = keys, high: str | None = high) -> None:
                page = await self._list_page(KeyRange(rest.prefix, point, high), max_keys=1)
                self.stats.probes += 1
                if page.records and point is not None and page.records[0].key <= point:
                    raise StartAfterIgnored(
                        f"the server ignored StartAfter (returned {page.records[0].key!r})"
                    )
                if page.records and (high is None or page.records[0].key <= high):
                    keys.append(page.records[0].key)

            async with anyio.create_task_group() as group:
                for point in points:
                    group.start_soon(probe, point)
            found.update(keys)
            if not keys:
                break
            high = max(keys)
        return sorted(found)

    async def _discover_folders(self, rest: KeyRange, parts: int) -> tuple[list[str], bool, ListPage | None]:
        """Common prefixes in ``rest`` found by a few delimiter listings, whether they are all
        of the level's (False when the level is wider than a page), and the first page."""
        boundaries: list[str] = []
        level = [rest]
        first: ListPage | None = None
        for _ in range(_DISCOVERY_MAX_DEPTH):
            found: list[str] = []
            for key_range in level:
                page = await self._list_page(key_range, delimiter="/")
                first = first or page
                found.extend(page.common_prefixes)
                if page.is_truncated:
                    # A wide level. Its folders cut the part of the key space this page saw,
                    # and the range past them splits itself as it goes. Its keys are no use as
                    # cut points: they crowd a sliver of a flat namespace.
                    return [*boundaries, *found], False, first
            boundaries.extend(found)
            if len(boundaries) >= parts or not found or len(found) > parts:
                break
            level = [KeyRange(prefix) for prefix in found]
        return boundaries, True, first

    def _start(
        self,
        group: TaskGroup,
        key_range: KeyRange,
        slot: OutputSlot,
        *,
        probe: bool,
        split_off: bool = False,
    ) -> None:
        self._alive += 1
        self.stats.ranges += 1
        group.start_soon(self._list_range, group, key_range, slot, probe, split_off)

    # Longer than a screen: one page loop whose token, end and split state live in locals on
    # the hot path (a page per iteration), rather than in an object passed around.
    async def _list_range(
        self,
        group: TaskGroup,
        key_range: KeyRange,
        slot: OutputSlot,
        probe: bool,
        split_off: bool,
    ) -> None:
        token: str | None = None
        max_keys = _PROBE_KEYS if probe else MAX_KEYS_PER_PAGE
        complete = False
        # A range split off a heavy one lies in a heavy region: it has nothing left to prove.
        pages = _PAGES_BEFORE_SPLIT_AFTER_CUTS if split_off else 0
        try:
            while True:
                page = await self._list_page(key_range, token=token, max_keys=max_keys)
                pages += 1
                # Full pages from here on, even near the range's end: a request costs about the
                # same whatever its max-keys (RGW's server time, S3's round trip), so a short
                # page saves nothing and one guessed too short costs another request. The keys past
                # the end are dropped.
                max_keys = MAX_KEYS_PER_PAGE
                records = page.records
                after = key_range.start_after
                if records and after is not None and token is None and records[0].key <= after:
                    raise StartAfterIgnored(
                        f"the server ignored StartAfter (returned {records[0].key!r} after {after!r})"
                    )
                end = key_range.end
                finished = not page.is_truncated
                if end is not None and records and records[-1].key > end:
                    cut = _count_up_to(records, end)
                    self.stats.discarded_keys += len(records) - cut
                    records = records[:cut]
                    finished = True
                if records:
                    await self._emit(slot, records)
                if finished:
                    complete = True
                    return
                if records:
                    key_range = key_range.after(records[-1].key)
                    token = None
                else:
                    # A truncated page without keys: only the token can move on.
                    token = next_token(page, token)
                if token is None:
                    cuts_waiting = self._cuts is not None
                    kept = self._maybe_split(group, key_range, slot, records, pages)
                    if kept is None:  # the rest went to a worker process
                        complete = True
                        return
                    key_range, max_keys = kept
                    if cuts_waiting and self._cuts is None:
                        # Cut at discovery's folders like every other range, it has as much to
                        # prove before it splits again: its pages so far say nothing of its part.
                        pages = 0
        finally:
            self._alive -= 1
            self.stats.ranges_done += 1
            self._finish_slot(slot, complete)

    def _maybe_split(
        self,
        group: TaskGroup,
        rest: KeyRange,
        slot: OutputSlot,
        page: Sequence[ObjectRecord],
        pages_listed: int,
    ) -> tuple[KeyRange, int] | None:
        """Give idle request slots the upper parts of ``rest``; keep the first part.

        Returns the part kept and how many keys its next request asks for, or None when all of
        ``rest`` went to a worker process.
        """
        unsplit = (rest, MAX_KEYS_PER_PAGE)
        if self._cuts_pending:
            return unsplit  # discovery will cut better than bytes can
        if self._cuts is not None:
            kept = self._split_at_cuts(group, rest, slot, page)
            if kept is not None:
                return kept, MAX_KEYS_PER_PAGE
        if rest.start_after is None:
            return unsplit
        remaining = min(estimate_remaining(page[0].key, page[-1].key, len(page), rest.end), 1e9)
        if self._hand_over is not None and self._hand_over.wants(remaining):
            self._hand_over.take(rest, self._split_slot(slot, [rest])[0])
            self.stats.handed_over += 1
            return None
        idle = self._parallelism - self._alive
        if idle < 1:
            return unsplit
        if self._cut_at_discovered_points and pages_listed < _PAGES_BEFORE_SPLIT_AFTER_CUTS:
            return unsplit
        # A page that ended inside a counter shows where the next keys are: the next blocks of
        # it (of at least a few pages each, at the page's density), each most likely full, so
        # each new part starts with a full page. The part kept here is what is left of the
        # page's own block, often little: it probes first.
        ways = min(idle + 1, int(remaining // MAX_KEYS_PER_PAGE))
        parts = [rest]
        if ways > 1:
            first, last, block = page[0].key, page[-1].key, _MIN_COUNTER_BLOCK_KEYS
            parts = sibling_split(rest, first, last, ways, page_keys=len(page), min_block_keys=block)
        if len(parts) > 1:
            return self._hand_out(group, parts, slot, probe=False, split_off=True), _PROBE_KEYS
        ways = min(idle + 1, _MAX_SPLIT_WAYS, int(remaining // _MIN_KEYS_PER_PART))
        if ways < 2:
            return unsplit
        parts = split(rest, rest.start_after, ways)
        if len(parts) < 2:
            return unsplit
        # Keys cluster (folders, dense runs of digits) where byte-wise cuts cannot see it, so a
        # cut range may well be empty: its first request only probes.
        return self._hand_out(group, parts, slot, probe=True, split_off=True), MAX_KEYS_PER_PAGE

    def _split_at_cuts(
        self, group: TaskGroup, rest: KeyRange, slot: OutputSlot, page: Sequence[ObjectRecord]
    ) -> KeyRange | None:
        """Cut ``rest`` at the points discovery found (once); the part kept, or None if no cut."""
        assert self._cuts is not None
        cuts, self._cuts = sorted(self._cuts), None
        # Sized to whole pages only when the cuts cover the rest: past the last folder of a
        # wide level lies a range that splits itself as it goes, and ranges of one size all
        # finishing together would leave it to be split many ways at once.
        density = _keys_per_boundary(page, cuts) if self._cuts_span_the_rest else None
        parts = ranges_from_boundaries(
            rest,
            cuts,
            self._parallelism - self._alive + 1,
            keys_per_boundary=density,
            page_keys=MAX_KEYS_PER_PAGE,
        )
        if len(parts) < 2:
            return None
        self._cut_at_discovered_points = True
        return self._hand_out(group, parts, slot, probe=False)

    def _hand_out(
        self,
        group: TaskGroup,
        parts: list[KeyRange],
        slot: OutputSlot,
        *,
        probe: bool,
        split_off: bool = False,
    ) -> KeyRange:
        """Start workers for all but the first of ``parts``; the caller keeps the first."""
        self.stats.splits += 1
        new_slots = self._split_slot(slot, parts[1:])
        for part, new_slot in zip(parts[1:], new_slots, strict=True):
            self._start(group, part, new_slot, probe=probe, split_off=split_off)
        return parts[0]


def _same_slot(slot: OutputSlot, parts: list[KeyRange]) -> list[OutputSlot]:
    return [slot] * len(parts)


def _nothing_to_finish(slot: OutputSlot, complete: bool) -> None:
    pass


def _keys_per_boundary(page: Sequence[ObjectRecord], boundaries: list[str]) -> float | None:
    """Keys between two of the sorted ``boundaries``, from the whole folders ``page`` holds.

    The page's own length would mislead: servers cut pages short. None when the page holds no
    whole folder (folders larger than a page: nothing to align).
    """
    keys = keys_of(page)
    inside = boundaries[bisect.bisect_right(boundaries, keys[0]) : bisect.bisect_left(boundaries, keys[-1])]
    if len(inside) < 2:
        return None
    between = bisect.bisect_right(keys, inside[-1]) - bisect.bisect_right(keys, inside[0])
    return between / (len(inside) - 1)


def _count_up_to(records: Sequence[ObjectRecord], end: str) -> int:
    """How many records (sorted by key) have ``key <= end``."""
    return bisect.bisect_right(records, end, key=lambda r: r.key)
