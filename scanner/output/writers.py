"""The single writer stage: what the ordered stream of pages becomes, and in which files.

Workers turn each page into a chunk as soon as it arrives (``PageEncoder``); the writer receives
those chunks in key order and turns them into the output:

- ``jsonl`` / ``csv``: the chunks are the output bytes; they go straight to the sink.
- ``parquet``: the chunks are JSON Lines; ``scanner.output.parquet`` turns runs of them into row
  groups.
- ``items``: the chunks are the pages' keys (``KeyChunk``); the writer groups them into RedBrick
  tasks as the ordered stream passes and encodes tasks into an items list, rolling
  over to numbered files with ``--max-tasks-per-file``.

Every file of an output is committed only after the whole scan succeeded, and all are aborted
otherwise, so a destination holds either the complete output or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import BinaryIO, Protocol

from anyio.streams.memory import MemoryObjectSendStream

from scanner.grouping import GroupingSpec
from scanner.output.chunks import Chunk, key_chunk, output_bytes, output_keys, pack
from scanner.output.items import ItemsListChunk, RollingItemsListEncoder, Task, TaskGrouper
from scanner.output.sinks import Sink, open_sink
from scanner.output.spec import OutputSpec
from scanner.records import (
    FIELDS,
    ObjectRecord,
    csv_header,
    encode_csv,
    encode_csv_rows,
    encode_jsonl,
)

PageEncoder = Callable[[Sequence[ObjectRecord]], Chunk]


def page_encoder(spec: OutputSpec) -> PageEncoder:
    """What a page becomes for the writer of ``spec``'s format (``--state`` aside)."""
    if spec.output_format == "items":
        return key_chunk
    return encode_csv if spec.output_format == "csv" else encode_jsonl


class Writer(Protocol):
    async def open(self) -> None: ...
    async def write(self, chunk: Chunk) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


class RecordsWriter:
    """JSON Lines or CSV: chunks are already the output."""

    def __init__(self, spec: OutputSpec) -> None:
        self._sink = open_sink(spec.destination, spec.connection, spec.compression)
        self._preamble = csv_header() if spec.output_format == "csv" else b""
        if self._preamble and spec.deletions:
            self._preamble = encode_csv_rows([(*FIELDS, "deleted")])

    async def open(self) -> None:
        await self._sink.open()
        if self._preamble:
            await self._sink.write(self._preamble)

    async def write(self, chunk: Chunk) -> None:
        await self._sink.write(output_bytes(chunk))

    async def commit(self) -> None:
        await self._sink.commit()

    async def abort(self) -> None:
        await self._sink.abort()


def numbered_output(output: str, number: int) -> str:
    """``items.json`` -> ``items-00001.json`` (the extension stays last)."""
    directory, name = output.rsplit("/", 1) if "/" in output else ("", output)
    stem, dot, extension = name.partition(".")
    numbered = f"{stem}-{number:05d}{dot}{extension}"
    return f"{directory}/{numbered}" if directory else numbered


class RawWriter:
    """A worker's output: its chunks as bytes (``pack``), for the parent to finish.

    Written straight into the file the parent made for it (no temporary beside it): the parent
    owns that file and removes it whatever happens, even when it has to kill the worker.
    """

    def __init__(self, spec: OutputSpec) -> None:
        self._path = spec.destination
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        self._file = open(self._path, "wb", buffering=1 << 20)  # noqa: SIM115

    async def write(self, chunk: Chunk) -> None:
        assert self._file is not None
        self._file.write(pack(chunk))

    async def commit(self) -> None:
        assert self._file is not None
        self._file.close()

    async def abort(self) -> None:
        if self._file is not None:
            self._file.close()


class ItemsWriter:
    """Keys in key order -> RedBrick tasks -> one items list, or several numbered files."""

    def __init__(self, spec: OutputSpec, grouping: GroupingSpec) -> None:
        self._spec = spec
        self._grouper = TaskGrouper(grouping)
        self._encoder = RollingItemsListEncoder(
            "legacy" if spec.legacy_items else "current", spec.max_tasks_per_file
        )
        self._sinks: list[Sink] = []
        self._written = 0
        # An incremental run keeps (and flags) only the tasks it says to.
        self.keep_task: Callable[[Task], Task | None] | None = None

    @property
    def tasks(self) -> int:
        return self._written

    @property
    def skipped(self) -> dict[str, int]:
        return self._grouper.skipped

    async def open(self) -> None:
        # One file is known to be needed; numbered ones are opened as tasks reach them.
        await self._sink_for(0)

    async def _sink_for(self, index: int) -> Sink:
        while len(self._sinks) <= index:
            output = self._spec.destination
            if self._spec.max_tasks_per_file is not None and output != "-":
                output = numbered_output(output, len(self._sinks) + 1)
            sink = open_sink(output, self._spec.connection, self._spec.compression)
            await sink.open()
            self._sinks.append(sink)
        return self._sinks[index]

    async def write(self, chunk: Chunk) -> None:
        tasks = self._kept(self._grouper.feed_keys(output_keys(chunk)))
        if tasks:
            await self._emit(self._encoder.encode_many(tasks))

    def _kept(self, tasks: list[Task]) -> list[Task]:
        keep = self.keep_task
        if keep is not None:
            tasks = [kept for task in tasks if (kept := keep(task)) is not None]
        self._written += len(tasks)
        return tasks

    async def _emit(self, chunks: list[ItemsListChunk]) -> None:
        for chunk in chunks:
            sink = await self._sink_for(chunk.file_index)
            await sink.write(chunk.data)

    async def commit(self) -> None:
        await self._emit(self._encoder.encode_many(self._kept(self._grouper.finish())))
        await self._emit(self._encoder.finish())
        for sink in self._sinks:
            await sink.commit()

    async def abort(self) -> None:
        for sink in self._sinks:
            await sink.abort()


class StreamWriter:
    """The chunks themselves, handed on through a bounded stream to code that reads them.

    The library API's writer: its reader decodes the chunks (JSON Lines) into records or Arrow
    batches. A full stream holds the writer, and so the listing (backpressure). The reader learns
    the end from the stream's close, which the scan's owner does after ``run_scan`` returns.
    """

    def __init__(self, send: MemoryObjectSendStream[bytes]) -> None:
        self._send = send

    async def open(self) -> None:
        pass

    async def write(self, chunk: Chunk) -> None:
        await self._send.send(output_bytes(chunk))

    async def commit(self) -> None:
        pass

    async def abort(self) -> None:
        pass


def make_writer(spec: OutputSpec) -> Writer:
    """The writer of the format asked for (an incremental run wraps it: ``scanner.run.outputs``)."""
    if spec.worker:
        return RawWriter(spec)
    if spec.output_format == "items":
        assert spec.grouping is not None
        return ItemsWriter(spec, spec.grouping)
    if spec.output_format == "parquet":
        # Parquet needs pyarrow, an optional dependency: imported only for -f parquet
        from scanner.output.parquet import ParquetWriter

        return ParquetWriter(spec)
    return RecordsWriter(spec)
