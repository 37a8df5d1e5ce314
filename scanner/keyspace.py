"""Key ranges and how to split them.

S3 returns keys in UTF-8 byte order, which for valid Unicode strings is the same as Python's
``str`` order (code point order). A ``KeyRange`` is the half-open interval ``(start_after, end]``
of keys under a prefix: ``StartAfter`` is exclusive and S3 has no end key, so the upper bound is
inclusive and enforced by the lister. Ranges made by ``split`` tile their parent exactly: every
key of the parent falls in exactly one child, including keys equal to a split point (they belong
to the range whose inclusive upper bound they are).

Split points are real keys (valid Unicode), chosen at byte-wise midpoints: the distance between
two characters is measured on their UTF-8 encodings, so ASCII-dense key spaces get split finely
and the sparse upper planes of Unicode cost few probes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

MAX_CODE_POINT: Final = 0x10FFFF
_SURROGATES: Final = range(0xD800, 0xE000)
# A digit past every real character: the "infinity" a range without an upper bound ends at.
_BEYOND: Final = MAX_CODE_POINT + 1


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys ``k`` with ``k.startswith(prefix)`` and ``start_after < k <= end``.

    ``start_after=None`` means from the first key under the prefix; ``end=None`` means up to the
    last one. Both bounds, when set, start with ``prefix``.
    """

    prefix: str
    start_after: str | None = None
    end: str | None = None

    def contains(self, key: str) -> bool:
        return (
            key.startswith(self.prefix)
            and (self.start_after is None or key > self.start_after)
            and (self.end is None or key <= self.end)
        )

    def request_prefix(self) -> str:
        """The longest prefix every key of the range shares: narrower requests waste less.

        Any string between two strings that share a prefix also has that prefix, so the common
        prefix of the bounds is a valid (and still IAM-compatible, since it extends the user's
        prefix) ``Prefix`` for the request.
        """
        if self.start_after is None or self.end is None:
            return self.prefix
        common = _common_prefix(self.start_after, self.end)
        return common if len(common) > len(self.prefix) else self.prefix

    def after(self, key: str) -> KeyRange:
        """The rest of this range once ``key`` has been listed."""
        return KeyRange(self.prefix, key, self.end)

    def with_end(self, end: str | None) -> KeyRange:
        return KeyRange(self.prefix, self.start_after, end)


def _common_prefix(a: str, b: str) -> str:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]


# Lead bytes 0x80-0xC1 and 0xF5-0xFF never start a UTF-8 character: the weight scale leaves them
# out, so a midpoint between ASCII and "past everything" still lands on a useful character.
_LEAD_GAP: Final = 0xC2 - 0x80
_WEIGHT_BEYOND: Final = (0xF5 - _LEAD_GAP) << 24


def _utf8_weight(code_point: int) -> int:
    """Position of a character on a byte-wise scale: its UTF-8 bytes as a 4-byte number."""
    if code_point >= _BEYOND:
        return _WEIGHT_BEYOND
    raw = chr(code_point).encode("utf-8", "surrogatepass").ljust(4, b"\0")
    lead = raw[0] if raw[0] < 0x80 else raw[0] - _LEAD_GAP
    return (lead << 24) | int.from_bytes(raw[1:])


def _char_at_weight(weight: int) -> int:
    """The smallest valid character whose weight is at least ``weight`` (or _BEYOND)."""
    if weight >= _WEIGHT_BEYOND:
        return _BEYOND
    raw = bytearray(weight.to_bytes(4))
    if raw[0] < 0x80:
        return raw[0]
    raw[0] += _LEAD_GAP
    lead = raw[0]
    length = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    candidate = raw[:length]
    for i in range(1, length):
        candidate[i] = min(max(candidate[i], 0x80), 0xBF)
    try:
        code_point = ord(bytes(candidate).decode("utf-8"))
    except UnicodeDecodeError:
        # Overlong, surrogate or out-of-range forms: go on from the next lead byte.
        return _char_at_weight((lead + 1 - _LEAD_GAP) << 24)
    if _utf8_weight(code_point) < weight:
        code_point += 1
    if code_point in _SURROGATES:
        return _SURROGATES.stop
    return code_point


def _between(lo: int, hi: int) -> int | None:
    """A character strictly between code points ``lo`` and ``hi`` (``lo`` may be -1), or None."""
    if hi - lo < 2:
        return None
    low_weight = -1 if lo < 0 else _utf8_weight(lo)
    mid = _char_at_weight((low_weight + _utf8_weight(hi)) // 2 + 1)
    if mid <= lo:
        mid = lo + 1
    if mid in _SURROGATES:
        mid = _SURROGATES.stop
    return mid if lo < mid < hi else None


def midpoint(low: str, high: str | None, prefix: str = "") -> str | None:
    """A key strictly between ``low`` and ``high`` (``None``: past every key under ``prefix``).

    Returns None when no such key exists (``high`` is ``low`` plus the smallest character).
    """
    position = len(prefix)
    while True:
        lo = ord(low[position]) if position < len(low) else -1
        if high is None:
            hi = _BEYOND
        elif position < len(high):
            hi = ord(high[position])
        else:
            return None  # high is a prefix of low's head, so nothing fits in between
        if lo == hi:
            position += 1
            continue
        middle = _between(lo, hi)
        if middle is not None:
            return low[:position] + chr(middle)
        if lo < 0:
            # low ended and high goes on with the smallest character: low + "\0" still fits
            # unless that is all high is.
            return low[:position] + "\x00" if position + 1 < len(high or "") else None
        # Adjacent characters: keep low's character and look for room after it, where the
        # upper bound no longer constrains (anything starting with low[:position+1] is < high).
        high = None
        position += 1


def split(key_range: KeyRange, after: str, parts: int) -> list[KeyRange]:
    """Split the rest of ``key_range`` past key ``after`` into up to ``parts`` ranges.

    The result tiles ``(after, key_range.end]`` exactly, in key order. Fewer ranges come back
    when the interval cannot be divided further.
    """
    points: list[str] = []
    _split_points(after, key_range.end, key_range.prefix, parts, points)
    bounds: list[str | None] = [after, *points, key_range.end]
    return [KeyRange(key_range.prefix, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _split_points(low: str, high: str | None, prefix: str, parts: int, out: list[str]) -> None:
    if parts < 2:
        return
    middle = midpoint(low, high, prefix)
    if middle is None:
        return
    left = parts // 2
    _split_points(low, middle, prefix, left, out)
    out.append(middle)
    _split_points(middle, high, prefix, parts - left, out)


# The alphabets a counter in a key is written in, each with its last character: a sibling past
# it would only cut empty ranges (the last range takes everything after the last cut anyway).
_ALPHABETS: Final = (("0123456789", "9"), ("0123456789abcdef", "f"), ("abcdefghijklmnopqrstuvwxyz", "z"))
_UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _counter_ceiling(*chars: str) -> str | None:
    """The last character of the narrowest alphabet holding all ``chars``, if any does."""
    for alphabet, last in _ALPHABETS:
        if all(c in alphabet for c in chars):
            return last
    return "Z" if all(c in _UPPER for c in chars) else None


def sibling_split(
    rest: KeyRange, first: str, last: str, parts: int, *, page_keys: int = 0, min_block_keys: int = 0
) -> list[KeyRange]:
    """Split ``rest`` at the blocks that follow the one a page from ``first`` to ``last`` filled.

    When the page's keys differ inside a counter (``img00100`` to ``img01099``), the keys after
    it most likely sit in the next blocks of that counter: the shared prefix with its last digit
    counted up (``img1``, ``img2``...), then, past the alphabet's end, the digit before it
    (``img1`` ... ``img9``, then ``im1`` is no counter, so it stops; ``00019`` goes on with
    ``0002``, ``0003``...: blocks ten times larger). When they differ in a counter's leading
    digit (``scans/0...`` to ``scans/1...``), that digit counts up (``scans/2``, ``scans/3``...).
    Each part is one block. Byte-wise midpoints cannot see such blocks, a sliver of the byte
    space: cut at them, a range closes in on its keys a few bits per split, one round trip after
    another.

    With ``page_keys`` (the page's count) and ``min_block_keys``, a counter's finer blocks are
    passed over while they would hold fewer keys than that, at the page's own density: past
    ``scans/000000999`` the blocks ``scans/000001``... hold one page each, and each costs a
    request to find where it ends, so the parts start at ``scans/00001``... (ten pages each).
    The coarsest level is kept whatever its size.

    Returns ``[rest]`` when the page does not end inside a counter or no sibling lies inside
    ``rest``. Like ``split``, the parts tile ``rest`` exactly.
    """
    common = _common_prefix(first, last)
    if parts < 2 or rest.start_after is None or len(first) <= len(common):
        return [rest]
    differing = (first[len(common)], last[len(common)])
    level = len(common) - 1
    ceiling = _counter_ceiling(common[level], *differing) if level >= len(rest.prefix) else None
    if ceiling is None:
        leading = _counter_ceiling(*differing)
        if leading is None:
            return [rest]
        alphabet = _alphabet_ending(leading)
        digits = alphabet[alphabet.index(last[len(common)]) + 1 :]
        return _tile(rest, _points_inside(rest, (common + digit for digit in digits), parts - 1))
    # Counted in the counter's own alphabet: hex goes from 9 to a, past no empty punctuation.
    alphabet = _alphabet_ending(ceiling)
    # Keys per step of the first differing character, and so per block of each level above it.
    steps = alphabet.index(last[len(common)]) - alphabet.index(first[len(common)]) + 1
    block_keys = page_keys / steps * len(alphabet)
    levels: list[tuple[float, list[str]]] = []  # finest first
    while level >= len(rest.prefix) and _counter_ceiling(common[level], ceiling) == ceiling:
        siblings = [common[:level] + digit for digit in alphabet[alphabet.index(common[level]) + 1 :]]
        levels.append((block_keys, siblings))
        block_keys *= len(alphabet)
        level -= 1
    chosen = [siblings for size, siblings in levels if size >= min_block_keys] or [levels[-1][1]]
    candidates = [point for siblings in chosen for point in siblings]
    return _tile(rest, _points_inside(rest, candidates, parts - 1))


def _alphabet_ending(ceiling: str) -> str:
    return _UPPER if ceiling == "Z" else next(a for a, end in _ALPHABETS if end == ceiling)


def _points_inside(rest: KeyRange, candidates: Iterable[str], most: int) -> list[str]:
    """The first ``most`` of increasing ``candidates`` strictly inside ``rest``."""
    points: list[str] = []
    for point in candidates:
        if len(points) == most or (rest.end is not None and point >= rest.end):
            break
        if rest.start_after is None or point > rest.start_after:
            points.append(point)
    return points


def name_counter_split(rest: KeyRange, first: str, last: str, parts: int) -> list[KeyRange]:
    """``sibling_split`` for first pages whose keys differ only in a final name, else ``[rest]``.

    Keys that differ in a folder (``study00001/...`` to ``study00009/...``) are cut better at
    the folders a delimiter listing finds.
    """
    common = _common_prefix(first, last)
    if "/" in first[len(common) :] or "/" in last[len(common) :]:
        return [rest]
    return sibling_split(rest, first, last, parts)


def _tile(rest: KeyRange, points: list[str]) -> list[KeyRange]:
    bounds: list[str | None] = [rest.start_after, *points, rest.end]
    return [KeyRange(rest.prefix, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


_SCALE_BYTES: Final = 16


def _position(key: str | None, offset: int) -> int:
    """``key``'s UTF-8 bytes from ``offset`` on, read as a fixed-point number (None: the top)."""
    if key is None:
        return 1 << (8 * _SCALE_BYTES)
    raw = key.encode("utf-8")[offset : offset + _SCALE_BYTES]
    return int.from_bytes(raw.ljust(_SCALE_BYTES, b"\0"))


def estimate_remaining(first: str, last: str, count: int, end: str | None) -> float:
    """Keys expected in ``(last, end]`` if they are as dense as the ``count`` in ``[first, last]``.

    Byte-wise linear interpolation: rough, but it tells a range with one page left from one
    with a thousand, which is all splitting needs. Infinite when the page spans no width.
    """
    offset = len(_common_prefix(first, end).encode("utf-8")) if end is not None else 0
    lo, mid, hi = _position(first, offset), _position(last, offset), _position(end, offset)
    if mid <= lo:
        return float("inf")
    return count * (hi - mid) / (mid - lo)


def ranges_from_boundaries(
    whole: KeyRange,
    boundaries: list[str],
    parts: int,
    *,
    keys_per_boundary: float | None = None,
    page_keys: int = 1000,
) -> list[KeyRange]:
    """Tile ``whole`` with up to ``parts`` ranges that end at ``boundaries``.

    Used with the common prefixes a delimiter listing found: they are real points of the key
    space, so ranges cut there follow the data instead of the alphabet. They are spaced evenly,
    or, given how many keys lie between two boundaries, so that each range holds a little less
    than a whole number of pages (``aligned_step``).
    """
    usable = sorted({b for b in boundaries if whole.contains(b) and b != whole.end})
    cuts = min(parts - 1, len(usable))
    if cuts < 1:
        return [whole]
    step = None
    if keys_per_boundary is not None:
        step = aligned_step(len(usable) + 1, parts, keys_per_boundary, page_keys)
    if step is None:
        chosen = sorted({usable[(i * len(usable)) // (cuts + 1)] for i in range(1, cuts + 1)})
    else:
        chosen = usable[step - 1 :: step][:cuts]
    bounds: list[str | None] = [whole.start_after, *chosen, whole.end]
    return [KeyRange(whole.prefix, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


# Pages a range may hold for its size to be worth aligning: past it, the page count of a range
# is too uncertain (servers cut pages short) and one request more or less is noise.
_MOST_ALIGNED_PAGES: Final = 20


def aligned_step(folders: int, parts: int, keys_per_folder: float, page_keys: int) -> int | None:
    """Folders per range so that each range ends a little short of a whole number of pages.

    A range is listed until a page goes past its end, so one that holds 6.1 pages costs 7
    requests, the last for a few keys, and one of exactly 6 pages costs 7 too, the last to learn
    that nothing is left. Cut where a range holds some 5.7 pages, it costs 6. With ``folders``
    of about ``keys_per_folder`` keys each to share among at most ``parts`` ranges, the step is
    the largest number of folders that stays short of the smallest whole number of pages that
    ``parts`` ranges can cover everything with, by a margin for pages the server cuts short
    (a quarter of a page, or 5% of the pages, up to half a page). None when a folder is too
    large to align with (over a quarter of a page) or ranges would be too large for one request
    to matter.
    """
    if parts < 2 or folders < 2 or not 0 < keys_per_folder <= page_keys / 4:
        return None
    pages_per_part = folders * keys_per_folder / page_keys / parts
    for whole_pages in range(max(1, math.ceil(pages_per_part)), _MOST_ALIGNED_PAGES + 1):
        margin = min(0.5, max(0.25, 0.05 * whole_pages))
        step = math.floor((whole_pages - margin) * page_keys / keys_per_folder)
        fills_its_pages = step * keys_per_folder > (whole_pages - 1) * page_keys
        if step >= 1 and fills_its_pages and math.ceil(folders / step) <= parts:
            return step
    return None
