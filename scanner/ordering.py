"""Putting concurrently listed ranges back into key order, in bounded memory.

Ranges tile the key space, so the output is their concatenation in range order. Each range owns
a ``Segment`` in a singly linked chain; a range that splits off the rest of itself inserts the new
segments right after its own, which keeps the chain in key order without ever sorting.

The writer drains the chain from its head. The head segment streams straight through, with
backpressure on its producer. Segments behind it buffer their finished pages in memory up to a
shared budget; past that they spill to an anonymous temporary file (unlinked at creation, so
nothing is left on disk even after a crash) and are read back when they reach the head.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from typing import IO, Final

import anyio

_READ_BLOCK: Final = 1 << 20


class Segment:
    __slots__ = ("_buffered", "_chunks", "_spill", "_spill_read", "_spill_written", "_wake", "done", "next")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._spill: IO[bytes] | None = None
        self._spill_written = 0
        self._spill_read = 0
        self.done = False
        self.next: Segment | None = None
        self._wake = anyio.Event()

    def _notify(self) -> None:
        self._wake.set()


class OrderedOutput:
    """Many producers (one per segment), one consumer that sees chunks in segment order."""

    def __init__(self, memory_budget: int, head_limit: int = 4 << 20, temp_dir: str | None = None) -> None:
        self.first = Segment()
        self._head: Segment | None = self.first
        self._memory_budget = memory_budget
        self._head_limit = head_limit
        self._temp_dir = temp_dir
        self._buffered = 0
        self._drained = anyio.Event()
        self.spilled_bytes = 0

    def insert_after(self, segment: Segment, count: int) -> list[Segment]:
        """``count`` new segments that come right after ``segment``, in order."""
        new = [Segment() for _ in range(count)]
        for before, after in itertools.pairwise(new):
            before.next = after
        if new:
            new[-1].next = segment.next
            segment.next = new[0]
        return new

    async def put(self, segment: Segment, chunk: bytes) -> None:
        if not chunk:
            return
        if segment is self._head and segment._spill is None:
            segment._chunks.append(chunk)
            segment._buffered += len(chunk)
            segment._notify()
            while segment is self._head and segment._buffered > self._head_limit:
                await self._drained.wait()
            return
        if segment._spill is None and self._buffered + len(chunk) <= self._memory_budget:
            segment._chunks.append(chunk)
            segment._buffered += len(chunk)
            self._buffered += len(chunk)
            return
        self._spill_chunk(segment, chunk)

    def _spill_chunk(self, segment: Segment, chunk: bytes) -> None:
        spill = segment._spill
        if spill is None:
            spill = segment._spill = tempfile.TemporaryFile(dir=self._temp_dir)  # noqa: SIM115
            # What is already in memory comes first: move it to the file so order holds.
            earlier = b"".join(segment._chunks)
            segment._chunks.clear()
            self._buffered -= segment._buffered
            segment._buffered = 0
            chunk = earlier + chunk
        spill.seek(segment._spill_written)
        spill.write(chunk)
        segment._spill_written += len(chunk)
        self.spilled_bytes += len(chunk)
        segment._notify()

    def finish(self, segment: Segment) -> None:
        segment.done = True
        segment._notify()

    async def drain(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Hand every chunk to ``write`` in key order; returns when the last segment is done."""
        segment: Segment | None = self.first
        starting = True
        while segment is not None:
            self._head = segment
            if not starting:
                # Its buffered bytes no longer count against the budget for segments behind.
                self._buffered -= segment._buffered
            starting = False
            while True:
                spill = segment._spill
                if spill is not None and segment._spill_read < segment._spill_written:
                    spill.seek(segment._spill_read)
                    block = spill.read(min(_READ_BLOCK, segment._spill_written - segment._spill_read))
                    segment._spill_read += len(block)
                    await write(block)
                    continue
                if spill is not None:
                    spill.close()
                    segment._spill = None
                if segment._chunks:
                    chunk = segment._chunks.popleft()
                    segment._buffered -= len(chunk)
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
            following, segment.next = segment.next, None
            if following is not None:
                self.first = following
            segment = following
        self._head = None

    def close(self) -> None:
        """Release every spill file (after a failure or cancellation)."""
        segment: Segment | None = self.first
        while segment is not None:
            if segment._spill is not None:
                segment._spill.close()
                segment._spill = None
            segment = segment.next
