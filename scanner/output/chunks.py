"""What moves from the listing to the writer: a chunk of output bytes, or a page of records.

JSON Lines, CSV and Parquet are encoded where each page arrives (``PageHandler``), once, and move
on as ``bytes``. ``--state`` runs need the records themselves (to compare them with a snapshot),
so their pages move on as a ``RecordChunk``; items lists need only the keys (to group them into
tasks), so theirs move on as a ``KeyChunk``, a fraction of the memory. Neither is encoded for
the writer to decode again.

They become bytes only to leave memory: into a spill file, a checkpoint's journal or a worker
process's output file (``pack``: one JSON array a line, of record arrays or of keys). On the way
back out, ``Unpacker`` turns those bytes into chunks again before the writer sees them, so a
writer is handed one kind of chunk only, whichever way the page came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Final, TypeAlias

import orjson

from scanner.errors import ScanError
from scanner.records import ObjectRecord, RecordColumns, keys_of, records_from_rows

_FILE_BLOCK: Final = 1 << 20
# About what a parsed record costs in memory besides its key's characters: the key, size (and
# its digits), time and ETag objects and their five column slots, some 330 bytes on CPython
# 3.11. So a page of records counts against the memory budget for what it holds, as bytes do.
_RECORD_WEIGHT: Final = 400
# And a key alone: its string object and its slot in the list.
_KEY_WEIGHT: Final = 64


class RecordChunk:
    """A page of records on its way to a writer that needs them as records."""

    __slots__ = ("records",)

    def __init__(self, records: Sequence[ObjectRecord]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"RecordChunk({list(self.records)!r})"


class KeyChunk:
    """A page's keys, for a writer that needs nothing else of its records (an items list)."""

    __slots__ = ("keys",)

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"KeyChunk({list(self.keys)!r})"


def key_chunk(records: Sequence[ObjectRecord]) -> KeyChunk:
    """The page encoder of an items list: the keys, as they are (no copy of the parser's column)."""
    return KeyChunk(keys_of(records))


Chunk: TypeAlias = bytes | RecordChunk | KeyChunk
# What a block of packed bytes (read back from a file) is handed on as.
BlockReader: TypeAlias = Callable[[bytes], Sequence[Chunk]]


def weight(chunk: Chunk) -> int:
    """What ``chunk`` counts against the memory budget: its bytes, or its records' estimate."""
    if isinstance(chunk, bytes):
        return len(chunk)
    if isinstance(chunk, KeyChunk):
        return _KEY_WEIGHT * len(chunk.keys) + sum(map(len, chunk.keys))
    return _RECORD_WEIGHT * len(chunk.records) + sum(map(len, keys_of(chunk.records)))


def pack(chunk: Chunk) -> bytes:
    """``chunk`` as bytes for a file: bytes as they are, records as one JSON line of arrays."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, KeyChunk):
        return orjson.dumps(list(chunk.keys)) + b"\n" if chunk.keys else b""
    records = chunk.records
    if not records:
        return b""
    if isinstance(records, RecordColumns):
        rows = zip(
            records.keys,
            records.sizes,
            records.last_modified,
            records.etags,
            records.storage_classes,
            strict=True,
        )
        return orjson.dumps(list(rows)) + b"\n"
    return orjson.dumps([tuple(record) for record in records]) + b"\n"


def output_bytes(chunk: Chunk) -> bytes:
    """``chunk`` for a writer of encoded output, which is never handed records."""
    assert isinstance(chunk, bytes), "an encoded output's writer was handed records"
    return chunk


def output_records(chunk: Chunk) -> Sequence[ObjectRecord]:
    """``chunk`` for a writer of records, which is never handed encoded bytes."""
    assert isinstance(chunk, RecordChunk), "a writer of records was handed something else"
    return chunk.records


def output_keys(chunk: Chunk) -> Sequence[str]:
    """``chunk`` for a writer of keys (records will do too), which is never handed bytes."""
    if isinstance(chunk, KeyChunk):
        return chunk.keys
    return keys_of(output_records(chunk))


def as_is(block: bytes) -> Sequence[Chunk]:
    """The block reader of output bytes: a block of them is output bytes."""
    return (block,)


class Unpacker:
    """Packed lines (of keys or of records), read back in blocks of any size, as chunks again.

    A block may end inside a line (blocks are cut by size): the tail waits for the next one.
    """

    def __init__(self) -> None:
        self._partial = b""

    def __call__(self, block: bytes) -> Sequence[Chunk]:
        data = self._partial + block if self._partial else block
        complete, newline, self._partial = data.rpartition(b"\n")
        if not newline:
            return ()
        # One parse for the block: JSON escapes every line break inside a string, so each line
        # is one array and joining them with commas makes one array of pages.
        pages: list[list[Any]] = orjson.loads(b"[" + complete.replace(b"\n", b",") + b"]")
        return [_unpacked(page) for page in pages]

    def finish(self) -> None:
        """Raise if the bytes ended inside a line (a file cut short)."""
        if self._partial:
            raise ScanError("a record file ends inside a page")


def _unpacked(page: list[Any]) -> Chunk:
    # Never empty (``pack`` writes nothing for an empty page): keys are strings, records arrays.
    if isinstance(page[0], str):
        return KeyChunk(page)
    return RecordChunk(records_from_rows(page))


def block_reader(carries_records: bool) -> BlockReader:
    """How blocks read back from files become chunks again, for one output."""
    return Unpacker() if carries_records else as_is


def chunks_of_file(file: IO[bytes], read_back: BlockReader) -> Iterator[Chunk]:
    """What a file of packed chunks (a worker's output) holds, read a block at a time."""
    while block := file.read(_FILE_BLOCK):
        yield from read_back(block)
    finish_reading(read_back)


def finish_reading(read_back: BlockReader) -> None:
    """Raise if packed bytes read back ended inside a line; output bytes may end anywhere."""
    if isinstance(read_back, Unpacker):
        read_back.finish()
