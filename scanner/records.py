"""Object records and their encodings (JSON Lines, CSV).

A record is a plain named tuple so that the parser can build one per key cheaply; the encoders
turn a whole page of records into one ``bytes`` chunk, the unit later stages move for JSON Lines
and CSV (``scanner.output.chunks``).
The parser hands a page over as ``RecordColumns``, a column per field: most pages are only
counted and written as JSON Lines, which needs no record objects at all.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, NamedTuple, overload

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


def records_from_rows(rows: Iterable[Sequence[object]]) -> list[ObjectRecord]:
    """Records from rows of their fields in ``FIELDS`` order (decoded JSON arrays, say)."""
    return list(map(_record_from_fields, rows))  # type: ignore[arg-type]


class RecordColumns(Sequence[ObjectRecord]):
    """One page of objects as the parser read it: a column per field, records made on demand.

    It is a sequence of ``ObjectRecord`` to everything that reads it record by record (filters,
    CSV, items lists, the incremental state), made in one go the first time; indexing and
    slicing, what listing itself does with a page, work on the columns. ``encode_jsonl`` writes
    these columns straight out, and ``sizes_text`` keeps the digits as the server sent them for
    that (``parse`` lets no leading zero through).
    """

    __slots__ = ("_records", "etags", "keys", "last_modified", "sizes", "sizes_text", "storage_classes")

    def __init__(
        self,
        keys: Sequence[str],
        sizes_text: Sequence[str],
        last_modified: Sequence[str],
        etags: Sequence[str],
        storage_classes: Sequence[str],
    ) -> None:
        self.keys = keys
        self.sizes_text = sizes_text
        self.sizes: Sequence[int] = _integers(sizes_text)
        self.last_modified = last_modified
        self.etags = etags
        self.storage_classes = storage_classes
        self._records: list[ObjectRecord] | None = None

    @classmethod
    def of(cls, records: list[ObjectRecord]) -> RecordColumns:
        """Records made elsewhere (the external sort's) as columns, for the JSON Lines fast path."""
        page = cls.__new__(cls)
        if records:
            keys, sizes, modified, etags, classes = map(list, zip(*records, strict=True))
        else:
            keys, sizes, modified, etags, classes = [], [], [], [], []
        page.keys, page.sizes, page.last_modified, page.etags, page.storage_classes = (
            keys,
            sizes,
            modified,
            etags,
            classes,
        )
        page.sizes_text = list(map(str, sizes))
        page._records = records
        return page

    def records(self) -> list[ObjectRecord]:
        if self._records is None:
            self._records = records_from_columns(
                self.keys, self.sizes, self.last_modified, self.etags, self.storage_classes
            )
        return self._records

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> ObjectRecord: ...
    @overload
    def __getitem__(self, index: slice) -> RecordColumns: ...
    def __getitem__(self, index: int | slice) -> ObjectRecord | RecordColumns:
        if isinstance(index, slice):
            return RecordColumns(
                self.keys[index],
                self.sizes_text[index],
                self.last_modified[index],
                self.etags[index],
                self.storage_classes[index],
            )
        return ObjectRecord(
            self.keys[index],
            self.sizes[index],
            self.last_modified[index],
            self.etags[index],
            self.storage_classes[index],
        )

    def __iter__(self) -> Iterator[ObjectRecord]:
        return iter(self.records())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return self.records() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecordColumns({self.records()!r})"

    def total_size(self) -> int:
        return sum(self.sizes)


def _integers(digits: Sequence[str]) -> list[int]:
    """``int`` of each text of decimal digits.

    One orjson parse of the page's sizes written as a JSON array, checks included, takes less
    than half the time of an ``int`` call each (benchmarks/results/design-figures-2026-12-03.md).
    Texts that are not plain JSON integers
    (leading zeros, say) take the slow way, and so do numbers past 64 bits (orjson reads those
    as floats).
    """
    if "".join(digits).isdigit():
        try:
            values: list[int] = orjson.loads("[" + ",".join(digits) + "]")
        except orjson.JSONDecodeError:
            pass
        else:
            if len(values) == len(digits) and type(sum(values)) is int:
                return values
    return list(map(int, digits))


def keys_of(records: Sequence[ObjectRecord]) -> Sequence[str]:
    """A page's keys, in order: its key column when it has one."""
    if isinstance(records, RecordColumns):
        return records.keys
    return [record.key for record in records]


def total_size(records: Sequence[ObjectRecord]) -> int:
    if isinstance(records, RecordColumns):
        return records.total_size()
    return sum(map(_size_of, records))


def _size_of(record: ObjectRecord) -> int:
    return record.size


# What JSON must escape in a string (``"``, ``\`` and the control characters): a page whose text
# values hold none of it is written by joining the values between fixed pieces of JSON.
_JSON_ESCAPED: Final = bytes(range(0x20)) + b'"\\'
_LINE_PIECES: Final = (
    '{"key":"',
    '","size":',
    ',"last_modified":"',
    '","etag":"',
    '","storage_class":"',
    '"}\n',
)


def encode_jsonl(records: Sequence[ObjectRecord]) -> bytes:
    """One JSON object per line, fields in ``FIELDS`` order, UTF-8, ``\\n``-terminated."""
    if isinstance(records, RecordColumns) and _needs_no_escapes(records):
        return _join_columns(records)
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


def _needs_no_escapes(page: RecordColumns) -> bool:
    text = "".join(itertools.chain(page.keys, page.last_modified, page.etags, set(page.storage_classes)))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: orjson decides what becomes of it
        return False
    return len(data.translate(None, _JSON_ESCAPED)) == len(data)


def _join_columns(page: RecordColumns) -> bytes:
    """The page's JSON Lines, all in C: the same bytes orjson writes for values without escapes."""
    count = len(page)
    key, size, modified, etag, storage_class, end = (itertools.repeat(piece, count) for piece in _LINE_PIECES)
    fields = zip(
        key,
        page.keys,
        size,
        page.sizes_text,
        modified,
        page.last_modified,
        etag,
        page.etags,
        storage_class,
        page.storage_classes,
        end,
        strict=True,
    )
    return "".join(itertools.chain.from_iterable(fields)).encode("utf-8")


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
