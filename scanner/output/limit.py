"""``--limit N``: the first N records of the output, in output order, and no more listing.

The writer sees the output's records in the order they are written (key order, unless
``--unordered``), so it is where "the first N" is known. Once it has written the N-th record it
raises ``LimitReached``, which stops the listing (the task groups cancel every request in
flight) and which the scan takes as success: the output is committed with those N records.
"""

from __future__ import annotations

import csv
import io

from scanner.output.chunks import Chunk, output_bytes
from scanner.output.writers import Writer
from scanner.records import encode_csv_rows


class LimitReached(Exception):
    """The output holds the records ``--limit`` asked for: the scan is done."""


class LimitedWriter:
    """Passes records on to ``inner`` until ``limit`` of them were written (JSON Lines, CSV)."""

    def __init__(self, inner: Writer, limit: int, output_format: str) -> None:
        self.inner = inner
        self.limit = limit
        self.written = 0
        self._csv = output_format == "csv"

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, chunk: Chunk) -> None:
        left = self.limit - self.written
        count, head = self._head(output_bytes(chunk), left)
        if head:
            await self.inner.write(head)
        self.written += count
        if self.written >= self.limit:
            raise LimitReached

    def _head(self, chunk: bytes, most: int) -> tuple[int, bytes]:
        """How many records ``chunk`` holds, up to ``most``, and their bytes."""
        if not self._csv:
            # One JSON object per line: JSON escapes every line break inside a key.
            lines = chunk.count(b"\n")
            if lines <= most:
                return lines, chunk
            end = -1
            for _ in range(most):
                end = chunk.index(b"\n", end + 1)
            return most, chunk[: end + 1]
        if b'"' not in chunk:
            # No quoted field, so no line break inside one: a row is a line.
            rows = chunk.count(b"\r\n")
            if rows <= most:
                return rows, chunk
            end = -2
            for _ in range(most):
                end = chunk.index(b"\r\n", end + 2)
            return most, chunk[: end + 2]
        # Keys with commas, quotes or line breaks: read the rows, and write the first ones again
        # exactly as the encoder did.
        parsed = list(csv.reader(io.StringIO(chunk.decode("utf-8"), newline="")))
        if len(parsed) <= most:
            return len(parsed), chunk
        return most, encode_csv_rows(parsed[:most])

    async def commit(self) -> None:
        await self.inner.commit()

    async def abort(self) -> None:
        await self.inner.abort()


def limit_reached(exc: BaseException) -> bool:
    """Whether ``exc`` (possibly a group from nested task groups) is only ``LimitReached``."""
    if isinstance(exc, LimitReached):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(limit_reached(inner) for inner in exc.exceptions)
    return False
