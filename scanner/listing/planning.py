"""Where the keys are: the sample a shard plan is cut from.

A plan has to cut the key space into parts of similar key counts without listing it, and S3 has
no way to count keys in a range. What one request can tell is where the keys after a point are:
``ListObjectsV2`` with ``StartAfter`` returns the next page of (up to 1,000) real keys. So the
sampler keeps a model of the key space as a row of *listed* stretches, whose keys it has seen
and counted exactly, and *gaps* between them, whose counts it estimates, and spends a bounded
number of page requests ("probes") where the estimates are least certain:

1. The first page, then the data's common prefix (every key under ``archive/`` puts every cut
   point there, not in the empty rest of the alphabet): one round of probes, each just past
   the keys that start with a longer prefix of the first key.
2. Rounds of probes into the gaps, as many at once as requests may be in flight. A gap's count is
   estimated from the densities next to it, a page's worth of keys at the end of the stretch
   before it and at the start of the one after; its *bound*, what it holds at the denser of
   the two, decides where probes go, so the edge of a dense folder next to sparse ones is
   probed until it is found. A probe whose page reaches the next stretch closes the gap: a
   bucket that fits in the budget ends up listed whole, and its plan is exact.
3. Cut points at even shares of the total: a sampled key inside a listed stretch, or a point at
   the estimated position inside a gap.

Densities are measured on a ``KeyScale``, not on raw bytes. Byte-wise, keys are nothing like
evenly spread: ``img0000000`` to ``img9999999`` use 10 of 256 values at each position, so a page
of them looks 25 times denser than the run of ten thousand it is part of, and interpolating
between pages would misjudge every gap. The scale divides the room of each prefix evenly among
the characters that follow it in the sample, so counters, hex names, dates and trees of
similar folders become evenly spread numbers, and densities hold across levels.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio

from scanner.config import MAX_KEYS_PER_PAGE
from scanner.errors import ScanError
from scanner.keyspace import KeyRange, midpoint, split
from scanner.records import keys_of
from scanner.storage.base import PageSource

# Past every key of a block: a key would have to start with its prefix and this character.
BLOCK_END: Final = "\U0010ffff"
# Every this many keys of a page is kept as a possible cut point and as what the scale is
# built from: cuts inside listed stretches are off by at most half that many keys.
_SAMPLE_STRIDE: Final = 16
# Until this many keys are listed every one is kept: the shards of a small prefix are small, and
# a cut a stride off would unbalance them.
_KEEP_EVERY_KEY_UP_TO: Final = 65_536
# Characters past this position of a tail do not move it on the scale.
_MAX_POSITIONS: Final = 160
# The first key's prefixes probed at most (spread over its length) to find the block.
_MOST_PREFIXES: Final = 64
# The ratio of two widths on the scale as a float, capped: a gap next to a dense folder may well
# be astronomically wider than the folder's page, and its bound then only needs to be "huge".
_RATIO_CAP: Final = 1e30
# One probe in this many is spread over the gaps by their byte-wise width instead of placed by
# bound. The bounds are only as good as the scale, which has no room for characters the sample
# has not shown yet: after its first pages a bucket of random names looks as if its keys were
# all in the little the sample has seen, and probes by bound alone would find the rest one
# character per round. A quarter is what balanced random names without costing regular layouts
# or outsized folders (figures: benchmarks/results/design-figures-2026-12-03.md).
_EXPLORE: Final = 4
# Every this many pairs of neighbouring keys of a page show where characters end (``Alphabet``).
_PAIR_STRIDE: Final = 8
_END: Final = -1  # the end of a tail, before every character
_DIGITS: Final = range(ord("0"), ord("9") + 1)
_HEX_LOWER: Final = range(ord("a"), ord("f") + 1)
_HEX_POINTS: Final = frozenset(range(ord("0"), ord("9") + 1)) | frozenset(range(ord("a"), ord("f") + 1))


T = TypeVar("T")


class ServerOrderError(ScanError):
    """The server does not list in UTF-8 byte order from ``StartAfter``: no plan can rely on it."""


def _common_length(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    common = 0
    while common < limit and a[common] == b[common]:
        common += 1
    return common


class Alphabet:
    """What the sample shows at each position of the tails (what follows the block's prefix):
    the characters there, where tails end, and which characters were a last or first child.

    Two keys listed one right after the other that first differ at position ``j`` show that at
    every position after ``j`` the first key's character is the last under its prefix and the
    second key's the first; so does a probe past a prefix's keys (the last) and the first key
    after any probe point (the first). Where a position has digits, the digits the sample
    lacks get room (a counter's ``2`` and ``3`` between a seen ``1`` and ``4``, hex ``b`` to
    ``f`` after a seen ``a``), up to ``9`` (``f``) and down to ``0`` unless the highest (lowest)
    digit seen there was also seen to be a last (first) child: ``0``, ``1`` and ``2`` of a
    folder level that never has a ``3`` leave no room for it. Letters get no such room: names
    spelt with them (``small``, ``series``) are no counters.
    """

    def __init__(self) -> None:
        self.seen: list[set[int]] = []
        self.last: list[set[int]] = []
        self.first: list[set[int]] = []
        self.size = 0

    def _grow(self, length: int) -> None:
        while len(self.seen) < min(length, _MAX_POSITIONS + 1):
            self.seen.append(set())
            self.last.append(set())
            self.first.append(set())

    def _add(self, chars: set[int], code_point: int) -> None:
        if code_point not in chars:
            chars.add(code_point)
            self.size += 1

    def add(self, tail: str) -> None:
        length = min(len(tail), _MAX_POSITIONS)
        self._grow(length + 1)
        for index in range(length):
            self._add(self.seen[index], ord(tail[index]))
        if len(tail) <= _MAX_POSITIONS:
            self._add(self.seen[length], _END)

    def add_neighbours(self, before: str, after: str) -> None:
        """Two tails listed one right after the other."""
        common = _common_length(before, after)
        self._grow(max(len(before), len(after)))
        for index in range(common + 1, min(len(before), _MAX_POSITIONS)):
            self._add(self.last[index], ord(before[index]))
        for index in range(common + 1, min(len(after), _MAX_POSITIONS)):
            self._add(self.first[index], ord(after[index]))

    def add_first(self, point: str, key: str) -> None:
        """``key`` is the first tail after ``point``."""
        common = _common_length(point, key)
        self._grow(len(key))
        for index in range(common + 1, min(len(key), _MAX_POSITIONS)):
            self._add(self.first[index], ord(key[index]))

    def add_last(self, prefix: str, key: str | None) -> None:
        """``key`` is the first tail after every tail that starts with ``prefix`` (a real
        tail's prefix; None: none follows)."""
        common = _common_length(prefix, key) if key is not None else -1
        self._grow(len(prefix))
        for index in range(common + 1, min(len(prefix), _MAX_POSITIONS)):
            self._add(self.last[index], ord(prefix[index]))

    def weighted(self, index: int) -> list[int]:
        """The characters (and ``_END``) that get room at position ``index``, in order."""
        seen = self.seen[index]
        chars = set(seen)
        digits = [c for c in seen if c in _DIGITS]
        if digits:
            low = min(digits) if min(digits) in self.first[index] else _DIGITS.start
            letters = [c for c in seen if c in _HEX_LOWER]
            if letters and seen <= _HEX_POINTS:
                high = max(letters) if max(letters) in self.last[index] else _HEX_LOWER.stop - 1
                chars.update(range(low, _DIGITS.stop))
                chars.update(range(_HEX_LOWER.start, high + 1))
            else:
                high = max(digits) if max(digits) in self.last[index] else _DIGITS.stop - 1
                chars.update(range(low, high + 1))
        return sorted(chars)


class KeyScale:
    """A monotone map from tails to integers ``0..total``: each position a digit of a
    mixed-radix number whose digits are the characters with room there (``Alphabet``).

    Sorted keys map to non-decreasing numbers. A character without room at its position maps
    to where the next one starts, and what follows it no longer counts: keys nothing in the
    sample suggests take no room, so a page's density holds across the levels of a tree, and
    the probes that find such keys add their characters.
    """

    def __init__(self, alphabet: Alphabet) -> None:
        self._chars = [alphabet.weighted(index) for index in range(len(alphabet.seen))]
        units = [1] * (len(self._chars) + 1)
        for index in range(len(self._chars) - 1, -1, -1):
            units[index] = units[index + 1] * max(1, len(self._chars[index]))
        # _units[i + 1]: the room of one character at position i.
        self._units = units
        self.total = units[0]
        self.built_from = alphabet.size
        self._values: dict[str, int] = {}

    def value(self, tail: str) -> int:
        known = self._values.get(tail)
        if known is None:
            known = self._values[tail] = self._value(tail)
        return known

    def _value(self, tail: str) -> int:
        value = 0
        for index, chars in enumerate(self._chars):
            code_point = ord(tail[index]) if index < len(tail) else _END
            at = bisect.bisect_left(chars, code_point)
            value += at * self._units[index + 1]
            if code_point == _END or at == len(chars) or chars[at] != code_point:
                break
        return value

    def tail_at(self, value: int) -> str:
        """A tail whose value is at most ``value`` and as close to it as the scale tells
        (``value`` clamped to the scale): a probe or cut point."""
        value = min(max(value, 0), self.total - 1)
        out: list[str] = []
        for index, chars in enumerate(self._chars):
            if not chars:
                break
            at, value = divmod(value, self._units[index + 1])
            code_point = chars[min(at, len(chars) - 1)]
            if code_point == _END:
                break
            out.append(chr(code_point))
        return "".join(out)


@dataclass
class Stretch:
    """Keys listed exactly: every key in ``(start, last]`` (``start`` None: from the beginning).

    ``samples`` are (rank, key) pairs, rank 1 being the first key, with the last key among them.
    ``more`` says whether keys may follow ``last`` (the page was truncated); one that ends
    without them ends the key space.
    """

    start: str | None
    count: int
    first: str | None
    last: str | None
    samples: list[tuple[int, str]]
    more: bool

    @classmethod
    def from_keys(
        cls, start: str | None, keys: Sequence[str], more: bool, stride: int = _SAMPLE_STRIDE
    ) -> Stretch:
        # Short pages keep every key: a small bucket's plan is then exact to the key.
        stride = min(stride, max(1, len(keys) // 64))
        samples = [(rank, keys[rank - 1]) for rank in range(stride, len(keys) + 1, stride)]
        if keys and (not samples or samples[-1][0] != len(keys)):
            samples.append((len(keys), keys[-1]))
        first = keys[0] if keys else None
        last = keys[-1] if keys else None
        return cls(start, len(keys), first, last, samples, more)

    def joined(self, right: Stretch) -> Stretch:
        """This stretch and ``right``, which starts where this one's keys end."""
        samples = self.samples + [(rank + self.count, key) for rank, key in right.samples]
        return Stretch(
            self.start,
            self.count + right.count,
            self.first if self.count else right.first,
            right.last if right.count else self.last,
            samples,
            right.more,
        )


@dataclass
class Gap:
    """Unlisted keys after stretch ``left``: ``(after, before]``, ``lo..hi`` on the scale.

    ``estimate`` is its count at the mean density of the nearest stretches on either side,
    ``bound`` at the denser one's.
    """

    left: int
    after: str
    before: str | None  # None: up to the end of the block
    lo: int
    hi: int
    estimate: float
    bound: float


@dataclass
class Sample:
    """What the sampler found: the block every key lies in (the data's common prefix), the
    stretches and gaps in key order, and the requests it took."""

    block: str
    stretches: list[Stretch]
    gaps: list[Gap]
    requests: int
    scale: KeyScale = field(repr=False)

    @property
    def exact(self) -> bool:
        return not self.gaps

    @property
    def estimated_keys(self) -> float:
        return sum(s.count for s in self.stretches) + sum(g.estimate for g in self.gaps)


async def _all(probe: Callable[[T], Coroutine[Any, Any, None]], items: Sequence[T]) -> None:
    """``probe`` of every item, concurrently; a failure comes out as itself, not in a group
    (the first one: the others are of the same request, or cancelled by it)."""
    try:
        async with anyio.create_task_group() as group:
            for item in items:
                group.start_soon(probe, item)
    except BaseExceptionGroup as group_error:
        raise _first(group_error) from None


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        failures = [e for e in error.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        error = (failures or list(error.exceptions))[0]
    return error


def _allot(weights: Sequence[float], probes: int) -> list[int]:
    """``probes`` shared among ``weights`` (largest remainder first); no share more than half
    while others have weight: a weight can be wildly off, and the next round knows more."""
    shares = [0] * len(weights)
    live = sum(1 for weight in weights if weight > 0)
    most = max(4, probes // 2) if live > 1 else probes
    for _ in range(probes):
        open_ = [i for i, weight in enumerate(weights) if shares[i] < most and weight > 0]
        if not open_:
            break
        best = max(open_, key=lambda i: weights[i] / (shares[i] + 1))
        shares[best] += 1
    return shares


def _byte_fraction(key: str, skip: int) -> float:
    raw = key.encode("utf-8", "surrogatepass")[skip : skip + 8]
    return int.from_bytes(raw.ljust(8, b"\0")) / 2.0**64


def _ratio(numerator: int, denominator: int) -> float:
    if denominator <= 0 or numerator >= denominator * int(_RATIO_CAP):
        return _RATIO_CAP
    return numerator / denominator


@dataclass
class _Page:
    keys: list[str]
    truncated: bool


class Sampler:
    """Builds a ``Sample`` of ``prefix`` through ``source`` with at most ``budget`` requests,
    ``parallel`` at a time."""

    def __init__(self, source: PageSource, prefix: str, *, budget: int, parallel: int) -> None:
        self._source = source
        self._prefix = prefix
        self._budget = max(2, budget)
        self._parallel = max(1, parallel)
        self.requests = 0
        self.rounds = 0
        self._block = prefix
        self._stretches: list[Stretch] = []
        self._alphabet = Alphabet()
        self._scale_now: KeyScale | None = None
        # What pages showed, for the alphabet: added once the block is known (positions count
        # from its end). Sample keys, neighbouring keys, the first key after each probe point,
        # and the first key past each prefix probed past.
        self._pending: list[str] = []
        self._pending_pairs: list[tuple[str, str]] = []
        self._pending_firsts: list[tuple[str, str]] = []
        self._pending_lasts: list[tuple[str, str | None]] = []

    async def run(self) -> Sample:
        first = await self._page(None, self._prefix)
        self._stretches = [Stretch.from_keys(None, first.keys, first.truncated, self._stride())]
        self._learn(self._stretches[0], first.keys)
        if first.truncated and first.keys:
            await self._find_block(first.keys[0])
            while self.requests < self._budget:
                scale = self._scale()
                gaps = self._gaps(scale)
                # The budget, not the bounds, ends the sampling: a bound is only as good as the
                # scale, and the scale is wrong exactly where the sample has not looked yet.
                if not any(gap.bound > 0 for gap in gaps):
                    break
                await self._probe_gaps(scale, gaps, min(self._parallel, self._budget - self.requests))
                self.rounds += 1
        scale = self._scale()
        return Sample(self._block, self._stretches, self._gaps(scale), self.requests, scale)

    def _stride(self) -> int:
        listed = sum(stretch.count for stretch in self._stretches)
        return 1 if listed < _KEEP_EVERY_KEY_UP_TO else _SAMPLE_STRIDE

    def _learn(self, stretch: Stretch, keys: Sequence[str]) -> None:
        self._pending.extend(key for _, key in stretch.samples)
        if stretch.first is not None:
            self._pending.append(stretch.first)
        for index in range(1, len(keys), _PAIR_STRIDE):
            self._pending_pairs.append((keys[index - 1], keys[index]))

    def _scale(self) -> KeyScale:
        """The scale, rebuilt whenever the alphabet has grown: on the old one, keys that differ
        only in a new character would collapse onto one point."""
        skip, block = len(self._block), self._block
        for key in self._pending:
            if key.startswith(block):
                self._alphabet.add(key[skip:])
        for before, after in self._pending_pairs:
            if before.startswith(block) and after.startswith(block):
                self._alphabet.add_neighbours(before[skip:], after[skip:])
        for point, key in self._pending_firsts:
            if point.startswith(block) and key.startswith(block):
                self._alphabet.add_first(point[skip:], key[skip:])
        for prefix, found in self._pending_lasts:
            if prefix.startswith(block):
                inside = found is not None and found.startswith(block)
                self._alphabet.add_last(prefix[skip:], found[skip:] if inside and found else None)
        self._pending.clear()
        self._pending_pairs.clear()
        self._pending_firsts.clear()
        self._pending_lasts.clear()
        if self._scale_now is None or self._alphabet.size > self._scale_now.built_from:
            self._scale_now = KeyScale(self._alphabet)
        return self._scale_now

    # --- requests -------------------------------------------------------------------------

    async def _page(self, after: str | None, prefix: str) -> _Page:
        page = await self._source.list_page(KeyRange(prefix, after, None), max_keys=MAX_KEYS_PER_PAGE)
        self.requests += 1
        # The parser has checked the page's order already; its key column needs no records made.
        keys = list(keys_of(page.records))
        if not page.in_key_order or (after is not None and keys and keys[0] <= after):
            raise ServerOrderError(
                "the server does not list keys in UTF-8 byte order after StartAfter, which shard "
                "plans rely on: scan without --shard (one process or --processes N)"
            )
        if after is not None and after.endswith(BLOCK_END):
            if keys or not page.is_truncated:
                self._pending_lasts.append((after[: -len(BLOCK_END)], keys[0] if keys else None))
        elif after is not None and keys:
            self._pending_firsts.append((after, keys[0]))
        return _Page(keys, page.is_truncated)

    async def _find_block(self, first_key: str) -> None:
        """Narrow the block to the longest prefix of the first key that every key has.

        ``holds(n)``: no key lies past the keys that start with ``first_key[:n]``. It holds for
        the scan's own prefix and, once false, stays false for longer prefixes. One round of
        probes, one past each prefix of the first key, finds the longest that holds; the others
        return the first keys of the next folder, counter block or name at each level below
        it, the sample's first view of how the keys branch.
        """
        low = len(self._prefix)
        lengths = list(range(low + 1, len(first_key) + 1))
        if len(lengths) > _MOST_PREFIXES:
            lengths = sorted({lengths[i * len(lengths) // _MOST_PREFIXES] for i in range(_MOST_PREFIXES)})
        results: dict[int, _Page] = {}

        async def probe(length: int) -> None:
            results[length] = await self._page(first_key[:length] + BLOCK_END, self._prefix)

        await _all(probe, lengths)
        for length in lengths:
            if results[length].keys or results[length].truncated:
                break
            low = length
        self._block = first_key[:low]
        for length in sorted(results, reverse=True):
            page = results[length]
            if page.keys and page.keys[0].startswith(self._block):
                self._insert_page(first_key[:length] + BLOCK_END, page.keys, page.truncated)

    async def _probe_gaps(self, scale: KeyScale, gaps: list[Gap], probes: int) -> None:
        """Probe the gaps: most of the round where the bounds are largest, the rest spread by
        byte-wise width (``_EXPLORE``)."""
        explore = probes // _EXPLORE
        by_bound = _allot([gap.bound for gap in gaps], probes - explore)
        widths = [self._byte_width(gap) for gap in gaps]
        by_width = _allot(widths, explore)
        points: set[str] = set()
        for gap, share, spread in zip(gaps, by_bound, by_width, strict=True):
            if share:
                points.update(self._points_in(scale, gap, share))
            if spread:
                ceiling = gap.before if gap.before is not None else self._block + BLOCK_END
                parts = split(KeyRange(self._block, gap.after, ceiling), gap.after, spread + 1)
                points.update(p.start_after for p in parts[1:] if p.start_after is not None)
        results: list[tuple[str, _Page]] = []

        async def probe(point: str) -> None:
            results.append((point, await self._page(point, self._block)))

        await _all(probe, sorted(points))
        # From the right: each page then meets the stretch after it as that one will stay.
        for point, page in sorted(results, reverse=True, key=lambda item: item[0]):
            self._insert_page(point, page.keys, page.truncated)

    def _byte_width(self, gap: Gap) -> float:
        """The gap's width byte-wise: its ends' UTF-8 bytes after the block as fractions."""
        skip = len(self._block.encode())
        ceiling = gap.before if gap.before is not None else self._block + BLOCK_END
        return _byte_fraction(ceiling, skip) - _byte_fraction(gap.after, skip)

    def _points_in(self, scale: KeyScale, gap: Gap, share: int) -> list[str]:
        """Up to ``share`` probe points in ``gap``, in key order.

        The first lists on from the gap's start: a gap of less than a page is then closed,
        whatever the scale makes of it. Then points at even steps on the scale, and as many at
        byte-wise midpoints: the scale has no room for characters the sample has not shown
        (past the last one seen, the rest of Unicode), and only byte-wise probes find keys
        there.
        """
        ceiling = gap.before if gap.before is not None else self._block + BLOCK_END
        on_scale = share // 2
        bytewise = share - 1 - on_scale
        candidates = {gap.after}
        for j in range(1, on_scale + 1):
            candidates.add(self._block + scale.tail_at(gap.lo + (gap.hi - gap.lo) * j // (on_scale + 1)))
        if bytewise:
            parts = split(KeyRange(self._block, gap.after, ceiling), gap.after, bytewise + 1)
            candidates.update(part.start_after for part in parts[1:] if part.start_after is not None)
        return sorted(point for point in candidates if gap.after <= point < ceiling)

    # --- the model ------------------------------------------------------------------------

    def _insert_page(self, point: str, keys: list[str], truncated: bool) -> None:
        """Add what a page listed after ``point`` showed: a new stretch, joined to its
        neighbours where it reaches them."""
        starts = [s.start or "" for s in self._stretches]
        index = bisect.bisect_right(starts, point) - 1
        left = self._stretches[index]
        if not left.more:
            return  # the key space ends before the point
        joins_left = left.last is not None and point <= left.last
        if joins_left:
            assert left.last is not None
            keys = keys[bisect.bisect_right(keys, left.last) :]
            point = left.last
        right = self._stretches[index + 1] if index + 1 < len(self._stretches) else None
        meets = False
        if right is not None:
            assert right.start is not None
            inside = keys[: bisect.bisect_right(keys, right.start)]
            # The page went past where ``right`` starts, or ended: nothing lies between them.
            meets = len(inside) < len(keys) or not truncated
            keys = inside
        if not keys and truncated and not meets:
            return  # a truncated page without keys says nothing of where they are
        stretch = Stretch.from_keys(point, keys, truncated and not meets, self._stride())
        self._learn(stretch, keys)
        # Where the page continues a stretch, or runs into one, the keys on either side of the
        # seam were listed one right after the other.
        if joins_left and keys:
            self._pending_pairs.append((point, keys[0]))
        if meets and right is not None and right.first is not None:
            before = keys[-1] if keys else (point if joins_left else None)
            if before is not None:
                self._pending_pairs.append((before, right.first))
        if joins_left:
            stretch = left.joined(stretch)
        if meets:
            assert right is not None
            stretch = stretch.joined(right)
        low = index if joins_left else index + 1
        high = index + 1 + (1 if meets else 0)
        self._stretches[low:high] = [stretch]

    def _gaps(self, scale: KeyScale) -> list[Gap]:
        """The gaps between the stretches, each with its estimate and bound."""
        skip = len(self._block)
        stretches = self._stretches
        ends = [self._end_densities(scale, stretch) for stretch in stretches]
        # The nearest densities on either side: a stretch too short to measure one (or an end
        # of the key space) passes the question on to the next.
        before_gap: list[tuple[int, int] | None] = []
        for _, tail_density in ends:
            before_gap.append(tail_density or (before_gap[-1] if before_gap else None))
        after_gap: list[tuple[int, int] | None] = [None] * (len(ends) + 1)
        for index in range(len(ends) - 1, -1, -1):
            after_gap[index] = ends[index][0] or after_gap[index + 1]
        gaps: list[Gap] = []
        for index, stretch in enumerate(stretches):
            if not stretch.more or stretch.last is None:
                continue
            before = stretches[index + 1].start if index + 1 < len(stretches) else None
            lo = scale.value(stretch.last[skip:])
            hi = scale.total if before is None else scale.value(before[skip:])
            width = max(0, hi - lo)
            if width > 0:
                nearest = (before_gap[index], after_gap[index + 1])
                guesses = [_ratio(keys * width, span) for keys, span in filter(None, nearest)]
            else:
                # Both ends fall on one point of the scale (keys no sample suggests, or past
                # what it tells apart): take the gap for a page's worth until a probe says more.
                guesses = [float(min(stretch.count, MAX_KEYS_PER_PAGE))]
            estimate = sum(guesses) / len(guesses) if guesses else 0.0
            # A gap no stretch tells anything about may still hold keys: probe it.
            bound = max(guesses) if guesses else 1.0
            gaps.append(Gap(index, stretch.last, before, lo, hi, estimate, bound))
        return gaps

    def _end_densities(
        self, scale: KeyScale, stretch: Stretch
    ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(keys, width) of about a page at each end of ``stretch``: from its start point to a
        page in, and from a page before its last key to it. A long stretch may span parts of
        the key space of other densities; what is next to a gap is what tells about it."""
        skip = len(self._block)
        if not stretch.samples or stretch.last is None:
            return None, None
        ranks = [rank for rank, _ in stretch.samples]
        head_at = min(bisect.bisect_left(ranks, MAX_KEYS_PER_PAGE), len(ranks) - 1)
        head_rank, head_key = stretch.samples[head_at]
        start = scale.value(stretch.start[skip:]) if stretch.start is not None else None
        head = None
        if start is not None:
            width = scale.value(head_key[skip:]) - start
            head = (head_rank, width) if width > 0 else None
        tail_from = stretch.count - MAX_KEYS_PER_PAGE
        tail_at = max(0, bisect.bisect_right(ranks, tail_from) - 1)
        tail_rank, tail_key = stretch.samples[tail_at]
        tail = None
        if tail_from > 0 or stretch.start is None:
            low_key = tail_key if tail_from > 0 else stretch.first
            low_rank = tail_rank if tail_from > 0 else 1
            if low_key is not None and stretch.count > low_rank:
                width = scale.value(stretch.last[skip:]) - scale.value(low_key[skip:])
                tail = (stretch.count - low_rank, width) if width > 0 else None
        elif start is not None:
            width = scale.value(stretch.last[skip:]) - start
            tail = (stretch.count, width) if width > 0 else None
        return head, tail


def cut_points(sample: Sample, count: int) -> tuple[list[str], list[float]]:
    """Up to ``count - 1`` increasing cut points that share the sample's keys evenly, and the
    keys each of the ``len(cuts) + 1`` parts is estimated to hold."""
    total = sample.estimated_keys
    if count < 2 or total <= 0:
        return [], [total]
    gaps = {gap.left: gap for gap in sample.gaps}
    cuts: list[str] = []
    below: list[float] = []  # estimated keys up to and including each cut
    passed = 0.0
    target_index = 1

    def target() -> float:
        return total * target_index / count

    for index, stretch in enumerate(sample.stretches):
        ranks = [rank for rank, _ in stretch.samples]
        while target_index < count and passed + stretch.count >= target():
            wanted = target() - passed
            at = bisect.bisect_left(ranks, wanted)
            # The nearer of the two samples around the wanted rank.
            if at > 0 and (at == len(ranks) or wanted - ranks[at - 1] <= ranks[at] - wanted):
                at -= 1
            rank, key = stretch.samples[at]
            if not cuts or key > cuts[-1]:
                cuts.append(key)
                below.append(passed + rank)
            target_index += 1
        passed += stretch.count
        gap = gaps.get(index)
        if gap is None:
            continue
        while target_index < count and gap.estimate > 0 and passed + gap.estimate >= target():
            share = (target() - passed) / gap.estimate
            value = gap.lo + ((gap.hi - gap.lo) * int(share * 2**53) >> 53)
            point = sample.block + sample.scale.tail_at(value)
            ceiling = gap.before if gap.before is not None else sample.block + BLOCK_END
            low = cuts[-1] if cuts and cuts[-1] > gap.after else gap.after
            if not low < point < ceiling:
                point = midpoint(low, ceiling, sample.block) or ""
            if point and (not cuts or point > cuts[-1]):
                cuts.append(point)
                below.append(target())
            target_index += 1
        passed += gap.estimate
    bounds = [0.0, *below, total]
    return cuts, [high - low for low, high in itertools.pairwise(bounds)]
