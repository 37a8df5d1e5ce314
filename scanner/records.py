"""Object records and their encodings (JSON Lines, CSV).

A record is a plain named tuple so that the parser can build one per key cheaply; the encoders
turn a whole page of records into one ``bytes`` chunk, which is the unit every later stage moves.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
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
