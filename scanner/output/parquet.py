"""``--format parquet``: the records as a Parquet file, written a row group at a time.

The chunks that reach the writer are JSON Lines (``page_encoder`` gives Parquet the JSON Lines
encoding, the one worker processes and checkpoints already carry). The writer gathers them
until ``ROW_GROUP_ROWS`` rows are waiting, parses them with Arrow's JSON reader into a table of
``scanner.output.arrow.record_schema`` and writes it as one row group; ``pyarrow.parquet``
writes into an in-memory buffer whose bytes go to the sink (a file, standard output or an S3
multipart upload) as soon as each row group is encoded. So memory holds about one row group,
whatever the size of the bucket, and the file is atomic as every output is: the footer is
written at ``commit``, and nothing is left at the destination after ``abort``.

Parsing and encoding run in a worker thread (pyarrow lets go of the GIL), so the listing goes on
meanwhile. Columns are zstd-compressed, and with key order the file says it is sorted by key.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Final

import anyio

from scanner.errors import ScanError
from scanner.output.arrow import jsonl_table, record_schema, require_pyarrow
from scanner.output.chunks import Chunk, output_bytes
from scanner.output.sinks import Sink, open_sink
from scanner.output.spec import OutputSpec

if TYPE_CHECKING:
    import pyarrow

# About 20 MB of JSON Lines and less as Arrow columns: one row group in memory at a time.
ROW_GROUP_ROWS: Final = 128 * 1024
PARQUET_COMPRESSION: Final = "zstd"


class _Buffer(io.RawIOBase):
    """A write-only file that keeps what is written until ``take`` (for ParquetWriter)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class ParquetWriter:
    """JSON Lines chunks in, one Parquet file out (see the module docstring)."""

    def __init__(self, spec: OutputSpec, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        require_pyarrow("--format parquet")
        self._sink: Sink = open_sink(spec.destination, spec.connection)
        self._ordered = spec.ordered
        self._row_group_rows = row_group_rows
        self._schema = record_schema()
        self._buffer = _Buffer()
        self._file: Any = None
        self._pending: list[bytes] = []
        self._pending_rows = 0
        self._partial = b""
        self.rows = 0

    async def open(self) -> None:
        # optional dependency (the [arrow] extra): imported only by what writes Arrow or Parquet
        import pyarrow.parquet as pq

        await self._sink.open()
        self._file = pq.ParquetWriter(
            self._buffer,
            self._schema,
            compression=PARQUET_COMPRESSION,
            sorting_columns=[pq.SortingColumn(0)] if self._ordered else None,
        )

    async def write(self, piece: Chunk) -> None:
        chunk = output_bytes(piece)
        # A block copied from a worker's file may end inside a line: the tail waits.
        if self._partial:
            chunk, self._partial = self._partial + chunk, b""
        if not chunk.endswith(b"\n"):
            chunk, _, self._partial = chunk.rpartition(b"\n")
            if not chunk:
                return
            chunk += b"\n"
        self._pending.append(chunk)
        self._pending_rows += chunk.count(b"\n")
        if self._pending_rows >= self._row_group_rows:
            await self._write_row_group()

    async def _write_row_group(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_rows = 0
        encoded = await anyio.to_thread.run_sync(self._encode, data)
        if encoded:
            await self._sink.write(encoded)

    def _encode(self, data: bytes, close: bool = False) -> bytes:
        if data:
            table: pyarrow.Table = jsonl_table(data, self._schema)
            self.rows += table.num_rows
            self._file.write_table(table, row_group_size=max(table.num_rows, 1))
        if close:
            self._file.close()
            self._file = None
        return self._buffer.take()

    async def commit(self) -> None:
        if self._partial:
            raise ScanError("the record stream ended inside a line")
        try:
            data = b"".join(self._pending)
            self._pending.clear()
            await self._sink.write(await anyio.to_thread.run_sync(self._encode, data, True))
        except BaseException:
            await self._sink.abort()
            raise
        await self._sink.commit()

    async def abort(self) -> None:
        self._pending.clear()
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - the output is thrown away whatever went wrong
                pass
            self._file = None
        await self._sink.abort()
