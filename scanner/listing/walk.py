"""Listing a prefix exactly once whatever order the server lists in: a walk of its folders.

Key ranges need byte order and ``StartAfter``; this needs neither. Folders (common prefixes of a
``Delimiter="/"`` listing) are disjoint, so a listing of each folder's own keys, plus a listing
of each folder at the frontier with everything below it, covers every key exactly once:

- A folder is *descended* (listed with ``Delimiter="/"``: its direct keys, and its subfolders
  queued) while fewer folders wait than requests may be in flight, so a bucket with one top
  folder still fans out; otherwise it is listed *whole* (no delimiter), which takes the fewest
  requests: full pages of everything below it.
- Where the server takes any prefix (all but directory buckets), a level of many small folders is
  listed a group at a time: a string prefix such as ``study00`` covers ``study000/`` to
  ``study009-thumbs/``. The groups are the leaves of a trie of the folder names, so no two
  overlap and every folder is in one; the level's direct keys, which a group prefix may also
  match, were listed with the level and are left out.
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

from scanner.config import MAX_KEYS_PER_PAGE
from scanner.errors import InconsistentListing
from scanner.keyspace import KeyRange
from scanner.listing.dialect import check_no_repeats
from scanner.records import ObjectRecord, keys_of
from scanner.storage.base import PageSource, next_token

# Folders deeper than this below the scanned prefix are listed whole, whatever waits: each
# level down costs a request per folder and rarely adds parallel work that is not there yet.
_MAX_DESCENT: Final = 4
# Many small folders are listed a group at a time (one string prefix that covers several of them)
# where the server takes any prefix: about this many keys a group, a few full pages.
_GROUP_KEYS: Final = 4 * MAX_KEYS_PER_PAGE

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
    # A group of folders of this parent: keys directly under the parent are not the group's.
    below: str | None = None


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
        self._folder_prefixes_only = folder_prefixes_only
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
        if folder.below is not None:
            return False
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
        children = await self._pages(folder, "/", where, sample)
        sample.check(where)
        self._queue(folder, children, _keys_per_folder(folder.prefix, flat.records, flat.is_truncated))

    async def _pages(self, folder: _Folder, delimiter: str | None, where: str, sample: _Sample) -> list[str]:
        """List ``folder`` to its end; its subfolders, when listed with a delimiter."""
        key_range = KeyRange(folder.prefix)
        token: str | None = None
        seen: set[str] = set()
        children: list[str] = []
        while True:
            page = await self._source.list_page(key_range, delimiter=delimiter, token=token)
            self.stats.pages += 1
            seen = check_no_repeats(seen, [*keys_of(page.records), *page.common_prefixes], where)
            sample.saw(page.records, page.common_prefixes)
            records = page.records
            if folder.keep is not None:
                keep = folder.keep
                records = [record for record in records if record.key.startswith(keep)]
            if folder.below is not None:
                start = len(folder.below)
                records = [record for record in records if "/" in record.key[start:]]
            if records:
                await self._emit(records)
            children.extend(page.common_prefixes)
            if not page.is_truncated:
                return children
            token = next_token(page, token)

    def _queue(self, parent: _Folder, prefixes: Sequence[str], keys_per_folder: float | None) -> None:
        keep = parent.keep
        found = [p for p in prefixes if p.startswith(parent.prefix) and (keep is None or p.startswith(keep))]
        if not found:
            return
        depth = parent.depth + 1
        per_group = 1
        if not self._folder_prefixes_only and keys_per_folder is not None:
            per_group = min(int(_GROUP_KEYS / max(keys_per_folder, 1)), len(found) // (2 * self._parallelism))
        if per_group > 1:
            groups = group_folders(parent.prefix, sorted(found), per_group)
            self._pending.extend(_Folder(g, depth, below=parent.prefix) for g in reversed(groups))
        else:
            self._pending.extend(_Folder(prefix, depth) for prefix in reversed(found))
        self._wake()


def group_folders(parent: str, folders: Sequence[str], per_group: int) -> list[str]:
    """String prefixes that split sorted ``folders`` (each ``parent`` + name + "/") into groups of
    at most ``per_group`` (or one folder): the leaves of the trie of their names, in key order.

    No prefix is a prefix of another, and each folder starts with exactly one of them.
    """
    groups: list[str] = []
    stack: list[tuple[str, Sequence[str]]] = [(parent, folders)] if folders else []
    while stack:
        prefix, members = stack.pop()
        if len(members) <= per_group or len(members) == 1:
            groups.append(prefix if len(members) > 1 else members[0])
            continue
        at = len(prefix)
        branches: dict[str, list[str]] = {}
        for folder in members:
            # A folder that ends here is a leaf of its own ("" sorts before every character).
            branches.setdefault(folder[at : at + 1], []).append(folder)
        stack.extend((prefix + char, branch) for char, branch in sorted(branches.items(), reverse=True))
    return groups


def _keys_per_folder(prefix: str, records: Sequence[ObjectRecord], truncated: bool) -> float | None:
    """Keys a subfolder holds, from a flat page of the parent: None when no folder fits in it."""
    counts: dict[str, int] = {}
    for key in keys_of(records):
        slash = key.find("/", len(prefix))
        if slash >= 0:
            folder = key[: slash + 1]
            counts[folder] = counts.get(folder, 0) + 1
    whole = list(counts.values())[:-1] if truncated else list(counts.values())
    return sum(whole) / len(whole) if whole else None


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
