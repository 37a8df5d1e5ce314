"""The scan as one task group: ranges -> filter -> encode -> (order) -> one writer.

Workers list ranges, filter each page and encode it into one bytes chunk as soon as it arrives.
In ordered mode (the default) chunks go into ``OrderedOutput`` and the single writer drains it in
key order; with ``--unordered`` they go through a small bounded stream straight to the writer.
Either way memory is bounded: at most ``concurrency`` pages in flight, a bounded stream or
budgeted buffers (with spill files past the budget), and one writer that owns the output.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from scanner.config import ScanConfig
from scanner.errors import FolderPrefixRequired, ScanError, ServerOrderDiffers
from scanner.filters import RecordFilter
from scanner.keyspace import KeyRange
from scanner.listing.dialect import ServerProfile, check_profile
from scanner.listing.enumerate import EnumerationStats, Enumerator, OutputSlot, PageSource
from scanner.listing.walk import EmitFn, TreeWalk, WalkStats
from scanner.output.external_sort import ExternalSort
from scanner.output.ordering import OrderedOutput, Segment
from scanner.output.writers import ItemsWriter, PageEncoder, Writer, page_encoder
from scanner.records import ObjectRecord, RecordColumns, total_size
from scanner.run.offload import offloading
from scanner.run.outputs import open_writer
from scanner.storage.s3.client import RequestStats, S3PageSource

if TYPE_CHECKING:
    from scanner.checkpoint.checkpoint import Checkpoint, Counters

# Makes the writer of a scan whose output is not ``config.output`` (the library API's).
WriterFactory = Callable[[], Writer]

_UNORDERED_BUFFER = 32
_SORT_BUDGET_SHARE = 3
_WORKER_BLOCK = 1 << 20


@dataclass
class ScanSummary:
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0
    requests: RequestStats = field(default_factory=RequestStats)
    enumeration: EnumerationStats = field(default_factory=EnumerationStats)
    spilled_bytes: int = 0
    # With filters: objects written, and objects left out by reason.
    matched: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    tasks: int | None = None
    # Incremental runs with --changes-only: added, changed, removed, unchanged.
    changes: dict[str, int] = field(default_factory=dict)
    # With --checkpoint: objects an earlier run listed (included in ``objects``), and whether a
    # scan that stopped early saved its progress.
    resumed_objects: int = 0
    checkpoint_saved: bool = False
    # How the key space was listed: "ranges" (byte order and StartAfter) or "tree walk"; and
    # what the server answered that made the scan switch, if it did.
    strategy: str = "ranges"
    switched_because: str | None = None
    walk: WalkStats = field(default_factory=WalkStats)

    def restart_counts(self) -> None:
        """Forget what a listing that was given up counted (its output is thrown away)."""
        self.objects = self.bytes = 0
        self.matched = None
        self.skipped = {}
        self.spilled_bytes = 0

    @property
    def keys_per_second(self) -> float:
        listed = self.objects - self.resumed_objects
        return listed / self.seconds if self.seconds > 0 else 0.0

    def add_skipped(self, reasons: dict[str, int]) -> None:
        for reason, count in reasons.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def add_worker(self, report: dict[str, Any]) -> None:
        """What a worker process listed (its report), added to this scan's counts."""
        self.objects += report["objects"]
        self.bytes += report["bytes"]
        self.requests.requests += report["requests"]
        self.requests.retries += report["retries"]
        if report["matched"] is not None:
            self.matched = (self.matched or 0) + report["matched"]
            self.add_skipped(report["skipped"])


class PageHandler:
    """Counts, filters and encodes one page of records: what each worker does per page."""

    def __init__(self, config: ScanConfig, summary: ScanSummary) -> None:
        self._summary = summary
        spec = config.filters
        if config.state is not None:
            # The writer needs every record, in order, for the snapshot; it filters there.
            from scanner.incremental.writer import encode_full_records

            self._encode: PageEncoder = encode_full_records
            spec = None
        else:
            self._encode = page_encoder(config)
        self.filter = RecordFilter(spec) if spec is not None and not spec.is_noop else None

    def __call__(self, records: Sequence[ObjectRecord]) -> bytes:
        return self.encode(self.select(records))

    def select(self, records: Sequence[ObjectRecord]) -> Sequence[ObjectRecord]:
        """Count a page, and keep what passes the filter."""
        summary = self._summary
        summary.objects += len(records)
        summary.bytes += total_size(records)
        if self.filter is not None:
            records = self.filter.select(records)
        return records

    def encode(self, records: Sequence[ObjectRecord]) -> bytes:
        return self._encode(records) if records else b""

    def finish(self) -> None:
        if self.filter is not None:
            # Added, not set: worker processes' counts may be in already.
            self._summary.matched = (self._summary.matched or 0) + self.filter.matched
            self._summary.add_skipped(self.filter.skipped)

    def counters(self) -> Counters:
        """What a checkpoint saves of the counts so far."""
        from scanner.checkpoint.checkpoint import Counters

        selection = self.filter
        return Counters(
            objects=self._summary.objects,
            bytes=self._summary.bytes,
            matched=selection.matched if selection is not None else None,
            skipped=dict(selection.skipped) if selection is not None else {},
        )

    def restore(self, counters: Counters) -> None:
        """Carry on counting from what a checkpoint saved."""
        self._summary.objects = counters.objects
        self._summary.bytes = counters.bytes
        self._summary.resumed_objects = counters.objects
        if self.filter is not None:
            self.filter.matched = counters.matched or 0
            self.filter.skipped = dict(counters.skipped)


async def run_scan(
    config: ScanConfig,
    source: PageSource | None = None,
    ranges: Sequence[KeyRange] | None = None,
    summary: ScanSummary | None = None,
    writer: WriterFactory | None = None,
) -> ScanSummary:
    """Scan ``config.location`` (or only ``ranges`` of it) into ``config.output``.

    The output is complete or absent. ``summary``, when given, is filled in as the scan goes
    (for progress reports). ``writer``, when given, makes the writer instead of
    ``config.output``: the library API's, which hands the chunks on to Python code and, like
    standard output, cannot take back what it handed on.
    """
    started = time.perf_counter()
    summary = summary if summary is not None else ScanSummary()
    profile = check_profile(config, ranges)
    checkpoint = await _open_checkpoint(config) if profile.ranged else None
    output = _Output(config, writer)
    try:
        await output.writer.open()
        try:
            if source is None:
                async with S3PageSource(config.location, config.connection) as s3:
                    summary.requests = s3.stats
                    await _scan_by_profile(config, profile, s3, output, summary, ranges, checkpoint)
            else:
                await _scan_by_profile(config, profile, source, output, summary, ranges, checkpoint)
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

    def __init__(self, config: ScanConfig, factory: WriterFactory | None = None) -> None:
        self._config = config
        self._factory = factory
        self.writer: Writer = factory() if factory is not None else open_writer(config)
        self.streamed = config.output == "-" or factory is not None
        self.vetted = anyio.Event()
        self.written = 0

    async def write(self, chunk: bytes) -> None:
        if self.streamed and not self.vetted.is_set():
            await self.vetted.wait()
        self.written += len(chunk)
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
) -> None:
    """Ranges where the server keeps byte order, else the tree walk; switch at the first sign."""
    differs: ServerOrderDiffers | None = None
    if profile.ranged:
        try:
            await _scan_into(config, source, output, summary, ranges, checkpoint)
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
    if ranges is not None or config.shard_range is not None or config.worker:
        raise ScanError(
            f"{differs}; --shard needs a server that lists in byte order: scan it whole"
        ) from None
    if output.streamed and output.written:
        raise ScanError(
            f"{differs}, after {output.written} bytes had gone to standard output; run again with "
            "--server-profile unordered, or write to a file (which the scan can start over)"
        ) from None


async def _walk_into(
    config: ScanConfig, source: PageSource, output: _Output, summary: ScanSummary, folder_only: bool
) -> None:
    """The tree walk into the output: through an external sort unless ``--unordered``."""
    handle = PageHandler(config, summary)

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
    from scanner.checkpoint.checkpoint import Checkpoint
    from scanner.checkpoint.store import open_store

    store = open_store(config.checkpoint, config.connection, config.temp_dir)
    await store.open()
    return Checkpoint(store, config, config.checkpoint_interval)


def finish_summary(summary: ScanSummary, writer: Writer) -> None:
    from scanner.incremental.writer import IncrementalWriter

    if isinstance(writer, IncrementalWriter):
        summary.changes = writer.changes
        if writer.filter is not None:
            summary.matched = writer.filter.matched
            summary.add_skipped(writer.filter.skipped)
        writer = writer.inner
    if isinstance(writer, ItemsWriter):
        summary.tasks = writer.tasks
        summary.add_skipped(writer.skipped)


async def _scan_into(
    config: ScanConfig,
    source: PageSource,
    output_to: _Output,
    summary: ScanSummary,
    ranges: Sequence[KeyRange] | None,
    checkpoint: Checkpoint | None = None,
) -> None:
    handle = PageHandler(config, summary)
    root = KeyRange(config.location.prefix)
    parallelism = config.connection.concurrency
    # With --processes auto, workers borrow request slots from it while they run.
    limiter = source.limiter if isinstance(source, S3PageSource) else None

    if config.ordered:
        restored = await checkpoint.restore() if checkpoint is not None else None
        whole = ranges[0] if ranges else root
        output = OrderedOutput(
            config.memory_budget,
            temp_dir=config.temp_dir,
            spill=config.spill,
            first=restored.first if restored is not None else Segment(whole.start_after, whole.end),
        )

        async def emit_ordered(slot: OutputSlot, records: Sequence[ObjectRecord]) -> None:
            assert isinstance(slot, Segment)
            try:
                output.add(slot, handle(records), records[-1].key)
            except BaseException:
                # Counted or filtered but not saved: the checkpoint's counts are off from here
                # on, so it keeps its last save.
                if checkpoint is not None:
                    checkpoint.invalidate()
                raise
            await output.wait_for_room(slot)

        def split_slot(slot: OutputSlot, parts: list[KeyRange]) -> list[OutputSlot]:
            assert isinstance(slot, Segment)
            return list(output.insert_after(slot, [(part.start_after, part.end) for part in parts]))

        def finish_slot(slot: OutputSlot, complete: bool) -> None:
            assert isinstance(slot, Segment)
            output.finish(slot, complete)

        async def deliver_ordered(file: IO[bytes], slot: object) -> None:
            assert isinstance(slot, Segment)
            size = os.fstat(file.fileno()).st_size
            if size:
                slot.preloaded.append((file, 0, size))
            output.finish(slot, True)

        try:
            async with offloading(config, deliver_ordered, limiter, summary.add_worker) as offloader:
                enumerator = Enumerator(
                    source,
                    root,
                    parallelism=parallelism,
                    emit=emit_ordered,
                    split_slot=split_slot,
                    finish_slot=finish_slot,
                    hand_over=offloader,
                    vetted=output_to.vetted,
                )
                summary.enumeration = enumerator.stats
                if restored is not None:
                    handle.restore(restored.counters)
                    for segment in restored.complete:
                        output.finish(segment)
                if checkpoint is not None:
                    checkpoint.attach(output, handle.counters, lambda: not enumerator.stats.sequential)
                    # At once: a checkpoint location that cannot be written fails the scan now.
                    await checkpoint.save()
                # The workers' files are part of the output: the drain finishes inside.
                async with anyio.create_task_group() as group:
                    group.start_soon(output.drain, output_to.write)
                    if checkpoint is not None:
                        group.start_soon(checkpoint.run_periodically)
                    if restored is not None:
                        await enumerator.run_slots(restored.work)
                    elif ranges is None:
                        await enumerator.run(output.first)
                    else:
                        await enumerator.run_ranges(ranges, output.first)
                    if checkpoint is not None:
                        await output.drained()
                        group.cancel_scope.cancel()
        finally:
            summary.spilled_bytes = output.spilled_bytes
            output.close()
        handle.finish()
        return

    async with _streamed(output_to) as send:

        async def emit_unordered(slot: OutputSlot, records: Sequence[ObjectRecord]) -> None:
            chunk = handle(records)
            if chunk:
                await send.send(chunk)

        async def deliver_unordered(file: IO[bytes], slot: object) -> None:
            while block := file.read(_WORKER_BLOCK):
                await send.send(block)

        # The workers' files go into the stream too: it closes after them.
        async with offloading(config, deliver_unordered, limiter, summary.add_worker) as offloader:
            enumerator = Enumerator(
                source,
                root,
                parallelism=parallelism,
                emit=emit_unordered,
                hand_over=offloader,
                vetted=output_to.vetted,
            )
            summary.enumeration = enumerator.stats
            if ranges is None:
                await enumerator.run(object())
            else:
                await enumerator.run_ranges(ranges, object())
    handle.finish()


@asynccontextmanager
async def _streamed(output: _Output) -> AsyncIterator[MemoryObjectSendStream[bytes]]:
    """A small bounded stream whose chunks one task writes to ``output`` as they come."""
    send, receive = anyio.create_memory_object_stream[bytes](_UNORDERED_BUFFER)

    async def drain() -> None:
        async with receive:
            async for chunk in receive:
                await output.write(chunk)

    async with anyio.create_task_group() as group:
        group.start_soon(drain)
        async with send:
            yield send
