"""Object records and their encodings (JSON Lines, CSV).

A record is a plain named tuple so that the parser can build one per key cheaply; the encoders
turn a whole page of records into one ``bytes`` chunk, which is the unit every later stage moves.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

import orjson

FIELDS: Final = ("key", "size", "last_modified", "etag", "storage_class")


class ObjectRecord(NamedTuple):
    """One object as ListObjectsV2 described it."""

    key: str
    size: int
    last_modified: str
    etag: str
    storage_class: str


# ``tuple.__new__`` fills a record straight from a tuple of its fields, all in C: the named
# tuple's own constructor is a Python function, and a page would call it a thousand times.
_record_from_fields: Callable[[tuple[str, int, str, str, str]], ObjectRecord] = functools.partial(
    tuple.__new__, ObjectRecord
)


def records_from_columns(
    keys: Iterable[str],
    sizes: Iterable[int],
    last_modified: Iterable[str],
    etags: Iterable[str],
    storage_classes: Iterable[str],
) -> list[ObjectRecord]:
    """Records from one column per field, all of the same length."""
    return list(
        map(_record_from_fields, zip(keys, sizes, last_modified, etags, storage_classes, strict=True))
    )


def encode_jsonl(records: Iterable[ObjectRecord]) -> bytes:
    """One JSON object per line, fields in ``FIELDS`` order, UTF-8, ``\\n``-terminated."""
    dumps = orjson.dumps
    return b"".join(
        [
            dumps(
                {
                    "key": r.key,
                    "size": r.size,
                    "last_modified": r.last_modified,
                    "etag": r.etag,
                    "storage_class": r.storage_class,
                }
            )
            + b"\n"
            for r in records
        ]
    )


def csv_header() -> bytes:
    return encode_csv_rows([FIELDS])


def encode_csv(records: Iterable[ObjectRecord]) -> bytes:
    """RFC 4180 rows (CRLF line ends, fields quoted when they need it)."""
    return encode_csv_rows(records)


def encode_csv_rows(rows: Iterable[Iterable[object]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
