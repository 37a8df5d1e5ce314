"""Incremental scans: a snapshot of what a scan saw, and what changed since the previous one.

A scheduled job (a Kubernetes CronJob) keeps an output current by comparing each scan with the
snapshot the last successful run left behind. Everything here streams: a snapshot is written and
read block by block, and the comparison is a two-pointer merge of two key-ordered streams, so
memory stays bounded whatever the size of the bucket.

The snapshot file is gzip (one member, so ``zcat`` reads it) of JSON Lines::

    {"format": "bucket-scanner-state", "version": 1, "uri": "s3://b/p", "created": "..."}
    ["key", size, "etag", "last_modified"]            one per object, keys in str order
    ...
    {"objects": N}                                    the trailer

The object count sits in a trailer, not in the header, because the header is compressed and sent
before the first page is listed: a header count would need the whole listing in memory (or on
disk) first. The trailer also proves the writer finished; gzip's own CRC and length catch
damage inside. orjson escapes every control character, so a key holding a newline stays on its
line, and a JSON array is the same for any key content (no quoting rules to get wrong).

Keys are compared as Python ``str`` (code point order), which is the UTF-8 byte order S3 lists in.
"""

from __future__ import annotations

import functools
import heapq
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

import anyio
import orjson

from scanner.config import ConnectionConfig, parse_s3_object_uri
from scanner.errors import ScanError, UsageError
from scanner.output.sinks import open_sink
from scanner.records import ObjectRecord
from scanner.storage.s3.store import S3ObjectStore

FORMAT: Final = "bucket-scanner-state"
VERSION: Final = 1
# zlib's default: most of a record is its incompressible MD5 ETag, so higher levels save little
# for much more CPU (figures: benchmarks/results/design-figures-2026-12-03.md).
COMPRESSION_LEVEL: Final = 6

_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_GZIP_MAGIC: Final = b"\x1f\x8b"
_FLUSH_BYTES: Final = 256 * 1024  # compressed bytes gathered before a write to the sink
_READ_BLOCK: Final = 1024 * 1024  # compressed bytes per read
# A line is at most a 1024-byte key escaped six-fold plus its fields; anything longer is damage,
# and the bound keeps a crafted file from growing the line buffer without end.
_MAX_LINE: Final = 1024 * 1024


class StateError(ScanError):
    """A state file that is not one, is damaged, or is fed records out of key order."""


class StateEntry(NamedTuple):
    """What the snapshot keeps of one object: enough to tell whether it changed."""

    key: str
    size: int
    etag: str
    last_modified: str


def _show(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:77] + "...")


class StateWriter:
    """Streams a snapshot to a local path (replaced atomically) or an S3 object (on commit).

    ``open``; ``add_page`` for every page in key order; ``commit`` once the scan's output has
    succeeded (so a failed run never advances the state); otherwise ``abort``, which leaves the
    previous snapshot in place.
    """

    def __init__(
        self,
        destination: str,
        uri: str,
        connection: ConnectionConfig | None = None,
        *,
        level: int = COMPRESSION_LEVEL,
        created: str | None = None,
    ) -> None:
        if destination == "-":
            raise UsageError("the state must be a file path or an s3:// URI, not standard output")
        self.destination = destination
        self.uri = uri
        self.objects = 0
        self._created = created or datetime.now(UTC).isoformat(timespec="seconds")
        self._sink = open_sink(destination, connection, role="state", what="the state")
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._last_key: str | None = None
        self._finished = False

    async def open(self) -> None:
        await self._sink.open()
        header = {"format": FORMAT, "version": VERSION, "uri": self.uri, "created": self._created}
        await self._feed(orjson.dumps(header) + b"\n")

    async def add_page(self, records: Sequence[ObjectRecord]) -> None:
        """Append one page; raises ``StateError`` (and writes nothing of the page) if out of order."""
        if not records:
            return
        dumps = orjson.dumps
        lines = []
        previous = self._last_key
        for record in records:
            key = record.key
            # Equal keys are refused too: a listing never repeats a key, and the merge relies on it.
            if previous is not None and key <= previous:
                raise StateError(
                    f"state records must be in key order: {_show(key)} came after {_show(previous)}"
                )
            lines.append(dumps((key, record.size, record.etag, record.last_modified)))
            previous = key
        lines.append(b"")
        await self._feed(b"\n".join(lines))
        self._last_key = previous
        self.objects += len(records)

    async def commit(self) -> None:
        try:
            trailer = self._compressor.compress(orjson.dumps({"objects": self.objects}) + b"\n")
            self._pending.extend((trailer, self._compressor.flush()))
            await self._write_pending()
            await self._sink.commit()
        except BaseException:
            # Shielded: a cancelled run must still remove its temporary file or multipart upload.
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise
        self._finished = True

    async def abort(self) -> None:
        if not self._finished:
            self._finished = True
            await self._sink.abort()

    async def _feed(self, data: bytes) -> None:
        compressed = self._compressor.compress(data)
        if compressed:
            self._pending.append(compressed)
            self._pending_size += len(compressed)
            if self._pending_size >= _FLUSH_BYTES:
                await self._write_pending()

    async def _write_pending(self) -> None:
        chunk = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if chunk:
            await self._sink.write(chunk)


class _Decoder:
    """Compressed blocks in, batches of entries out; every check of the format lives here."""

    def __init__(self, where: str, piece: int) -> None:
        self._where = where
        self._piece = piece
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
        self._head = b""
        self._buffer = b""
        self.header: dict[str, Any] | None = None
        self._trailer: int | None = None
        self._last_key: str | None = None
        self.count = 0

    def foreign(self, why: str) -> StateError:
        return StateError(f"{self._where} is not a bucket-scanner state file ({why})")

    def damaged(self, why: str) -> StateError:
        return StateError(f"state file {self._where} is damaged ({why})")

    def feed(self, block: bytes) -> list[StateEntry]:
        if len(self._head) < len(_GZIP_MAGIC):
            # The magic may arrive split across reads, however small they are.
            self._head += block[: len(_GZIP_MAGIC) - len(self._head)]
            if not _GZIP_MAGIC.startswith(self._head):
                raise self.foreign("not gzip data")
        entries: list[StateEntry] = []
        while block:
            if self._inflate.eof:
                # Concatenated gzip members are still one gzip file; a rewrapping tool may emit them.
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
            try:
                data = self._inflate.decompress(block, self._piece)
            except zlib.error as exc:
                raise self.damaged(f"gzip: {exc}") from exc
            block = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
            self._lines(data, entries)
        return entries

    def finish(self) -> list[StateEntry]:
        entries: list[StateEntry] = []
        if len(self._head) < len(_GZIP_MAGIC):
            raise self.foreign("not gzip data" if self._head else "the file is empty")
        try:
            self._lines(self._inflate.flush(), entries)
        except zlib.error as exc:
            raise self.damaged(f"gzip: {exc}") from exc
        if not self._inflate.eof:
            raise self.damaged("it ends early")
        if self._buffer:
            raise self.damaged("the last line is incomplete")
        if self.header is None:
            raise self.foreign("no header line")
        if self._trailer is None:
            raise self.damaged("the end-of-snapshot line is missing")
        if self._trailer != self.count:
            raise self.damaged(f"it lists {self.count} objects but its trailer says {self._trailer}")
        return entries

    def _lines(self, data: bytes, entries: list[StateEntry]) -> None:
        data = self._buffer + data if self._buffer else data
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > _MAX_LINE:
                raise (
                    self.foreign("no header line") if self.header is None else self.damaged("a line too long")
                )
            self._buffer = data
            return
        self._buffer = data[cut + 1 :]
        start = 0
        if self.header is None:
            start = data.find(b"\n") + 1
            self._read_header(data[: start - 1])
            if start > cut:
                return
        self._records(data[start:cut], entries)

    def _read_header(self, line: bytes) -> None:
        try:
            header = orjson.loads(line)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise self.foreign("its first line is not a state header")
        version = header.get("version")
        if version != VERSION:
            raise StateError(
                f"state file {self._where} has format version {version!r}; this scanner reads version "
                f"{VERSION} (a newer scanner wrote it?)"
            )
        self.header = header

    def _records(self, lines: bytes, entries: list[StateEntry]) -> None:
        if self._trailer is not None:
            raise self.damaged("lines follow the end-of-snapshot line")
        if not lines:
            raise self.damaged("an empty line")
        # One parse for the whole block: orjson never leaves a raw newline inside a string.
        try:
            items = orjson.loads(b"[" + lines.replace(b"\n", b",") + b"]")
        except orjson.JSONDecodeError as exc:
            raise self.damaged("a line is not JSON") from exc
        if items and isinstance(items[-1], dict):
            trailer = items.pop()
            objects = trailer.get("objects")
            if type(objects) is not int:
                raise self.damaged("the end-of-snapshot line has no object count")
            self._trailer = objects
        previous = self._last_key
        new = tuple.__new__
        for item in items:
            if not (
                type(item) is list
                and len(item) == 4
                and type(item[0]) is str
                and type(item[1]) is int
                and type(item[2]) is str
                and type(item[3]) is str
            ):
                raise self.damaged(f"a record is not [key, size, etag, last_modified]: {str(item)[:80]}")
            key = item[0]
            if previous is not None and key <= previous:
                raise self.damaged(f"keys out of order at {_show(key)}")
            previous = key
            entries.append(new(StateEntry, item))
        self._last_key = previous
        self.count += len(items)


class StateReader:
    """The snapshot at a local path or an s3:// URI, read as a stream of entries in key order.

    ``async with StateReader(source, connection) as state:`` reads the header; ``state.exists`` is
    ``False`` when there is no snapshot yet (a first run), and then iteration yields nothing. With
    ``missing_ok=False`` absence is a ``StateError`` instead (``scanner diff`` wants both files).
    Iterate entries with ``async for entry in state`` or lists of them with ``state.batches()``.
    """

    def __init__(
        self,
        source: str,
        connection: ConnectionConfig | None = None,
        *,
        missing_ok: bool = True,
        block_size: int = _READ_BLOCK,
    ) -> None:
        if source == "-":
            raise UsageError("the state must be a file path or an s3:// URI, not standard input")
        self.source = source
        self.exists = False
        self.uri: str | None = None
        self.created: str | None = None
        self._connection = connection or ConnectionConfig()
        self._missing_ok = missing_ok
        self._block_size = block_size
        self._decoder = _Decoder(source, piece=4 * block_size)
        self._blocks: AsyncIterator[bytes] | None = None
        self._closers: list[Any] = []
        self._first: list[StateEntry] = []
        self._opened = False
        self._consumed = False

    @property
    def objects(self) -> int:
        """Entries read so far: the snapshot's object count once iteration has ended."""
        return self._decoder.count

    async def __aenter__(self) -> StateReader:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        self._opened = True
        if self.source.startswith("s3://"):
            where = parse_s3_object_uri(self.source)
            objects = S3ObjectStore(where.bucket, self._connection, role="state", what="the state")
            reading = objects.read(where.prefix, self._block_size)
            opened = await reading.__aenter__()
            self._closers.append(functools.partial(reading.__aexit__, None, None, None))
            found = opened is not None
            blocks = opened if opened is not None else _no_blocks()
        else:
            try:
                file = await anyio.open_file(self.source, "rb")
            except FileNotFoundError:
                found = False
            except IsADirectoryError as exc:
                raise UsageError(f"state path {self.source!r} is a directory") from exc
            except OSError as exc:
                raise ScanError(f"cannot read state file {self.source!r}: {exc.strerror or exc}") from exc
            else:
                found = True
                self._closers.append(file.aclose)
                blocks = self._file_blocks(file)
        if not found:
            if not self._missing_ok:
                raise StateError(f"state file {self.source} does not exist")
            return
        self.exists = True
        self._blocks = blocks
        # Read up to the header so a foreign file fails here, before a scan spends its time.
        while self._decoder.header is None:
            block = await anext(blocks, None)
            if block is None:
                self._first.extend(self._decoder.finish())
                self._blocks = None
                break
            self._first.extend(self._decoder.feed(block))
        header = self._decoder.header or {}
        self.uri = header.get("uri")
        self.created = header.get("created")

    async def _file_blocks(self, file: anyio.AsyncFile[bytes]) -> AsyncIterator[bytes]:
        try:
            while block := await file.read(self._block_size):
                yield block
        except OSError as exc:
            raise ScanError(f"cannot read state file {self.source!r}: {exc.strerror or exc}") from exc

    async def batches(self) -> AsyncIterator[list[StateEntry]]:
        """The entries in key order, a block's worth at a time (never empty lists)."""
        if not self._opened:
            # Iterating an unopened reader would look exactly like a first run: refuse it.
            raise RuntimeError("StateReader.open() (or 'async with') must come before iteration")
        if self._consumed:
            raise RuntimeError("a StateReader can be iterated once")
        self._consumed = True
        if self._first:
            yield self._first
            self._first = []
        if self._blocks is None:
            return
        async for block in self._blocks:
            entries = self._decoder.feed(block)
            if entries:
                yield entries
        entries = self._decoder.finish()
        if entries:
            yield entries

    async def __aiter__(self) -> AsyncIterator[StateEntry]:
        async for batch in self.batches():
            for entry in batch:
                yield entry

    async def close(self) -> None:
        # Shielded: a cancelled run still closes its file or its S3 connection.
        with anyio.CancelScope(shield=True):
            while self._closers:
                await self._closers.pop()()


class _Described(Protocol):
    """ObjectRecord and StateEntry alike: the fields a comparison looks at."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def etag(self) -> str: ...
    @property
    def last_modified(self) -> str: ...


_New = TypeVar("_New", bound=_Described)


@runtime_checkable
class SnapshotSource(Protocol):
    """A snapshot read as lists of entries in key order: a ``StateReader``, or one built in memory."""

    def batches(self) -> AsyncIterator[list[StateEntry]]: ...


class PageChanges(NamedTuple):
    """What one page of a scan changed against the snapshot."""

    fresh: list[ObjectRecord]  # added or changed objects, in key order: what --changes-only emits
    removed: list[str]  # snapshot keys the merge passed that the scan no longer has, in key order
    changed: set[str]  # the keys in ``fresh`` that were in the snapshot (the rest are new)
    gone: Sequence[StateEntry] = ()  # the snapshot entries of ``removed``


class ChangeDetector:
    """Classifies a key-ordered scan, page by page, against the previous snapshot.

    The snapshot is consumed lazily, only as far as the page in hand, so memory holds one batch of
    it. A snapshot key is reported removed as soon as the scan passes it; the ones after the
    scan's last key come from ``finish``.
    """

    def __init__(self, old: SnapshotSource | AsyncIterable[Sequence[StateEntry]]) -> None:
        batches = old.batches() if isinstance(old, SnapshotSource) else old
        self._old_batches: AsyncIterator[Sequence[StateEntry]] = aiter(batches)
        self._old: Sequence[StateEntry] = ()
        self._index = 0
        self._old_done = False
        self._last_key: str | None = None
        self._finished = False
        self.added = 0
        self.changed = 0
        self.removed = 0
        self.unchanged = 0

    async def classify(self, page: Sequence[ObjectRecord]) -> PageChanges:
        fresh, previous, removed = await self._merge(page)
        changed = {record.key for record, old in zip(fresh, previous, strict=True) if old is not None}
        return PageChanges(fresh, [entry.key for entry in removed], changed, removed)

    async def finish(self) -> list[str]:
        """The snapshot keys after the scan's last key: all removed."""
        return [entry.key for entry in await self.finish_entries()]

    async def finish_entries(self) -> list[StateEntry]:
        """The snapshot entries after the scan's last key: all removed."""
        return [entry for batch in [b async for b in self._rest()] for entry in batch]

    async def _rest(self) -> AsyncIterator[list[StateEntry]]:
        if self._finished:
            raise RuntimeError("ChangeDetector.finish was already called")
        self._finished = True
        while True:
            batch = list(self._old[self._index :])
            self._index = len(self._old)
            if batch:
                self.removed += len(batch)
                yield batch
            if not await self._next_old_batch():
                return

    async def _next_old_batch(self) -> bool:
        """Moves to the next non-empty snapshot batch; ``False`` when the snapshot has ended."""
        while not self._old_done:
            try:
                self._old = await anext(self._old_batches)
            except StopAsyncIteration:
                self._old_done = True
                self._old = ()
            self._index = 0
            if self._old:
                return True
        return False

    async def _merge(
        self, page: Sequence[_New]
    ) -> tuple[list[_New], list[StateEntry | None], list[StateEntry]]:
        """The two-pointer step: (added or changed, the old entry of each or None, removed)."""
        if self._finished:
            raise RuntimeError("ChangeDetector.classify called after finish")
        fresh: list[_New] = []
        previous: list[StateEntry | None] = []
        removed: list[StateEntry] = []
        last = self._last_key
        old, i = self._old, self._index
        added = changed = 0
        for record in page:
            key = record.key
            if last is not None and key <= last:
                raise StateError(f"scan records must be in key order: {_show(key)} came after {_show(last)}")
            last = key
            entry: StateEntry | None = None
            while True:
                if i >= len(old):
                    if not await self._next_old_batch():
                        old, i = (), 0
                        break
                    old, i = self._old, 0
                candidate = old[i]
                if candidate.key < key:
                    removed.append(candidate)
                    i += 1
                    continue
                if candidate.key == key:
                    entry = candidate
                    i += 1
                break
            if entry is None:
                added += 1
                fresh.append(record)
                previous.append(None)
            elif (
                entry.size != record.size
                or entry.etag != record.etag
                or entry.last_modified != record.last_modified
            ):
                changed += 1
                fresh.append(record)
                previous.append(entry)
        self._old, self._index, self._last_key = old, i, last
        self.added += added
        self.changed += changed
        self.removed += len(removed)
        self.unchanged += len(page) - added - changed
        return fresh, previous, removed


Change = Literal["added", "removed", "changed"]


class DiffEntry(NamedTuple):
    change: Change
    key: str
    old: StateEntry | None  # None for "added"
    new: StateEntry | None  # None for "removed"


async def diff_states(old: SnapshotSource, new: SnapshotSource) -> AsyncIterator[DiffEntry]:
    """Every difference between two snapshots, in key order (a missing snapshot is empty)."""
    detector = ChangeDetector(old)
    async for batch in new.batches():
        fresh, previous, removed = await detector._merge(batch)
        changes = [
            DiffEntry("added", entry.key, None, entry)
            if before is None
            else DiffEntry("changed", entry.key, before, entry)
            for entry, before in zip(fresh, previous, strict=True)
        ]
        gone = [DiffEntry("removed", entry.key, entry, None) for entry in removed]
        for difference in heapq.merge(changes, gone, key=lambda d: d.key):
            yield difference
    async for batch in detector._rest():
        for entry in batch:
            yield DiffEntry("removed", entry.key, entry, None)


def _fields(entry: StateEntry) -> dict[str, Any]:
    return {"size": entry.size, "etag": entry.etag, "last_modified": entry.last_modified}


def encode_diff(entries: Iterable[DiffEntry]) -> bytes:
    """JSON Lines: ``{"change", "key", size, etag, last_modified}``; a change has ``old``/``new``."""
    lines = []
    for change, key, old, new in entries:
        if change == "changed":
            assert old is not None
            assert new is not None
            line = {"change": change, "key": key, "old": _fields(old), "new": _fields(new)}
        else:
            entry = new if change == "added" else old
            assert entry is not None
            line = {"change": change, "key": key, **_fields(entry)}
        lines.append(orjson.dumps(line))
    lines.append(b"")
    return b"\n".join(lines) if len(lines) > 1 else b""


async def _no_blocks() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator
