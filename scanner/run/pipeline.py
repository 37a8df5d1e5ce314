"""The scan as one task group: ranges -> filter -> encode -> (order) -> one writer.

Workers list ranges, filter each page and encode it into one chunk as soon as it arrives (output
bytes, or the page's records for a writer that needs records: ``scanner.output.chunks``).
In ordered mode (the default) chunks go into ``OrderedOutput`` and the single writer drains it in
key order; with ``--unordered`` they go through a small bounded stream straight to the writer.
Either way memory is bounded: at most ``concurrency`` pages in flight, a bounded stream or
budgeted buffers (with spill files past the budget), and one writer that owns the output.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import IO, Protocol

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from scanner.checkpoint.checkpoint import Checkpoint
from scanner.checkpoint.store import open_store
from scanner.config import ScanConfig
from scanner.errors import FolderPrefixRequired, ScanError, ServerOrderDiffers
from scanner.keyspace import KeyRange
from scanner.listing.dialect import ServerProfile, check_profile
from scanner.listing.enumerate import Enumerator, HandOver, OutputSlot, PageSource
from scanner.listing.walk import EmitFn, TreeWalk
from scanner.output.chunks import Chunk, block_reader, chunks_of_file
from scanner.output.external_sort import ExternalSort
from scanner.output.limit import limit_reached
from scanner.output.ordering import OrderedOutput, Segment
from scanner.output.spec import OutputSpec
from scanner.output.writers import Writer
from scanner.records import ObjectRecord, RecordColumns
from scanner.run.offload import offloading
from scanner.run.outputs import open_writer
from scanner.run.summary import PageHandler, PageSpec, ScanSummary, finish_summary
from scanner.storage.limits import AdaptiveLimiter
from scanner.storage.s3.client import S3PageSource

# Makes the writer of a scan whose output is not ``config.output`` (the library API's).
WriterFactory = Callable[[], Writer]


class SharedHandOver(HandOver, Protocol):
    """A ``HandOver`` that gives parts of ranges to other pods: their slots stay empty here."""

    def attach(self, finish: Callable[[OutputSlot], None]) -> None: ...


_UNORDERED_BUFFER = 32
_SORT_BUDGET_SHARE = 3
_log = logging.getLogger("scanner.run")


async def run_scan(
    config: ScanConfig,
    source: PageSource | None = None,
    ranges: Sequence[KeyRange] | None = None,
    summary: ScanSummary | None = None,
    writer: WriterFactory | None = None,
    hand_over: SharedHandOver | None = None,
) -> ScanSummary:
    """Scan ``config.location`` (or only ``ranges`` of it) into ``config.output``.

    The output is complete or absent. ``summary``, when given, is filled in as the scan goes
    (for progress reports). ``writer``, when given, makes the writer instead of
    ``config.output``: the library API's, which hands the chunks on to Python code and, like
    standard output, cannot take back what it handed on. ``hand_over``, when given, takes parts
    of ranges off this scan for other pods (``scanner.run.sharing``); each part it takes stays
    empty in this output.
    """
    started = time.perf_counter()
    summary = summary if summary is not None else ScanSummary()
    profile = check_profile(config, ranges)
    checkpoint = await _open_checkpoint(config) if profile.ranged else None
    output = _Output(config, summary, writer)
    try:
        await output.writer.open()
        try:
            try:
                if source is None:
                    async with S3PageSource(config.location, config.connection) as s3:
                        summary.requests = s3.stats
                        await _scan_by_profile(
                            config, profile, s3, output, summary, ranges, checkpoint, hand_over
                        )
                else:
                    await _scan_by_profile(
                        config, profile, source, output, summary, ranges, checkpoint, hand_over
                    )
            except BaseException as exc:
                if not limit_reached(exc):
                    raise
                summary.limited = True
            await output.writer.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if checkpoint is not None:
                    summary.checkpoint_saved = await checkpoint.save_after_failure()
                await output.writer.abort()
            raise
    finally:
        if checkpoint is not None:
            checkpoint.close()
    if checkpoint is not None:
        # A checkpoint left behind would make the next run resume a scan that is finished.
        try:
            await checkpoint.store.clear()
        except ScanError as exc:
            raise type(exc)(f"the output is complete, but {exc}; remove it before the next run") from exc
    finish_summary(summary, output.writer)
    summary.seconds = time.perf_counter() - started
    return summary


class _Output:
    """The scan's writer, and for standard output (which cannot be taken back) what went out.

    Bytes for standard output wait until the listing has shown the byte order it relies on
    (``vetted``), so that a switch to the tree walk rarely finds anything written.
    """

    def __init__(
        self, config: ScanConfig, summary: ScanSummary | None = None, factory: WriterFactory | None = None
    ) -> None:
        self._config = config
        self._factory = factory
        self.writer: Writer = factory() if factory is not None else open_writer(config)
        self.streamed = config.output == "-" or factory is not None
        self.vetted = anyio.Event()
        self.written = 0
        self._summary = summary

    async def write(self, chunk: Chunk) -> None:
        if self.streamed and not self.vetted.is_set():
            await self.vetted.wait()
        self.written += len(chunk)
        if self.streamed and self._summary is not None:
            # What a stopped scan has already sent, and cannot take back.
            if isinstance(chunk, bytes):
                self._summary.streamed_bytes += len(chunk)
                self._summary.streamed_lines += chunk.count(b"\n")
            else:
                self._summary.streamed_records += len(chunk)
        await self.writer.write(chunk)

    async def restart(self) -> None:
        """Throw away what was written, and open the output anew."""
        with anyio.CancelScope(shield=True):
            await self.writer.abort()
        self.writer = self._factory() if self._factory is not None else open_writer(self._config)
        self.written = 0
        self.vetted.set()
        await self.writer.open()


async def _scan_by_profile(
    config: ScanConfig,
    profile: ServerProfile,
    source: PageSource,
    output: _Output,
    summary: ScanSummary,
    ranges: Sequence[KeyRange] | None,
    checkpoint: Checkpoint | None,
    hand_over: SharedHandOver | None = None,
) -> None:
    """Ranges where the server keeps byte order, else the tree walk; switch at the first sign."""
    differs: ServerOrderDiffers | None = None
    _log.debug(
        "listing-strategy",
        extra={
            "fields": {
                "server_profile": profile.name,
                "learned": profile.learned,
                "strategy": "ranges" if profile.ranged else "tree walk",
                "concurrency": config.connection.concurrency,
            }
        },
    )
    if profile.ranged:
        try:
            await _scan_into(config, source, output, summary, ranges, checkpoint, hand_over)
            return
        except BaseException as exc:
            differs = order_differs(exc)
            if differs is None:
                raise
        if checkpoint is not None:
            # It saved key ranges of a listing given up: a run resuming from it would list them
            # again on a server that cannot take them.
            checkpoint.invalidate()
            await checkpoint.store.clear()
        _log.debug(
            "server-profile-learned", extra={"fields": {"strategy": "tree walk", "because": str(differs)}}
        )
        await _start_over(config, output, summary, ranges, differs)
    output.vetted.set()
    summary.strategy = "tree walk"
    folder_only = profile.folder_prefixes_only or isinstance(differs, FolderPrefixRequired)
    try:
        await _walk_into(config, source, output, summary, folder_only)
    except BaseException as exc:
        refused = order_differs(exc)
        if folder_only or not isinstance(refused, FolderPrefixRequired):
            raise
        # A server that takes only folder prefixes (a directory bucket by another name) refused
        # a group's prefix: list it folder by folder.
        await _start_over(config, output, summary, None, refused)
        await _walk_into(config, source, output, summary, True)


async def _start_over(
    config: ScanConfig,
    output: _Output,
    summary: ScanSummary,
    ranges: Sequence[KeyRange] | None,
    differs: ServerOrderDiffers,
) -> None:
    """Give up what was listed so far, where the output can be taken back."""
    _may_switch(config, output, ranges, differs)
    summary.switched_because = str(differs)
    summary.restart_counts()
    await output.restart()


def order_differs(exc: BaseException) -> ServerOrderDiffers | None:
    """The ``ServerOrderDiffers`` behind ``exc`` (task groups wrap it), if that is what it is."""
    if isinstance(exc, ServerOrderDiffers):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = order_differs(inner)
            if found is not None:
                return found
    return None


def _may_switch(
    config: ScanConfig, output: _Output, ranges: Sequence[KeyRange] | None, differs: ServerOrderDiffers
) -> None:
    if ranges is not None or config.shard_ranges is not None or config.worker:
        raise ScanError(
            f"{differs}; --shard needs a server that lists in byte order: scan it whole"
        ) from None
    if output.streamed and output.written:
        raise ScanError(
            f"{differs}, after output had gone to standard output; run again with "
            "--server-profile unordered, or write to a file (which the scan can start over)"
        ) from None


async def _walk_into(
    config: ScanConfig, source: PageSource, output: _Output, summary: ScanSummary, folder_only: bool
) -> None:
    """The tree walk into the output: through an external sort unless ``--unordered``."""
    handle = PageHandler(PageSpec.of(config), summary)

    def walk_with(emit: EmitFn) -> TreeWalk:
        walk = TreeWalk(
            source,
            config.location.prefix,
            parallelism=config.connection.concurrency,
            emit=emit,
            folder_prefixes_only=folder_only,
        )
        summary.walk = walk.stats
        return walk

    if config.ordered:
        await _walk_sorted(config, walk_with, handle, output, summary)
    else:
        await _walk_unordered(walk_with, handle, output)
    handle.finish()


WalkFactory = Callable[[EmitFn], TreeWalk]


async def _walk_sorted(
    config: ScanConfig, walk_with: WalkFactory, handle: PageHandler, output: _Output, summary: ScanSummary
) -> None:
    # Nothing else holds output while the walk lists (no ordered segments), so the sort may hold
    # what they would have.
    sorter = ExternalSort(_SORT_BUDGET_SHARE * config.memory_budget, config.temp_dir)

    async def hold(records: Sequence[ObjectRecord]) -> None:
        sorter.add(handle.select(records))

    try:
        await walk_with(hold).run()
        for page in sorter.pages():
            chunk = handle.encode(RecordColumns.of(page))
            if chunk:
                await output.write(chunk)
    finally:
        summary.spilled_bytes = sorter.spilled_bytes
        sorter.close()


async def _walk_unordered(walk_with: WalkFactory, handle: PageHandler, output: _Output) -> None:
    async with _streamed(output) as send:

        async def emit(records: Sequence[ObjectRecord]) -> None:
            chunk = handle(records)
            if chunk:
                await send.send(chunk)

        await walk_with(emit).run()


async def _open_checkpoint(config: ScanConfig) -> Checkpoint | None:
    if config.checkpoint is None:
        return None
    store = open_store(config.checkpoint, config.connection, config.temp_dir)
    await store.open()
    return Checkpoint(store, config, config.checkpoint_interval)


async def _scan_into(
    config: ScanConfig,
    source: PageSource,
    output_to: _Output,
    summary: ScanSummary,
    ranges: Sequence[KeyRange] | None,
    checkpoint: Checkpoint | None = None,
    hand_over: SharedHandOver | None = None,
) -> None:
    """List by key ranges (the server lists in byte order) into ``output_to``."""
    handle = PageHandler(PageSpec.of(config), summary)
    if config.ordered:
        await _OrderedRanges(config, source, output_to, summary, handle, checkpoint, hand_over).run(ranges)
    else:
        assert hand_over is None, "parts handed to other pods leave holes only an ordered output keeps"
        await _unordered_ranges(config, source, output_to, summary, handle, ranges)
    handle.finish()


def _limiter_of(source: PageSource) -> AdaptiveLimiter | None:
    # With --processes auto, workers borrow request slots from it while they run.
    return source.limiter if isinstance(source, S3PageSource) else None


class _OrderedRanges:
    """Ranges listed concurrently, each into its segment of the ``OrderedOutput`` (key order),
    journaled to the checkpoint when there is one, and resumed from it."""

    def __init__(
        self,
        config: ScanConfig,
        source: PageSource,
        output_to: _Output,
        summary: ScanSummary,
        handle: PageHandler,
        checkpoint: Checkpoint | None,
        hand_over: SharedHandOver | None = None,
    ) -> None:
        self._config = config
        self._hand_over = hand_over
        self._source = source
        self._output_to = output_to
        self._summary = summary
        self._handle = handle
        self._checkpoint = checkpoint
        self._output = OrderedOutput(0)

    async def run(self, ranges: Sequence[KeyRange] | None) -> None:
        config, checkpoint = self._config, self._checkpoint
        restored = await checkpoint.restore() if checkpoint is not None else None
        whole = ranges[0] if ranges else KeyRange(config.location.prefix, config.start_after)
        first = restored.first if restored is not None else Segment(whole.start_after, whole.end)
        self._output = output = OrderedOutput(
            config.memory_budget,
            temp_dir=config.temp_dir,
            spill=config.spill,
            first=first,
            read_back=block_reader(OutputSpec.of(config).carries_records),
        )
        offload = offloading(
            config, self._deliver, _limiter_of(self._source), self._summary.add_worker, run_scan
        )
        try:
            async with offload as offloader:
                if self._hand_over is not None:
                    # A part another pod lists is complete here: it holds nothing of this output.
                    self._hand_over.attach(lambda slot: self._finish_slot(slot, True))
                enumerator = self._enumerator(self._hand_over or offloader)
                if restored is not None:
                    self._handle.restore(restored.counters)
                    for segment in restored.complete:
                        output.finish(segment)
                if checkpoint is not None:
                    checkpoint.attach(output, self._handle.counters, lambda: not enumerator.stats.sequential)
                    # At once: a checkpoint location that cannot be written fails the scan now.
                    await checkpoint.save()
                await self._list(enumerator, restored.work if restored is not None else None, ranges)
        finally:
            self._summary.spilled_bytes = output.spilled_bytes
            output.close()

    def _enumerator(self, offloader: HandOver | None) -> Enumerator:
        enumerator = Enumerator(
            self._source,
            KeyRange(self._config.location.prefix, self._config.start_after),
            parallelism=self._config.connection.concurrency,
            emit=self._emit,
            split_slot=self._split_slot,
            finish_slot=self._finish_slot,
            hand_over=offloader,
            vetted=self._output_to.vetted,
        )
        self._summary.enumeration = enumerator.stats
        return enumerator

    async def _list(
        self,
        enumerator: Enumerator,
        work: Sequence[tuple[KeyRange, OutputSlot]] | None,
        ranges: Sequence[KeyRange] | None,
    ) -> None:
        """The listing and the drain side by side; the workers' files are drained inside too."""
        output, checkpoint = self._output, self._checkpoint
        async with anyio.create_task_group() as group:
            group.start_soon(output.drain, self._output_to.write)
            if checkpoint is not None:
                group.start_soon(checkpoint.run_periodically)
            if work is not None:
                await enumerator.run_slots(work)
            elif ranges is None:
                await enumerator.run(output.first)
            else:
                await enumerator.run_ranges(ranges, output.first)
            if checkpoint is not None:
                await output.drained()
                group.cancel_scope.cancel()

    async def _emit(self, slot: OutputSlot, records: Sequence[ObjectRecord]) -> None:
        assert isinstance(slot, Segment)
        try:
            self._output.add(slot, self._handle(records), records[-1].key)
        except BaseException:
            # Counted or filtered but not saved: the checkpoint's counts are off from here on,
            # so it keeps its last save.
            if self._checkpoint is not None:
                self._checkpoint.invalidate()
            raise
        await self._output.wait_for_room(slot)

    def _split_slot(self, slot: OutputSlot, parts: list[KeyRange]) -> list[OutputSlot]:
        assert isinstance(slot, Segment)
        return list(self._output.insert_after(slot, [(part.start_after, part.end) for part in parts]))

    def _finish_slot(self, slot: OutputSlot, complete: bool) -> None:
        assert isinstance(slot, Segment)
        self._output.finish(slot, complete)

    async def _deliver(self, file: IO[bytes], slot: object) -> None:
        """A worker's output file takes the place of the range it listed."""
        assert isinstance(slot, Segment)
        size = os.fstat(file.fileno()).st_size
        if size:
            slot.preloaded.append((file, 0, size))
        self._output.finish(slot, True)


async def _unordered_ranges(
    config: ScanConfig,
    source: PageSource,
    output_to: _Output,
    summary: ScanSummary,
    handle: PageHandler,
    ranges: Sequence[KeyRange] | None,
) -> None:
    """Ranges listed concurrently, pages written as they come (``--unordered``)."""
    async with _streamed(output_to) as send:

        async def emit(slot: OutputSlot, records: Sequence[ObjectRecord]) -> None:
            chunk = handle(records)
            if chunk:
                await send.send(chunk)

        read_back = block_reader(OutputSpec.of(config).carries_records)

        async def deliver(file: IO[bytes], slot: object) -> None:
            for chunk in chunks_of_file(file, read_back):
                await send.send(chunk)

        # The workers' files go into the stream too: it closes after them.
        async with offloading(
            config, deliver, _limiter_of(source), summary.add_worker, run_scan
        ) as offloader:
            enumerator = Enumerator(
                source,
                KeyRange(config.location.prefix, config.start_after),
                parallelism=config.connection.concurrency,
                emit=emit,
                hand_over=offloader,
                vetted=output_to.vetted,
            )
            summary.enumeration = enumerator.stats
            if ranges is None:
                await enumerator.run(object())
            else:
                await enumerator.run_ranges(ranges, object())


@asynccontextmanager
async def _streamed(output: _Output) -> AsyncIterator[MemoryObjectSendStream[Chunk]]:
    """A small bounded stream whose chunks one task writes to ``output`` as they come."""
    send, receive = anyio.create_memory_object_stream[Chunk](_UNORDERED_BUFFER)

    async def drain() -> None:
        async with receive:
            async for chunk in receive:
                await output.write(chunk)

    async with anyio.create_task_group() as group:
        group.start_soon(drain)
        async with send:
            yield send
