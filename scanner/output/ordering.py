"""Putting concurrently listed ranges back into key order, in bounded memory.

Ranges tile the key space, so the output is their concatenation in range order. Each range owns
a ``Segment`` in a singly linked chain; a range that splits off the rest of itself inserts the new
segments right after its own, which keeps the chain in key order without ever sorting.

The writer drains the chain from its head. The head segment streams straight through, with
backpressure on its producer. Segments behind it buffer their finished pages in memory up to a
shared budget; past that they spill to an anonymous temporary file (unlinked at creation, so
nothing is left on disk even after a crash) and are read back when they reach the head. Without
spilling (``spill=False``, for a reader that sets the pace) their producers wait instead until
the budget has room, so a slow writer stops the listing. Chunks of records go to a spill file
packed as bytes and come back out as records (``scanner.output.chunks``).

Each segment also knows which part of the key space it stands for: its range ``(after, end]``,
the last key listed into it, whether its range is complete, and (with a checkpoint) where its
bytes were journaled. That is what ``scanner.checkpoint.checkpoint`` saves, and a resumed scan starts with
segments restored from it, whose saved bytes come first.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from typing import IO, Final

import anyio

from scanner.output.chunks import BlockReader, Chunk, as_is, finish_reading, pack, weight

_READ_BLOCK: Final = 1 << 20

# Bytes saved by an earlier run: (file, offset, length), read before anything listed now.
Preloaded = tuple[IO[bytes], int, int]
# Where a chunk was journaled: (piece, offset, length); see ``scanner.checkpoint.checkpoint``.
Extent = tuple[str, int, int]


class Segment:
    __slots__ = (
        "_buffered",
        "_chunks",
        "_spill",
        "_spill_read",
        "_spill_written",
        "_wake",
        "after",
        "complete",
        "done",
        "end",
        "extents",
        "listed",
        "next",
        "preloaded",
        "released",
    )

    def __init__(self, after: str | None = None, end: str | None = None) -> None:
        self._chunks: deque[Chunk] = deque()
        self._buffered = 0
        self._spill: IO[bytes] | None = None
        self._spill_written = 0
        self._spill_read = 0
        self.done = False
        self.next: Segment | None = None
        self._wake = anyio.Event()
        # The key range this segment stands for, ``(after, end]``, and the last key listed
        # into it; ``complete`` once its range has been listed to the end (``done`` is also
        # set when a failure stops the range).
        self.after = after
        self.end = end
        self.listed: str | None = None
        self.complete = False
        self.released = False
        self.extents: list[Extent] = []
        self.preloaded: deque[Preloaded] = deque()

    def _notify(self) -> None:
        self._wake.set()


class OrderedOutput:
    """Many producers (one per segment), one consumer that sees chunks in segment order."""

    def __init__(
        self,
        memory_budget: int,
        head_limit: int = 4 << 20,
        temp_dir: str | None = None,
        first: Segment | None = None,
        spill: bool = True,
        read_back: BlockReader = as_is,
    ) -> None:
        self.first = first if first is not None else Segment()
        self._head: Segment | None = self.first
        self._memory_budget = memory_budget
        self._spill_allowed = spill
        # The head keeps its own limit either way: before the listing has shown the byte order,
        # standard output and the library API hold back what it wrote (``vetted``), and the
        # first two pages must fit for that to be shown.
        self._head_limit = head_limit
        # Set whenever the budget gets room back (a segment reached the head): producers that
        # wait for room (``spill=False``) look again.
        self._room = anyio.Event()
        self._temp_dir = temp_dir
        # Spilled and preloaded bytes become chunks again on their way to the writer.
        self._read_back = read_back
        self._buffered = 0
        self._drained = anyio.Event()
        self._all_written = anyio.Event()
        self.spilled_bytes = 0
        # With a checkpoint: every chunk is journaled as it arrives, and every segment the
        # writer is done with is reported, in order (the chain forgets them).
        self.journal: Callable[[Segment, Chunk], None] | None = None
        self.on_release: Callable[[Segment], None] | None = None

    def insert_after(self, segment: Segment, bounds: list[tuple[str | None, str | None]]) -> list[Segment]:
        """New segments for the ranges ``bounds`` (``(after, end]``, in order) right after ``segment``.

        They take over the rest of ``segment``'s range, which now ends where the first begins;
        a range that begins past ``segment``'s end (the next part of a shard, with other shards'
        keys between) leaves it as it is.
        """
        new = [Segment(after, end) for after, end in bounds]
        for before, after in itertools.pairwise(new):
            before.next = after
        if new:
            start = new[0].after
            if segment.end is None or (start is not None and start < segment.end):
                segment.end = start
            new[-1].next = segment.next
            segment.next = new[0]
        return new

    def segments(self) -> list[Segment]:
        """The segments the writer has not finished with, in key order."""
        found = []
        segment: Segment | None = self.first
        while segment is not None:
            if not segment.released:
                found.append(segment)
            segment = segment.next
        return found

    async def put(self, segment: Segment, chunk: Chunk, last_key: str | None = None) -> None:
        """``add``, then wait while the head's buffer is full (backpressure on its producer)."""
        self.add(segment, chunk, last_key)
        await self.wait_for_room(segment)

    def add(self, segment: Segment, chunk: Chunk, last_key: str | None = None) -> None:
        """Add ``chunk`` to ``segment``; ``last_key`` is the last key listed into it so far.

        Synchronous, so a checkpoint (taken at an await) sees a segment's bytes and its
        ``listed`` key change together; the key is recorded only once the chunk is journaled.
        """
        if self.journal is not None and chunk:
            self.journal(segment, chunk)
        if last_key is not None:
            segment.listed = last_key
        if not chunk:
            return
        size = weight(chunk)
        if segment is self._head and segment._spill is None:
            segment._chunks.append(chunk)
            segment._buffered += size
            segment._notify()
            return
        fits = self._buffered + size <= self._memory_budget
        if segment._spill is None and (fits or not self._spill_allowed):
            # Without spilling it is held anyway; its producer waits in ``wait_for_room``.
            segment._chunks.append(chunk)
            segment._buffered += size
            self._buffered += size
            return
        self._spill_chunk(segment, chunk)

    async def wait_for_room(self, segment: Segment) -> None:
        while True:
            if segment is self._head:
                if segment._buffered <= self._head_limit:
                    return
                await self._drained.wait()
            elif self._spill_allowed or self._buffered <= self._memory_budget:
                return
            else:
                await self._room.wait()

    def _spill_chunk(self, segment: Segment, chunk: Chunk) -> None:
        data = pack(chunk)
        spill = segment._spill
        if spill is None:
            spill = segment._spill = tempfile.TemporaryFile(dir=self._temp_dir)  # noqa: SIM115
            # What is already in memory comes first: move it to the file so order holds.
            earlier = b"".join(map(pack, segment._chunks))
            segment._chunks.clear()
            self._buffered -= segment._buffered
            segment._buffered = 0
            data = earlier + data
        spill.seek(segment._spill_written)
        spill.write(data)
        segment._spill_written += len(data)
        self.spilled_bytes += len(data)
        segment._notify()

    def finish(self, segment: Segment, complete: bool = True) -> None:
        segment.done = True
        segment.complete = complete
        segment._notify()

    async def drain(self, write: Callable[[Chunk], Awaitable[None]]) -> None:
        """Hand every chunk to ``write`` in key order; returns when the last segment is done."""
        segment: Segment | None = self.first
        starting = True
        while segment is not None:
            self._head = segment
            if not starting:
                # Its buffered bytes no longer count against the budget for segments behind.
                self._buffered -= segment._buffered
                self._room.set()
                self._room = anyio.Event()
            starting = False
            while True:
                if segment.preloaded:
                    await self._write_preloaded(segment, write)
                    continue
                spill = segment._spill
                if spill is not None and segment._spill_read < segment._spill_written:
                    spill.seek(segment._spill_read)
                    block = spill.read(min(_READ_BLOCK, segment._spill_written - segment._spill_read))
                    segment._spill_read += len(block)
                    await self._write_block(block, write)
                    continue
                if spill is not None:
                    spill.close()
                    segment._spill = None
                if segment._chunks:
                    chunk = segment._chunks.popleft()
                    segment._buffered -= weight(chunk)
                    await write(chunk)
                    if segment._buffered <= self._head_limit:
                        self._drained.set()
                        self._drained = anyio.Event()
                    continue
                if segment.done:
                    break
                await segment._wake.wait()
                segment._wake = anyio.Event()
            # Let go of finished segments: a long scan makes many thousands of them.
            segment.released = True
            if self.on_release is not None:
                self.on_release(segment)
            following, segment.next = segment.next, None
            if following is not None:
                self.first = following
            segment = following
        self._head = None
        finish_reading(self._read_back)
        self._all_written.set()

    async def drained(self) -> None:
        """Returns once ``drain`` has written the last segment."""
        await self._all_written.wait()

    async def _write_block(self, block: bytes, write: Callable[[Chunk], Awaitable[None]]) -> None:
        for chunk in self._read_back(block):
            await write(chunk)

    async def _write_preloaded(self, segment: Segment, write: Callable[[Chunk], Awaitable[None]]) -> None:
        """One block of the bytes an earlier run saved for ``segment``."""
        file, offset, length = segment.preloaded[0]
        size = min(_READ_BLOCK, length)
        file.seek(offset)
        block = file.read(size)
        if len(block) != size:
            raise OSError(f"checkpoint data ends early ({len(block)} of {size} bytes)")
        if size == length:
            segment.preloaded.popleft()
        else:
            segment.preloaded[0] = (file, offset + size, length - size)
        await self._write_block(block, write)

    def close(self) -> None:
        """Release every spill file (after a failure or cancellation)."""
        segment: Segment | None = self.first
        while segment is not None:
            if segment._spill is not None:
                segment._spill.close()
                segment._spill = None
            segment = segment.next
