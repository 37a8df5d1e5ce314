"""An in-memory ``PageSource`` for tests of the splitter and the pipeline (never for S3 itself).

It follows ListObjectsV2's rules: keys in code point (= UTF-8 byte) order, ``StartAfter``
exclusive, ``Prefix`` filtering, ``Delimiter`` grouping, and optionally short truncated pages
like Ceph RGW's.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from scanner.config import MAX_KEYS_PER_PAGE
from scanner.keyspace import KeyRange
from scanner.records import ObjectRecord
from scanner.storage.base import ListPage


@dataclass
class MemoryBucket:
    keys: list[str]
    short_pages: bool = False
    page_size: int = MAX_KEYS_PER_PAGE
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    returned: int = 0
    # Simulated service time: seconds per request and per key returned (0: instantaneous).
    latency: float = 0.0
    per_key: float = 0.0

    def __post_init__(self) -> None:
        self.keys = sorted(set(self.keys))

    async def list_page(
        self,
        key_range: KeyRange,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = MAX_KEYS_PER_PAGE,
    ) -> ListPage:
        if self.latency or self.per_key:
            import anyio

            await anyio.sleep(self.latency + self.per_key * max_keys)
        prefix = key_range.request_prefix()
        after = token if token is not None else key_range.start_after
        self.requests.append((prefix, after, delimiter))
        limit = min(max_keys, self.page_size)
        if self.short_pages and limit > 3:
            limit -= len(self.requests) % 3  # RGW-like: truncated pages a little short
        start = bisect.bisect_right(self.keys, after) if after is not None else 0
        start = max(start, bisect.bisect_left(self.keys, prefix))
        records: list[ObjectRecord] = []
        prefixes: list[str] = []
        last = None
        i = start
        while i < len(self.keys) and self.keys[i].startswith(prefix):
            if len(records) + len(prefixes) >= limit:
                self.returned += len(records)
                return ListPage(records, prefixes, True, last)
            key = self.keys[i]
            if delimiter is not None and delimiter in key[len(prefix) :]:
                common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
                prefixes.append(common)
                last = common
                # skip every key under this common prefix
                i = bisect.bisect_left(self.keys, common + "\U0010ffff" * 2)
                while i < len(self.keys) and self.keys[i].startswith(common):
                    i += 1
                continue
            records.append(ObjectRecord(key, len(key), "2026-11-28T01:28:50.000Z", "etag", "STANDARD"))
            last = key
            i += 1
        self.returned += len(records)
        return ListPage(records, prefixes, False, None)
