"""The two protocols of the storage seam: listing pages (``PageSource``, and the rules of paging
through it) and whole objects (``ObjectStore``, ``Upload``). S3 implements both in
``scanner.storage.s3``; ``scanner.storage.memory`` implements both in memory, under the same contract
tests."""

from __future__ import annotations

import itertools
import operator
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio

from scanner.config import MAX_KEYS_PER_PAGE
from scanner.errors import ScanError
from scanner.keyspace import KeyRange
from scanner.records import ObjectRecord


@dataclass(frozen=True, slots=True)
class ListPage:
    records: Sequence[ObjectRecord]
    common_prefixes: list[str]
    is_truncated: bool
    next_token: str | None
    # Whether the page's keys are in strictly increasing UTF-8 byte order, as AWS lists them.
    # A well-formed page that is not is a fact about the server (its dialect), not damage.
    in_key_order: bool = True


def is_strictly_increasing(keys: Sequence[str]) -> bool:
    """Whether ``keys`` are in strictly increasing code point (= UTF-8 byte) order."""
    return all(map(operator.lt, keys, itertools.islice(keys, 1, None)))


class PageSource(Protocol):
    """One ListObjectsV2-like page of a key range: from its ``start_after``, or from ``token``."""

    async def list_page(
        self,
        key_range: KeyRange,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = MAX_KEYS_PER_PAGE,
    ) -> ListPage: ...


def next_token(page: ListPage, sent: str | None) -> str:
    """The continuation token to send next; a missing or repeated one would loop forever."""
    token = page.next_token
    if not token:
        raise ScanError("the server sent a truncated page with no continuation token")
    if token == sent:
        raise ScanError("the server repeated a continuation token; listing on would loop forever")
    return token


class Upload(Protocol):
    """An object being written: invisible at its key until ``commit``; ``abort`` leaves nothing."""

    async def open(self) -> None: ...
    async def write(self, chunk: bytes) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


class ObjectStore(Protocol):
    """Whole objects in one bucket: what outputs, checkpoints, state and plans keep there.

    Every failure is a ``ScanError`` of the documented kinds (``scanner.storage.errors`` maps
    them for S3); a missing key is an answer (``None``, ``False``), never an error.
    """

    def where(self, key: str) -> str:
        """``s3://BUCKET/KEY``, for messages."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The whole body of a small object (a manifest, a plan), or None if there is none."""
        ...

    def read(
        self, key: str, block_size: int = ...
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes] | None]:
        """``async with store.read(key) as blocks``: the body block by block, or None if missing."""
        ...

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        """Store ``data`` at ``key``; with ``if_absent``, only if nothing is there (False if so)."""
        ...

    def upload(self, key: str) -> Upload:
        """A streamed write of any size (multipart for S3), visible only once committed."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove ``keys``; those already gone are no error."""
        ...

    def keys(self, prefix: str) -> AsyncIterator[str]:
        """Every key under ``prefix``, in no promised order."""
        ...


class Committable(Protocol):
    """Anything written in one go and then kept or thrown away: uploads, sinks, writers."""

    async def open(self) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


CommittableT = TypeVar("CommittableT", bound=Committable)


@asynccontextmanager
async def committing(target: CommittableT) -> AsyncIterator[CommittableT]:
    """Open ``target``; commit it when the block ends, abort it when the block fails.

    The abort is shielded from cancellation: a cancelled run still takes back what it wrote.
    """
    await target.open()
    try:
        yield target
    except BaseException:
        with anyio.CancelScope(shield=True):
            await target.abort()
        raise
    await target.commit()
