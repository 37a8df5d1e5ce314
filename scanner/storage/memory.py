"""In-memory stores with S3's contracts: listing, in each dialect the scanner meets
(``MemoryStore``), and whole objects (``MemoryObjectStore``).

For tests of the listing strategies and for notebooks without a server. It keeps ListObjectsV2's
rules (``Prefix``, ``Delimiter``, ``MaxKeys``, continuation tokens, ``StartAfter`` exclusive) in
one of three orders:

- ``sorted``: UTF-8 byte order, ``StartAfter`` exact (AWS general-purpose buckets);
- ``walk``: a filesystem walk, folder by folder (SeaweedFS): ``StartAfter`` goes on from where the
  key would sit in that order;
- ``directory``: a stable hash order, ``StartAfter`` refused, only "/" as delimiter, a non-empty
  prefix must end in "/" (S3 Express One Zone directory buckets).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from scanner.config import MAX_KEYS_PER_PAGE
from scanner.errors import FolderPrefixRequired, ScanError, StartAfterIgnored, UsageError
from scanner.keyspace import KeyRange
from scanner.records import ObjectRecord
from scanner.storage.base import ListPage, is_strictly_increasing

Dialect = Literal["sorted", "walk", "directory"]


def walk_order(key: str) -> tuple[str, ...]:
    """Where a filesystem walk lists ``key``: by its path's parts, each compared on its own."""
    return tuple(key.split("/"))


def hash_order(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _byte_order(key: str) -> str:
    return key


_ORDERS: dict[Dialect, Callable[[str], Any]] = {
    "sorted": _byte_order,
    "walk": walk_order,
    "directory": hash_order,
}


@dataclass
class MemoryStore:
    keys: Iterable[str]
    dialect: Dialect = "sorted"
    page_size: int = MAX_KEYS_PER_PAGE
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        order = _ORDERS[self.dialect]
        self._keys = sorted(set(self.keys), key=order)
        self._positions = [order(key) for key in self._keys]
        self._order = order

    async def list_page(
        self,
        key_range: KeyRange,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = MAX_KEYS_PER_PAGE,
    ) -> ListPage:
        prefix = key_range.request_prefix()
        self._check(prefix, delimiter, key_range.start_after if token is None else None)
        self.requests.append((prefix, token or key_range.start_after, delimiter))
        start = 0
        if token is not None:
            start = int(token)
        elif key_range.start_after is not None:
            start = bisect.bisect_right(self._positions, self._order(key_range.start_after))
        limit = min(max_keys, self.page_size)
        records: list[ObjectRecord] = []
        prefixes: list[str] = []
        # A folder is named once in a listing, on the page of its first key in this order.
        seen = {self._folder(key, prefix, delimiter) for key in self._keys[:start] if key.startswith(prefix)}
        for at in range(start, len(self._keys)):
            key = self._keys[at]
            if not key.startswith(prefix):
                continue
            common = self._folder(key, prefix, delimiter)
            if common is not None and common in seen:
                continue
            if len(records) + len(prefixes) >= limit:
                return ListPage(records, prefixes, True, str(at), _increasing(records))
            if common is not None:
                seen.add(common)
                prefixes.append(common)
            else:
                records.append(ObjectRecord(key, len(key), "2026-11-28T01:28:50.000Z", "etag", "STANDARD"))
        return ListPage(records, prefixes, False, None, _increasing(records))

    @staticmethod
    def _folder(key: str, prefix: str, delimiter: str | None) -> str | None:
        if delimiter is None or delimiter not in key[len(prefix) :]:
            return None
        return key[: key.index(delimiter, len(prefix)) + len(delimiter)]

    def _check(self, prefix: str, delimiter: str | None, start_after: str | None) -> None:
        if self.dialect != "directory":
            return
        if start_after is not None:
            raise StartAfterIgnored("the server rejected StartAfter (directory bucket)")
        if delimiter not in (None, "/"):
            raise UsageError("directory buckets take only '/' as delimiter")
        if prefix and not prefix.endswith("/"):
            raise FolderPrefixRequired("the server takes only prefixes that end in '/'")


def _increasing(records: list[ObjectRecord]) -> bool:
    return is_strictly_increasing([record.key for record in records])


class MemoryObjectStore:
    """``ObjectStore`` in memory, with S3's rules: uploads invisible until committed,
    ``if_absent`` puts that only one writer wins, missing keys as answers."""

    def __init__(self, bucket: str = "memory") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    @asynccontextmanager
    async def read(self, key: str, block_size: int = 1 << 20) -> AsyncIterator[AsyncIterator[bytes] | None]:
        data = self.objects.get(key)
        yield None if data is None else _blocks(data, block_size)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        if if_absent and key in self.objects:
            return False
        self.objects[key] = bytes(data)
        return True

    def upload(self, key: str) -> MemoryUpload:
        return MemoryUpload(self, key)

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        for key in [key for key in self.objects if key.startswith(prefix)]:
            yield key


async def _blocks(data: bytes, block_size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), block_size):
        yield data[start : start + block_size]


class MemoryUpload:
    def __init__(self, store: MemoryObjectStore, key: str) -> None:
        self._store = store
        self._key = key
        self._parts: list[bytes] | None = None

    async def open(self) -> None:
        self._parts = []

    async def write(self, chunk: bytes) -> None:
        if self._parts is None:
            raise ScanError(f"writing {self._store.where(self._key)} before it was opened")
        self._parts.append(bytes(chunk))

    async def commit(self) -> None:
        if self._parts is None:
            raise ScanError(f"committing {self._store.where(self._key)}, which is not open")
        self._store.objects[self._key] = b"".join(self._parts)
        self._parts = None

    async def abort(self) -> None:
        self._parts = None
