"""The listing protocol every store implements, and the rules of paging through it."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
