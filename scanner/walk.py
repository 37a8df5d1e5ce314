"""Listing a prefix exactly once whatever order the server lists in: a walk of its folders.

Key ranges need byte order and ``StartAfter``; this needs neither. Folders (common prefixes of a
``Delimiter="/"`` listing) are disjoint, so a listing of each folder's own keys, plus a listing
of each folder at the frontier with everything below it, covers every key exactly once:

- A folder is *descended* (listed with ``Delimiter="/"``: its direct keys, and its subfolders
  queued) while fewer folders wait than requests may be in flight, so a bucket with one top
  folder still fans out; otherwise it is listed *whole* (no delimiter), which takes the fewest
  requests: full pages of everything below it.
- Every folder pages with continuation tokens only, many folders in flight at once.
- A user prefix that does not end in "/" is, where the server takes only folder prefixes
  (directory buckets), listed through its parent folder and filtered there.

Each page is checked against the one before it in the same folder: a server that repeats a key
across pages (its tokens are inconsistent) may skip others too, and the scan refuses. A folder
that is descended is also checked against a flat page of it: every key that page holds must be
one of the folder's direct keys or lie in one of its subfolders. A server whose delimited
listing drops folders without saying it is truncated (s3rver) is caught there, and refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import anyio

from scanner.dialect import check_no_repeats
from scanner.errors import InconsistentListing
from scanner.keyspace import KeyRange
from scanner.records import ObjectRecord, keys_of
from scanner.storage.base import PageSource, next_token

# Folders deeper than this below the scanned prefix are listed whole, whatever waits: each
# level down costs a request per folder and rarely adds parallel work that is not there yet.
_MAX_DESCENT: Final = 4

EmitFn = Callable[[Sequence[ObjectRecord]], Awaitable[None]]


@dataclass
class WalkStats:
    # Folders listed with a delimiter (their direct keys), and folders listed whole.
    descended: int = 0
    listed_whole: int = 0
    pages: int = 0


@dataclass(frozen=True, slots=True)
class _Folder:
    prefix: str
    depth: int
    # Listing a parent folder for a prefix it cannot send itself: what keys must start with.
    keep: str | None = None


def request_root(prefix: str, folder_prefixes_only: bool) -> tuple[str, str | None]:
    """The prefix to list for the user's ``prefix``, and the filter its answers need (or None)."""
    if not folder_prefixes_only or not prefix or prefix.endswith("/"):
        return prefix, None
    return prefix[: prefix.rfind("/") + 1], prefix


class TreeWalk:
    """Lists ``prefix`` through ``source`` folder by folder and hands each page to ``emit``."""

    def __init__(
        self,
        source: PageSource,
        prefix: str,
        *,
        parallelism: int,
        emit: EmitFn,
        folder_prefixes_only: bool = False,
    ) -> None:
        self._source = source
        self._parallelism = max(1, parallelism)
        self._emit = emit
        root, keep = request_root(prefix, folder_prefixes_only)
        self._pending: list[_Folder] = [_Folder(root, 0, keep)]
        self._active = 0
        self._changed = anyio.Event()
        self.stats = WalkStats()

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            for _ in range(self._parallelism):
                group.start_soon(self._worker)

    async def _worker(self) -> None:
        while True:
            if self._pending:
                # Last in, first out: the queue holds about one level's folders at a time.
                folder = self._pending.pop()
                self._active += 1
                try:
                    await self._list(folder, descend=self._worth_descending(folder))
                finally:
                    self._active -= 1
                    self._wake()
            elif self._active == 0:
                self._wake()
                return
            else:
                await self._changed.wait()

    def _worth_descending(self, folder: _Folder) -> bool:
        if folder.keep is not None or folder.depth == 0:
            return self._parallelism > 1 or folder.keep is not None
        waiting = len(self._pending) + self._active
        return folder.depth < _MAX_DESCENT and waiting < self._parallelism

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _list(self, folder: _Folder, *, descend: bool) -> None:
        where = f"{folder.prefix!r}" if folder.prefix else "the bucket's root"
        if not descend:
            self.stats.listed_whole += 1
            await self._pages(folder, None, where, _Sample.nothing())
            return
        self.stats.descended += 1
        flat = await self._source.list_page(KeyRange(folder.prefix))
        self.stats.pages += 1
        sample = _Sample(folder.prefix, keys_of(flat.records))
        await self._pages(folder, "/", where, sample)
        sample.check(where)

    async def _pages(self, folder: _Folder, delimiter: str | None, where: str, sample: _Sample) -> None:
        key_range = KeyRange(folder.prefix)
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = await self._source.list_page(key_range, delimiter=delimiter, token=token)
            self.stats.pages += 1
            seen = check_no_repeats(seen, [*keys_of(page.records), *page.common_prefixes], where)
            sample.saw(page.records, page.common_prefixes)
            records = page.records
            if folder.keep is not None:
                keep = folder.keep
                records = [record for record in records if record.key.startswith(keep)]
            if records:
                await self._emit(records)
            self._queue(folder, page.common_prefixes)
            if not page.is_truncated:
                return
            token = next_token(page, token)

    def _queue(self, parent: _Folder, prefixes: Sequence[str]) -> None:
        keep = parent.keep
        found = [
            _Folder(prefix, parent.depth + 1)
            for prefix in prefixes
            if prefix.startswith(parent.prefix) and (keep is None or prefix.startswith(keep))
        ]
        if found:
            self._pending.extend(reversed(found))
            self._wake()


class _Sample:
    """Keys of a flat page of a folder, each waiting for the delimited listing to cover it."""

    def __init__(self, prefix: str, keys: Sequence[str]) -> None:
        self._direct: set[str] = set()
        self._folders: dict[str, str] = {}
        for key in keys:
            slash = key.find("/", len(prefix))
            if slash < 0:
                self._direct.add(key)
            else:
                self._folders.setdefault(key[: slash + 1], key)

    @classmethod
    def nothing(cls) -> _Sample:
        return cls("", ())

    def saw(self, records: Sequence[ObjectRecord], folders: Sequence[str]) -> None:
        if self._direct:
            self._direct.difference_update(keys_of(records))
        for folder in folders:
            self._folders.pop(folder, None)

    def check(self, where: str) -> None:
        missing = min(self._direct) if self._direct else min(self._folders.values(), default=None)
        if missing is not None:
            raise InconsistentListing(
                f"the server's listing of {where} is inconsistent: {missing!r} is in its flat listing "
                "but in no folder of its delimited one; no complete listing of it is possible"
            )
